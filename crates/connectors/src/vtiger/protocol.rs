//! The webservice protocol: envelopes, login, sessions and the documented operations.

use std::sync::Arc;

use crmhub_core::Secret;
use crmhub_core::crm::CrmError;
use md5::{Digest, Md5};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::vtql::Query;
use super::{Record, Vtiger};
use crate::http::{OutboundRequest, RequestBody, StatusCode};

/// GET-type operations take their parameters in the query string; all others in the form
/// body. Vtiger ignores a parameter sent in the wrong place, so this must be exact.
const GET_OPERATIONS: &[&str] = &[
    "getchallenge",
    "retrieve",
    "query",
    "sync",
    "listtypes",
    "describe",
    "relatedtypes",
    "retrieve_related",
    "query_related",
    "retrieve_inventory",
    "files_retrieve",
];

/// Error codes that mean "log in again": nothing ran, so replaying is safe even for create.
const SESSION_ERRORS: &[&str] =
    &["INVALID_SESSIONID", "SESSION_LEFT_IDLE", "SESSION_EXPIRED", "AUTHENTICATION_REQUIRED"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A session as stored in the shared auth state.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    session: String,
    user_id: String,
    #[serde(default)]
    version: Option<String>,
}

/// The logged-in session as connector code uses it.
#[derive(Debug, Clone)]
pub(super) struct ActiveSession {
    pub name: Secret,
    pub user_id: String,
    pub version: Option<String>,
}

impl ActiveSession {
    fn from_stored(stored: Secret) -> Result<Self, CrmError> {
        let parsed: Session = serde_json::from_str(stored.expose())
            .map_err(|_| CrmError::Protocol("stored Vtiger session is unreadable".into()))?;
        Ok(Self { name: Secret::new(parsed.session), user_id: parsed.user_id, version: parsed.version })
    }
}

/// What one exchange came to, before session handling: `T` is the result's shape.
enum Answer<T = Value> {
    Ok(T),
    Failed {
        code: String,
        message: String,
    },
    /// HTTP 500 with an empty body: a PHP fatal error (stock 8.2 on PHP 8 answers `sync` and
    /// `logout` this way).
    EmptyServerError,
}

/// Field metadata from `describe`.
#[derive(Debug, Clone, Deserialize)]
pub struct Describe {
    pub name: String,
    #[serde(default)]
    pub label: String,
    #[serde(rename = "idPrefix", default)]
    pub id_prefix: String,
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub mandatory: bool,
}

impl Describe {
    pub fn label_of(&self, field: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.name == field).map(|f| f.label.as_str()).filter(|l| !l.is_empty())
    }
}

impl Vtiger {
    /// Runs a built-in operation, placing its parameters where Vtiger reads them.
    pub async fn run(&self, operation: &str, params: &[(&str, String)]) -> Result<Value, CrmError> {
        self.invoke(operation, method_of(operation), params).await
    }

    /// Runs `operation` with the current session. A session error inside an HTTP 200 (the
    /// session was garbage-collected on the server) leads to one re-login and one replay.
    pub async fn invoke(&self, operation: &str, method: Method, params: &[(&str, String)]) -> Result<Value, CrmError> {
        self.invoke_as(operation, method, params).await
    }

