//! The one route, `/{lang}/api/{method}`, and the checks every call goes through (see the
//! module reference for their order).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use super::store::{Import, Refusal, invalid_arg};
use super::{AccountState, Fault, Inner};
use crate::support::lock;

type Shared = Arc<Inner>;

pub(super) fn router(inner: Shared) -> Router {
    Router::new().route("/{lang}/api/{method}", any(call)).fallback(|| async { not_found() }).with_state(inner)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")], "<html><body><h1>404 Not Found</h1></body></html>")
        .into_response()
}

fn ok(result: Value) -> Response {
    axum::Json(json!({ "result": result })).into_response()
}

fn error(code: &str, message: &str) -> Response {
    let mut body = json!({"error": message, "code": code});
    if matches!(code, "unspecified" | "invalid_api_key") {
        body["result"] = json!("");
    }
    axum::Json(body).into_response()
}

fn refused(refusal: Refusal) -> Response {
    error(refusal.code, &refusal.message)
}

fn nginx_page(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

/// Query and form arguments, the body's after the query's (a later value wins on lookup).
struct Args(Vec<(String, String)>);

impl Args {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<bool, Refusal> {
        match self.get(key).map(str::trim) {
            None | Some("" | "0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(invalid_arg(format!("{key} must be 0 or 1, not \"{other}\""))),
        }
    }

    /// `name[i]` values by index; `None` when there are none.
    fn indexed(&self, name: &str) -> Result<Option<Vec<String>>, Refusal> {
        let prefix = format!("{name}[");
        let mut found = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix(&prefix).and_then(|r| r.strip_suffix(']')) else { continue };
            let i: usize = rest.parse().map_err(|_| invalid_arg(format!("{k}: the index must be a number")))?;
            found.insert(i, v.clone());
        }
        contiguous(name, found)
    }

    /// `data[r][c]` as rows of cells.
    fn table(&self, name: &str) -> Result<Vec<Vec<String>>, Refusal> {
        let prefix = format!("{name}[");
        let mut rows: BTreeMap<usize, BTreeMap<usize, String>> = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix(&prefix) else { continue };
            let parsed = rest
                .strip_suffix(']')
                .and_then(|r| r.split_once("]["))
                .and_then(|(r, c)| Some((r.parse::<usize>().ok()?, c.parse::<usize>().ok()?)));
            let (r, c) = parsed.ok_or_else(|| invalid_arg(format!("{k}: expected {name}[row][column]")))?;
            rows.entry(r).or_default().insert(c, v.clone());
        }
        let rows = contiguous(name, rows)?.unwrap_or_default();
        rows.into_iter()
            .enumerate()
            .map(|(r, cells)| {
                let last = cells.keys().next_back().copied().unwrap_or(0);
                (0..=last)
                    .map(|c| cells.get(&c).cloned().ok_or_else(|| invalid_arg(format!("{name}[{r}][{c}] is missing"))))
                    .collect()
            })
            .collect()
    }
}

fn contiguous<T>(name: &str, found: BTreeMap<usize, T>) -> Result<Option<Vec<T>>, Refusal> {
    if found.is_empty() {
        return Ok(None);
    }
    if found.keys().enumerate().any(|(i, k)| i != *k) {
        return Err(invalid_arg(format!("{name}: the indexes must be 0, 1, 2, …")));
    }
    Ok(Some(found.into_values().collect()))
}

async fn call(
    State(inner): State<Shared>,
    Path((lang, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let query_args: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()).into_owned().collect();
    {
        let mut counters = lock(&inner.counters);
        counters.requests += 1;
        if query_args.iter().any(|(k, _)| k == "api_key") {
            counters.keys_in_url += 1;
        }
        *counters.by_method.entry(method.clone()).or_default() += 1;
    }
    if !matches!(lang.as_str(), "en" | "ru" | "ua") {
        return not_found();
    }
    let mut fault = inner.fault.take();
    if fault == Fault::None {
        // `retry_later`, a 503 or a non-JSON body.
        fault = lock(&inner.random).draw(&[Fault::RetryLater, Fault::Status(503), Fault::NonJson]).unwrap_or_default();
    }
    match fault {
        Fault::None | Fault::LostAnswer => {}
        Fault::RetryLater => return error("retry_later", "Temporary failure, please retry later"),
        Fault::IpLimit => {
            return error("api_call_limit_exceeded_for_ip", "API call limit exceeded for this IP address");
        }
        Fault::Status(code) => return nginx_page(code),
        Fault::Hang => return std::future::pending::<Response>().await,
        Fault::NonJson => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>Service temporarily unavailable</body></html>",
            )
                .into_response();
        }
    }
    let mut pairs = query_args;
    pairs.extend(url::form_urlencoded::parse(&body).into_owned());
    let args = Args(pairs);
    let response = answer(&inner, &method, &args);
    if fault == Fault::LostAnswer {
        return std::future::pending::<Response>().await;
    }
    response
}

