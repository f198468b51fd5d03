//! Running a template: the `Crm` (and `SmsSender`) a template connection gets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use crmhub_core::call_map::{CallMapStore, CallRecord};
use crmhub_core::crm::{
    Activity, ActivityKind, CallDirection, CallLog, CallOutcome, CallStage, Capability, CardOptions, ChangeCursor,
    ChangePage, ConnectionCheck, ContactCard, ContactRecord, ContactSummary, Crm, CrmError, LabeledValue, LoggedCall,
    NewContact, NewNote, NewTicket, SmsReceipt, SmsSender, TicketPriority,
};
use crmhub_core::phone::PhoneNumber;
use crmhub_core::time::utc_date_time as date_time;
use crmhub_core::{ConnectionId, Credentials, Host, PhoneRegion, Secret, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::expr::{Scope, Source};
use super::model::{Endpoint, EndpointKind, Lookup, Template, Trigger};
use super::parse::chain_of;
use super::pointer::{Pointer, as_text};
use super::request::build;
use crate::auth::{AuthKey, SharedAuth};
use crate::call_maps::MemoryCallMaps;
use crate::http::{CallContext, HttpClient, OutboundResponse, StatusCode};

type Inputs = BTreeMap<String, String>;

/// How many companies a contact search follows to their contacts: each is an `IN` list item
/// in one request, and the term names a company, not a directory.
const MAX_COMPANIES: usize = 20;

/// A logged-in state: the token and what the auth chain's last step produced.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    token: String,
    outputs: BTreeMap<String, String>,
    expires_at: Option<i64>,
}

pub struct TemplateConnector {
    template: Arc<Template>,
    version: u32,
    http: HttpClient,
    ctx: CallContext,
    host: Host,
    fields: BTreeMap<String, String>,
    credentials: Credentials,
    auth: SharedAuth,
    auth_key: AuthKey,
    /// Which record was made for which call id (the CRM may have nowhere to keep ours).
    call_maps: Arc<dyn CallMapStore>,
    /// The connection the call maps belong to; a connector without one (a template check)
    /// keeps them in memory under an id of its own.
    owner: (TenantId, ConnectionId),
    region: Option<PhoneRegion>,
    capabilities: Vec<Capability>,
    /// `contact.id_prefix`, rendered from the connection's fields.
    contact_id_prefix: Option<String>,
}

impl std::fmt::Debug for TemplateConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateConnector")
            .field("template", &self.template.name)
            .field("version", &self.version)
            .finish()
    }
}

/// The connection-side values a template needs, checked against its field definitions:
/// required ones present, secret ones only in credentials, nothing unknown.
pub fn connection_values(
    template: &Template,
    fields: &serde_json::Map<String, Value>,
    credentials: &Credentials,
) -> Result<BTreeMap<String, String>, CrmError> {
    let mut values = BTreeMap::new();
    for key in fields.keys() {
        match template.fields.iter().find(|f| &f.name == key) {
            None => {
                return Err(CrmError::validation(
                    format!("fields.{key}"),
                    format!("template {:?} has no field {key:?}", template.name),
                ));
            }
            Some(f) if f.secret => {
                return Err(CrmError::validation(format!("fields.{key}"), "is secret: send it in \"credentials\""));
            }
            Some(_) => {}
        }
    }
    for name in credentials.names() {
        if !template.fields.iter().any(|f| f.secret && f.name == name) {
            return Err(CrmError::validation(
                format!("credentials.{name}"),
                format!("template {:?} has no secret field {name:?}", template.name),
            ));
        }
    }
    for field in &template.fields {
        let given = if field.secret {
            credentials.get(&field.name).map(|s| s.expose().to_owned())
        } else {
            fields.get(&field.name).and_then(as_text)
        };
        let value = given.filter(|v| !v.is_empty()).or_else(|| field.default.clone());
        match value {
            Some(value) if !field.secret => {
                values.insert(field.name.clone(), value);
            }
            Some(_) => {}
            None if field.required => {
                let place = if field.secret { "credentials" } else { "fields" };
                return Err(CrmError::validation(
                    format!("{place}.{}", field.name),
                    format!("is required: {}", field.label),
                ));
            }
            None => {}
        }
    }
    Ok(values)
}

