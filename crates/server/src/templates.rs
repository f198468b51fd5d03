//! Integration templates inside the application: parsing and caching versions, publishing the
//! templates shipped with crmhub, and preparing connections made from templates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crmhub_connectors::http::AddressPolicy;
use crmhub_connectors::template::{self, SourceFormat, Template, TemplateErrors};
use crmhub_core::{ConnectorKind, FieldError, TenantId};
use crmhub_store::connections::NewConnection;
use crmhub_store::templates::{NewTemplate, TemplateRecord};
use crmhub_store::{Store, StoreError};

use crate::error::ApiError;

/// Templates shipped with crmhub, published at start (a changed one as a new version).
pub const SHIPPED: &[(&str, &str)] = &[
    ("vtiger", include_str!("../../../templates/vtiger.yaml")),
    ("contactbook", include_str!("../../../templates/contactbook.yaml")),
    ("signedsms", include_str!("../../../templates/signedsms.yaml")),
];

/// Parsed template versions, by (owner, name, version). A version never changes once stored,
/// so entries never go stale.
#[derive(Default, Clone)]
pub struct TemplateRegistry {
    parsed: Arc<Mutex<HashMap<VersionKey, Arc<Template>>>>,
}

/// Owner (`None` = published), name, version.
type VersionKey = (Option<TenantId>, String, u32);

impl TemplateRegistry {
    /// The template version `tenant` means by `name` (latest when `version` is `None`).
    pub async fn resolve(
        &self,
        store: &Store,
        policy: &AddressPolicy,
        tenant: TenantId,
        name: &str,
        version: Option<u32>,
    ) -> Result<(Arc<Template>, u32), StoreError> {
        let record = store.templates().resolve(tenant, name, version).await?;
        Ok((self.parsed(&record, policy)?, record.version))
    }

    fn parsed(&self, record: &TemplateRecord, policy: &AddressPolicy) -> Result<Arc<Template>, StoreError> {
        let key = (record.tenant_id, record.name.clone(), record.version);
        if let Some(hit) = self.parsed.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(hit.clone());
        }
        let format = if record.format == "json" { SourceFormat::Json } else { SourceFormat::Yaml };
        // Stored versions were valid when stored; one that no longer parses (the address policy
        // tightened since, say) is reported as corrupt rather than run.
        let template = Arc::new(template::parse(&record.source, format, policy).map_err(|e| StoreError::Corrupt {
            entity: "template",
            id: format!("{} v{}", record.name, record.version),
            reason: e.to_string(),
        })?);
        self.parsed.lock().unwrap_or_else(|p| p.into_inner()).insert(key, template.clone());
        Ok(template)
    }
}

/// Parses a template's source for storing: the format is `hint` or detected from the text.
pub fn check_source(
    source: &str,
    hint: Option<SourceFormat>,
    policy: &AddressPolicy,
) -> Result<(Template, SourceFormat), TemplateErrors> {
    let format = hint.unwrap_or_else(|| SourceFormat::detect(source));
    template::parse(source, format, policy).map(|t| (t, format))
}

/// Validates and stores a new version (published when `owner` is `None`).
pub async fn store_version(
    store: &Store,
    policy: &AddressPolicy,
    owner: Option<TenantId>,
    source: &str,
    hint: Option<SourceFormat>,
) -> Result<TemplateRecord, ApiError> {
    let (template, format) = check_source(source, hint, policy).map_err(ApiError::InvalidTemplate)?;
    let new = NewTemplate {
        name: template.name.clone(),
        kind: match template.kind {
            template::TemplateType::Crm => "crm".into(),
            template::TemplateType::Sms => "sms".into(),
        },
        label: template.label.clone(),
        format: match format {
            SourceFormat::Json => "json".into(),
            SourceFormat::Yaml => "yaml".into(),
        },
        source: source.to_owned(),
    };
    Ok(store.templates().add_version(owner, new).await?)
}

/// Publishes each shipped template that is new or changed since it was last published.
pub async fn publish_shipped(store: &Store, policy: &AddressPolicy) -> anyhow::Result<()> {
    for (name, source) in SHIPPED {
        let current = match store.templates().published(name, None).await {
            Ok(record) => Some(record),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if current.is_some_and(|c| c.source == *source) {
            continue;
        }
        match store_version(store, policy, None, source, Some(SourceFormat::Yaml)).await {
            Ok(record) => {
                tracing::info!(template = %record.name, version = record.version, "published a shipped template")
            }
            // Another instance published it at the same moment, or a tenant owns the name.
            Err(ApiError::Conflict { message, .. }) => {
                tracing::warn!(template = %name, %message, "shipped template not published")
            }
            Err(e) => return Err(anyhow::anyhow!("shipped template {name}: {e}")),
        }
    }
    Ok(())
}

/// For a `template:NAME` connection: pins the template version (the latest unless one is asked
/// for) and checks the connection's fields and credentials against it.
pub async fn prepare_connection(
    registry: &TemplateRegistry,
    store: &Store,
    policy: &AddressPolicy,
    tenant: TenantId,
    connection: &mut NewConnection,
) -> Result<(), ApiError> {
    let ConnectorKind::Template(name) = &connection.kind else {
        if connection.template_version.is_some() {
            return Err(ApiError::invalid("template_version", "only connections made from templates have one"));
        }
        return Ok(());
    };
    let (template, version) =
        registry.resolve(store, policy, tenant, name, connection.template_version).await.map_err(|e| match e {
            StoreError::NotFound { .. } => match connection.template_version {
                Some(v) => ApiError::invalid("template_version", format!("template {name:?} has no version {v}")),
                None => ApiError::invalid("kind", format!("no template named {name:?} is available to this tenant")),
            },
            other => other.into(),
        })?;
    check_values(&template, &connection.fields, &connection.credentials)?;
    connection.template_version = Some(version);
    Ok(())
}

/// A connection's fields and credentials against its template's field definitions.
pub fn check_values(
    template: &Template,
    fields: &serde_json::Map<String, serde_json::Value>,
    credentials: &crmhub_core::Credentials,
) -> Result<(), ApiError> {
    template::connection_values(template, fields, credentials).map(drop).map_err(|e| match e {
        crmhub_core::crm::CrmError::Validation { field, message } => ApiError::Invalid(FieldError::new(field, message)),
        other => ApiError::Internal(anyhow::Error::new(other)),
    })
}
