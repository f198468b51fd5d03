//! Routes and handlers. One middleware ([`gate`]) does what Kommo's edge does before any
//! handler: the IP block, the rate limit, the `www.` refusal and injected API faults.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::oauth::{CodeError, TokenError};
use super::problem::{FieldError, Problem, hal, no_content, unauthorized, validation};
use super::store::{self, Contact, FieldValue, Store, USERS, With, field, field_by_code, full_name, replace_field};
use super::webhooks::{EVENTS, MAX_WEBHOOKS};
use super::{Action, ApiFault, Consent, Inner, TokenFault};
use crate::support::lock;

type Shared = Arc<Inner>;
type Reply = Result<Response, Problem>;

pub(crate) fn router(inner: Shared) -> Router {
    Router::new()
        .route("/oauth", get(authorize))
        .route("/oauth2/access_token", axum::routing::post(token))
        .route("/api/v4/account", get(account))
        .route("/api/v4/contacts", get(list_contacts).post(create_contacts).patch(patch_contacts))
        .route("/api/v4/contacts/{id}", get(get_contact).patch(patch_contact))
        .route("/api/v4/contacts/{id}/notes", get(list_notes).post(add_notes))
        .route("/api/v4/companies/{id}", get(get_company))
        .route("/api/v4/tasks", get(list_tasks))
        .route("/api/v4/webhooks", get(list_webhooks).post(subscribe).delete(unsubscribe))
        .fallback(|| async { Problem::new(404, "Not found") })
        .method_not_allowed_fallback(|| async { Problem::new(405, "Method not allowed") })
        .layer(middleware::from_fn_with_state(inner.clone(), gate))
        .with_state(inner)
}

// --- the edge ----------------------------------------------------------------------------

const NGINX_429: &str = "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n\
<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn nginx_page(status: StatusCode) -> Response {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n\
         <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

fn blocked() -> Response {
    Problem::new(403, "IP blocked: the request rate limit was exceeded repeatedly; try again later").into_response()
}

/// §3, in this order: an IP block refuses everything (`/oauth` included: it is the same IP
/// for the simulator); the API and the token endpoint share one rolling-second budget; a 429
/// over `block_after` within 60 s starts a block (that request still gets its 429, the next
/// ones 403); `www.` hosts are refused for the API and the token endpoint; then API faults.
/// Refused requests do not use up the budget. There is no `Retry-After` header: the contract
/// only names `retry_after` in the body.
async fn gate(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let api = path == "/api/v4" || path.starts_with("/api/v4/");
    let limited = api || path == "/oauth2/access_token";
    let now = tokio::time::Instant::now();
    {
        let mut gate = lock(&inner.gate);
        if api {
            gate.api_times.push(std::time::Instant::now());
        }
        match gate.blocked_until {
            Some(until) if now < until => return blocked(),
            Some(_) => gate.blocked_until = None,
            None => {}
        }
        if let (true, Some(limit)) = (limited, inner.rate_limit) {
            while gate.accepted.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
                gate.accepted.pop_front();
            }
            if gate.accepted.len() >= limit as usize {
                gate.rejected_429 += 1;
                gate.violations.push_back(now);
                while gate.violations.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
                    gate.violations.pop_front();
                }
                if gate.violations.len() > inner.block_after as usize {
                    gate.blocked_until = Some(now + inner.block_for);
                    gate.violations.clear();
                }
                return Problem::new(
                    429,
                    "You have sent too many requests in a given amount of time. Please try again later.",
                )
                .with("retry_after", json!(inner.retry_after_secs))
                .into_response();
            }
            gate.accepted.push_back(now);
        }
    }
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if limited && host.to_ascii_lowercase().starts_with("www.") {
        let detail = format!("API calls on {host} are not allowed; use https://{}", inner.account_domain());
        return Problem::new(404, detail).into_response();
    }
    if api {
        let mut fault = inner.api_fault.take();
        if fault == ApiFault::None {
            // A 500, a 503 page, a non-JSON 429 or no answer.
            let random = [ApiFault::Status(500), ApiFault::Status(503), ApiFault::NonJson429, ApiFault::Hang];
            fault = lock(&inner.random_api_faults).draw(&random).unwrap_or_default();
        }
        match fault {
            ApiFault::None => {}
            ApiFault::Hang => return std::future::pending::<Response>().await,
            ApiFault::NonJson429 => {
                return (StatusCode::TOO_MANY_REQUESTS, [(header::CONTENT_TYPE, "text/html")], NGINX_429)
                    .into_response();
            }
            ApiFault::Status(code) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if matches!(code, 502..=504) {
                    return nginx_page(status);
                }
                return Problem::new(code, "Internal error").into_response();
            }
        }
    }
    next.run(request).await
}

/// A valid bearer token (§3): access token of the live pair, or a long-lived token.
struct Authed;

impl FromRequestParts<Shared> for Authed {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, inner: &Shared) -> Result<Self, Problem> {
        let token = bearer(&parts.headers).ok_or_else(|| unauthorized("Authorization header is required"))?;
        let now = inner.now_millis();
        let outcome = inner.lock().oauth.authenticate(token, now);
        outcome.map(|()| Authed).map_err(|e| unauthorized(e.detail()))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A numeric path id; anything else names no entity (404).
struct EntityId(i64);

impl FromRequestParts<Shared> for EntityId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Problem> {
        let Path(raw) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|_| Problem::new(404, "Not found"))?;
        raw.parse().map(EntityId).map_err(|_| Problem::new(404, "Not found"))
    }
}

