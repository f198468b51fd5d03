//! Turning an endpoint and its values into an HTTP request, each value encoded for the place it
//! goes: header values refuse line breaks, a path parameter is percent-encoded as exactly one
//! segment (so `..`, `/`, `#` or `?` cannot change the URL), query and form values are
//! form-encoded, JSON bodies are built as JSON values, and VTQL values are quoted by the
//! `vtql` filters.

use std::collections::HashMap;

use crmhub_core::Host;
use crmhub_core::crm::CrmError;
use md5::{Digest, Md5};
use serde_json::{Map, Value};
use url::Url;

use super::expr::Scope;
use super::model::{
    BodyEncoding, Endpoint, JsonTemplate, Param, ParamValue, Placement, UrlBase, UrlSegment, ValueType,
};
use crate::http::{HeaderValue, OutboundRequest, RequestBody, header::HeaderName};

pub(super) fn build(endpoint: &Endpoint, host: &Host, scope: &dyn Scope) -> Result<OutboundRequest, CrmError> {
    let mut headers = Vec::new();
    let mut query = Vec::new();
    let mut slots = HashMap::new();
    let mut form = Vec::new();
    let mut json = Map::new();
    for param in &endpoint.params {
        let Some(value) = render_param(param, scope, endpoint.body)? else { continue };
        match param.placement {
            Placement::Header => headers.push((param.name.clone(), header_value(&param.name, &value.as_text())?)),
            Placement::Query => query.push((param.name.clone(), value.as_text())),
            Placement::Path => {
                slots.insert(param.name.clone(), value.as_text());
            }
            Placement::Body => match endpoint.body {
                BodyEncoding::Form => form.push((param.name.clone(), value.as_text())),
                BodyEncoding::Json => insert_dotted(&mut json, &param.name, value.into_json())?,
                BodyEncoding::None => {}
            },
        }
    }

    let mut url = base_url(endpoint, host)?;
    let mut path = url.path().trim_end_matches('/').to_owned();
    for segment in &endpoint.url.segments {
        path.push('/');
        match segment {
            UrlSegment::Literal(text) => path.push_str(text),
            UrlSegment::Slot(name) => {
                let value = slots.get(name).map(String::as_str).unwrap_or_default();
                path.push_str(&encode_segment(name, value)?);
            }
        }
    }
    url.set_path(&path);
    url.set_query(endpoint.url.fixed_query.as_deref());
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(&query);
    }

    let mut request = OutboundRequest::new(endpoint.method.as_http(), url);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| CrmError::validation(name.clone(), "is not a valid header name"))?;
        request = request.header(name, value);
    }
    match endpoint.body {
        BodyEncoding::Form => request = request.body(RequestBody::form(&form)),
        BodyEncoding::Json => request = request.body(RequestBody::json(&Value::Object(json))),
        BodyEncoding::None => {}
    }
    Ok(request)
}

fn base_url(endpoint: &Endpoint, host: &Host) -> Result<Url, CrmError> {
    match &endpoint.url.base {
        UrlBase::Host => Url::parse(host.as_str()).map_err(|e| CrmError::validation("host", e.to_string())),
        UrlBase::Fixed(url) => {
            let mut base = url.clone();
            base.set_path("");
            base.set_query(None);
            Ok(base)
        }
    }
}

/// A rendered parameter value: text, or a JSON value built as JSON.
enum Rendered {
    Text(String, ValueType),
    Json(Value),
}

impl Rendered {
    fn as_text(&self) -> String {
        match self {
            Self::Text(text, _) => text.clone(),
            Self::Json(value) => value.to_string(),
        }
    }

    fn into_json(self) -> Value {
        match self {
            Self::Json(value) => value,
            Self::Text(text, ValueType::String) => Value::String(text),
            Self::Text(text, ValueType::Number) => text
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| text.parse::<f64>().map(Value::from))
                .unwrap_or(Value::Null),
            Self::Text(text, ValueType::Boolean) => Value::Bool(matches!(text.as_str(), "true" | "1" | "yes")),
        }
    }
}