impl TemplateConnector {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        template: Arc<Template>,
        version: u32,
        http: HttpClient,
        auth: SharedAuth,
        ctx: CallContext,
        host: &Host,
        fields: &serde_json::Map<String, Value>,
        credentials: &Credentials,
        region: Option<PhoneRegion>,
    ) -> Result<Self, CrmError> {
        let values = connection_values(&template, fields, credentials)?;
        let mut credentials = credentials.clone();
        for field in template.fields.iter().filter(|f| f.secret) {
            if credentials.get(&field.name).is_none() {
                if let Some(default) = &field.default {
                    credentials.insert(field.name.clone(), Secret::new(default.clone()));
                }
            }
        }
        use md5::{Digest, Md5};
        let mut hasher = Md5::new();
        for value in credentials.values() {
            hasher.update(value.expose().as_bytes());
            hasher.update([0]);
        }
        for (k, v) in &values {
            hasher.update(format!("{k}={v}\0").as_bytes());
        }
        let account = format!("template:{}:{}", template.name, host.as_str());
        let remote_account = match template.auth.as_ref().and_then(|a| a.account.as_ref()) {
            Some(expr) => expr.render(&FieldScope(&values)).map_err(|e| CrmError::validation("auth.account", e))?,
            None => String::new(),
        };
        let lock =
            if remote_account.trim().is_empty() { account.clone() } else { AuthKey::login_lock(host, &remote_account) };
        // The declared remote account's budget, shared with every connection (native ones too)
        // to the same remote user. Without a declared account, each connection keeps its own:
        // tenants of one SaaS host have accounts, and limits, of their own (the host as a whole
        // has the per-host budget).
        let budget_key = (!remote_account.trim().is_empty()).then(|| AuthKey::login_lock(host, &remote_account));
        let auth_key = AuthKey { lock, state: format!("{account}:{}", hex::encode(&hasher.finalize()[..8])) };
        let owner = ctx.owner.unwrap_or_else(|| (TenantId::new(), ConnectionId::new()));
        let call_maps: Arc<dyn CallMapStore> = Arc::new(MemoryCallMaps::default());
        let contact_id_prefix = match &template.contact.id_prefix {
            Some(expr) => {
                Some(expr.render(&FieldScope(&values)).map_err(|e| CrmError::validation("contact.id_prefix", e))?)
            }
            None => None,
        }
        .filter(|p| !p.is_empty());
        let capabilities = capabilities_of(&template);
        let ctx = ctx.redacting(credentials.values().cloned());
        let ctx = match budget_key {
            Some(key) => ctx.budget_key(key),
            None => ctx,
        };
        Ok(Self {
            call_maps,
            template,
            version,
            http,
            ctx,
            host: host.clone(),
            fields: values,
            credentials,
            auth,
            auth_key,
            owner,
            region,
            capabilities,
            contact_id_prefix,
        })
    }

    fn endpoint(&self, trigger: Trigger) -> Option<&Endpoint> {
        self.template.endpoints.iter().find(|e| e.trigger == Some(trigger))
    }

    fn require(&self, trigger: Trigger, capability: Capability) -> Result<&Endpoint, CrmError> {
        self.endpoint(trigger).ok_or(CrmError::Unsupported { capability })
    }

    fn uses_auth(&self, endpoint: &Endpoint) -> bool {
        self.template.auth.is_some()
            && endpoint.kind != EndpointKind::Auth
            && endpoint.params.iter().any(|p| param_sources(&p.value).iter().any(|s| matches!(s, Source::Auth(_))))
    }

    /// The current session, or a new one when there is none or it is about to expire.
    async fn session(&self) -> Result<Session, CrmError> {
        parse_session(&self.auth.session(&self.auth_key, usable, || self.login()).await?)
    }

    /// Runs the auth chain: each step's outputs feed the next, the last yields the token.
    async fn login(&self) -> Result<Secret, CrmError> {
        let auth = self.template.auth.as_ref().ok_or_else(|| CrmError::Protocol("template has no auth".into()))?;
        let index: HashMap<&str, (usize, &Endpoint)> =
            self.template.endpoints.iter().enumerate().map(|(i, e)| (e.name.as_str(), (i, e))).collect();
        let mut steps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let now = now_unix();
        for name in chain_of(&auth.endpoint, &index) {
            let Some((_, endpoint)) = index.get(name.as_str()) else { continue };
            let scope =
                CallScope { c: self, session: None, steps: Some(&steps), inputs: &Inputs::new(), page: None, now };
            let response = self.send(endpoint, &scope, None).await?;
            let body = self.interpret(endpoint, &response).map_err(|e| match e {
                CrmError::Validation { message, .. } | CrmError::Remote { message, .. } => {
                    CrmError::AuthFailed(format!("{}: {message}", endpoint.name))
                }
                other => other,
            })?;
            let mut outputs = BTreeMap::new();
            for (output, pointer) in &endpoint.outputs {
                let value = pointer.text(&body).ok_or_else(|| {
                    CrmError::Protocol(format!(
                        "auth endpoint {:?} answered without {output} (nothing at {})",
                        endpoint.name,
                        pointer.as_str()
                    ))
                })?;
                outputs.insert(output.clone(), value);
            }
            steps.insert(name.clone(), outputs);
        }
        let scope = CallScope { c: self, session: None, steps: Some(&steps), inputs: &Inputs::new(), page: None, now };
        let token = auth.token.render(&scope).map_err(CrmError::Protocol)?;
        if token.is_empty() {
            return Err(CrmError::Protocol("the auth chain produced an empty token".into()));
        }
        let expires_at = match &auth.expires_in {
            Some(expr) => {
                let raw = expr.render(&scope).map_err(CrmError::Protocol)?;
                Some(
                    now + raw
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| CrmError::Protocol(format!("expires_in {raw:?} is not a number")))?,
                )
            }
            None => None,
        };
        let outputs = steps.remove(&auth.endpoint).unwrap_or_default();
        tracing::info!(template = %self.template.name, "logged in through the template's auth chain");
        let session = Session { token, outputs, expires_at };
        Ok(Secret::new(serde_json::to_string(&session).map_err(|e| CrmError::Protocol(e.to_string()))?))
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        scope: &CallScope<'_>,
        token: Option<&str>,
    ) -> Result<OutboundResponse, CrmError> {
        let request = build(endpoint, &self.host, scope)?;
        if let Some(token) = token {
            self.ctx.secrets.remember_session(&Secret::new(token));
        }
        Ok(self.http.send(&self.ctx, request).await?)
    }

    /// Calls an endpoint with the caller's values; an expired token is renewed once and the call
    /// replayed once.
    async fn call(&self, endpoint: &Endpoint, inputs: &Inputs, page: Option<u32>) -> Result<Value, CrmError> {
        let now = now_unix();
        if !self.uses_auth(endpoint) {
            let scope = CallScope { c: self, session: None, steps: None, inputs, page, now };
            let response = self.send(endpoint, &scope, None).await?;
            return self.interpret(endpoint, &response);
        }
        let response = self
            .auth
            .with_usable_session(
                &self.auth_key,
                usable,
                || self.login(),
                |stored| async move {
                    let session = parse_session(&stored)?;
                    let scope = CallScope { c: self, session: Some(&session), steps: None, inputs, page, now };
                    self.send(endpoint, &scope, Some(&session.token)).await
                },
                |response| {
                    self.expired(response)
                        .then(|| format!("{} answered HTTP {} for the token", endpoint.name, response.status.as_u16()))
                },
            )
            .await?;
        self.interpret(endpoint, &response)
    }

    fn expired(&self, response: &OutboundResponse) -> bool {
        let Some(auth) = &self.template.auth else { return false };
        if auth.expired_when.status.contains(&response.status.as_u16()) {
            return true;
        }
        match (&auth.expired_when.body, serde_json::from_slice::<Value>(&response.body)) {
            (Some(matcher), Ok(body)) => matcher.pointer.text(&body).is_some_and(|v| matcher.equals.contains(&v)),
            _ => false,
        }
    }

    /// The response as JSON, or the error it reports.
    fn interpret(&self, endpoint: &Endpoint, response: &OutboundResponse) -> Result<Value, CrmError> {
        let status = response.status;
        let body: Option<Value> = if response.body.iter().all(u8::is_ascii_whitespace) {
            Some(Value::Null)
        } else {
            serde_json::from_slice(&response.body).ok()
        };
        let errors = &self.template.errors;
        let detail = |ptr: &Option<Pointer>| body.as_ref().and_then(|b| ptr.as_ref().and_then(|p| p.text(b)));
        let message =
            detail(&errors.message).unwrap_or_else(|| format!("{} answered HTTP {}", endpoint.name, status.as_u16()));
        if status.is_server_error() {
            return Err(CrmError::Unavailable(format!("{} answered HTTP {}", endpoint.name, status.as_u16())));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(CrmError::AuthFailed(message));
        }
        if status == StatusCode::NOT_FOUND {
            return Err(CrmError::NotFound { what: format!("{} record", endpoint.name) });
        }
        if status.is_client_error() {
            let field = detail(&errors.field).unwrap_or_else(|| "request".into());
            return Err(if matches!(status.as_u16(), 400 | 409 | 422) {
                CrmError::Validation { field, message }
            } else {
                CrmError::Remote {
                    code: detail(&errors.code).unwrap_or_else(|| format!("HTTP {}", status.as_u16())),
                    message,
                }
            });
        }
        let Some(body) = body.clone() else {
            return Err(CrmError::Protocol(format!(
                "{} answered {} ({} bytes), not JSON",
                endpoint.name,
                response.content_type().unwrap_or("no content type"),
                response.body.len()
            )));
        };
        if let Some(when) = &errors.when {
            if when.pointer.text(&body).is_some_and(|v| when.equals.contains(&v)) {
                let code = detail(&errors.code).unwrap_or_default();
                return Err(if errors.not_found.contains(&code) {
                    CrmError::NotFound { what: format!("{} record", endpoint.name) }
                } else if errors.validation.contains(&code) {
                    CrmError::Validation { field: detail(&errors.field).unwrap_or_else(|| "request".into()), message }
                } else {
                    CrmError::Remote { code, message }
                });
            }
        }
        Ok(body)
    }

    /// Records from a list endpoint, page by page, until `want` or the end.
    async fn records(
        &self,
        endpoint: &Endpoint,
        inputs: &Inputs,
        want: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>, CrmError> {
        let Some(records) = &endpoint.response.records else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let Some(pagination) = &endpoint.pagination else {
            let body = self.call(endpoint, inputs, None).await?;
            out.extend(array_at(records, &body, &endpoint.name)?.into_iter().filter(|r| keep(r)));
            out.truncate(want);
            return Ok(out);
        };
        for index in 0..pagination.max_pages {
            let body = self.call(endpoint, inputs, Some(pagination.page(index))).await?;
            let batch = array_at(records, &body, &endpoint.name)?;
            let last = batch.is_empty() || pagination.is_short(batch.len());
            out.extend(batch.into_iter().filter(|r| keep(r)));
            let more = match &pagination.has_more {
                Some(pointer) => pointer.text(&body).as_deref() == Some("true"),
                None => true,
            };
            if out.len() >= want || !more || last {
                break;
            }
        }
        out.truncate(want);
        Ok(out)
    }

    fn summary(&self, record: &Value) -> ContactSummary {
        let map = &self.template.contact;
        ContactSummary {
            id: map.id.as_ref().and_then(|p| p.text(record)).unwrap_or_default(),
            display_name: self.display_name(record),
            company: map.company.as_ref().and_then(|p| p.text(record)),
            emails: map.emails.iter().flat_map(|p| p.texts(record)).collect(),
            phones: map.phones.iter().flat_map(|p| p.texts(record)).collect(),
        }
    }

    fn display_name(&self, record: &Value) -> String {
        let map = &self.template.contact;
        if let Some(name) = map.name.as_ref().and_then(|p| p.text(record)) {
            return name;
        }
        let first = map.first_name.as_ref().and_then(|p| p.text(record)).unwrap_or_default();
        let last = map.last_name.as_ref().and_then(|p| p.text(record)).unwrap_or_default();
        let name = format!("{first} {last}").trim().to_owned();
        if name.is_empty() { "(no name)".into() } else { name }
    }

    /// An id that cannot be a contact's (another module's record) is not found, as a contact.
    fn require_contact_id(&self, id: &str) -> Result<(), CrmError> {
        match &self.contact_id_prefix {
            Some(prefix) if !id.starts_with(prefix.as_str()) => {
                Err(CrmError::NotFound { what: format!("contact {id}") })
            }
            _ => Ok(()),
        }
    }

    async fn contact_exists(&self, id: &str) -> Result<(), CrmError> {
        self.require_contact_id(id)?;
        // A CRM that ignores unknown references would attach the write to nothing.
        if let Some(get) = self.endpoint(Trigger::ContactGet) {
            let inputs = Inputs::from([("id".to_owned(), id.to_owned())]);
            self.call(get, &inputs, None).await.map_err(|e| match e {
                CrmError::NotFound { .. } => CrmError::NotFound { what: format!("contact {id}") },
                other => other,
            })?;
        }
        Ok(())
    }

    fn created_id(&self, endpoint: &Endpoint, body: &Value) -> Result<String, CrmError> {
        endpoint
            .response
            .id
            .as_ref()
            .and_then(|p| p.text(body))
            .ok_or_else(|| CrmError::Protocol(format!("{} answered without the new record's id", endpoint.name)))
    }

    /// Contacts of the companies whose name matches the term, for CRMs that keep the company
    /// in a record of its own (Vtiger's Accounts): at most `MAX_COMPANIES` companies, then
    /// their contacts read as one list. Each contact is named with its company, so the search
    /// rule (every word in the name, e-mail or company) sees what matched.
    async fn contacts_of_companies(&self, term: &str, limit: usize) -> Result<Vec<ContactSummary>, CrmError> {
        let (Some(search), Some(contacts)) =
            (self.endpoint(Trigger::CompanySearch), self.endpoint(Trigger::CompanyContacts))
        else {
            return Ok(Vec::new());
        };
        let map = &self.template.company;
        let inputs =
            Inputs::from([("query".to_owned(), term.to_owned()), ("limit".to_owned(), MAX_COMPANIES.to_string())]);
        let companies: BTreeMap<String, String> = self
            .records(search, &inputs, MAX_COMPANIES, |_| true)
            .await?
            .iter()
            .filter_map(|r| Some((map.id.as_ref()?.text(r)?, map.name.as_ref()?.text(r)?)))
            .collect();
        if companies.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = companies.keys().map(String::as_str).collect();
        let inputs = Inputs::from([("company_ids".to_owned(), ids.join(","))]);
        let company_id = self.template.contact.company_id.as_ref();
        let named = |record: &Value| {
            let mut summary = self.summary(record);
            if summary.company.is_none() {
                summary.company = company_id.and_then(|p| p.text(record)).and_then(|id| companies.get(&id).cloned());
            }
            summary
        };
        let records = self.records(contacts, &inputs, limit, |r| matches_term(&named(r), term)).await?;
        Ok(records.iter().map(named).collect())
    }

    /// A card value that lives in another record. A lookup that finds nothing (or may not read
    /// it: Vtiger's ACCESS_DENIED) leaves the value out; other failures fail the card.
    async fn look_up(&self, lookup: &Lookup, record: &Value) -> Result<Option<String>, CrmError> {
        let mut inputs = Inputs::new();
        for (name, pointer) in &lookup.inputs {
            let Some(value) = pointer.text(record) else { return Ok(None) };
            inputs.insert(name.clone(), value);
        }
        let endpoint = self
            .template
            .endpoints
            .iter()
            .find(|e| e.name == lookup.endpoint)
            .ok_or_else(|| CrmError::Protocol(format!("no endpoint {:?}", lookup.endpoint)))?;
        match self.call(endpoint, &inputs, endpoint.pagination.as_ref().map(|p| p.start)).await {
            Ok(body) => {
                let parts: Vec<String> = lookup.value.iter().filter_map(|p| p.text(&body)).collect();
                Ok((!parts.is_empty()).then(|| parts.join(" ")))
            }
            Err(CrmError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs a named endpoint with caller-supplied values (custom operations the template
    /// describes beyond the Crm capabilities) and returns its JSON.
    /// Runs the endpoint `name` (run-by-name). Its errors go back to an admin verbatim, so every
    /// credential and session of the connection is masked in them.
    pub async fn invoke(&self, name: &str, inputs: &Inputs) -> Result<Value, CrmError> {
        self.invoke_unmasked(name, inputs).await.map_err(|e| self.ctx.secrets.redact_error(e))
    }

    async fn invoke_unmasked(&self, name: &str, inputs: &Inputs) -> Result<Value, CrmError> {
        let endpoint = self
            .template
            .endpoints
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| CrmError::NotFound { what: format!("endpoint {name:?}") })?;
        if endpoint.kind == EndpointKind::Auth {
            return Err(CrmError::validation("endpoint", "auth endpoints run only as part of the auth chain"));
        }
        if let Some(trigger) = endpoint.trigger {
            self.admit(trigger, inputs).await?;
        }
        // A paginated endpoint run by name reads its first page: `{{page}}` is `start`.
        self.call(endpoint, inputs, endpoint.pagination.as_ref().map(|p| p.start)).await
    }
}

impl TemplateConnector {
    /// The rules crmhub applies before a trigger's endpoint runs, whether through its
    /// capability or by name: values first (no request is spent on a value refused anyway),
    /// then the records they refer to, so that nothing is written against a missing one.
    async fn admit(&self, trigger: Trigger, inputs: &Inputs) -> Result<(), CrmError> {
        let input = |name: &str| inputs.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        match trigger {
            Trigger::ContactCreate => NewContact {
                first_name: input("first_name").map(str::to_owned),
                last_name: input("last_name").unwrap_or_default().to_owned(),
                email: input("email").map(str::to_owned),
                ..Default::default()
            }
            .validate(),
            Trigger::NoteCreate => {
                let contact = input("contact_id").ok_or_else(|| CrmError::validation("contact_id", "is required"))?;
                if input("body").is_none() {
                    return Err(CrmError::validation("body", "must not be empty"));
                }
                self.contact_exists(contact).await
            }
            Trigger::TicketCreate => {
                if input("title").is_none() {
                    return Err(CrmError::validation("title", "must not be empty"));
                }
                match input("contact_id") {
                    Some(contact) => self.contact_exists(contact).await,
                    None => Ok(()),
                }
            }
            // One log per call id rests on what crmhub remembers from the call channel; a log
            // made by name would bypass it.
            Trigger::CallLogCreate | Trigger::CallLogComplete => Err(CrmError::validation(
                "endpoint",
                "call logs are written only by the call channel, which keeps one log per call id",
            )),
            Trigger::SmsSend => {
                let to = input("to").and_then(|to| PhoneNumber::parse(to, None).ok()).filter(|p| p.e164().is_some());
                if to.is_none() {
                    return Err(CrmError::validation("to", "an SMS needs an internationally dialable number"));
                }
                if input("text").is_none() {
                    return Err(CrmError::validation("text", "must not be empty"));
                }
                Ok(())
            }
            Trigger::ContactGet | Trigger::ContactActivities => {
                self.require_contact_id(input("id").unwrap_or_default())
            }
            Trigger::ConnectionCheck
            | Trigger::CallLogFind
            | Trigger::ContactSearch
            | Trigger::ContactFindByPhone
            | Trigger::ContactChanges
            | Trigger::CompanySearch
            | Trigger::CompanyContacts => Ok(()),
        }
    }
}

fn param_sources(value: &super::model::ParamValue) -> Vec<Source> {
    use super::model::{JsonTemplate, ParamValue};
    fn walk(json: &JsonTemplate, out: &mut Vec<Source>) {
        match json {
            JsonTemplate::Text(e) => out.extend(e.references().map(|r| r.source.clone())),
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Array(items) => items.iter().for_each(|i| walk(i, out)),
            JsonTemplate::Object(entries) => entries.iter().for_each(|(_, v)| walk(v, out)),
        }
    }
    let mut out = Vec::new();
    match value {
        ParamValue::Expr(e) => out.extend(e.references().map(|r| r.source.clone())),
        ParamValue::Md5 { parts, .. } => {
            parts.iter().for_each(|p| out.extend(p.references().map(|r| r.source.clone())))
        }
        ParamValue::Json(json) => walk(json, &mut out),
    }
    out
}

/// Whether a stored session may still be sent: renewed shortly before expiry, though a token
/// that lives only seconds is used to its end. An unreadable one is replaced.
fn usable(stored: &Secret) -> bool {
    parse_session(stored).is_ok_and(|s| s.expires_at.is_none_or(|at| at > now_unix().saturating_add(5)))
}

fn parse_session(stored: &Secret) -> Result<Session, CrmError> {
    serde_json::from_str(stored.expose())
        .map_err(|_| CrmError::Protocol("stored template session is unreadable".into()))
}

fn array_at(pointer: &Pointer, body: &Value, endpoint: &str) -> Result<Vec<Value>, CrmError> {
    match pointer.first(body) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(CrmError::Protocol(format!("{endpoint}: {} is not a list", pointer.as_str()))),
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The connection's field values alone, for what is known before any call (`auth.account`).
struct FieldScope<'a>(&'a BTreeMap<String, String>);

impl Scope for FieldScope<'_> {
    fn lookup(&self, source: &Source) -> Option<String> {
        match source {
            Source::Field(name) => self.0.get(name).cloned(),
            _ => None,
        }
    }
}

struct CallScope<'a> {
    c: &'a TemplateConnector,
    session: Option<&'a Session>,
    steps: Option<&'a BTreeMap<String, BTreeMap<String, String>>>,
    inputs: &'a Inputs,
    page: Option<u32>,
    now: i64,
}

impl Scope for CallScope<'_> {
    fn lookup(&self, source: &Source) -> Option<String> {
        match source {
            Source::Host => Some(self.c.host.as_str().to_owned()),
            Source::Field(name) => self.c.fields.get(name).cloned(),
            Source::Credential(name) => self.c.credentials.get(name).map(|s| s.expose().to_owned()),
            Source::Auth(name) if name == "token" => self.session.map(|s| s.token.clone()),
            Source::Auth(name) => self.session.and_then(|s| s.outputs.get(name).cloned()),
            Source::Step(step, output) => self.steps.and_then(|s| s.get(step)).and_then(|o| o.get(output)).cloned(),
            Source::Input(name) => self.inputs.get(name).cloned(),
            Source::Page => self.page.map(|p| p.to_string()),
            Source::NowUnix => Some(self.now.to_string()),
            Source::NowIso => {
                let (d, t) = date_time(self.now);
                Some(format!("{d}T{t}Z"))
            }
        }
    }
}