/// A JSON body. Our reading: Kommo's API takes JSON only, so another media type → 415.
fn json_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, Problem> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence != "application/json" && !(essence.starts_with("application/") && essence.ends_with("+json")) {
        return Err(Problem::new(415, "Content-Type must be application/json"));
    }
    serde_json::from_slice(bytes).map_err(|e| Problem::new(400, format!("Invalid JSON: {e}")))
}

// --- query parameters ----------------------------------------------------------------------

struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<&str>) -> Params {
        Params(url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn int(&self, key: &str) -> Result<Option<i64>, Problem> {
        self.get(key)
            .map(|v| v.trim().parse::<i64>().map_err(|_| Problem::new(400, format!("{key} must be an integer"))))
            .transpose()
    }

    fn page(&self) -> Result<usize, Problem> {
        match self.int("page")? {
            None => Ok(1),
            Some(p) if p >= 1 => Ok(p as usize),
            Some(_) => Err(Problem::new(400, "page must be 1 or more")),
        }
    }

    /// §4: at most 250; above → 422 "Limit 250 per page".
    fn limit(&self) -> Result<usize, Problem> {
        match self.int("limit")? {
            None => Ok(50),
            Some(l) if l > 250 => Err(Problem::new(422, "Limit 250 per page")),
            Some(l) if l >= 1 => Ok(l as usize),
            Some(_) => Err(Problem::new(400, "limit must be 1 or more")),
        }
    }

    /// `key`, `key[]`, `key[N]` (PHP arrays), each an integer.
    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, Problem> {
        let mut out = Vec::new();
        let mut seen = false;
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix(key) else { continue };
            let array = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
            if rest.is_empty() || array.is_some_and(|i| i.chars().all(|c| c.is_ascii_digit())) {
                seen = true;
                for part in v.split(',') {
                    out.push(part.trim().parse().map_err(|_| Problem::new(400, format!("{k} must be integers")))?);
                }
            }
        }
        Ok(seen.then_some(out))
    }

    fn range(&self, key: &str) -> Result<(Option<i64>, Option<i64>), Problem> {
        Ok((self.int(&format!("{key}[from]"))?, self.int(&format!("{key}[to]"))?))
    }

    /// `order[<field>]=asc|desc`; other fields or directions → 400.
    fn order(&self, fields: &[&str]) -> Result<Option<(String, bool)>, Problem> {
        for (k, v) in &self.0 {
            let Some(name) = k.strip_prefix("order[").and_then(|r| r.strip_suffix(']')) else { continue };
            if !fields.contains(&name) {
                return Err(Problem::new(400, format!("Sorting by {name} is not supported")));
            }
            let desc = match v.to_ascii_lowercase().as_str() {
                "asc" => false,
                "desc" => true,
                _ => return Err(Problem::new(400, format!("{k} must be asc or desc"))),
            };
            return Ok(Some((name.to_owned(), desc)));
        }
        Ok(None)
    }

    fn with(&self) -> Result<With, Problem> {
        let mut with = With::default();
        for part in self.get("with").unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "leads" => with.leads = true,
                "customers" => with.customers = true,
                "catalog_elements" => with.catalog_elements = true,
                other => return Err(Problem::new(400, format!("with={other} is not supported for contacts"))),
            }
        }
        Ok(with)
    }

    /// The same query with `page` replaced, for `_links`.
    fn href(&self, base: &str, path: &str, page: usize) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.0.iter().filter(|(k, _)| k != "page") {
            form.append_pair(k, v);
        }
        form.append_pair("page", &page.to_string());
        format!("{base}{path}?{}", form.finish())
    }
}

/// One page of a list, or 204 past the end (§4). `_links.next` only when another page exists.
/// Only the page's items are turned into JSON (`to_json`): a page of a large account costs a
/// page, not the account.
#[allow(clippy::too_many_arguments)]
fn page_of<T>(
    params: &Params,
    base: &str,
    path: &str,
    key: &str,
    items: Vec<T>,
    page: usize,
    limit: usize,
    to_json: impl Fn(T) -> Value,
) -> Response {
    let start = (page - 1).saturating_mul(limit);
    if start >= items.len() {
        return no_content();
    }
    let more = items.len() > start + limit;
    let slice: Vec<Value> = items.into_iter().skip(start).take(limit).map(to_json).collect();
    let mut links = json!({"self": {"href": params.href(base, path, page)}});
    if more {
        links["next"] = json!({"href": params.href(base, path, page + 1)});
    }
    if page > 1 {
        links["prev"] = json!({"href": params.href(base, path, page - 1)});
    }
    hal(&json!({"_page": page, "_links": links, "_embedded": {key: slice}}))
}

// --- OAuth (§1) -----------------------------------------------------------------------------

fn location(mut url: String, pairs: &[(&str, &str)]) -> Response {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        form.append_pair(k, v);
    }
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&form.finish());
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn browser_error(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], format!("<p>{message}</p>"))
        .into_response()
}

