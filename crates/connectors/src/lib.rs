//! Everything crmhub sends out: one HTTP client policy shared by all connectors, and a module
//! per CRM or destination.
#![forbid(unsafe_code)]

pub mod auth;
pub mod call_maps;
pub mod conformance;
pub mod http;
pub mod kommo;
mod masked;
pub mod template;
pub mod unisender;
pub mod vtiger;

use std::sync::Arc;

use crmhub_core::call_map::CallMapStore;
use crmhub_core::crm::{Crm, CrmError, SmsSender};
use crmhub_core::{ConnectionId, ConnectorKind, Credentials, Host, PhoneRegion, TenantId};
use serde_json::{Map, Value};

use crate::auth::SharedAuth;
use crate::http::{CallContext, HttpClient, Lane, OutboundError};

impl From<OutboundError> for CrmError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::Blocked(refused) => CrmError::Blocked(refused.to_string()),
            OutboundError::RateLimited { retry_after } => CrmError::RateLimited { retry_after },
            OutboundError::Timeout | OutboundError::Connect(_) | OutboundError::Transport(_) => {
                CrmError::Unavailable(e.to_string())
            }
            OutboundError::InvalidUrl(_)
            | OutboundError::TooLarge { .. }
            | OutboundError::TooManyRedirects { .. }
            | OutboundError::Decode { .. } => CrmError::Protocol(e.to_string()),
        }
    }
}

/// Everything needed to talk to one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSpec<'a> {
    pub tenant: TenantId,
    pub id: ConnectionId,
    pub kind: &'a ConnectorKind,
    pub host: &'a Host,
    pub fields: &'a Map<String, Value>,
    pub credentials: &'a Credentials,
    /// How to read phone numbers stored without a country code.
    pub region: Option<PhoneRegion>,
    /// For `template:NAME` connections: the template version the connection is pinned to.
    pub template: Option<(&'a Arc<template::Template>, u32)>,
}

/// Builds connectors over the shared HTTP client and login state.
#[derive(Debug, Clone)]
pub struct Connectors {
    http: HttpClient,
    auth: SharedAuth,
    call_maps: Arc<dyn CallMapStore>,
    kommo: kommo::KommoShared,
    unisender: unisender::UnisenderShared,
}

impl Connectors {
    /// Call maps stay in memory until `with_call_maps` names a durable store.
    pub fn new(http: HttpClient, auth: SharedAuth) -> Self {
        Self {
            http,
            auth,
            call_maps: Arc::new(call_maps::MemoryCallMaps::default()),
            kommo: kommo::KommoShared::default(),
            unisender: unisender::UnisenderShared::default(),
        }
    }

    /// Where Kommo's OAuth hands back to crmhub: `{public_url}/oauth/kommo/callback`.
    pub fn with_kommo_redirect_uri(mut self, uri: url::Url) -> Self {
        self.kommo.redirect_uri = Some(uri);
        self
    }

    /// How long a Kommo IP block (HTTP 403) pauses every connection to that host.
    pub fn with_kommo_block_pause(mut self, pause: std::time::Duration) -> Self {
        let listener = self.kommo.pauses.clone();
        self.kommo.pauses = kommo::HostPauses::new(pause);
        if let Some(listener) = listener.listener() {
            self.kommo.pauses = self.kommo.pauses.with_listener(listener);
        }
        self
    }

    /// Each Kommo account's request budget (default [`kommo::RATE`]).
    pub fn with_kommo_rate(mut self, rate: http::RateSpec) -> Self {
        self.kommo.rate = rate;
        self
    }

    /// Told whenever a Kommo host is paused after an IP block (to mark its connections).
    pub fn on_host_blocked(mut self, listener: kommo::HostBlockListener) -> Self {
        self.kommo.pauses = self.kommo.pauses.with_listener(listener);
        self
    }

    /// The Kommo connector itself, for what only Kommo has (the OAuth flow, webhook
    /// subscriptions); its own methods mask their errors.
    pub fn kommo(&self, spec: ConnectionSpec<'_>, lane: Lane) -> Result<Arc<kommo::Kommo>, CrmError> {
        match spec.kind {
            ConnectorKind::Kommo => {
                kommo::build(self.http.clone(), self.auth.clone(), context(&spec, lane), &self.kommo, &spec)
            }
            other => Err(CrmError::validation("kind", format!("a {other} connection is not a Kommo connection"))),
        }
    }

    /// Each Unisender API key's call budget (default [`unisender::RATE`]).
    pub fn with_unisender_rate(mut self, rate: http::RateSpec) -> Self {
        self.unisender.rate = rate;
        self
    }