fn capabilities_of(template: &Template) -> Vec<Capability> {
    let has = |t: Trigger| template.endpoints.iter().any(|e| e.trigger == Some(t));
    [
        (Trigger::ContactSearch, Capability::SearchContacts),
        (Trigger::ContactFindByPhone, Capability::FindByPhone),
        (Trigger::ContactGet, Capability::ContactCard),
        (Trigger::ContactCreate, Capability::CreateContact),
        (Trigger::CallLogCreate, Capability::LogCall),
        (Trigger::NoteCreate, Capability::AddNote),
        (Trigger::TicketCreate, Capability::CreateTicket),
        (Trigger::ContactChanges, Capability::ListChanges),
    ]
    .into_iter()
    .filter(|(t, _)| has(*t))
    .map(|(_, c)| c)
    .collect()
}

/// Search semantics are crmhub's, whatever the CRM matches on: every word of the term in the
/// name, e-mail or company, or the term's digits in a phone. Keeps wildcard-ish CRM searches
/// from returning more than was asked.
fn matches_term(summary: &ContactSummary, term: &str) -> bool {
    let haystack = format!(
        "{} {} {}",
        summary.display_name,
        summary.emails.join(" "),
        summary.company.as_deref().unwrap_or_default()
    )
    .to_lowercase();
    let words_match = term.split_whitespace().all(|w| haystack.contains(&w.to_lowercase()));
    let digits: String = term.chars().filter(char::is_ascii_digit).collect();
    let phone_like = digits.len() >= 3 && term.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
    words_match
        || (phone_like
            && summary
                .phones
                .iter()
                .any(|p| p.chars().filter(char::is_ascii_digit).collect::<String>().contains(&digits)))
}