/// `GET /oauth?client_id=&state=&mode=`: the consent screen, answered at once by
/// [`Consent`]. No `redirect_uri` parameter exists: the registered one is used (a
/// `redirect_uri` sent anyway is ignored, as any unknown parameter). `mode` may be absent;
/// another value than `popup`/`post_message` → 400.
async fn authorize(State(inner): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let mut state = inner.lock();
    if params.get("client_id") != Some(state.integration.client_id.as_str()) {
        return browser_error("Integration not found");
    }
    if params.get("mode").is_some_and(|m| m != "popup" && m != "post_message") {
        return browser_error("Unknown mode");
    }
    let client_id = state.integration.client_id.clone();
    let redirect = state.integration.redirect_uri.clone();
    let csrf = params.get("state");
    match state.consent {
        Consent::Approve => {
            let code = state.oauth.new_code(inner.now_millis());
            let referer = inner.account_domain();
            let mut pairs = vec![("code", code.as_str())];
            pairs.extend(csrf.map(|s| ("state", s)));
            pairs.push(("referer", &referer));
            pairs.push(("client_id", &client_id));
            location(redirect, &pairs)
        }
        Consent::Deny => {
            let mut pairs = vec![("error", "access_denied"), ("client_id", client_id.as_str())];
            pairs.extend(csrf.map(|s| ("state", s)));
            location(redirect, &pairs)
        }
    }
}

/// JSON or form body into strings (§1: "both are accepted in practice"). Without a usable
/// content type the body is tried as JSON, then as a form.
fn token_params(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let form = || url::form_urlencoded::parse(body).into_owned().collect::<HashMap<String, String>>();
    if ct.starts_with("application/x-www-form-urlencoded") {
        return form();
    }
    match serde_json::from_slice::<Map<String, Value>>(body) {
        Ok(map) => map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Number(n) => Some((k, n.to_string())),
                _ => None,
            })
            .collect(),
        Err(_) if !ct.contains("json") => form(),
        Err(_) => HashMap::new(),
    }
}

fn bad_request(hint: &str) -> Problem {
    Problem::new(
        400,
        "The request is missing a required parameter, includes an invalid parameter value, or is otherwise malformed",
    )
    .with("hint", json!(hint))
}