    /// `invoke`, reading the result straight into `T`.
    async fn invoke_as<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        params: &[(&str, String)],
    ) -> Result<T, CrmError> {
        let answer = self.with_session(operation, method, params).await?;
        into_result(operation, answer)
    }

    /// One exchange under the shared session loop (`SharedAuth::with_session`): nothing ran when
    /// Vtiger refuses a session, so the replay is safe even for create.
    async fn with_session<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        params: &[(&str, String)],
    ) -> Result<Answer<T>, CrmError> {
        self.auth
            .with_session(
                &self.auth_key,
                || self.login(),
                |stored| async move {
                    let session = ActiveSession::from_stored(stored)?;
                    self.exchange(operation, method, params, Some(&session)).await
                },
                |answer| match answer {
                    Answer::Failed { code, message } if SESSION_ERRORS.contains(&code.as_str()) => {
                        tracing::debug!(operation, %code, "Vtiger session rejected");
                        Some(format!("{code}: {message}"))
                    }
                    _ => None,
                },
            )
            .await
    }

    /// The current session, logging in if there is none.
    pub(super) async fn session(&self) -> Result<ActiveSession, CrmError> {
        ActiveSession::from_stored(self.auth.session(&self.auth_key, |_| true, || self.login()).await?)
    }

    /// getchallenge, then login with md5(token + access key). A token superseded by someone
    /// else's getchallenge for the same user (outside crmhub) fails once; we try once more.
    async fn login(&self) -> Result<Secret, CrmError> {
        for attempt in 0..2 {
            let challenge = self
                .exchange("getchallenge", Method::Get, &[("username", self.username.clone())], None)
                .await
                .and_then(|a| login_result("getchallenge", a))?;
            let token = challenge
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| CrmError::Protocol("getchallenge returned no token".into()))?;
            let key = hex::encode(Md5::digest(format!("{token}{}", self.access_key.expose())));
            let answer = self
                .exchange("login", Method::Post, &[("username", self.username.clone()), ("accessKey", key)], None)
                .await?;
            match answer {
                Answer::Failed { code, .. }
                    if attempt == 0 && matches!(code.as_str(), "INVALID_USER_CREDENTIALS" | "INVALID_AUTH_TOKEN") =>
                {
                    tracing::info!(%code, "Vtiger login raced another login for the same user; retrying once");
                    continue;
                }
                answer => {
                    let result = login_result("login", answer)?;
                    let session = result.get("sessionName").and_then(Value::as_str);
                    let user_id = result.get("userId").and_then(Value::as_str);
                    let (Some(session), Some(user_id)) = (session, user_id) else {
                        return Err(CrmError::Protocol("login returned no sessionName or userId".into()));
                    };
                    tracing::info!(user = %self.username, "logged in to Vtiger");
                    let stored = json!({
                        "session": session,
                        "user_id": user_id,
                        "version": result.get("vtigerVersion").and_then(Value::as_str),
                    });
                    return Ok(Secret::new(stored.to_string()));
                }
            }
        }
        Err(CrmError::AuthFailed("the login token kept being superseded".into()))
    }

    /// One HTTP exchange with the webservice.
    async fn exchange<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        params: &[(&str, String)],
        session: Option<&ActiveSession>,
    ) -> Result<Answer<T>, CrmError> {
        let mut pairs: Vec<(&str, &str)> = vec![("operation", operation)];
        if let Some(session) = session {
            pairs.push(("sessionName", session.name.expose()));
        }
        pairs.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        if let Some(session) = session {
            self.ctx.secrets.remember_session(&session.name);
        }
        let request = match method {
            Method::Get => {
                let mut url = self.endpoint.clone();
                url.query_pairs_mut().extend_pairs(&pairs);
                OutboundRequest::get(url)
            }
            Method::Post => OutboundRequest::post(self.endpoint.clone(), RequestBody::form(&pairs)),
        };
        let response = self.http.send(&self.ctx, request).await.map_err(CrmError::from)?;
        if response.status == StatusCode::INTERNAL_SERVER_ERROR && response.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer::EmptyServerError);
        }
        if !response.status.is_success() {
            let message = format!("Vtiger answered HTTP {}", response.status.as_u16());
            return Err(if response.status.is_server_error() {
                CrmError::Unavailable(message)
            } else {
                CrmError::Remote { code: format!("HTTP {}", response.status.as_u16()), message }
            });
        }
        // The result is read once, into its own shape: a page of records is most of a search's
        // work, and a map per record is most of that.
        let envelope: Envelope<'_> = response.json().map_err(|e| CrmError::Protocol(e.to_string()))?;
        match envelope.success.as_ref().and_then(Value::as_bool) {
            Some(true) => {
                let result = envelope.result.map_or("null", RawValue::get);
                serde_json::from_str(result)
                    .map(Answer::Ok)
                    .map_err(|e| CrmError::Protocol(format!("Vtiger's {operation} result is not as expected ({e})")))
            }
            Some(false) => {
                let error = envelope.error.as_ref();
                let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str).unwrap_or_default();
                Ok(Answer::Failed { code: field("code").to_owned(), message: field("message").to_owned() })
            }
            None => Err(CrmError::Protocol("the response is not a Vtiger envelope".into())),
        }
    }

    /// An installation's own registered operation (`vtws_addWebserviceOperation`), with
    /// parameters placed as its registered type requires.
    pub async fn call_operation(
        &self,
        name: &str,
        method: Method,
        params: &[(&str, String)],
    ) -> Result<Value, CrmError> {
        self.invoke(name, method, params).await
    }

    pub async fn retrieve(&self, id: &str) -> Result<Record, CrmError> {
        let result = self.run("retrieve", &[("id", id.to_owned())]).await.map_err(|e| not_found(e, id))?;
        into_record(result)
    }

    /// Creates a record. `assigned_user_id` defaults to the logged-in user.
    pub async fn create(&self, module: &str, mut element: Record) -> Result<Record, CrmError> {
        if !element.contains_key("assigned_user_id") {
            let session = self.session().await?;
            element.insert("assigned_user_id".into(), Value::String(session.user_id));
        }
        let params = [("elementType", module.to_owned()), ("element", Value::Object(element).to_string())];
        let created = into_record(self.run("create", &params).await?)?;
        // A create that names no record cannot be found again, logged or linked: reporting it as
        // done would lose it.
        if created.get("id").and_then(Value::as_str).is_none_or(|id| !id.contains('x')) {
            return Err(CrmError::Protocol(format!("Vtiger created a {module} record but returned no id")));
        }
        Ok(created)
    }

    /// Partial update: only the given fields change.
    pub async fn revise(&self, id: &str, mut changes: Record) -> Result<Record, CrmError> {
        changes.insert("id".into(), Value::String(id.to_owned()));
        let params = [("element", Value::Object(changes).to_string())];
        into_record(self.run("revise", &params).await.map_err(|e| not_found(e, id))?)
    }

    pub async fn delete(&self, id: &str) -> Result<(), CrmError> {
        self.run("delete", &[("id", id.to_owned())]).await.map_err(|e| not_found(e, id))?;
        Ok(())
    }

    pub async fn list_types(&self) -> Result<Value, CrmError> {
        self.run("listtypes", &[]).await
    }

    /// Module metadata, cached for the connector's lifetime.
    pub async fn describe(&self, module: &str) -> Result<Arc<Describe>, CrmError> {
        if let Some(hit) = self.describes.lock().unwrap_or_else(|p| p.into_inner()).get(module) {
            return Ok(hit.clone());
        }
        let result = self.run("describe", &[("elementType", module.to_owned())]).await?;
        let describe: Describe =
            serde_json::from_value(result).map_err(|e| CrmError::Protocol(format!("describe {module}: {e}")))?;
        let describe = Arc::new(describe);
        self.describes.lock().unwrap_or_else(|p| p.into_inner()).insert(module.to_owned(), describe.clone());
        Ok(describe)
    }

    /// One page of a query (at most 100 rows), as Vtiger wrote it (a JSON array), for a caller
    /// that reads it into rows borrowing from it.
    pub(super) async fn query_raw(&self, query: &Query) -> Result<Box<RawValue>, CrmError> {
        self.invoke_as("query", method_of("query"), &[("query", query.render())]).await
    }

    /// One page of a query (at most 100 rows).
    pub async fn query(&self, query: &Query) -> Result<Vec<Record>, CrmError> {
        match self.run("query", &[("query", query.render())]).await? {
            Value::Array(rows) => rows.into_iter().map(into_record).collect(),
            other => Err(CrmError::Protocol(format!("query returned {}", kind(&other)))),
        }
    }

    /// Every row of `query` up to `max_rows`, reading 100-row pages past Vtiger's cap. The
    /// query must order by a unique key (`id`) so that pages do not overlap.
    pub async fn query_all(&self, query: Query, max_rows: usize) -> Result<Vec<Record>, CrmError> {
        let mut rows = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = self.query(&query.clone().limit(offset, super::vtql::PAGE)).await?;
            let got = page.len();
            rows.extend(page);
            if got < super::vtql::PAGE as usize || rows.len() >= max_rows {
                rows.truncate(max_rows);
                return Ok(rows);
            }
            offset += u64::from(super::vtql::PAGE);
        }
    }

    /// `sync`, or `None` where this installation answers it with an empty HTTP 500 (stock
    /// 8.2 on PHP 8). The answer is remembered.
    pub(super) async fn sync(&self, modified_time: i64, module: &str) -> Result<Option<Value>, CrmError> {
        if *self.sync_works.lock().unwrap_or_else(|p| p.into_inner()) == Some(false) {
            return Ok(None);
        }
        // `application` reports every record; without it Vtiger reports only those the
        // integration user owns, and a contact assigned to a group would never be synced.
        let params = [
            ("modifiedTime", modified_time.max(1).to_string()),
            ("elementType", module.to_owned()),
            ("syncType", "application".to_owned()),
        ];
        let answer = self.with_session("sync", Method::Get, &params).await?;
        let works = match &answer {
            Answer::EmptyServerError => {
                tracing::info!("Vtiger sync is broken on this installation (HTTP 500); using query watermarks");
                false
            }
            // Only admin users may sync the whole application; a non-admin user's own sync
            // would miss other owners' records, while a query sees all it may read.
            Answer::Failed { code, message } if code == "ACCESS_DENIED" => {
                tracing::info!(%message, "Vtiger refuses an application sync to this user; using query watermarks");
                false
            }
            _ => true,
        };
        *self.sync_works.lock().unwrap_or_else(|p| p.into_inner()) = Some(works);
        if !works {
            return Ok(None);
        }
        into_result("sync", answer).map(Some)
    }
}