#[async_trait]
impl Crm for TemplateConnector {
    fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }

    async fn check(&self) -> Result<ConnectionCheck, CrmError> {
        let mut details = vec![LabeledValue::new("template", format!("{} v{}", self.template.name, self.version))];
        if self.template.auth.is_some() {
            self.session().await?;
            details.push(LabeledValue::new("authentication", "ok"));
        }
        if let Some(check) = self.endpoint(Trigger::ConnectionCheck) {
            self.call(check, &Inputs::new(), None).await?;
            details.push(LabeledValue::new("check endpoint", check.name.clone()));
        }
        // The search a customer's first lookup sends, for a term no one has: a query the CRM
        // refuses (Vtiger's grammar, say) shows here rather than at that lookup.
        if self.endpoint(Trigger::ContactSearch).is_some() {
            self.search_contacts("crmhub connection test", 1).await?;
            details.push(LabeledValue::new("search", "ok"));
        } else if self.template.auth.is_none() && self.endpoint(Trigger::ConnectionCheck).is_none() {
            return Ok(ConnectionCheck {
                details,
                unverified: Some(format!(
                    "the template {} has no auth chain, connection.check or contact.search endpoint, so nothing \
                     was sent to the CRM",
                    self.template.name
                )),
            });
        }
        Ok(ConnectionCheck { details, unverified: None })
    }

    async fn search_contacts(&self, query: &str, limit: usize) -> Result<Vec<ContactSummary>, CrmError> {
        let endpoint = self.require(Trigger::ContactSearch, Capability::SearchContacts)?;
        let term = query.trim();
        if term.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let inputs = Inputs::from([("query".to_owned(), term.to_owned()), ("limit".to_owned(), limit.to_string())]);
        let records = self.records(endpoint, &inputs, limit, |r| matches_term(&self.summary(r), term)).await?;
        let mut found: Vec<ContactSummary> = records.iter().map(|r| self.summary(r)).collect();
        // A CRM whose search ignores phone fields still finds a number typed into the search
        // box, through its phone lookup.
        let digits: String = term.chars().filter(char::is_ascii_digit).collect();
        let phone_like = digits.len() >= 6 && term.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
        if let (true, Some(by_phone)) = (phone_like && found.len() < limit, self.endpoint(Trigger::ContactFindByPhone))
        {
            let inputs = Inputs::from([
                ("phone".to_owned(), digits.clone()),
                ("phone_national".to_owned(), digits.clone()),
                ("phone_digits".to_owned(), digits),
            ]);
            for record in self.records(by_phone, &inputs, limit, |r| matches_term(&self.summary(r), term)).await? {
                let summary = self.summary(&record);
                if found.len() < limit && !found.iter().any(|f| f.id == summary.id) {
                    found.push(summary);
                }
            }
        }
        if found.len() < limit {
            for summary in self.contacts_of_companies(term, limit).await? {
                if found.len() < limit && !found.iter().any(|f| f.id == summary.id) {
                    found.push(summary);
                }
            }
        }
        Ok(found)
    }

    async fn find_by_phone(&self, phone: &PhoneNumber) -> Result<Vec<ContactSummary>, CrmError> {
        let endpoint = self.require(Trigger::ContactFindByPhone, Capability::FindByPhone)?;
        let variants = phone.search_variants();
        let international = |v: &String| v.starts_with('+') || v.starts_with("00");
        let national = variants
            .iter()
            .find(|v| {
                !international(v)
                    && v.len() > phone.national_number().len()
                    && !v.starts_with(&phone.country_code().map(|c| c.to_string()).unwrap_or_default())
            })
            .cloned()
            .unwrap_or_else(|| phone.national_number().to_owned());
        let inputs = Inputs::from([
            ("phone".to_owned(), phone.e164().unwrap_or(phone.as_str()).to_owned()),
            ("phone_national".to_owned(), national),
            ("phone_digits".to_owned(), phone.national_number().to_owned()),
        ]);
        let region = self.region;
        let records = self
            .records(endpoint, &inputs, 5_000, |r| {
                let phones = self.summary(r).phones;
                phones.is_empty() || phones.iter().any(|p| phone.matches_text(p, region))
            })
            .await?;
        Ok(records.iter().map(|r| self.summary(r)).collect())
    }

    async fn contact_card(&self, id: &str, options: &CardOptions) -> Result<ContactCard, CrmError> {
        let endpoint = self.require(Trigger::ContactGet, Capability::ContactCard)?;
        self.require_contact_id(id)?;
        let inputs = Inputs::from([("id".to_owned(), id.to_owned())]);
        let body = self.call(endpoint, &inputs, None).await.map_err(|e| match e {
            CrmError::NotFound { .. } => CrmError::NotFound { what: format!("contact {id}") },
            other => other,
        })?;
        let record = endpoint.response.record.as_ref().and_then(|p| p.first(&body)).cloned().unwrap_or(body);
        let map = &self.template.contact;
        let summary = self.summary(&record);
        let activities = match self.endpoint(Trigger::ContactActivities) {
            Some(a) => self
                .records(a, &inputs, options.max_activities, |_| true)
                .await?
                .iter()
                .map(|r| self.activity(r))
                .collect(),
            None => Vec::new(),
        };
        let card = &self.template.card;
        let company = match &card.company {
            Some(lookup) => self.look_up(lookup, &record).await?.or(summary.company),
            None => summary.company,
        };
        let owner = match &card.owner {
            Some(lookup) => self.look_up(lookup, &record).await?,
            None => None,
        }
        .or_else(|| map.owner.as_ref().and_then(|p| p.text(&record)));
        let mut figures = Vec::new();
        for figure in &card.figures {
            if let Some(value) = self.look_up(&figure.lookup, &record).await? {
                figures.push(LabeledValue::new(&figure.label, value));
            }
        }
        let record_url = map.url.as_ref().and_then(|url| {
            let scope = CallScope { c: self, session: None, steps: None, inputs: &inputs, page: None, now: now_unix() };
            url.render(&scope).ok().filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        });
        Ok(ContactCard {
            id: if summary.id.is_empty() { id.to_owned() } else { summary.id.clone() },
            display_name: summary.display_name,
            first_name: map.first_name.as_ref().and_then(|p| p.text(&record)),
            last_name: map.last_name.as_ref().and_then(|p| p.text(&record)),
            title: map.title.as_ref().and_then(|p| p.text(&record)),
            emails: summary.emails.into_iter().map(|e| LabeledValue::new("Email", e)).collect(),
            phones: summary.phones.into_iter().map(|p| LabeledValue::new("Phone", p)).collect(),
            company,
            owner,
            extra_fields: map
                .extra
                .iter()
                .filter_map(|(label, p)| p.text(&record).map(|v| LabeledValue::new(label, v)))
                .collect(),
            figures,
            activities,
            record_url,
        })
    }

    async fn create_contact(&self, contact: &NewContact) -> Result<ContactSummary, CrmError> {
        let endpoint = self.require(Trigger::ContactCreate, Capability::CreateContact)?;
        contact.validate()?;
        let mut inputs = Inputs::new();
        for (key, value) in [
            ("first_name", contact.first_name.as_deref()),
            ("last_name", Some(contact.last_name.trim())),
            ("email", contact.email.as_deref()),
            ("phone", contact.phone.as_deref()),
            ("mobile", contact.mobile.as_deref()),
            ("title", contact.title.as_deref()),
            ("description", contact.description.as_deref()),
        ] {
            inputs.insert(key.to_owned(), value.unwrap_or_default().trim().to_owned());
        }
        let body = self.call(endpoint, &inputs, None).await?;
        match endpoint.response.record.as_ref().and_then(|p| p.first(&body)) {
            Some(record) => Ok(self.summary(record)),
            None => Ok(ContactSummary {
                id: self.created_id(endpoint, &body)?,
                display_name: format!("{} {}", contact.first_name.as_deref().unwrap_or_default(), contact.last_name)
                    .trim()
                    .to_owned(),
                company: None,
                emails: contact.email.iter().cloned().collect(),
                phones: contact.phone.iter().cloned().collect(),
            }),
        }
    }

    async fn log_call(&self, call: &CallLog) -> Result<LoggedCall, CrmError> {
        let create = self.require(Trigger::CallLogCreate, Capability::LogCall)?;
        if let Some(contact) = &call.contact_id {
            self.contact_exists(contact).await?;
        }
        let mut inputs = call_inputs(call);
        // The record made for this call before, and its stage where crmhub knows it: the id the
        // call channel stored, else the connection's call map (the CRM may have nowhere to keep
        // our call id), else whatever the CRM itself finds for the call id.
        let known = match &call.record_id {
            Some(id) => Some((id.clone(), None)),
            None => {
                let (tenant, connection) = self.owner;
                let mapped = self
                    .call_maps
                    .get(tenant, connection, &call.call_id)
                    .await
                    .map_err(|e| CrmError::Unavailable(e.to_string()))?;
                match mapped {
                    Some(state) => Some((state.record_id, Some(state.stage))),
                    None => self.find_call(&call.call_id).await?.map(|id| (id, None)),
                }
            }
        };
        if let Some((record_id, stage)) = known {
            inputs.insert("record_id".into(), record_id.clone());
            // An answered event arriving after the call's final log must not undo it, and a
            // record of unknown stage may hold the final log already: only a final log is
            // written over that one.
            let write = match stage {
                Some(stage) => !(stage == CallStage::Ended && call.stage == CallStage::Answered),
                None => call.stage == CallStage::Ended,
            };
            if let (true, Some(complete)) = (write, self.endpoint(Trigger::CallLogComplete)) {
                self.call(complete, &inputs, None).await?;
                self.remember_call(&call.call_id, &record_id, stage.map_or(call.stage, |s| s.max(call.stage))).await?;
            }
            return Ok(LoggedCall { record_id, created: false });
        }
        let body = self.call(create, &inputs, None).await?;
        let record_id = self.created_id(create, &body)?;
        self.remember_call(&call.call_id, &record_id, call.stage).await?;
        Ok(LoggedCall { record_id, created: true })
    }

    async fn add_note(&self, note: &NewNote) -> Result<String, CrmError> {
        let endpoint = self.require(Trigger::NoteCreate, Capability::AddNote)?;
        let inputs =
            Inputs::from([("contact_id".to_owned(), note.contact_id.clone()), ("body".to_owned(), note.body.clone())]);
        self.admit(Trigger::NoteCreate, &inputs).await?;
        let body = self.call(endpoint, &inputs, None).await?;
        self.created_id(endpoint, &body)
    }

    async fn create_ticket(&self, ticket: &NewTicket) -> Result<String, CrmError> {
        let endpoint = self.require(Trigger::TicketCreate, Capability::CreateTicket)?;
        let priority = match ticket.priority.unwrap_or(TicketPriority::Normal) {
            TicketPriority::Low => "low",
            TicketPriority::Normal => "normal",
            TicketPriority::High => "high",
            TicketPriority::Urgent => "urgent",
        };
        let inputs = Inputs::from([
            ("contact_id".to_owned(), ticket.contact_id.clone().unwrap_or_default()),
            ("title".to_owned(), ticket.title.trim().to_owned()),
            ("description".to_owned(), ticket.description.clone().unwrap_or_default()),
            ("priority".to_owned(), priority.to_owned()),
        ]);
        self.admit(Trigger::TicketCreate, &inputs).await?;
        let body = self.call(endpoint, &inputs, None).await?;
        self.created_id(endpoint, &body)
    }

    async fn list_changes(&self, since: Option<&ChangeCursor>) -> Result<ChangePage, CrmError> {
        let endpoint = self.require(Trigger::ContactChanges, Capability::ListChanges)?;
        let since = since.map_or_else(|| "0".to_owned(), |c| c.0.clone());
        let inputs = Inputs::from([("since".to_owned(), since.clone())]);
        let single = super::model::Pagination { start: 1, step: 1, max_pages: 1, has_more: None, page_size: None };
        let pagination = endpoint.pagination.as_ref().unwrap_or(&single);
        // A `since` cursor only moves once every page of it was read: the CRM's next cursor
        // covers all pages, not the one just read.
        let mut records = Vec::new();
        let mut next = None;
        let mut more = false;
        for index in 0..pagination.max_pages {
            let body = self.call(endpoint, &inputs, Some(pagination.page(index))).await?;
            let batch = match &endpoint.response.records {
                Some(pointer) => array_at(pointer, &body, &endpoint.name)?,
                None => Vec::new(),
            };
            next = endpoint.response.next.as_ref().and_then(|p| p.text(&body)).or(next);
            more = pagination.has_more.as_ref().and_then(|p| p.text(&body)).as_deref() == Some("true")
                && !batch.is_empty()
                && !pagination.is_short(batch.len());
            records.extend(batch);
            if !more {
                break;
            }
        }
        let map = &self.template.contact;
        let updated: Vec<ContactRecord> = records
            .iter()
            .map(|r| {
                let s = self.summary(r);
                ContactRecord {
                    id: s.id,
                    display_name: s.display_name,
                    first_name: map.first_name.as_ref().and_then(|p| p.text(r)),
                    last_name: map.last_name.as_ref().and_then(|p| p.text(r)),
                    emails: s.emails,
                    phones: s.phones,
                    company: s.company,
                    modified_at: map.modified_at.as_ref().and_then(|p| p.text(r)).and_then(|t| t.parse().ok()),
                }
            })
            .collect();
        let next = if more {
            // Pages remain beyond what one poll reads: resume just before the newest change seen
            // (repeating a few records is harmless for an upsert feed; skipping any is not).
            updated.iter().filter_map(|r| r.modified_at).max().map(|t| (t - 1).to_string()).unwrap_or(since.clone())
        } else {
            match next {
                // Second-resolution cursors: a record changed later in the same second as the
                // cursor would be missed, so the last second is read again.
                Some(n) => match n.parse::<i64>() {
                    Ok(seconds) if seconds > 0 && n != since => (seconds - 1).to_string(),
                    _ => n,
                },
                None => since.clone(),
            }
        };
        Ok(ChangePage { updated, deleted: Vec::new(), next: ChangeCursor(next), more })
    }
}

