//! Routing, transport and envelopes (contract §1, §9): how `webservice.php` reads its
//! parameters, which operations exist, and how results and failures are rendered.
//!
//! PHP semantics reproduced here: `$_GET` always comes from the query string; `$_POST` only
//! exists for POST requests with a form body; `operation`/`sessionName` are read from
//! `$_REQUEST` (body over query string); every other parameter from `$_GET` for GET-type
//! operations and `$_POST` for POST-type ones; `""` and `"0"` are missing (PHP falsy).

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::{self, Failure, WsResult};
use super::faults::{self, Fault};
use super::json::Out;
use super::modules;
use super::records::{Fields, Writer};
use super::sync::{self, SyncRequest};
use super::translate;
use super::vtql::{self, Row};
use super::{Install, State as SimState, VtigerSim};

pub(crate) fn router(sim: VtigerSim) -> Router {
    let path = format!("{}/webservice.php", sim.inner.base_path);
    Router::new().route(&path, get(webservice).post(webservice)).with_state(sim)
}

/// Request parameters as PHP parses them (the last occurrence of a name wins).
type Params = HashMap<String, String>;

fn parse_params(raw: &[u8]) -> Params {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// A parameter, or `None` when absent or PHP-falsy (`""`, `"0"`).
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.get(name).map(String::as_str).filter(|v| !v.is_empty() && *v != "0")
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// The text fields of a `multipart/form-data` body (file parts go to `$_FILES`, not here).
fn parse_multipart(headers: &HeaderMap, body: &[u8]) -> Params {
    let boundary = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| {
        v.split(';').skip(1).find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_owned())
        })
    });
    let Some(boundary) = boundary.filter(|b| !b.is_empty()) else {
        return Params::new();
    };
    let text = String::from_utf8_lossy(body);
    let mut params = Params::new();
    for part in text.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        let Some(disposition) = head.split("\r\n").find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
        else {
            continue;
        };
        let attrs: Vec<&str> = disposition.split(';').map(str::trim).collect();
        if attrs.iter().any(|a| a.starts_with("filename=")) {
            continue;
        }
        if let Some(name) = attrs.iter().find_map(|a| a.strip_prefix("name=")) {
            params.insert(name.trim_matches('"').to_owned(), value.to_owned());
        }
    }
    params
}

/// Apache's answer to an over-long request line.
fn request_uri_too_long() -> Response {
    (
        axum::http::StatusCode::URI_TOO_LONG,
        [(header::CONTENT_TYPE, "text/html; charset=iso-8859-1")],
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>414 Request-URI Too Long</title>\n</head><body>\n<h1>Request-URI Too Long</h1>\n<p>The requested URL's length exceeds the capacity\nlimit for this server.<br />\n</p>\n</body></html>\n",
    )
        .into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GetChallenge,
    Login,
    Logout,
    ListTypes,
    Describe,
    Retrieve,
    Create,
    Update,
    Revise,
    Delete,
    Query,
    Sync,
    GetTranslation,
}