async fn token(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let params = token_params(&headers, &body);
    let grant_type = params.get("grant_type").cloned().unwrap_or_default();
    *inner.lock().token_calls.entry(grant_type.clone()).or_default() += 1;
    let fault = inner.token_fault.take();
    match fault {
        TokenFault::Status(code) => return Problem::new(code, "Internal error").into_response(),
        TokenFault::Hang => return std::future::pending::<Response>().await,
        TokenFault::None | TokenFault::DropAfterRotate => {}
    }
    let outcome = exchange(&inner, &params, &grant_type);
    if fault == TokenFault::DropAfterRotate {
        // Unwinding out of the handler ends the connection's task: the socket closes with no
        // answer at all, as when a response is lost. `resume_unwind` skips the panic hook, so
        // nothing is printed.
        std::panic::resume_unwind(Box::new("kommo simulator: TokenFault::DropAfterRotate"));
    }
    match outcome {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// The token endpoint's checks, in order: required parameters and grant type (400), client
/// id and secret (**401**, "Client authentication failed"), `redirect_uri` equal to the
/// registered one (400, our reading), then the code (400, with League OAuth2's hints, which
/// Kommo shows) or the refresh token (401, §1).
fn exchange(inner: &Inner, params: &HashMap<String, String>, grant_type: &str) -> Result<Value, Problem> {
    let get = |key: &str| params.get(key).map(String::as_str).filter(|v| !v.is_empty());
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(bad_request("The authorization grant type is not supported by the authorization server"));
    }
    for key in ["client_id", "client_secret", "redirect_uri"] {
        if get(key).is_none() {
            return Err(bad_request(&format!("Check the `{key}` parameter")));
        }
    }
    let now = inner.now_millis();
    let mut state = inner.lock();
    if get("client_id") != Some(&state.integration.client_id)
        || get("client_secret") != Some(&state.integration.client_secret)
    {
        return Err(Problem::new(401, "Client authentication failed"));
    }
    if get("redirect_uri") != Some(&state.integration.redirect_uri) {
        return Err(bad_request("redirect_uri does not match the integration's redirect URI"));
    }
    let minter = inner.minter(&state.integration.client_id);
    let issued = if grant_type == "authorization_code" {
        let code = get("code").ok_or_else(|| bad_request("Check the `code` parameter"))?;
        state.oauth.exchange(code, &minter, now).map_err(|e| {
            bad_request(match e {
                CodeError::Unknown => "Cannot decrypt the authorization code",
                CodeError::Used => "Authorization code has been revoked",
                CodeError::Expired => "Authorization code has expired",
            })
        })?
    } else {
        let refresh = get("refresh_token").ok_or_else(|| bad_request("Check the `refresh_token` parameter"))?;
        state.oauth.refresh(refresh, &minter, now).map_err(|e: TokenError| unauthorized(e.detail()))?
    };
    Ok(json!({
        "token_type": "Bearer", "expires_in": super::oauth::ACCESS_TTL_SECS,
        "access_token": issued.access, "refresh_token": issued.refresh, "server_time": now.div_euclid(1000),
    }))
}

// --- account, contacts, companies (§4) ---------------------------------------------------

/// Our reading of the public account endpoint.
async fn account(State(inner): State<Shared>, _: Authed) -> Response {
    let base = inner.base_url();
    hal(&json!({
        "id": inner.account_id, "name": "Demo Company", "subdomain": inner.subdomain,
        "created_at": 1_600_000_000, "created_by": 0, "updated_at": 1_700_000_000, "updated_by": 0,
        "current_user_id": store::USER_ADMIN, "country": "PL", "currency": "EUR", "currency_symbol": "€",
        "customers_mode": "disabled", "is_unsorted_on": true, "is_loss_reason_enabled": true,
        "is_helpbot_enabled": false, "is_technical_account": false, "contact_name_display_order": 1,
        "_links": {"self": {"href": format!("{base}/api/v4/account")}},
    }))
}

/// `GET /api/v4/contacts`. Unknown parameters are ignored, as Kommo does (the only leniency);
/// known ones with bad values are 400 (limit over 250: 422).
async fn list_contacts(State(inner): State<Shared>, _: Authed, RawQuery(raw): RawQuery) -> Reply {
    let params = Params::parse(raw.as_deref());
    let (page, limit, with) = (params.page()?, params.limit()?, params.with()?);
    let order = params.order(&["updated_at", "id", "created_at"])?;
    let ids = params.ints("filter[id]")?;
    let responsible = params.ints("filter[responsible_user_id]")?;
    let (updated_from, updated_to) = params.range("filter[updated_at]")?;
    let (created_from, created_to) = params.range("filter[created_at]")?;
    let names: Vec<&str> = params
        .0
        .iter()
        .filter(|(k, _)| k == "filter[name]" || (k.starts_with("filter[name][") && k.ends_with(']')))
        .map(|(_, v)| v.as_str())
        .collect();
    let query = params.get("query").map(str::trim).filter(|q| !q.is_empty());
    let in_range =
        |v: i64, from: Option<i64>, to: Option<i64>| from.is_none_or(|f| v >= f) && to.is_none_or(|t| v <= t);
    let state = inner.lock();
    let mut found: Vec<&Contact> = state
        .store
        .contacts
        .values()
        .filter(|c| ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .filter(|c| responsible.as_ref().is_none_or(|r| r.contains(&c.responsible_user_id)))
        .filter(|c| names.is_empty() || names.contains(&c.name.as_str()))
        .filter(|c| {
            in_range(c.updated_at, updated_from, updated_to) && in_range(c.created_at, created_from, created_to)
        })
        .filter(|c| query.is_none_or(|q| c.matches(q)))
        .collect();
    if let Some((key, desc)) = order {
        found.sort_by_key(|c| match key.as_str() {
            "updated_at" => (c.updated_at, c.id),
            "created_at" => (c.created_at, c.id),
            _ => (c.id, 0),
        });
        if desc {
            found.reverse();
        }
    }
    let base = inner.base_url();
    let to_json = |c: &Contact| state.store.contact_json(c, base, inner.account_id, &with);
    Ok(page_of(&params, base, "/api/v4/contacts", "contacts", found, page, limit, to_json))
}

/// A missing contact is 204 (what Kommo does for missing entities, per community reports).
async fn get_contact(State(inner): State<Shared>, _: Authed, EntityId(id): EntityId, RawQuery(raw): RawQuery) -> Reply {
    let with = Params::parse(raw.as_deref()).with()?;
    let state = inner.lock();
    Ok(match state.store.contact(id) {
        Some(c) => hal(&state.store.contact_json(c, inner.base_url(), inner.account_id, &with)),
        None => no_content(),
    })
}

async fn get_company(State(inner): State<Shared>, _: Authed, EntityId(id): EntityId) -> Response {
    let state = inner.lock();
    match state.store.companies.get(&id) {
        Some(c) => hal(&state.store.company_json(c, inner.base_url(), inner.account_id)),
        None => no_content(),
    }
}

/// A contact write after validation.
#[derive(Debug, Default)]
struct ContactWrite {
    id: Option<i64>,
    request_id: String,
    name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    responsible: Option<i64>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    /// In request order; `None` clears the field.
    fields: Vec<(i64, Option<FieldValue>)>,
    tags: Vec<String>,
    company: Option<Option<i64>>,
}

/// §4: at most 250 entities per request.
const MAX_BATCH: usize = 250;

fn entities(value: Value) -> Result<Vec<Value>, Problem> {
    match value {
        Value::Array(items) if items.is_empty() => Err(Problem::new(400, "The request body must not be empty")),
        Value::Array(items) if items.len() > MAX_BATCH => {
            Err(Problem::new(400, format!("Too many entities: at most {MAX_BATCH} per request")))
        }
        Value::Array(items) => Ok(items),
        _ => Err(Problem::new(400, "The request body must be a JSON array of entities")),
    }
}

fn opt_string(map: &Map<String, Value>, key: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new("InvalidType", key, "This value should be of type string."));
            None
        }
    }
}

fn opt_int(map: &Map<String, Value>, key: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => v.as_i64().or_else(|| {
            errors.push(FieldError::new("InvalidType", key, "This value should be of type int."));
            None
        }),
    }
}

