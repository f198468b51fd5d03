//! Reading a template: YAML or JSON in, a validated `Template` out — or every problem found, each
//! with its path (`endpoints[2].parameters[0].kind: unknown kind "hedaer"`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::{Map, Value};

use super::expr::{Expr, Source};
use super::model::*;
use super::pointer::Pointer;
use crate::http::AddressPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem in a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateErrors(pub Vec<TemplateError>);

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Yaml,
    Json,
}

impl SourceFormat {
    /// JSON when the text starts with `{`, YAML otherwise (YAML is a superset for our purpose,
    /// but JSON errors read better from the JSON parser).
    pub fn detect(source: &str) -> Self {
        if source.trim_start().starts_with('{') { Self::Json } else { Self::Yaml }
    }
}

/// Parses and validates. `policy` checks fixed URLs against the outbound address policy.
pub fn parse(source: &str, format: SourceFormat, policy: &AddressPolicy) -> Result<Template, TemplateErrors> {
    let document: Value = match format {
        SourceFormat::Json => serde_json::from_str(source).map_err(|e| {
            TemplateErrors(vec![TemplateError { path: String::new(), message: format!("malformed JSON: {e}") }])
        })?,
        SourceFormat::Yaml => serde_saphyr::from_str(source).map_err(|e| {
            TemplateErrors(vec![TemplateError { path: String::new(), message: format!("malformed YAML: {e}") }])
        })?,
    };
    let mut reader = Reader { errors: Vec::new(), policy };
    let template = reader.template(&document);
    match template {
        Some(template) if reader.errors.is_empty() => {
            reader.check_references(&template);
            if reader.errors.is_empty() { Ok(template) } else { Err(TemplateErrors(reader.errors)) }
        }
        _ => Err(TemplateErrors(reader.errors)),
    }
}