fn method_of(operation: &str) -> Method {
    if GET_OPERATIONS.contains(&operation.to_ascii_lowercase().as_str()) { Method::Get } else { Method::Post }
}

/// Vtiger's answer: `{"success": true, "result": …}` or `{"success": false, "error": …}`.
#[derive(Deserialize)]
struct Envelope<'a> {
    success: Option<Value>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<Value>,
}

fn into_result<T>(operation: &str, answer: Answer<T>) -> Result<T, CrmError> {
    match answer {
        Answer::Ok(value) => Ok(value),
        Answer::EmptyServerError => Err(CrmError::Unavailable(format!(
            "Vtiger answered {operation} with HTTP 500 and an empty body (a PHP error on the server)"
        ))),
        Answer::Failed { code, message } => Err(match code.as_str() {
            "MANDATORY_FIELDS_MISSING" => {
                let field = message.strip_suffix(" does not have a value").unwrap_or("element");
                CrmError::validation(field, format!("Vtiger requires a value ({message})"))
            }
            "INVALID_USER_CREDENTIALS" | "INVALID_AUTH_TOKEN" => CrmError::AuthFailed(message),
            _ => CrmError::Remote { code, message },
        }),
    }
}

/// The login steps' errors: an unknown user or a refused key are credential problems.
fn login_result(operation: &str, answer: Answer) -> Result<Value, CrmError> {
    match answer {
        Answer::Failed { code, message } if code == "ACCESS_DENIED" => {
            Err(CrmError::AuthFailed(format!("{operation}: {message}")))
        }
        answer => into_result(operation, answer),
    }
}

/// Vtiger reports a missing or deleted record as ACCESS_DENIED, never as "not found".
fn not_found(error: CrmError, id: &str) -> CrmError {
    match error {
        CrmError::Remote { code, .. } if code == "ACCESS_DENIED" => CrmError::NotFound { what: format!("record {id}") },
        other => other,
    }
}

fn into_record(value: Value) -> Result<Record, CrmError> {
    match value {
        Value::Object(record) => Ok(record),
        other => Err(CrmError::Protocol(format!("expected a record, got {}", kind(&other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