impl TemplateConnector {
    fn activity(&self, record: &Value) -> Activity {
        let map = &self.template.activity;
        let text = |p: &Option<Pointer>| p.as_ref().and_then(|p| p.text(record));
        Activity {
            kind: match text(&map.kind).as_deref().map(str::to_lowercase).as_deref() {
                Some("note" | "comment") => ActivityKind::Note,
                Some("call") => ActivityKind::Call,
                Some("meeting") => ActivityKind::Meeting,
                Some("task") => ActivityKind::Task,
                Some("ticket") => ActivityKind::Ticket,
                _ => ActivityKind::Other,
            },
            subject: text(&map.subject).unwrap_or_else(|| "Activity".into()),
            body: text(&map.body),
            at: text(&map.at),
            status: text(&map.status),
        }
    }

    /// The record the template's `call.log.find` reports for a call id; none without that
    /// endpoint, or when it finds nothing (an empty answer or a 404).
    async fn find_call(&self, call_id: &str) -> Result<Option<String>, CrmError> {
        let Some(find) = self.endpoint(Trigger::CallLogFind) else { return Ok(None) };
        let inputs = Inputs::from([("call_id".to_owned(), call_id.to_owned())]);
        match self.call(find, &inputs, None).await {
            Ok(body) => Ok(find.response.id.as_ref().and_then(|p| p.text(&body))),
            Err(CrmError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn remember_call(&self, call_id: &str, record_id: &str, stage: CallStage) -> Result<(), CrmError> {
        let (tenant, connection) = self.owner;
        let record = CallRecord { record_id: record_id.to_owned(), stage };
        self.call_maps.put(tenant, connection, call_id, &record).await.map_err(|e| CrmError::Unavailable(e.to_string()))
    }

    /// Keeps the call maps in `maps` (the database, for a connection's connector).
    pub fn with_call_maps(mut self, maps: Arc<dyn CallMapStore>) -> Self {
        self.call_maps = maps;
        self
    }
}

fn call_inputs(call: &CallLog) -> Inputs {
    let duration = i64::from(call.duration_secs.unwrap_or(0));
    let (started_date, started_time) = date_time(call.started_at);
    let (ended_date, ended_time) = date_time(call.started_at + duration);
    let status = match (call.stage, call.outcome) {
        (CallStage::Answered, _) => "planned",
        (CallStage::Ended, Some(CallOutcome::Completed) | None) => "held",
        (CallStage::Ended, Some(_)) => "not_held",
    };
    let outcome = call.outcome.map(|o| match o {
        CallOutcome::Completed => "completed",
        CallOutcome::Missed => "missed",
        CallOutcome::Busy => "busy",
        CallOutcome::NoAnswer => "no_answer",
        CallOutcome::Failed => "failed",
        CallOutcome::Canceled => "canceled",
        CallOutcome::Rejected => "rejected",
    });
    // Where the call stands in one word: `answered` while it runs, then its outcome.
    let state = match call.stage {
        CallStage::Answered => "answered",
        CallStage::Ended => outcome.unwrap_or("completed"),
    };
    let mut inputs = Inputs::from([
        ("call_id".to_owned(), call.call_id.clone()),
        (
            "stage".to_owned(),
            match call.stage {
                CallStage::Answered => "answered",
                CallStage::Ended => "ended",
            }
            .to_owned(),
        ),
        (
            "direction".to_owned(),
            match call.direction {
                CallDirection::Inbound => "inbound",
                CallDirection::Outbound => "outbound",
            }
            .to_owned(),
        ),
        ("started_at".to_owned(), call.started_at.to_string()),
        ("started_at_iso".to_owned(), format!("{started_date}T{started_time}Z")),
        ("started_date".to_owned(), started_date),
        ("started_time".to_owned(), started_time),
        ("ended_date".to_owned(), ended_date),
        ("ended_time".to_owned(), ended_time),
        ("duration_secs".to_owned(), duration.to_string()),
        ("duration_hours".to_owned(), (duration / 3600).to_string()),
        ("status".to_owned(), status.to_owned()),
        ("state".to_owned(), state.to_owned()),
    ]);
    let optional = [
        ("contact_id", call.contact_id.clone()),
        ("from", call.from.clone()),
        ("to", call.to.clone()),
        ("outcome", outcome.map(str::to_owned)),
        ("agent", call.agent.clone()),
        ("notes", call.notes.clone()),
        ("disposition", call.disposition.clone()),
        ("recording_url", call.recording_url.clone()),
    ];
    for (key, value) in optional {
        inputs.insert(key.to_owned(), value.unwrap_or_default());
    }
    inputs
}

#[async_trait]
impl SmsSender for TemplateConnector {
    async fn send_sms(&self, to: &PhoneNumber, text: &str, sender: Option<&str>) -> Result<SmsReceipt, CrmError> {
        let endpoint = self
            .endpoint(Trigger::SmsSend)
            .ok_or_else(|| CrmError::validation("kind", "this template cannot send SMS"))?;
        let to =
            to.e164().ok_or_else(|| CrmError::validation("to", "an SMS needs an internationally dialable number"))?;
        if text.trim().is_empty() {
            return Err(CrmError::validation("text", "must not be empty"));
        }
        let inputs = Inputs::from([
            ("to".to_owned(), to.to_owned()),
            ("text".to_owned(), text.to_owned()),
            ("sender".to_owned(), sender.unwrap_or_default().to_owned()),
        ]);
        let body = self.call(endpoint, &inputs, None).await?;
        Ok(SmsReceipt { message_id: endpoint.response.id.as_ref().and_then(|p| p.text(&body)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_semantics_are_literal() {
        let s = ContactSummary {
            id: "1".into(),
            display_name: "Deal 100% Cotton".into(),
            company: Some("Acme".into()),
            emails: vec!["deal@acme.io".into()],
            phones: vec!["+84 912 345 678".into()],
        };
        assert!(matches_term(&s, "100%"));
        assert!(matches_term(&s, "cotton deal"));
        assert!(matches_term(&s, "acme"));
        assert!(matches_term(&s, "912 345"));
        assert!(!matches_term(&s, "%x"));
        assert!(!matches_term(&s, "x' OR '1'='1"));
    }
}