impl Op {
    fn lookup(name: &str, gettranslation: bool) -> Option<Op> {
        Some(match name.to_ascii_lowercase().as_str() {
            "getchallenge" => Op::GetChallenge,
            "login" => Op::Login,
            "logout" => Op::Logout,
            "listtypes" => Op::ListTypes,
            "describe" => Op::Describe,
            "retrieve" => Op::Retrieve,
            "create" => Op::Create,
            "update" => Op::Update,
            "revise" => Op::Revise,
            "delete" => Op::Delete,
            "query" => Op::Query,
            "sync" => Op::Sync,
            "gettranslation" if gettranslation => Op::GetTranslation,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::GetChallenge => "getchallenge",
            Op::Login => "login",
            Op::Logout => "logout",
            Op::ListTypes => "listtypes",
            Op::Describe => "describe",
            Op::Retrieve => "retrieve",
            Op::Create => "create",
            Op::Update => "update",
            Op::Revise => "revise",
            Op::Delete => "delete",
            Op::Query => "query",
            Op::Sync => "sync",
            Op::GetTranslation => "gettranslation",
        }
    }

    /// GET-type operations read their parameters from the query string only.
    fn reads_query_string(self) -> bool {
        matches!(self, Op::GetChallenge | Op::ListTypes | Op::Describe | Op::Retrieve | Op::Query | Op::Sync)
    }

    fn needs_session(self) -> bool {
        !matches!(self, Op::GetChallenge | Op::Login)
    }
}

fn envelope(result: WsResult<Out>) -> Response {
    let body = match result {
        Ok(out) => Out::obj([("success", Out::Bool(true)), ("result", out)]),
        Err(Failure::Ws { code, message }) => Out::obj([
            ("success", Out::Bool(false)),
            ("error", Out::obj([("message", Out::Str(message)), ("code", Out::str(code))])),
        ]),
        Err(Failure::Fatal) => return faults::http_500_empty(),
    };
    ([(header::CONTENT_TYPE, "application/json")], body.to_json_string()).into_response()
}

async fn webservice(
    State(sim): State<VtigerSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.count_request();
    match sim.inner.faults.take() {
        Fault::None => {}
        Fault::Latency(delay) => tokio::time::sleep(delay).await,
        Fault::Http500Empty => return faults::http_500_empty(),
        Fault::DropConnection => return faults::dropped_connection(),
    }
    // Apache refuses long request lines before PHP runs (`LimitRequestLine`); the request line
    // is `METHOD SP target SP HTTP/1.1`.
    let request_line = method.as_str().len() + uri.to_string().len() + " HTTP/1.1".len() + 1;
    if request_line > sim.inner.max_request_line {
        return request_uri_too_long();
    }
    // Vtiger cannot read JSON bodies and dies on them.
    if content_type_is(&headers, "application/json") {
        return faults::http_500_empty();
    }
    let query = parse_params(uri.query().unwrap_or("").as_bytes());
    // PHP fills $_POST only for POST requests with a form or multipart body.
    let form = if method != Method::POST {
        Params::new()
    } else if content_type_is(&headers, "application/x-www-form-urlencoded") {
        parse_params(&body)
    } else if content_type_is(&headers, "multipart/form-data") {
        parse_multipart(&headers, &body)
    } else {
        Params::new()
    };
    let from_request = |name: &str| param(&form, name).or_else(|| param(&query, name)).map(str::to_owned);
    let Some(op) = from_request("operation").and_then(|name| Op::lookup(&name, sim.inner.gettranslation)) else {
        // An unknown operation is an uncaught exception in webservice.php.
        tracing::debug!("vtiger sim: unknown or missing operation");
        return faults::http_500_empty();
    };
    let session_name = from_request("sessionName").filter(|s| !s.eq_ignore_ascii_case("null"));
    let input = if op.reads_query_string() { &query } else { &form };
    let result = sim.call(op, session_name.as_deref(), input, &query, &form);
    match &result {
        Ok(_) => tracing::debug!(operation = op.name(), "vtiger sim: ok"),
        Err(Failure::Ws { code, .. }) => {
            tracing::debug!(operation = op.name(), code, "vtiger sim: error envelope");
        }
        Err(Failure::Fatal) => tracing::debug!(operation = op.name(), "vtiger sim: HTTP 500"),
    }
    envelope(result)
}

impl VtigerSim {
    /// Runs one operation under the state lock. Never awaits, so the lock is never held across
    /// a suspension point.
    fn call(&self, op: Op, session_name: Option<&str>, input: &Params, query: &Params, form: &Params) -> WsResult<Out> {
        let now = self.inner.clock.now_secs();
        let mut state = self.lock();
        state.counters.count_operation(op.name());
        match op {
            Op::GetChallenge | Op::Login => {
                // Counted under the name the client used, wherever it put it.
                let named = param(input, "username")
                    .or_else(|| param(query, "username"))
                    .or_else(|| param(form, "username"))
                    .map(|u| state.auth.canonical_username(u));
                if let Some(user) = named {
                    state.counters.count_user(op == Op::Login, &user);
                }
            }
            _ => {}
        }
        let user_id = if op.needs_session() {
            let name = session_name.ok_or_else(error::authentication_required)?;
            Some(state.auth.session_user(name).ok_or_else(error::invalid_session)?)
        } else {
            None
        };
        let user_id = user_id.unwrap_or(super::auth::ADMIN_USER_ID);
        let p = |name: &str| param(input, name);
        let state = &mut *state;
        let writer = Writer { auth: &state.auth, user_id, now };
        match op {
            Op::GetChallenge => state.auth.getchallenge(p("username"), now),
            Op::Login => state.auth.login(p("username"), p("accessKey"), now),
            Op::Logout => match self.inner.logout {
                // Stock 8.2 on PHP 8: the handler dies on named-argument binding.
                Install::Stock => Err(Failure::Fatal),
                Install::Patched => {
                    if let Some(name) = session_name {
                        state.auth.end_session(name);
                    }
                    Ok(Out::obj([("message", Out::str("successfull"))]))
                }
            },
            Op::ListTypes => {
                let types: Option<Vec<String>> = p("fieldTypeList").and_then(|t| serde_json::from_str(t).ok());
                Ok(modules::listtypes(types.as_deref()))
            }
            Op::Describe => {
                let name = p("elementType").unwrap_or("");
                modules::by_name(name)
                    .map(|schema| modules::describe(schema, |field| state.store.is_mandatory(schema, field)))
                    .ok_or_else(|| error::denied_for_name(name))
            }
            Op::Retrieve => state.store.retrieve(p("id"), &state.auth),
            Op::Create => state.store.create(p("elementType"), p("element"), writer),
            Op::Update => state.store.update(p("element"), writer),
            Op::Revise => state.store.revise(p("element"), writer),
            Op::Delete => state.store.delete(p("id"), writer),
            Op::Query => {
                let text = p("query").ok_or_else(error::denied_for_query)?;
                run_query(state, text, self.inner.shuffle_ties)
            }
            Op::Sync => match self.inner.sync {
                // Stock 8.2 on PHP 8: named-argument binding plus the missing `syncType`.
                Install::Stock => Err(Failure::Fatal),
                Install::Patched => sync::sync(
                    &state.store,
                    &SyncRequest {
                        modified_time: p("modifiedTime"),
                        element_type: p("elementType"),
                        sync_type: p("syncType"),
                        user_id,
                    },
                ),
            },
            Op::GetTranslation => Ok(translate::gettranslation(p("totranslate"), p("language"))),
        }
    }
}

/// Parses and runs a VTQL query over the module's live rows (Users come from the user table).
fn run_query(state: &SimState, text: &str, shuffle_ties: bool) -> WsResult<Out> {
    let parsed = vtql::parse(text)?;
    if parsed.schema.name == modules::USERS.name {
        let users: Vec<(u64, Fields)> = state.auth.users().iter().map(|u| (u.id, u.fields())).collect();
        let rows = users.iter().map(|(crmid, fields)| Row { crmid: *crmid, fields }).collect();
        return Ok(vtql::execute(&parsed, rows, shuffle_ties));
    }
    let rows = state.store.live(parsed.schema).map(|(crmid, r)| Row { crmid, fields: &r.fields }).collect();
    Ok(vtql::execute(&parsed, rows, shuffle_ties))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falsy_parameters_are_missing() {
        let p = parse_params(b"a=&b=0&c=00&d=x&d=y");
        assert_eq!(param(&p, "a"), None);
        assert_eq!(param(&p, "b"), None);
        assert_eq!(param(&p, "c"), Some("00"));
        assert_eq!(param(&p, "d"), Some("y"));
        assert_eq!(param(&p, "e"), None);
    }

    #[test]
    fn multipart_text_fields_are_parameters() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("multipart/form-data; boundary=XyZ"));
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"operation\"\r\n\r\nlogin\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"element\"\r\n\r\n{\"a\":\"b\r\nc\"}\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n\r\ndata\r\n\
                    --XyZ--\r\n";
        let p = parse_multipart(&headers, body.as_bytes());
        assert_eq!(param(&p, "operation"), Some("login"));
        assert_eq!(param(&p, "element"), Some("{\"a\":\"b\r\nc\"}"));
        assert_eq!(param(&p, "f"), None);
        assert!(parse_multipart(&HeaderMap::new(), body.as_bytes()).is_empty());
        assert!(parse_multipart(&headers, b"garbage").is_empty());
    }

    #[test]
    fn operation_names_are_case_insensitive() {
        assert_eq!(Op::lookup("GetChallenge", false), Some(Op::GetChallenge));
        assert_eq!(Op::lookup("QUERY", false), Some(Op::Query));
        assert_eq!(Op::lookup("gettranslation", false), None);
        assert_eq!(Op::lookup("gettranslation", true), Some(Op::GetTranslation));
        assert_eq!(Op::lookup("convertlead", true), None);
    }
}