/// `custom_fields_values` in write form (§4): each by `field_id` or `field_code`; multitext
/// values take an `enum_code` of the field (or `enum_id`), WORK when neither is given.
fn parse_fields(value: &Value, errors: &mut Vec<FieldError>) -> Vec<(i64, Option<FieldValue>)> {
    let Some(list) = value.as_array() else {
        errors.push(FieldError::new("InvalidType", "custom_fields_values", "This value should be of type array."));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let path = format!("custom_fields_values.{i}");
        let def = match (entry.get("field_id"), entry.get("field_code")) {
            (Some(id), _) if !id.is_null() => match id.as_i64().and_then(field) {
                Some(def) => def,
                None => {
                    errors.push(FieldError::new(
                        "NotSupportedChoice",
                        format!("{path}.field_id"),
                        "The field does not exist",
                    ));
                    continue;
                }
            },
            (_, Some(code)) if !code.is_null() => match code.as_str().and_then(field_by_code) {
                Some(def) => def,
                None => {
                    errors.push(FieldError::new(
                        "NotSupportedChoice",
                        format!("{path}.field_code"),
                        "The field does not exist",
                    ));
                    continue;
                }
            },
            _ => {
                errors.push(FieldError::new(
                    "NotBlank",
                    format!("{path}.field_id"),
                    "field_id or field_code is required",
                ));
                continue;
            }
        };
        let values = match entry.get("values") {
            None | Some(Value::Null) => {
                out.push((def.id, None));
                continue;
            }
            Some(Value::Array(values)) => values,
            Some(_) => {
                errors.push(FieldError::new(
                    "InvalidType",
                    format!("{path}.values"),
                    "This value should be of type array.",
                ));
                continue;
            }
        };
        let mut stored = Vec::new();
        for (j, v) in values.iter().enumerate() {
            let vpath = format!("{path}.values.{j}");
            let text = match v.get("value") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(Value::Number(n)) if def.kind == "text" => n.to_string(),
                _ => {
                    errors.push(FieldError::new(
                        "NotBlank",
                        format!("{vpath}.value"),
                        "This value should not be blank.",
                    ));
                    continue;
                }
            };
            let enum_id = if def.enums.is_empty() {
                if v.get("enum_code").is_some() || v.get("enum_id").is_some() {
                    errors.push(FieldError::new(
                        "NotSupportedChoice",
                        format!("{vpath}.enum_code"),
                        "The field has no enums",
                    ));
                    continue;
                }
                None
            } else if let Some(code) = v.get("enum_code").filter(|c| !c.is_null()) {
                match code.as_str().and_then(|c| def.enum_id(c)) {
                    Some(e) => Some(e),
                    None => {
                        errors.push(FieldError::new(
                            "NotSupportedChoice",
                            format!("{vpath}.enum_code"),
                            "The value you selected is not a valid choice.",
                        ));
                        continue;
                    }
                }
            } else if let Some(id) = v.get("enum_id").filter(|c| !c.is_null()) {
                match id.as_i64().filter(|e| def.enums.iter().any(|(x, _)| x == e)) {
                    Some(e) => Some(e),
                    None => {
                        errors.push(FieldError::new(
                            "NotSupportedChoice",
                            format!("{vpath}.enum_id"),
                            "The value you selected is not a valid choice.",
                        ));
                        continue;
                    }
                }
            } else {
                def.enum_id("WORK")
            };
            stored.push((text, enum_id));
        }
        out.push((def.id, (!stored.is_empty()).then_some(FieldValue { field_id: def.id, values: stored })));
    }
    out
}

fn parse_contact(
    entity: &Value,
    index: usize,
    patch: bool,
    store: &Store,
) -> Result<ContactWrite, (String, Vec<FieldError>)> {
    let mut errors = Vec::new();
    let fallback_id = index.to_string();
    let Some(map) = entity.as_object() else {
        return Err((fallback_id, vec![FieldError::new("InvalidType", "", "This value should be of type object.")]));
    };
    let request_id = match map.get("request_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => fallback_id,
    };
    let mut write = ContactWrite { request_id, ..ContactWrite::default() };
    if patch {
        match map.get("id").and_then(Value::as_i64) {
            Some(id) if store.contact(id).is_some() => write.id = Some(id),
            Some(_) => errors.push(FieldError::new("NotFound", "id", "Entity not found")),
            None => errors.push(FieldError::new("NotBlank", "id", "This value should not be blank.")),
        }
    }
    write.name = opt_string(map, "name", &mut errors);
    write.first_name = opt_string(map, "first_name", &mut errors);
    write.last_name = opt_string(map, "last_name", &mut errors);
    let named = [&write.name, &write.first_name, &write.last_name]
        .iter()
        .any(|v| v.as_deref().is_some_and(|s| !s.trim().is_empty()));
    if !patch && !named {
        errors.push(FieldError::new("NotBlank", "name", "name, first_name or last_name is required"));
    }
    write.responsible = opt_int(map, "responsible_user_id", &mut errors);
    if write.responsible.is_some_and(|r| !USERS.contains(&r)) {
        errors.push(FieldError::new("NotSupportedChoice", "responsible_user_id", "The user does not exist"));
    }
    write.created_at = opt_int(map, "created_at", &mut errors);
    write.updated_at = opt_int(map, "updated_at", &mut errors);
    if let Some(fields) = map.get("custom_fields_values").filter(|v| !v.is_null()) {
        write.fields = parse_fields(fields, &mut errors);
    }
    let embedded = map.get("_embedded");
    for (path, list) in
        [("tags_to_add", map.get("tags_to_add")), ("_embedded.tags", embedded.and_then(|e| e.get("tags")))]
    {
        for (i, tag) in list.and_then(Value::as_array).into_iter().flatten().enumerate() {
            match tag.get("name").and_then(Value::as_str) {
                Some(name) if !name.trim().is_empty() => write.tags.push(name.trim().to_owned()),
                _ => errors.push(FieldError::new(
                    "NotBlank",
                    format!("{path}.{i}.name"),
                    "This value should not be blank.",
                )),
            }
        }
    }
    if let Some(companies) = embedded.and_then(|e| e.get("companies")).and_then(Value::as_array) {
        match companies.first().map(|c| c.get("id").and_then(Value::as_i64)) {
            None => write.company = Some(None),
            Some(Some(id)) if store.companies.contains_key(&id) => write.company = Some(Some(id)),
            Some(_) => errors.push(FieldError::new("NotFound", "_embedded.companies.0.id", "Entity not found")),
        }
    }
    if errors.is_empty() { Ok(write) } else { Err((write.request_id, errors)) }
}