fn render_param(param: &Param, scope: &dyn Scope, body: BodyEncoding) -> Result<Option<Rendered>, CrmError> {
    let failed = |e: String| CrmError::validation(param.name.clone(), e);
    let rendered = match &param.value {
        ParamValue::Expr(expr) => Rendered::Text(expr.render(scope).map_err(failed)?, param.value_type),
        ParamValue::Md5 { parts, separator } => {
            let texts = parts.iter().map(|p| p.render(scope)).collect::<Result<Vec<_>, _>>().map_err(failed)?;
            Rendered::Text(hex::encode(Md5::digest(texts.join(separator).as_bytes())), ValueType::String)
        }
        ParamValue::Json(template) => {
            let value = render_json(template, scope).map_err(failed)?;
            // A JSON document carried inside a form field or a JSON string (Vtiger's `element`).
            if param.as_json_string || body != BodyEncoding::Json || param.placement != Placement::Body {
                Rendered::Text(value.to_string(), ValueType::String)
            } else {
                Rendered::Json(value)
            }
        }
    };
    let empty = matches!(&rendered, Rendered::Text(t, _) if t.is_empty());
    if param.value_type == ValueType::Number {
        if let Rendered::Text(text, _) = &rendered {
            if !empty && text.parse::<f64>().is_err() {
                return Err(CrmError::validation(param.name.clone(), format!("{text:?} is not a number")));
            }
        }
    }
    Ok(if empty && param.optional { None } else { Some(rendered) })
}

fn render_json(template: &JsonTemplate, scope: &dyn Scope) -> Result<Value, String> {
    Ok(match template {
        JsonTemplate::Text(expr) => Value::String(expr.render(scope)?),
        JsonTemplate::Literal(value) => value.clone(),
        JsonTemplate::Array(items) => {
            Value::Array(items.iter().map(|i| render_json(i, scope)).collect::<Result<_, _>>()?)
        }
        JsonTemplate::Object(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                map.insert(key.clone(), render_json(value, scope)?);
            }
            Value::Object(map)
        }
    })
}

/// Header values are text on one line: CR, LF and NUL would start a new header or end the
/// request, so they are refused rather than stripped.
fn header_value(name: &str, value: &str) -> Result<HeaderValue, CrmError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(CrmError::validation(name, "a header value must not contain line breaks"));
    }
    HeaderValue::from_str(value).map_err(|_| CrmError::validation(name, "is not a valid header value"))
}