fn answer(inner: &Inner, method: &str, args: &Args) -> Response {
    if args.get("format") != Some("json") {
        return error("invalid_arg", "format=json is required");
    }
    let key = args.get("api_key").unwrap_or("").trim();
    if key.is_empty() {
        return error("invalid_api_key", "The API key is missing");
    }
    if let Some(limit) = inner.rate_limit {
        let now = tokio::time::Instant::now();
        let mut counters = lock(&inner.counters);
        let window = counters.windows.entry(key.to_owned()).or_default();
        while window.front().is_some_and(|t| now.duration_since(*t) >= inner.rate_window) {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            counters.limited += 1;
            return error(
                "api_call_limit_exceeded_for_api_key",
                &format!("API call limit exceeded: at most {limit} calls per {}", secs(inner.rate_window)),
            );
        }
        window.push_back(now);
    }
    if key != inner.api_key {
        return error("invalid_api_key", "Invalid API key");
    }
    match *lock(&inner.account) {
        AccountState::Active => {}
        AccountState::NotEnoughMoney => return error("not_enough_money", "Not enough money on the account balance"),
        AccountState::AccessDenied => return error("access_denied", "Access to the API is denied for this account"),
    }
    let result = match method {
        "getLists" => Ok(inner.store().lists_json()),
        "getFields" => Ok(inner.store().fields_json()),
        "createList" => inner.store().create_list(args.get("title").unwrap_or("")).map(|id| json!({"id": id})),
        "importContacts" => import(inner, args),
        "exclude" => {
            let contact_type = args.get("contact_type").unwrap_or("");
            let contact = args.get("contact").unwrap_or("");
            inner.store().exclude(contact_type, contact, args.get("list_ids")).map(|()| json!({}))
        }
        "getContact" => match args.get("email").map(str::trim).filter(|e| !e.is_empty()) {
            None => Err(invalid_arg("email is required")),
            Some(email) => match (args.flag("include_lists"), args.flag("include_fields")) {
                (Ok(lists), Ok(fields)) => inner.store().get_contact(email, lists, fields),
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
        },
        "exportContacts" => export(inner, args),
        other => return error("unknown_method", &format!("Unknown method \"{other}\"")),
    };
    match result {
        Ok(value) => ok(value),
        Err(refusal) => refused(refusal),
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

fn import(inner: &Inner, args: &Args) -> Result<Value, Refusal> {
    let columns = args.indexed("field_names")?.ok_or_else(|| invalid_arg("field_names is required"))?;
    let rows = args.table("data")?;
    let import = Import {
        columns,
        rows,
        overwrite_lists: args.flag("overwrite_lists")?,
        overwrite_tags: args.flag("overwrite_tags")?,
    };
    let now = inner.clock.now_millis().div_euclid(1000);
    let mut store = inner.store();
    store.check_import(&import)?;
    Ok(store.import(&import, now))
}

fn export(inner: &Inner, args: &Args) -> Result<Value, Refusal> {
    let number = |key: &str, default: usize| -> Result<usize, Refusal> {
        match args.get(key).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|_| invalid_arg(format!("{key} must be a number, not \"{raw}\""))),
        }
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", super::MAX_EXPORT_ROWS)?;
    if limit > super::MAX_EXPORT_ROWS {
        return Err(invalid_arg(format!("limit must be at most {}", super::MAX_EXPORT_ROWS)));
    }
    let list_id = match args.get("list_id").map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| invalid_arg(format!("List \"{raw}\" not found")))?),
    };
    let fields = args.indexed("field_names")?.unwrap_or_else(|| vec!["email".into(), "email_status".into()]);
    inner.store().export(list_id, &fields, offset, limit)
}