fn parse_all(entities: &[Value], patch: bool, store: &Store) -> Result<Vec<ContactWrite>, Problem> {
    let (mut writes, mut refused) = (Vec::new(), Vec::new());
    for (i, entity) in entities.iter().enumerate() {
        match parse_contact(entity, i, patch, store) {
            Ok(w) => writes.push(w),
            Err(e) => refused.push(e),
        }
    }
    // All or nothing: one invalid entity refuses the whole request.
    if refused.is_empty() { Ok(writes) } else { Err(validation(refused)) }
}

fn apply(store: &mut Store, contact: &mut Contact, write: ContactWrite) {
    if let Some(first) = write.first_name {
        contact.first_name = first;
    }
    if let Some(last) = write.last_name {
        contact.last_name = last;
    }
    contact.name = match write.name {
        Some(name) if !name.trim().is_empty() => name,
        _ => full_name(&contact.first_name, &contact.last_name),
    };
    if let Some(r) = write.responsible {
        contact.responsible_user_id = r;
    }
    if let Some(t) = write.created_at {
        contact.created_at = t;
    }
    if let Some(t) = write.updated_at {
        contact.updated_at = t;
    }
    for (field_id, value) in write.fields {
        replace_field(&mut contact.fields, value, field_id);
    }
    for name in write.tags {
        let id = store.tag_id(&name);
        if !contact.tags.iter().any(|(t, _)| *t == id) {
            contact.tags.push((id, name));
        }
    }
    if let Some(company) = write.company {
        contact.company_id = company;
    }
}

fn link(base: &str, id: i64) -> Value {
    json!({"self": {"href": format!("{base}/api/v4/contacts/{id}")}})
}

async fn create_contacts(State(inner): State<Shared>, _: Authed, headers: HeaderMap, body: Bytes) -> Reply {
    let list = entities(json_body(&headers, &body)?)?;
    let now = inner.now_millis().div_euclid(1000);
    let base = inner.base_url();
    let mut state = inner.lock();
    let writes = parse_all(&list, false, &state.store)?;
    let mut out = Vec::new();
    let mut fired = Vec::new();
    for write in writes {
        let id = state.store.next_id();
        let mut contact = Contact {
            id,
            name: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            responsible_user_id: store::USER_ADMIN,
            created_by: store::USER_ADMIN,
            updated_by: store::USER_ADMIN,
            created_at: now,
            updated_at: now,
            fields: Vec::new(),
            tags: Vec::new(),
            company_id: None,
        };
        let request_id = write.request_id.clone();
        apply(&mut state.store, &mut contact, write);
        state.store.insert_contact(contact);
        out.push(json!({"id": id, "is_deleted": false, "is_unsorted": false, "request_id": request_id, "_links": link(base, id)}));
        fired.push((Action::Add, id));
    }
    let items = state.store.items(&fired);
    inner.fire(&mut state, &items);
    Ok(hal(&json!({"_links": {"self": {"href": format!("{base}/api/v4/contacts")}}, "_embedded": {"contacts": out}})))
}

fn update(state: &mut super::State, write: ContactWrite, now: i64) -> Option<Value> {
    let id = write.id?;
    let mut contact = state.store.contacts.remove(&id)?;
    let request_id = write.request_id.clone();
    let explicit_update = write.updated_at.is_some();
    apply(&mut state.store, &mut contact, write);
    if !explicit_update {
        contact.updated_at = now;
    }
    contact.updated_by = store::USER_ADMIN;
    let out = json!({"id": id, "name": contact.name, "updated_at": contact.updated_at, "request_id": request_id});
    state.store.insert_contact(contact);
    Some(out)
}

async fn patch_contacts(State(inner): State<Shared>, _: Authed, headers: HeaderMap, body: Bytes) -> Reply {
    let list = entities(json_body(&headers, &body)?)?;
    let now = inner.now_millis().div_euclid(1000);
    let base = inner.base_url();
    let mut state = inner.lock();
    let writes = parse_all(&list, true, &state.store)?;
    let mut out = Vec::new();
    let mut fired = Vec::new();
    for write in writes {
        if let Some(mut v) = update(&mut state, write, now) {
            let id = v["id"].as_i64().unwrap_or_default();
            v["_links"] = link(base, id);
            fired.push((Action::Update, id));
            out.push(v);
        }
    }
    let items = state.store.items(&fired);
    inner.fire(&mut state, &items);
    Ok(hal(&json!({"_links": {"self": {"href": format!("{base}/api/v4/contacts")}}, "_embedded": {"contacts": out}})))
}