    /// How long an importContacts attempt may go unanswered before it is sent again (default
    /// [`unisender::IMPORT_TIMEOUT`], Unisender's own server timeout).
    pub fn with_unisender_import_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.unisender.import_timeout = timeout;
        self
    }

    /// The Unisender connector (a destination, not a CRM: it has its own methods, whose
    /// errors carry no credential).
    pub fn unisender(&self, spec: ConnectionSpec<'_>, lane: Lane) -> Result<Arc<unisender::Unisender>, CrmError> {
        match spec.kind {
            ConnectorKind::Unisender => {
                unisender::build(self.http.clone(), context(&spec, lane), self.unisender, &spec)
            }
            other => Err(CrmError::validation("kind", format!("a {other} connection is not a Unisender connection"))),
        }
    }

    pub fn with_call_maps(mut self, maps: Arc<dyn CallMapStore>) -> Self {
        self.call_maps = maps;
        self
    }

    /// The CRM behind `spec`. `lane` decides whether its calls wait behind interactive ones.
    /// Its errors carry none of the connection's credentials or sessions.
    pub fn crm(&self, spec: ConnectionSpec<'_>, lane: Lane) -> Result<Arc<dyn Crm>, CrmError> {
        let ctx = context(&spec, lane);
        let secrets = ctx.secrets.clone();
        let crm: Arc<dyn Crm> = match spec.kind {
            ConnectorKind::Vtiger => Arc::new(vtiger::Vtiger::new(
                self.http.clone(),
                self.auth.clone(),
                ctx,
                spec.host,
                spec.fields,
                spec.credentials,
                spec.region,
            )?),
            ConnectorKind::Template(_) => self.template(spec, ctx)?,
            ConnectorKind::Kommo => kommo::build(self.http.clone(), self.auth.clone(), ctx, &self.kommo, &spec)?,
            other => return Err(unavailable(other)),
        };
        Ok(Arc::new(masked::Masked::new(crm, secrets)))
    }

    /// The SMS provider behind an `sms` template connection.
    pub fn sms(&self, spec: ConnectionSpec<'_>, lane: Lane) -> Result<Arc<dyn SmsSender>, CrmError> {
        let ctx = context(&spec, lane);
        let secrets = ctx.secrets.clone();
        match spec.kind {
            ConnectorKind::Template(_) => Ok(Arc::new(masked::Masked::new(self.template(spec, ctx)?, secrets))),
            other => Err(CrmError::validation("kind", format!("a {other} connection cannot send SMS"))),
        }
    }

    /// The template connector itself, for running a template's own endpoints by name (whose
    /// errors it masks itself).
    pub fn template_connector(
        &self,
        spec: ConnectionSpec<'_>,
        lane: Lane,
    ) -> Result<Arc<template::TemplateConnector>, CrmError> {
        self.template(spec, context(&spec, lane))
    }

    fn template(
        &self,
        spec: ConnectionSpec<'_>,
        ctx: CallContext,
    ) -> Result<Arc<template::TemplateConnector>, CrmError> {
        let (template, version) = spec
            .template
            .ok_or_else(|| CrmError::validation("kind", format!("the template of {} could not be found", spec.kind)))?;
        Ok(Arc::new(
            template::TemplateConnector::new(
                template.clone(),
                version,
                self.http.clone(),
                self.auth.clone(),
                ctx,
                spec.host,
                spec.fields,
                spec.credentials,
                spec.region,
            )?
            .with_call_maps(self.call_maps.clone()),
        ))
    }
}

/// Who the connection's calls are, for budgets, metrics and its request log.
fn context(spec: &ConnectionSpec<'_>, lane: Lane) -> CallContext {
    CallContext::new(spec.kind.metric_label(), lane).for_connection(spec.tenant, spec.id)
}

fn unavailable(kind: &ConnectorKind) -> CrmError {
    CrmError::validation("kind", format!("the {kind} connector is not available in this version of crmhub"))
}

/// Checks a connection's fields and credentials for its kind before anything is stored, so
/// that a connection that can never work is refused at creation with the field named.
pub fn validate(
    kind: &ConnectorKind,
    host: &Host,
    fields: &Map<String, Value>,
    credentials: &Credentials,
) -> Result<(), CrmError> {
    match kind {
        ConnectorKind::Vtiger => {
            vtiger::VtigerFields::parse(fields)?;
            if credentials.get("access_key").is_none_or(|k| k.is_empty()) {
                return Err(CrmError::validation(
                    "credentials.access_key",
                    "is required: the user's Vtiger access key",
                ));
            }
            Ok(())
        }
        // Template connections are checked against their template (`template::connection_values`)
        // by whoever resolved the template.
        ConnectorKind::Template(_) => Ok(()),
        ConnectorKind::Kommo => kommo::validate(host, fields, credentials),
        ConnectorKind::Unisender => unisender::validate(host, fields, credentials),
    }
}