/// One path segment: every byte outside the unreserved set is percent-encoded. `.` and `..`
/// are refused: URL normalisation resolves them even percent-encoded (`%2E%2E`), which would
/// move the request up a level.
fn encode_segment(name: &str, value: &str) -> Result<String, CrmError> {
    if value.is_empty() {
        return Err(CrmError::validation(name, "a path parameter must not be empty"));
    }
    if value == "." || value == ".." {
        return Err(CrmError::validation(name, "a path parameter must not be \".\" or \"..\""));
    }
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

/// `contact.first_name` puts the value at `{"contact": {"first_name": …}}`.
fn insert_dotted(root: &mut Map<String, Value>, name: &str, value: Value) -> Result<(), CrmError> {
    let mut parts = name.split('.').peekable();
    let mut node = root;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_owned(), value);
            return Ok(());
        }
        let entry = node.entry(part.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        node = entry
            .as_object_mut()
            .ok_or_else(|| CrmError::Protocol(format!("body parameter {name:?} collides with another parameter")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_path_values_stay_one_segment() {
        assert_eq!(encode_segment("id", "../admin").unwrap(), "..%2Fadmin");
        assert!(encode_segment("id", "..").is_err());
        assert!(encode_segment("id", ".").is_err());
        assert_eq!(encode_segment("id", "...").unwrap(), "...");
        assert_eq!(encode_segment("id", "a#b?c=d@e f").unwrap(), "a%23b%3Fc%3Dd%40e%20f");
        assert_eq!(encode_segment("id", "é").unwrap(), "%C3%A9");
        assert!(encode_segment("id", "").is_err());
    }

    #[test]
    fn header_values_refuse_line_breaks() {
        assert!(header_value("X-Note", "ok value").is_ok());
        for bad in ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\0b"] {
            let err = header_value("X-Note", bad).unwrap_err();
            assert!(matches!(&err, CrmError::Validation { field, .. } if field == "X-Note"), "{bad:?}");
        }
    }

    struct Values;

    impl Scope for Values {
        fn lookup(&self, source: &super::super::expr::Source) -> Option<String> {
            use super::super::expr::Source;
            match source {
                Source::Input(name) if name == "id" => Some("../admin#x?y=1".into()),
                Source::Input(name) if name == "q" => Some("a&b=c d+e#f".into()),
                Source::Input(name) if name == "name" => Some("Quote\", \"role\": \"admin".into()),
                Source::Input(name) if name == "who" => Some("O'Brien".into()),
                _ => None,
            }
        }
    }

    #[test]
    fn hostile_caller_values_stay_in_their_place() {
        let source = r#"
name: hostile
type: crm
contact: { id: /id }
endpoints:
  - name: e
    kind: post_data
    method: POST
    url: "{{host}}/api/{id}/notes"
    body: json
    parameters:
      - { name: id, kind: path, value: "{{input.id}}" }
      - { name: q, kind: query, value: "{{input.q}}" }
      - { name: contact.name, kind: body, value: "{{input.name}}" }
      - { name: vtql, kind: body, value: "SELECT * FROM Contacts WHERE lastname = {{input.who | vtql}};" }
"#;
        let template = super::super::parse(source, super::super::SourceFormat::Yaml, &Default::default()).unwrap();
        let host = Host::parse("https://crm.example.com").unwrap();
        let request = build(&template.endpoints[0], &host, &Values).unwrap();
        assert_eq!(request.url.path(), "/api/..%2Fadmin%23x%3Fy%3D1/notes");
        let pairs: Vec<(String, String)> =
            request.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        assert_eq!(pairs, [("q".to_owned(), "a&b=c d+e#f".to_owned())], "one parameter, value intact");
        let body: Value = serde_json::from_slice(&request.body.unwrap().bytes).unwrap();
        assert_eq!(body["contact"]["name"], "Quote\", \"role\": \"admin");
        assert!(body.get("role").is_none() && body["contact"].get("role").is_none(), "no injected member");
        assert_eq!(body["vtql"], "SELECT * FROM Contacts WHERE lastname = 'O''Brien';");

        // The finished URL, not just the encoded text: a dot segment never climbs a level.
        struct Dots;
        impl Scope for Dots {
            fn lookup(&self, _source: &super::super::expr::Source) -> Option<String> {
                Some("..".into())
            }
        }
        let err = build(&template.endpoints[0], &host, &Dots).unwrap_err();
        assert!(matches!(&err, CrmError::Validation { field, .. } if field == "id"), "{err:?}");
    }

    #[test]
    fn dotted_names_nest_json() {
        let mut root = Map::new();
        insert_dotted(&mut root, "contact.first_name", Value::String("Ann".into())).unwrap();
        insert_dotted(&mut root, "contact.tags", serde_json::json!(["a"])).unwrap();
        insert_dotted(&mut root, "quote", Value::String("it's \"quoted\"".into())).unwrap();
        assert_eq!(
            Value::Object(root.clone()).to_string(),
            r#"{"contact":{"first_name":"Ann","tags":["a"]},"quote":"it's \"quoted\""}"#
        );
        assert!(insert_dotted(&mut root, "quote.inner", Value::Null).is_err());
    }
}