/// `PATCH /api/v4/contacts/{id}` with an object; a missing contact → 404 (our reading: there
/// is nothing to patch, and a 204 would read as success).
async fn patch_contact(
    State(inner): State<Shared>,
    _: Authed,
    EntityId(id): EntityId,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let mut value = json_body(&headers, &body)?;
    let Some(map) = value.as_object_mut() else {
        return Err(Problem::new(400, "The request body must be a JSON object"));
    };
    let now = inner.now_millis().div_euclid(1000);
    let base = inner.base_url();
    let mut state = inner.lock();
    if state.store.contact(id).is_none() {
        return Err(Problem::new(404, "Contact not found"));
    }
    map.insert("id".to_owned(), json!(id));
    let mut writes = parse_all(std::slice::from_ref(&value), true, &state.store)?;
    let Some(mut out) = writes.pop().and_then(|w| update(&mut state, w, now)) else {
        return Err(Problem::new(404, "Contact not found"));
    };
    if let Some(map) = out.as_object_mut() {
        map.remove("request_id");
    }
    out["_links"] = link(base, id);
    let items = state.store.items(&[(Action::Update, id)]);
    inner.fire(&mut state, &items);
    Ok(hal(&out))
}

// --- notes and tasks (public docs, not in the contract) --------------------------------------

/// Kommo's note types (`reference/notes-types`); others → 400.
const NOTE_TYPES: &[&str] =
    &["common", "call_in", "call_out", "service_message", "extended_service_message", "sms_in", "sms_out"];

/// `POST /api/v4/contacts/{id}/notes` `[{"note_type","params"}]`. Text notes (`common`,
/// `service_message`, `extended_service_message`, `sms_*`) need a non-blank `params.text`;
/// call notes need `params.phone` and `params.duration`, and `params.uniq` and `source`.
/// A contact that is not live → 404.
async fn add_notes(
    State(inner): State<Shared>,
    _: Authed,
    EntityId(id): EntityId,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let list = entities(json_body(&headers, &body)?)?;
    let now = inner.now_millis().div_euclid(1000);
    let base = inner.base_url();
    let mut state = inner.lock();
    if state.store.contact(id).is_none() {
        return Err(Problem::new(404, "Contact not found"));
    }
    let mut parsed = Vec::new();
    let mut refused = Vec::new();
    for (i, note) in list.iter().enumerate() {
        let request_id = note.get("request_id").and_then(Value::as_str).map_or_else(|| i.to_string(), str::to_owned);
        let note_type = note.get("note_type").and_then(Value::as_str).unwrap_or("");
        let params = note.get("params").cloned().unwrap_or(Value::Null);
        let text = params.get("text").and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty());
        let mut errors = Vec::new();
        let summary = if !NOTE_TYPES.contains(&note_type) {
            errors.push(FieldError::new(
                "NotSupportedChoice",
                "note_type",
                "The value you selected is not a valid choice.",
            ));
            String::new()
        } else if note_type.starts_with("call_") {
            for key in ["uniq", "duration", "source", "phone"] {
                if params.get(key).is_none_or(Value::is_null) {
                    errors.push(FieldError::new(
                        "NotBlank",
                        format!("params.{key}"),
                        "This value should not be blank.",
                    ));
                }
            }
            let phone = params.get("phone").and_then(Value::as_str).unwrap_or("");
            let duration = params.get("duration").and_then(Value::as_i64).unwrap_or(0);
            format!("{note_type}: {phone} ({duration} s)")
        } else if let Some(text) = text {
            text.to_owned()
        } else {
            errors.push(FieldError::new("NotBlank", "params.text", "This value should not be blank."));
            String::new()
        };
        if errors.is_empty() {
            parsed.push((request_id, note_type.to_owned(), params, summary));
        } else {
            refused.push((request_id, errors));
        }
    }
    if !refused.is_empty() {
        return Err(validation(refused));
    }
    let out: Vec<Value> = parsed
        .into_iter()
        .map(|(request_id, note_type, params, summary)| {
            let note = state.store.add_note(id, &note_type, params, summary, now);
            json!({"id": note, "entity_id": id, "request_id": request_id,
                   "_links": {"self": {"href": format!("{base}/api/v4/contacts/{id}/notes/{note}")}}})
        })
        .collect();
    Ok(hal(
        &json!({"_links": {"self": {"href": format!("{base}/api/v4/contacts/{id}/notes")}}, "_embedded": {"notes": out}}),
    ))
}

async fn list_notes(State(inner): State<Shared>, _: Authed, EntityId(id): EntityId, RawQuery(raw): RawQuery) -> Reply {
    let params = Params::parse(raw.as_deref());
    let (page, limit) = (params.page()?, params.limit()?);
    let base = inner.base_url();
    let state = inner.lock();
    let items: Vec<Value> = state
        .store
        .notes_of(id)
        .into_iter()
        .map(|n| {
            json!({"id": n.id, "entity_id": n.entity_id, "created_by": store::USER_ADMIN, "updated_by": store::USER_ADMIN,
                   "created_at": n.created_at, "updated_at": n.created_at, "responsible_user_id": store::USER_ADMIN,
                   "group_id": 0, "note_type": n.note_type, "params": n.params, "account_id": inner.account_id,
                   "_links": {"self": {"href": format!("{base}/api/v4/contacts/{id}/notes/{}", n.id)}}})
        })
        .collect();
    Ok(page_of(&params, base, &format!("/api/v4/contacts/{id}/notes"), "notes", items, page, limit, |v| v))
}

