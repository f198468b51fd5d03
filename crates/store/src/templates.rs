//! Versioned integration templates: published ones every tenant sees, private ones only their
//! tenant sees. One name means one template for a tenant: a private template cannot take a
//! published template's name, nor the other way round.

use crmhub_core::{TenantId, UnixMillis};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{on_pool, on_tx};
use crate::error::on_unique;
use crate::rows::parse_id;
use crate::{Result, Store, StoreError};

/// A stored template version (its source is validated by the caller before it is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateRecord {
    pub name: String,
    pub version: u32,
    /// `crm` or `sms`.
    pub kind: String,
    pub label: String,
    /// `None` for a published template.
    pub tenant_id: Option<TenantId>,
    /// `yaml` or `json`.
    pub format: String,
    pub source: String,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub name: String,
    pub kind: String,
    pub label: String,
    pub format: String,
    pub source: String,
}

#[derive(sqlx::FromRow)]
struct TemplateRow {
    name: String,
    version: i32,
    kind: String,
    label: String,
    tenant_id: Option<String>,
    format: String,
    source: String,
    created_at: i64,
}

impl TryFrom<TemplateRow> for TemplateRecord {
    type Error = StoreError;

    fn try_from(row: TemplateRow) -> Result<Self> {
        Ok(TemplateRecord {
            tenant_id: row.tenant_id.as_deref().map(|t| parse_id("template", t)).transpose()?,
            version: u32::try_from(row.version).unwrap_or(0),
            name: row.name,
            kind: row.kind,
            label: row.label,
            format: row.format,
            source: row.source,
            created_at: row.created_at,
        })
    }
}

const COLUMNS: &str = "name, version, kind, label, tenant_id, format, source, created_at";

pub struct Templates<'a> {
    store: &'a Store,
}

impl Store {
    pub fn templates(&self) -> Templates<'_> {
        Templates { store: self }
    }
}

impl Templates<'_> {
    /// Adds a version: published when `owner` is `None`, else private to that tenant.
    pub async fn add_version(&self, owner: Option<TenantId>, new: NewTemplate) -> Result<TemplateRecord> {
        let scope = owner.map(|t| t.to_string()).unwrap_or_default();
        let now = self.store.now();
        let mut tx = self.store.begin().await?;
        // The other scope must not hold the name: `template:NAME` has to mean one template.
        let clash: i64 = on_tx!(&mut tx, |conn| {
            let sql = if owner.is_some() {
                "SELECT COUNT(*) FROM integration_templates WHERE name = $1 AND scope = ''"
            } else {
                "SELECT COUNT(*) FROM integration_templates WHERE name = $1 AND scope <> ''"
            };
            sqlx::query_scalar(sql).bind(&new.name).fetch_one(&mut *conn).await
        })?;
        if clash > 0 {
            tx.rollback().await?;
            let message = if owner.is_some() {
                format!("a published template is already named {:?}", new.name)
            } else {
                format!("a tenant already has a private template named {:?}", new.name)
            };
            return Err(StoreError::Conflict { field: "name", message });
        }
        let latest: Option<i32> = on_tx!(&mut tx, |conn| {
            sqlx::query_scalar("SELECT MAX(version) FROM integration_templates WHERE scope = $1 AND name = $2")
                .bind(&scope)
                .bind(&new.name)
                .fetch_one(&mut *conn)
                .await
        })?;
        let version = latest.unwrap_or(0) + 1;
        on_tx!(&mut tx, |conn| {
            sqlx::query(
                "INSERT INTO integration_templates (id, scope, tenant_id, name, version, kind, label, format, source, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(&scope)
            .bind(owner.map(|t| t.to_string()))
            .bind(&new.name)
            .bind(version)
            .bind(&new.kind)
            .bind(&new.label)
            .bind(&new.format)
            .bind(&new.source)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| on_unique(e, "version", || format!("template {:?} changed concurrently; try again", new.name)))?;
        tx.commit().await?;
        Ok(TemplateRecord {
            name: new.name,
            version: u32::try_from(version).unwrap_or(0),
            kind: new.kind,
            label: new.label,
            tenant_id: owner,
            format: new.format,
            source: new.source,
            created_at: now,
        })
    }

    /// The template a tenant means by `name` (its private one, else the published one), at
    /// `version` or the latest.
    pub async fn resolve(&self, tenant: TenantId, name: &str, version: Option<u32>) -> Result<TemplateRecord> {
        let sql = format!(
            "SELECT {COLUMNS} FROM integration_templates WHERE name = $1 AND (scope = $2 OR scope = '') \
             AND ($3 IS NULL OR version = $3) ORDER BY version DESC LIMIT 1"
        );
        self.one(&sql, name, &tenant.to_string(), version).await
    }

    /// A published template, at `version` or the latest.
    pub async fn published(&self, name: &str, version: Option<u32>) -> Result<TemplateRecord> {
        let sql = format!(
            "SELECT {COLUMNS} FROM integration_templates WHERE name = $1 AND scope = $2 \
             AND ($3 IS NULL OR version = $3) ORDER BY version DESC LIMIT 1"
        );
        self.one(&sql, name, "", version).await
    }

    async fn one(&self, sql: &str, name: &str, scope: &str, version: Option<u32>) -> Result<TemplateRecord> {
        let version = version.map(i64::from);
        let row: Option<TemplateRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(sql).bind(name).bind(scope).bind(version).fetch_optional(pool).await
        })?;
        row.ok_or(StoreError::NotFound { entity: "template" })?.try_into()
    }

    /// The latest version of each template `tenant` can use (or of the published ones only).
    pub async fn list(&self, tenant: Option<TenantId>) -> Result<Vec<TemplateRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM integration_templates t WHERE (scope = '' OR scope = $1) \
             AND version = (SELECT MAX(version) FROM integration_templates v WHERE v.scope = t.scope AND v.name = t.name) \
             ORDER BY name"
        );
        let scope = tenant.map(|t| t.to_string()).unwrap_or_default();
        let rows: Vec<TemplateRow> =
            on_pool!(&self.store.db, |pool| sqlx::query_as(&sql).bind(&scope).fetch_all(pool).await)?;
        rows.into_iter().map(TemplateRecord::try_from).collect()
    }

    /// Every version of one template as `tenant` sees it, newest first.
    pub async fn versions(&self, tenant: Option<TenantId>, name: &str) -> Result<Vec<TemplateRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM integration_templates WHERE name = $1 AND (scope = '' OR scope = $2) ORDER BY version DESC"
        );
        let scope = tenant.map(|t| t.to_string()).unwrap_or_default();
        let rows: Vec<TemplateRow> =
            on_pool!(&self.store.db, |pool| sqlx::query_as(&sql).bind(name).bind(&scope).fetch_all(pool).await)?;
        rows.into_iter().map(TemplateRecord::try_from).collect()
    }
}