struct Reader<'p> {
    errors: Vec<TemplateError>,
    policy: &'p AddressPolicy,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Reader<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(TemplateError { path: path.into(), message: message.into() });
    }

    fn object<'v>(&mut self, value: &'v Value, path: &str, allowed: &[&str]) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.error(path, "must be an object");
            return None;
        };
        for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.error(join(path, key), format!("unknown key; expected one of {}", allowed.join(", ")));
        }
        Some(map)
    }

    fn string(&mut self, map: &Map<String, Value>, key: &str, path: &str, required: bool) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.error(join(path, key), "is required");
                }
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(_) => {
                self.error(join(path, key), "must be a string");
                None
            }
        }
    }

    fn boolean(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> bool {
        match map.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.error(join(path, key), "must be true or false");
                false
            }
        }
    }

    fn number(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Option<u64> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64() {
                Some(n) => Some(n),
                None => {
                    self.error(join(path, key), "must be a non-negative integer");
                    None
                }
            },
        }
    }

    fn list<'v>(&mut self, map: &'v Map<String, Value>, key: &str, path: &str) -> Vec<(String, &'v Value)> {
        match map.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| (format!("{}[{i}]", join(path, key)), v)).collect()
            }
            Some(_) => {
                self.error(join(path, key), "must be a list");
                Vec::new()
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        path: &str,
        options: &[(&str, T)],
        what: &str,
    ) -> Option<T> {
        let raw = self.string(map, key, path, false)?;
        match options.iter().find(|(name, _)| name.eq_ignore_ascii_case(&raw)) {
            Some((_, value)) => Some(*value),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.error(join(path, key), format!("unknown {what} {raw:?}; expected one of {}", names.join(", ")));
                None
            }
        }
    }

    fn expr(&mut self, raw: &str, path: &str) -> Option<Expr> {
        match Expr::parse(raw) {
            Ok(expr) => Some(expr),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    fn pointer(&mut self, value: Option<&Value>, path: &str) -> Option<Pointer> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::String(raw)) => match Pointer::parse(raw) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.error(path, e);
                    None
                }
            },
            Some(_) => {
                self.error(path, "must be a JSON pointer string such as /data/id");
                None
            }
        }
    }

    fn pointers(&mut self, value: Option<&Value>, path: &str) -> Vec<Pointer> {
        match value {
            Some(Value::Array(items)) => {
                items.iter().enumerate().filter_map(|(i, v)| self.pointer(Some(v), &format!("{path}[{i}]"))).collect()
            }
            other => self.pointer(other, path).into_iter().collect(),
        }
    }

    fn template(&mut self, doc: &Value) -> Option<Template> {
        let allowed = [
            "name",
            "label",
            "type",
            "description",
            "info",
            "iframe",
            "fields",
            "auth",
            "errors",
            "contact",
            "company",
            "activity",
            "card",
            "endpoints",
        ];
        let map = self.object(doc, "", &allowed)?;
        let name = self.string(map, "name", "", true).unwrap_or_default();
        if !name.is_empty() && !crmhub_core::connection::is_identifier(&name) {
            self.error("name", "must be lowercase letters, digits, '-' and '_', starting with a letter (at most 63)");
        }
        let kind = self
            .choice(map, "type", "", &[("crm", TemplateType::Crm), ("sms", TemplateType::Sms)], "type")
            .unwrap_or(TemplateType::Crm);
        if map.get("type").is_none() {
            self.error("type", "is required (crm or sms)");
        }
        let label = self.string(map, "label", "", false).unwrap_or_else(|| name.clone());
        let description = self.string(map, "description", "", false).unwrap_or_default();
        let info = self.free_json(map, "info");
        let iframe = self.free_json(map, "iframe");
        let fields = self.list(map, "fields", "").into_iter().filter_map(|(p, v)| self.field(v, &p)).collect();
        let auth = map.get("auth").and_then(|v| self.auth(v, "auth"));
        let errors = map.get("errors").map(|v| self.errors_map(v, "errors")).unwrap_or_default();
        let contact = map.get("contact").map(|v| self.contact(v, "contact")).unwrap_or_default();
        let activity = map.get("activity").map(|v| self.activity(v, "activity")).unwrap_or_default();
        let company = match map.get("company") {
            Some(v) => match self.object(v, "company", &["id", "name"]) {
                Some(m) => CompanyMap {
                    id: self.pointer(m.get("id"), "company.id"),
                    name: self.pointer(m.get("name"), "company.name"),
                },
                None => CompanyMap::default(),
            },
            None => CompanyMap::default(),
        };
        let card = map.get("card").map(|v| self.card(v, "card")).unwrap_or_default();
        let endpoints: Vec<Endpoint> =
            self.list(map, "endpoints", "").into_iter().filter_map(|(p, v)| self.endpoint(v, &p)).collect();
        if map.get("endpoints").is_none() {
            self.error("endpoints", "is required: a template needs at least one endpoint");
        }
        Some(Template {
            name,
            label,
            kind,
            description,
            info,
            iframe,
            fields,
            auth,
            errors,
            contact,
            company,
            activity,
            card,
            endpoints,
        })
    }

    fn free_json(&mut self, map: &Map<String, Value>, key: &str) -> Value {
        match map.get(key) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ (Value::Object(_) | Value::Array(_))) => v.clone(),
            Some(_) => {
                self.error(key, "must be a JSON object or list");
                Value::Null
            }
        }
    }

    fn field(&mut self, value: &Value, path: &str) -> Option<FieldDef> {
        let map = self.object(value, path, &["name", "label", "secret", "required", "default", "description"])?;
        let name = self.string(map, "name", path, true)?;
        if !is_name(&name) {
            self.error(join(path, "name"), "may contain only letters, digits, '_' and '-'");
        }
        Some(FieldDef {
            label: self.string(map, "label", path, false).unwrap_or_else(|| name.clone()),
            secret: self.boolean(map, "secret", path),
            required: self.boolean(map, "required", path),
            default: self.string(map, "default", path, false),
            description: self.string(map, "description", path, false).unwrap_or_default(),
            name,
        })
    }

    fn body_match(&mut self, value: &Value, path: &str) -> Option<BodyMatch> {
        let map = self.object(value, path, &["pointer", "equals"])?;
        let pointer = self.pointer(map.get("pointer"), &join(path, "pointer"));
        if map.get("pointer").is_none() {
            self.error(join(path, "pointer"), "is required");
        }
        let equals = match map.get("equals") {
            Some(Value::Array(items)) => items.iter().filter_map(super::pointer::as_text).collect(),
            Some(v) => super::pointer::as_text(v).into_iter().collect(),
            None => {
                self.error(join(path, "equals"), "is required");
                Vec::new()
            }
        };
        Some(BodyMatch { pointer: pointer?, equals })
    }

    fn auth(&mut self, value: &Value, path: &str) -> Option<AuthDef> {
        let map =
            self.object(value, path, &["endpoint", "token", "expires_in", "lifetime_secs", "expired_when", "account"])?;
        let endpoint = self.string(map, "endpoint", path, true)?;
        let token_raw = self.string(map, "token", path, true)?;
        let token = self.expr(&token_raw, &join(path, "token"))?;
        let expires_in = match (self.string(map, "expires_in", path, false), self.number(map, "lifetime_secs", path)) {
            (Some(raw), _) => self.expr(&raw, &join(path, "expires_in")),
            (None, Some(secs)) => Some(Expr::literal(&secs.to_string())),
            (None, None) => None,
        };
        let mut expired_when = ExpiredWhen::default();
        if let Some(when) = map.get("expired_when") {
            let wpath = join(path, "expired_when");
            if let Some(w) = self.object(when, &wpath, &["status", "body"]) {
                for (p, status) in self.list(w, "status", &wpath) {
                    match status.as_u64().and_then(|s| u16::try_from(s).ok()).filter(|s| (100..600).contains(s)) {
                        Some(s) => expired_when.status.push(s),
                        None => self.error(p, "must be an HTTP status code"),
                    }
                }
                expired_when.body = w.get("body").and_then(|b| self.body_match(b, &join(&wpath, "body")));
            }
        }
        let account = self.string(map, "account", path, false).and_then(|raw| self.expr(&raw, &join(path, "account")));
        Some(AuthDef { endpoint, token, expires_in, expired_when, account })
    }

    fn errors_map(&mut self, value: &Value, path: &str) -> ErrorMap {
        let Some(map) = self.object(value, path, &["when", "code", "message", "field", "not_found", "validation"])
        else {
            return ErrorMap::default();
        };
        let texts = |r: &mut Self, key: &str| -> Vec<String> {
            r.list(map, key, path).into_iter().filter_map(|(_, v)| super::pointer::as_text(v)).collect()
        };
        ErrorMap {
            when: map.get("when").and_then(|w| self.body_match(w, &join(path, "when"))),
            code: self.pointer(map.get("code"), &join(path, "code")),
            message: self.pointer(map.get("message"), &join(path, "message")),
            field: self.pointer(map.get("field"), &join(path, "field")),
            not_found: texts(self, "not_found"),
            validation: texts(self, "validation"),
        }
    }

    fn contact(&mut self, value: &Value, path: &str) -> ContactMap {
        let allowed = [
            "id",
            "name",
            "first_name",
            "last_name",
            "title",
            "company",
            "owner",
            "emails",
            "phones",
            "url",
            "extra",
            "modified_at",
            "id_prefix",
            "company_id",
        ];
        let Some(map) = self.object(value, path, &allowed) else { return ContactMap::default() };
        let p = |r: &mut Self, key: &str| r.pointer(map.get(key), &join(path, key));
        let mut extra = Vec::new();
        if let Some(raw) = map.get("extra") {
            let epath = join(path, "extra");
            match raw.as_object() {
                Some(entries) => {
                    for (label, pointer) in entries {
                        if let Some(pointer) = self.pointer(Some(pointer), &join(&epath, label)) {
                            extra.push((label.clone(), pointer));
                        }
                    }
                }
                None => self.error(epath, "must be an object of label: /json/pointer"),
            }
        }
        ContactMap {
            id: p(self, "id"),
            name: p(self, "name"),
            first_name: p(self, "first_name"),
            last_name: p(self, "last_name"),
            title: p(self, "title"),
            company: p(self, "company"),
            owner: p(self, "owner"),
            emails: self.pointers(map.get("emails"), &join(path, "emails")),
            phones: self.pointers(map.get("phones"), &join(path, "phones")),
            url: self.string(map, "url", path, false).and_then(|raw| self.expr(&raw, &join(path, "url"))),
            extra,
            modified_at: p(self, "modified_at"),
            company_id: p(self, "company_id"),
            id_prefix: self
                .string(map, "id_prefix", path, false)
                .and_then(|raw| self.expr(&raw, &join(path, "id_prefix"))),
        }
    }

    fn card(&mut self, value: &Value, path: &str) -> CardMap {
        let Some(map) = self.object(value, path, &["company", "owner", "figures"]) else { return CardMap::default() };
        let company = map.get("company").and_then(|v| self.lookup(v, &join(path, "company"), &[]).map(|(l, _)| l));
        let owner = map.get("owner").and_then(|v| self.lookup(v, &join(path, "owner"), &[]).map(|(l, _)| l));
        let figures = self
            .list(map, "figures", path)
            .into_iter()
            .filter_map(|(p, v)| {
                let (lookup, figure) = self.lookup(v, &p, &["label"])?;
                let label = self.string(figure, "label", &p, true)?;
                Some(Figure { label, lookup })
            })
            .collect();
        CardMap { company, owner, figures }
    }

    /// `{ endpoint, inputs: { NAME: /pointer }, value: /pointer | [/pointer, …] }` (plus `extra`
    /// keys, returned for the caller to read).
    fn lookup<'v>(&mut self, value: &'v Value, path: &str, extra: &[&str]) -> Option<(Lookup, &'v Map<String, Value>)> {
        let allowed: Vec<&str> = ["endpoint", "inputs", "value"].iter().chain(extra).copied().collect();
        let map = self.object(value, path, &allowed)?;
        let endpoint = self.string(map, "endpoint", path, true)?;
        let mut inputs = Vec::new();
        match map.get("inputs") {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) => {
                for (name, pointer) in entries {
                    if let Some(pointer) = self.pointer(Some(pointer), &join(&join(path, "inputs"), name)) {
                        inputs.push((name.clone(), pointer));
                    }
                }
            }
            Some(_) => self.error(join(path, "inputs"), "must be an object of input name: /json/pointer"),
        }
        let value = self.pointers(map.get("value"), &join(path, "value"));
        if value.is_empty() {
            self.error(join(path, "value"), "is required: a JSON pointer (or a list of them) into the answer");
        }
        Some((Lookup { endpoint, inputs, value }, map))
    }

    fn activity(&mut self, value: &Value, path: &str) -> ActivityMap {
        let Some(map) = self.object(value, path, &["kind", "subject", "body", "at", "status"]) else {
            return ActivityMap::default();
        };
        let p = |r: &mut Self, key: &str| r.pointer(map.get(key), &join(path, key));
        ActivityMap {
            kind: p(self, "kind"),
            subject: p(self, "subject"),
            body: p(self, "body"),
            at: p(self, "at"),
            status: p(self, "status"),
        }
    }

    fn endpoint(&mut self, value: &Value, path: &str) -> Option<Endpoint> {
        let allowed = [
            "name",
            "label",
            "description",
            "kind",
            "method",
            "url",
            "trigger",
            "after",
            "body",
            "hard_params",
            "parameters",
            "outputs",
            "response",
            "pagination",
        ];
        let map = self.object(value, path, &allowed)?;
        let name = self.string(map, "name", path, true)?;
        if !is_name(&name) {
            self.error(join(path, "name"), "may contain only letters, digits, '_' and '-'");
        }
        let kind = self.choice(
            map,
            "kind",
            path,
            &[
                ("auth", EndpointKind::Auth),
                ("get_data", EndpointKind::GetData),
                ("post_data", EndpointKind::PostData),
                ("send_sms", EndpointKind::SendSms),
            ],
            "kind",
        );
        if map.get("kind").is_none() {
            self.error(join(path, "kind"), "is required (auth, get_data, post_data or send_sms)");
        }
        let method = self
            .choice(
                map,
                "method",
                path,
                &[
                    ("GET", Method::Get),
                    ("POST", Method::Post),
                    ("PUT", Method::Put),
                    ("PATCH", Method::Patch),
                    ("DELETE", Method::Delete),
                ],
                "method",
            )
            .unwrap_or(Method::Get);
        let url_raw = self.string(map, "url", path, true)?;
        let url = self.url(&url_raw, &join(path, "url"));
        let trigger = match self.string(map, "trigger", path, false) {
            None => None,
            Some(raw) => match Trigger::parse(&raw) {
                Some(t) => Some(t),
                None => {
                    let names: Vec<&str> = Trigger::ALL.iter().map(Trigger::as_str).collect();
                    self.error(
                        join(path, "trigger"),
                        format!("unknown trigger {raw:?}; expected one of {}", names.join(", ")),
                    );
                    None
                }
            },
        };
        let after = match map.get("after") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            Some(_) => {
                self.error(join(path, "after"), "must be an endpoint name or a list of them");
                Vec::new()
            }
        };
        let default_body =
            if matches!(method, Method::Get | Method::Delete) { BodyEncoding::None } else { BodyEncoding::Json };
        let body = self
            .choice(
                map,
                "body",
                path,
                &[("none", BodyEncoding::None), ("json", BodyEncoding::Json), ("form", BodyEncoding::Form)],
                "body encoding",
            )
            .unwrap_or(default_body);
        let mut params = Vec::new();
        for (p, v) in self.list(map, "hard_params", path) {
            params.extend(self.param(v, &p, true));
        }
        for (p, v) in self.list(map, "parameters", path) {
            params.extend(self.param(v, &p, false));
        }
        let mut outputs = BTreeMap::new();
        if let Some(raw) = map.get("outputs") {
            let opath = join(path, "outputs");
            match raw.as_object() {
                Some(entries) => {
                    for (output, pointer) in entries {
                        if !is_name(output) {
                            self.error(
                                join(&opath, output),
                                "output names may contain only letters, digits, '_' and '-'",
                            );
                        }
                        if let Some(pointer) = self.pointer(Some(pointer), &join(&opath, output)) {
                            outputs.insert(output.clone(), pointer);
                        }
                    }
                }
                None => self.error(opath, "must be an object of name: /json/pointer"),
            }
        }
        let response = map.get("response").map(|r| self.response(r, &join(path, "response"))).unwrap_or_default();
        let pagination = map.get("pagination").and_then(|p| self.pagination(p, &join(path, "pagination")));
        Some(Endpoint {
            label: self.string(map, "label", path, false).unwrap_or_else(|| name.clone()),
            description: self.string(map, "description", path, false).unwrap_or_default(),
            name,
            kind: kind.unwrap_or(EndpointKind::GetData),
            method,
            url: url?,
            trigger,
            after,
            body,
            params,
            outputs,
            response,
            pagination,
        })
    }

    fn url(&mut self, raw: &str, path: &str) -> Option<UrlTemplate> {
        let (base, rest) = if let Some(rest) = raw.strip_prefix("{{host}}") {
            (UrlBase::Host, rest.to_owned())
        } else {
            let Ok(parsed) = url::Url::parse(raw.split('{').next().unwrap_or(raw)) else {
                self.error(path, "must start with {{host}} or be an absolute http(s) URL");
                return None;
            };
            if !matches!(parsed.scheme(), "http" | "https") {
                self.error(path, "must use http or https");
                return None;
            }
            if let Some(refused) = self.refused_literal_ip(&parsed) {
                self.error(path, refused);
                return None;
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                self.error(path, "must not contain credentials; use a secret field and a parameter");
                return None;
            }
            // What follows the authority, found in the raw text (the parsed URL normalises the
            // host, so its length may differ from what was written).
            let after_scheme = raw.find("://").map_or(0, |i| i + 3);
            let rest_at = raw[after_scheme..].find(['/', '?', '#']).map_or(raw.len(), |i| after_scheme + i);
            (UrlBase::Fixed(parsed.clone()), raw[rest_at..].to_owned())
        };
        if rest.contains("{{") {
            self.error(path, "only {{host}} may be interpolated into a URL; put values in path parameters ({slot}) or query parameters");
            return None;
        }
        let (path_part, fixed_query) = match rest.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (rest, None),
        };
        let mut segments = Vec::new();
        for segment in path_part.split('/').filter(|s| !s.is_empty()) {
            match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(slot) if is_name(slot) => segments.push(UrlSegment::Slot(slot.to_owned())),
                Some(_) => self.error(path, format!("{segment:?} is not a valid path slot")),
                None if segment.contains(['{', '}']) => {
                    self.error(path, format!("path slots must be whole segments such as /{{id}}, not {segment:?}"))
                }
                None => segments.push(UrlSegment::Literal(segment.to_owned())),
            }
        }
        Some(UrlTemplate { raw: raw.to_owned(), base, segments, fixed_query })
    }

    fn refused_literal_ip(&self, url: &url::Url) -> Option<String> {
        let ip: std::net::IpAddr = match url.host()? {
            url::Host::Ipv4(v4) => v4.into(),
            url::Host::Ipv6(v6) => v6.into(),
            url::Host::Domain(_) => return None,
        };
        self.policy.check(url.host_str().unwrap_or_default(), ip).err().map(|e| e.to_string())
    }

    fn param(&mut self, value: &Value, path: &str, hard: bool) -> Option<Param> {
        let allowed =
            ["name", "kind", "value", "json", "of", "separator", "in", "type", "optional", "json_string", "dialect"];
        let map = self.object(value, path, &allowed)?;
        let name = self.string(map, "name", path, true)?;
        let kind = self.choice(
            map,
            "kind",
            path,
            &[("header", "header"), ("body", "body"), ("query", "query"), ("path", "path"), ("md5", "md5")],
            "kind",
        );
        if map.get("kind").is_none() {
            self.error(join(path, "kind"), "is required (header, body, query, path or md5)");
        }
        let kind = kind?;
        let value_type = self
            .choice(
                map,
                "type",
                path,
                &[("string", ValueType::String), ("number", ValueType::Number), ("boolean", ValueType::Boolean)],
                "type",
            )
            .unwrap_or(ValueType::String);
        let literal_or_expr =
            |r: &mut Self, raw: &str, p: &str| if hard { Some(Expr::literal(raw)) } else { r.expr(raw, p) };
        let (placement, value) = if kind == "md5" {
            let placement = self
                .choice(
                    map,
                    "in",
                    path,
                    &[("header", Placement::Header), ("body", Placement::Body), ("query", Placement::Query)],
                    "placement",
                )
                .unwrap_or(Placement::Header);
            let mut parts = Vec::new();
            for (p, v) in self.list(map, "of", path) {
                match v.as_str() {
                    Some(raw) => parts.extend(literal_or_expr(self, raw, &p)),
                    None => self.error(p, "must be a string"),
                }
            }
            if parts.is_empty() {
                self.error(join(path, "of"), "an md5 parameter needs the list of values it hashes");
            }
            let separator = self.string(map, "separator", path, false).unwrap_or_default();
            (placement, ParamValue::Md5 { parts, separator })
        } else {
            let placement = match kind {
                "header" => Placement::Header,
                "body" => Placement::Body,
                "query" => Placement::Query,
                _ => Placement::Path,
            };
            if map.contains_key("of") || map.contains_key("in") {
                self.error(path, "\"of\" and \"in\" belong to md5 parameters");
            }
            let value = match (map.get("value"), map.get("json")) {
                (Some(_), Some(_)) => {
                    self.error(path, "give either \"value\" or \"json\", not both");
                    return None;
                }
                (Some(_), None) => {
                    let raw = self.string(map, "value", path, true)?;
                    ParamValue::Expr(literal_or_expr(self, &raw, &join(path, "value"))?)
                }
                (None, Some(json)) => ParamValue::Json(self.json_template(json, &join(path, "json"), hard)?),
                (None, None) => {
                    self.error(join(path, "value"), "is required");
                    return None;
                }
            };
            (placement, value)
        };
        if placement == Placement::Header
            && !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            self.error(join(path, "name"), format!("{name:?} is not a valid header name"));
        }
        let dialect = self.choice(map, "dialect", path, &[("vtql", Dialect::Vtql)], "dialect");
        if dialect.is_some() && !matches!(value, ParamValue::Expr(_)) {
            self.error(join(path, "dialect"), "belongs to parameters with a text \"value\"");
        }
        Some(Param {
            name,
            placement,
            value,
            value_type,
            optional: self.boolean(map, "optional", path),
            as_json_string: self.boolean(map, "json_string", path),
            dialect,
        })
    }

    fn json_template(&mut self, value: &Value, path: &str, hard: bool) -> Option<JsonTemplate> {
        Some(match value {
            Value::String(raw) if !hard => JsonTemplate::Text(self.expr(raw, path)?),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.json_template(v, &format!("{path}[{i}]"), hard))
                    .collect(),
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.json_template(v, &join(path, k), hard)?)))
                    .collect(),
            ),
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    fn response(&mut self, value: &Value, path: &str) -> ResponseMap {
        let Some(map) = self.object(value, path, &["records", "record", "id", "next"]) else {
            return ResponseMap::default();
        };
        ResponseMap {
            records: self.pointer(map.get("records"), &join(path, "records")),
            record: self.pointer(map.get("record"), &join(path, "record")),
            id: self.pointer(map.get("id"), &join(path, "id")),
            next: self.pointer(map.get("next"), &join(path, "next")),
        }
    }

    fn pagination(&mut self, value: &Value, path: &str) -> Option<Pagination> {
        let map = self.object(value, path, &["start", "step", "max_pages", "has_more", "page_size"])?;
        let start = self.number(map, "start", path).unwrap_or(1);
        let step = self.number(map, "step", path).unwrap_or(1);
        if step == 0 || step > 100_000 {
            self.error(join(path, "step"), "must be between 1 and 100000");
        }
        let max_pages = self.number(map, "max_pages", path).unwrap_or(20);
        if max_pages == 0 || max_pages > 1000 {
            self.error(join(path, "max_pages"), "must be between 1 and 1000");
        }
        let page_size = self.number(map, "page_size", path);
        if page_size.is_some_and(|n| n == 0 || n > 100_000) {
            self.error(join(path, "page_size"), "must be between 1 and 100000");
        }
        Some(Pagination {
            start: u32::try_from(start).unwrap_or(1),
            step: u32::try_from(step.clamp(1, 100_000)).unwrap_or(1),
            max_pages: u32::try_from(max_pages.clamp(1, 1000)).unwrap_or(20),
            has_more: self.pointer(map.get("has_more"), &join(path, "has_more")),
            page_size: page_size.and_then(|n| u32::try_from(n.clamp(1, 100_000)).ok()),
        })
    }

    /// Cross-references: fields, endpoints, auth chains, outputs, inputs, triggers, responses.
    fn check_references(&mut self, t: &Template) {
        let mut field_names: HashMap<&str, &FieldDef> = HashMap::new();
        for (i, field) in t.fields.iter().enumerate() {
            if field_names.insert(&field.name, field).is_some() {
                self.error(format!("fields[{i}].name"), format!("field {:?} is defined twice", field.name));
            }
        }
        let mut endpoints: HashMap<&str, (usize, &Endpoint)> = HashMap::new();
        for (i, endpoint) in t.endpoints.iter().enumerate() {
            if endpoints.insert(&endpoint.name, (i, endpoint)).is_some() {
                self.error(format!("endpoints[{i}].name"), format!("endpoint {:?} is defined twice", endpoint.name));
            }
        }

        // Auth chains: `after` names existing auth endpoints, without cycles.
        for (i, endpoint) in t.endpoints.iter().enumerate() {
            for step in &endpoint.after {
                match endpoints.get(step.as_str()) {
                    None => {
                        self.error(format!("endpoints[{i}].after"), format!("references undefined endpoint {step:?}"))
                    }
                    Some((_, e)) if e.kind != EndpointKind::Auth => {
                        self.error(format!("endpoints[{i}].after"), format!("{step:?} is not an auth endpoint"))
                    }
                    _ => {}
                }
            }
            if let Some(cycle) = find_cycle(&endpoint.name, &endpoints) {
                self.error(format!("endpoints[{i}].after"), format!("auth chain cycle: {}", cycle.join(" → ")));
            }
        }

        if let Some(auth) = &t.auth {
            // The account names a lock key kept in the shared store: connection fields only,
            // never a secret.
            for r in auth.account.iter().flat_map(|e| e.references()) {
                match &r.source {
                    Source::Field(_) => self.check_field_reference("auth.account", &r.source, &field_names),
                    other => self.error("auth.account", format!("cannot use {{{{{other}}}}} here; use field values")),
                }
            }
            match endpoints.get(auth.endpoint.as_str()) {
                None => self.error("auth.endpoint", format!("references undefined endpoint {:?}", auth.endpoint)),
                Some((_, e)) if e.kind != EndpointKind::Auth => {
                    self.error("auth.endpoint", format!("{:?} is not an auth endpoint", auth.endpoint))
                }
                Some(_) => {
                    let chain = chain_of(&auth.endpoint, &endpoints);
                    for (label, expr) in
                        [("auth.token", Some(&auth.token)), ("auth.expires_in", auth.expires_in.as_ref())]
                    {
                        for r in expr.into_iter().flat_map(|e| e.references()) {
                            match &r.source {
                                Source::Step(e, o) => self.check_step_output(label, e, o, &chain, &endpoints),
                                Source::Host
                                | Source::Field(_)
                                | Source::Credential(_)
                                | Source::NowUnix
                                | Source::NowIso => self.check_field_reference(label, &r.source, &field_names),
                                other => self.error(label, format!("cannot use {{{{{other}}}}} here")),
                            }
                        }
                    }
                }
            }
        }

        let mut seen_triggers: BTreeMap<Trigger, usize> = BTreeMap::new();
        for (i, endpoint) in t.endpoints.iter().enumerate() {
            let path = format!("endpoints[{i}]");
            if let Some(trigger) = endpoint.trigger {
                if let Some(first) = seen_triggers.insert(trigger, i) {
                    self.error(
                        format!("{path}.trigger"),
                        format!("{} is already served by endpoints[{first}]", trigger.as_str()),
                    );
                }
                self.check_trigger(t, endpoint, trigger, &path);
            }
            if endpoint.kind == EndpointKind::Auth && endpoint.trigger.is_some() {
                self.error(format!("{path}.trigger"), "auth endpoints run as part of the auth chain, not on a trigger");
            }
            if endpoint.kind == EndpointKind::SendSms && endpoint.trigger != Some(Trigger::SmsSend) {
                self.error(format!("{path}.trigger"), "send_sms endpoints serve the sms.send trigger");
            }
            if endpoint.body == BodyEncoding::None && endpoint.params.iter().any(|p| p.placement == Placement::Body) {
                self.error(format!("{path}.body"), "body parameters need a body encoding (json or form)");
            }
            if endpoint.pagination.is_some() && endpoint.response.records.is_none() {
                self.error(format!("{path}.pagination"), "pagination needs response.records");
            }
            let slots: BTreeSet<&str> = endpoint
                .url
                .segments
                .iter()
                .filter_map(|s| if let UrlSegment::Slot(n) = s { Some(n.as_str()) } else { None })
                .collect();
            let path_params: BTreeSet<&str> =
                endpoint.params.iter().filter(|p| p.placement == Placement::Path).map(|p| p.name.as_str()).collect();
            for missing in slots.difference(&path_params) {
                self.error(format!("{path}.url"), format!("slot {{{missing}}} has no path parameter"));
            }
            for extra in path_params.difference(&slots) {
                self.error(
                    format!("{path}.parameters"),
                    format!("path parameter {extra:?} has no {{{extra}}} slot in the URL"),
                );
            }
            let chain = chain_of(&endpoint.name, &endpoints);
            for (j, param) in endpoint.params.iter().enumerate() {
                for expr in param_exprs(&param.value) {
                    for r in expr.references() {
                        let ppath = format!("{path}.parameters[{j}]");
                        self.check_reference(t, endpoint, &r.source, &ppath, &chain, &endpoints, &field_names);
                    }
                }
            }
        }

        let has = |trigger: Trigger| seen_triggers.contains_key(&trigger);
        for call_trigger in [Trigger::CallLogComplete, Trigger::CallLogFind] {
            if has(call_trigger) && !has(Trigger::CallLogCreate) {
                self.error("endpoints", format!("{} needs a call.log.create endpoint too", call_trigger.as_str()));
            }
        }
        // A company search serves the contact search: it finds companies, then their contacts.
        if has(Trigger::CompanySearch) != has(Trigger::CompanyContacts) {
            self.error("endpoints", "company.search and company.contacts work as a pair: add both, or neither");
        }
        if has(Trigger::CompanySearch) && !has(Trigger::ContactSearch) {
            self.error("endpoints", "company.search extends contact.search; add a contact.search endpoint");
        }
        if t.kind == TemplateType::Sms && !has(Trigger::SmsSend) {
            self.error("endpoints", "an sms template needs an endpoint with trigger sms.send");
        }
        for r in t.contact.id_prefix.iter().flat_map(|e| e.references()) {
            match &r.source {
                Source::Field(_) => self.check_field_reference("contact.id_prefix", &r.source, &field_names),
                other => self.error("contact.id_prefix", format!("cannot use {{{{{other}}}}} here; use field values")),
            }
        }
        let lookups = t.card.company.iter().map(|l| ("card.company".to_owned(), l));
        let lookups = lookups.chain(t.card.owner.iter().map(|l| ("card.owner".to_owned(), l)));
        let lookups =
            lookups.chain(t.card.figures.iter().enumerate().map(|(i, f)| (format!("card.figures[{i}]"), &f.lookup)));
        for (path, lookup) in lookups {
            match endpoints.get(lookup.endpoint.as_str()) {
                None => {
                    self.error(join(&path, "endpoint"), format!("references undefined endpoint {:?}", lookup.endpoint))
                }
                // A card only reads.
                Some((_, e)) if e.kind != EndpointKind::GetData => {
                    self.error(join(&path, "endpoint"), format!("{:?} is not a get_data endpoint", lookup.endpoint))
                }
                Some((_, e)) => {
                    for (name, _) in &lookup.inputs {
                        if let Some(trigger) = e.trigger.filter(|t| !t.inputs().contains(&name.as_str())) {
                            self.error(
                                join(&join(&path, "inputs"), name),
                                format!("{} supplies no input.{name}", trigger.as_str()),
                            );
                        }
                    }
                }
            }
        }
        if let Some(url) = &t.contact.url {
            for r in url.references() {
                if !matches!(r.source, Source::Host | Source::Field(_) | Source::Input(_)) {
                    self.error("contact.url", format!("cannot use {{{{{}}}}} in a record link", r.source));
                }
            }
        }
    }

    fn check_trigger(&mut self, t: &Template, endpoint: &Endpoint, trigger: Trigger, path: &str) {
        let sms = trigger == Trigger::SmsSend;
        if sms != (t.kind == TemplateType::Sms) && trigger != Trigger::ConnectionCheck {
            self.error(
                format!("{path}.trigger"),
                format!("{} does not belong in a {:?} template", trigger.as_str(), t.kind),
            );
        }
        let needs = match trigger {
            Trigger::ContactSearch
            | Trigger::ContactFindByPhone
            | Trigger::ContactActivities
            | Trigger::ContactChanges
            | Trigger::CompanySearch
            | Trigger::CompanyContacts => endpoint.response.records.is_none().then_some("response.records"),
            Trigger::NoteCreate | Trigger::TicketCreate | Trigger::CallLogCreate | Trigger::CallLogFind => {
                endpoint.response.id.is_none().then_some("response.id")
            }
            Trigger::ContactCreate => (endpoint.response.id.is_none() && endpoint.response.record.is_none())
                .then_some("response.record (or response.id)"),
            _ => None,
        };
        if let Some(needs) = needs {
            self.error(format!("{path}.response"), format!("{} needs {needs}", trigger.as_str()));
        }
        let contact_triggers = [
            Trigger::ContactSearch,
            Trigger::ContactFindByPhone,
            Trigger::ContactGet,
            Trigger::ContactChanges,
            Trigger::CompanyContacts,
        ];
        if contact_triggers.contains(&trigger) && t.contact.id.is_none() {
            self.error("contact.id", format!("{} needs the contact mapping's id", trigger.as_str()));
        }
        if trigger == Trigger::CompanySearch {
            for (key, pointer) in [("company.id", &t.company.id), ("company.name", &t.company.name)] {
                if pointer.is_none() {
                    self.error(key, "company.search needs the company mapping's id and name");
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_reference(
        &mut self,
        t: &Template,
        endpoint: &Endpoint,
        source: &Source,
        path: &str,
        chain: &[String],
        endpoints: &HashMap<&str, (usize, &Endpoint)>,
        fields: &HashMap<&str, &FieldDef>,
    ) {
        match source {
            Source::Host | Source::NowUnix | Source::NowIso | Source::Field(_) | Source::Credential(_) => {
                self.check_field_reference(path, source, fields)
            }
            Source::Page if endpoint.pagination.is_none() => {
                self.error(path, "{{page}} needs a pagination block on the endpoint")
            }
            Source::Page => {}
            Source::Step(e, o) => self.check_step_output(path, e, o, chain, endpoints),
            Source::Auth(name) => match &t.auth {
                None => self.error(path, format!("references auth.{name} but the template has no auth block")),
                Some(auth) if endpoint.kind == EndpointKind::Auth => self
                    .error(path, format!("auth endpoints cannot use auth.{name}: they produce it ({})", auth.endpoint)),
                Some(auth) => {
                    let known = name == "token"
                        || endpoints.get(auth.endpoint.as_str()).is_some_and(|(_, e)| e.outputs.contains_key(name));
                    if !known {
                        self.error(
                            path,
                            format!(
                                "references undefined output auth.{name} (endpoint {:?} has no such output)",
                                auth.endpoint
                            ),
                        );
                    }
                }
            },
            Source::Input(name) => match endpoint.trigger {
                Some(trigger) if !trigger.inputs().contains(&name.as_str()) => self.error(
                    path,
                    format!(
                        "{} supplies no input.{name}; it supplies {}",
                        trigger.as_str(),
                        trigger.inputs().join(", ")
                    ),
                ),
                None if endpoint.kind == EndpointKind::Auth => self.error(path, "auth endpoints have no caller input"),
                _ => {}
            },
        }
    }

    fn check_field_reference(&mut self, path: &str, source: &Source, fields: &HashMap<&str, &FieldDef>) {
        match source {
            Source::Field(name) => match fields.get(name.as_str()) {
                None => self.error(path, format!("references undefined field {name:?}")),
                Some(f) if f.secret => {
                    self.error(path, format!("field {name:?} is secret; use {{{{credential.{name}}}}}"))
                }
                _ => {}
            },
            Source::Credential(name) => match fields.get(name.as_str()) {
                None => self.error(path, format!("references undefined field {name:?}")),
                Some(f) if !f.secret => {
                    self.error(path, format!("field {name:?} is not secret; use {{{{field.{name}}}}}"))
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn check_step_output(
        &mut self,
        path: &str,
        step: &str,
        output: &str,
        chain: &[String],
        endpoints: &HashMap<&str, (usize, &Endpoint)>,
    ) {
        match endpoints.get(step) {
            None => self.error(path, format!("references undefined endpoint {step:?}")),
            Some((_, e)) if !e.outputs.contains_key(output) => {
                self.error(path, format!("references undefined output steps.{step}.{output}"))
            }
            Some(_) if !chain.iter().any(|s| s == step) => {
                self.error(path, format!("steps.{step} does not run before this point (add it to \"after\")"))
            }
            _ => {}
        }
    }
}

fn param_exprs(value: &ParamValue) -> Vec<&Expr> {
    fn walk<'a>(json: &'a JsonTemplate, out: &mut Vec<&'a Expr>) {
        match json {
            JsonTemplate::Text(e) => out.push(e),
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Array(items) => items.iter().for_each(|i| walk(i, out)),
            JsonTemplate::Object(entries) => entries.iter().for_each(|(_, v)| walk(v, out)),
        }
    }
    match value {
        ParamValue::Expr(e) => vec![e],
        ParamValue::Md5 { parts, .. } => parts.iter().collect(),
        ParamValue::Json(json) => {
            let mut out = Vec::new();
            walk(json, &mut out);
            out
        }
    }
}

/// The endpoint and every auth step that runs before it (its `after` closure), in run order.
pub(super) fn chain_of(name: &str, endpoints: &HashMap<&str, (usize, &Endpoint)>) -> Vec<String> {
    fn visit(name: &str, endpoints: &HashMap<&str, (usize, &Endpoint)>, seen: &mut Vec<String>, depth: usize) {
        if depth > 32 || seen.iter().any(|s| s == name) {
            return;
        }
        if let Some((_, e)) = endpoints.get(name) {
            for step in &e.after {
                visit(step, endpoints, seen, depth + 1);
            }
        }
        seen.push(name.to_owned());
    }
    let mut seen = Vec::new();
    visit(name, endpoints, &mut seen, 0);
    seen
}

fn find_cycle(start: &str, endpoints: &HashMap<&str, (usize, &Endpoint)>) -> Option<Vec<String>> {
    fn dfs(
        node: &str,
        start: &str,
        endpoints: &HashMap<&str, (usize, &Endpoint)>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        let (_, endpoint) = endpoints.get(node)?;
        for next in &endpoint.after {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if path.iter().any(|p| p == next) || path.len() > 32 {
                continue;
            }
            path.push(next.clone());
            if let Some(cycle) = dfs(next, start, endpoints, path) {
                return Some(cycle);
            }
            path.pop();
        }
        None
    }
    let mut path = vec![start.to_owned()];
    dfs(start, start, endpoints, &mut path)
}