/// `GET /api/v4/tasks`: `filter[entity_type]` one of `leads`, `contacts`, `companies`,
/// `customers` (else 400); `filter[entity_id][]` needs an `entity_type` (400 otherwise);
/// `filter[is_completed]` 0/1. Seeded tasks all belong to contacts.
async fn list_tasks(State(inner): State<Shared>, _: Authed, RawQuery(raw): RawQuery) -> Reply {
    let params = Params::parse(raw.as_deref());
    let (page, limit) = (params.page()?, params.limit()?);
    let entity_type = params.get("filter[entity_type]");
    if entity_type.is_some_and(|t| !matches!(t, "leads" | "contacts" | "companies" | "customers")) {
        return Err(Problem::new(400, "filter[entity_type] must be leads, contacts, companies or customers"));
    }
    let ids = params.ints("filter[entity_id]")?;
    if ids.is_some() && entity_type.is_none() {
        return Err(Problem::new(400, "filter[entity_id] requires filter[entity_type]"));
    }
    let completed = match params.get("filter[is_completed]") {
        None => None,
        Some("1") | Some("true") => Some(true),
        Some("0") | Some("false") => Some(false),
        Some(_) => return Err(Problem::new(400, "filter[is_completed] must be 0 or 1")),
    };
    let base = inner.base_url();
    let state = inner.lock();
    let items: Vec<Value> = state
        .store
        .tasks
        .iter()
        .filter(|_| entity_type.is_none_or(|t| t == "contacts"))
        .filter(|t| ids.as_ref().is_none_or(|ids| ids.contains(&t.entity_id)))
        .filter(|t| completed.is_none_or(|c| t.is_completed == c))
        .map(|t| {
            json!({"id": t.id, "created_by": store::USER_ADMIN, "updated_by": store::USER_ADMIN, "created_at": t.created_at,
                   "updated_at": t.created_at, "responsible_user_id": t.responsible_user_id, "group_id": 0,
                   "entity_id": t.entity_id, "entity_type": "contacts", "is_completed": t.is_completed, "task_type_id": 1,
                   "text": t.text, "duration": 0, "complete_till": t.complete_till, "result": [],
                   "account_id": inner.account_id, "_links": {"self": {"href": format!("{base}/api/v4/tasks/{}", t.id)}}})
        })
        .collect();
    Ok(page_of(&params, base, "/api/v4/tasks", "tasks", items, page, limit, |v| v))
}

// --- webhooks API (§5) --------------------------------------------------------------------------

fn webhook_json(hook: &super::webhooks::Webhook, account_id: i64) -> Value {
    json!({"id": hook.id, "destination": hook.destination, "created_at": hook.created_at, "updated_at": hook.updated_at,
           "account_id": account_id, "created_by": store::USER_ADMIN, "sort": hook.sort, "disabled": hook.disabled,
           "settings": hook.settings})
}

fn destination_of(value: &Value) -> Result<String, Problem> {
    let destination = value.get("destination").and_then(Value::as_str).map(str::trim).unwrap_or("");
    let valid =
        url::Url::parse(destination).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if valid {
        Ok(destination.to_owned())
    } else {
        Err(Problem::new(400, "destination must be an absolute http(s) URL"))
    }
}

/// `POST /api/v4/webhooks`: `settings` a non-empty list of known event names; re-posting a
/// destination saves its settings and re-enables it; a 101st destination → 400.
async fn subscribe(State(inner): State<Shared>, _: Authed, headers: HeaderMap, body: Bytes) -> Reply {
    let value = json_body(&headers, &body)?;
    let destination = destination_of(&value)?;
    let settings: Vec<String> = match value.get("settings").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let mut names = Vec::new();
            for s in list {
                match s.as_str().filter(|s| EVENTS.contains(s)) {
                    Some(name) if !names.iter().any(|n| n == name) => names.push(name.to_owned()),
                    Some(_) => {}
                    None => return Err(Problem::new(400, format!("settings: unknown event {s}"))),
                }
            }
            names
        }
        _ => return Err(Problem::new(400, "settings must be a non-empty array of event names")),
    };
    let sort = match value.get("sort") {
        None | Some(Value::Null) => 1,
        Some(v) => v.as_i64().ok_or_else(|| Problem::new(400, "sort must be an integer"))?,
    };
    let now = inner.now_millis().div_euclid(1000);
    let mut state = inner.lock();
    let hook = state
        .hooks
        .upsert(&destination, settings, sort, now)
        .map_err(|()| Problem::new(400, format!("At most {MAX_WEBHOOKS} webhooks per account")))?;
    Ok(hal(&webhook_json(hook, inner.account_id)))
}

/// `DELETE /api/v4/webhooks` `{"destination"}` → 204; an unknown destination → 400 (our strict
/// reading: nothing was unsubscribed).
async fn unsubscribe(State(inner): State<Shared>, _: Authed, headers: HeaderMap, body: Bytes) -> Reply {
    let destination = destination_of(&json_body(&headers, &body)?)?;
    if inner.lock().hooks.remove(&destination) {
        Ok(no_content())
    } else {
        Err(Problem::new(400, "No webhook with this destination"))
    }
}

async fn list_webhooks(State(inner): State<Shared>, _: Authed, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let wanted = params.get("filter[destination]");
    let state = inner.lock();
    let hooks: Vec<Value> = state
        .hooks
        .hooks
        .iter()
        .filter(|h| wanted.is_none_or(|d| h.destination == d))
        .map(|h| webhook_json(h, inner.account_id))
        .collect();
    if hooks.is_empty() {
        return no_content();
    }
    hal(&json!({"_total_items": hooks.len(), "_embedded": {"webhooks": hooks}}))
}
