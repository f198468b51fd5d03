//! Tenants: the top of the ownership tree. These are installation-admin functions (listing all
//! tenants is inherently unscoped); everything below a tenant goes through a scoped handle.

use crmhub_core::{PhoneRegion, TenantId, TenantName, TenantSlug, UnixMillis};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::on_pool;
use crate::error::on_unique;
use crate::rows::{parse_id, parse_json};
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub name: TenantName,
    pub phone_region: Option<PhoneRegion>,
    /// Per-channel settings (social inbox limits, allowed origins, …) as a JSON object; each
    /// channel reads its own section with defaults for what is absent.
    pub settings: Map<String, Value>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: TenantSlug,
    pub name: TenantName,
    pub phone_region: Option<PhoneRegion>,
    pub settings: Map<String, Value>,
}

/// A partial update: `None` leaves the value as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    pub name: Option<TenantName>,
    pub phone_region: Option<Option<PhoneRegion>>,
    pub settings: Option<Map<String, Value>>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    slug: String,
    name: String,
    phone_region: Option<String>,
    settings: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;

    fn try_from(row: TenantRow) -> Result<Self> {
        let corrupt = |e: crmhub_core::FieldError| StoreError::corrupt("tenant", &row.id, e);
        Ok(Tenant {
            id: parse_id("tenant", &row.id)?,
            slug: TenantSlug::parse(&row.slug).map_err(corrupt)?,
            name: TenantName::parse(&row.name).map_err(corrupt)?,
            phone_region: row.phone_region.as_deref().map(PhoneRegion::parse).transpose().map_err(corrupt)?,
            settings: parse_json("tenant", &row.id, &row.settings)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const COLUMNS: &str = "id, slug, name, phone_region, settings, created_at, updated_at";

pub struct Tenants<'a> {
    store: &'a Store,
}

impl Store {
    pub fn tenants(&self) -> Tenants<'_> {
        Tenants { store: self }
    }
}

impl Tenants<'_> {
    pub async fn create(&self, new: NewTenant) -> Result<Tenant> {
        let now = self.store.now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug: new.slug,
            name: new.name,
            phone_region: new.phone_region,
            settings: new.settings,
            created_at: now,
            updated_at: now,
        };
        let settings = Value::Object(tenant.settings.clone()).to_string();
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO tenants (id, slug, name, phone_region, settings, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(tenant.id.to_string())
            .bind(tenant.slug.as_str())
            .bind(tenant.name.as_str())
            .bind(tenant.phone_region.map(|r| r.to_string()))
            .bind(&settings)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| {
            on_unique(e, "slug", || format!("a tenant with slug {:?} already exists", tenant.slug.as_str()))
        })?;
        Ok(tenant)
    }

    pub async fn list(&self) -> Result<Vec<Tenant>> {
        let sql = format!("SELECT {COLUMNS} FROM tenants ORDER BY slug");
        let rows: Vec<TenantRow> = on_pool!(&self.store.db, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(Tenant::try_from).collect()
    }

    pub async fn get(&self, id: TenantId) -> Result<Tenant> {
        let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = $1");
        let row: Option<TenantRow> =
            on_pool!(&self.store.db, |pool| { sqlx::query_as(&sql).bind(id.to_string()).fetch_optional(pool).await })?;
        row.ok_or(StoreError::NotFound { entity: "tenant" })?.try_into()
    }

    pub async fn find_by_slug(&self, slug: &TenantSlug) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {COLUMNS} FROM tenants WHERE slug = $1");
        let row: Option<TenantRow> =
            on_pool!(&self.store.db, |pool| { sqlx::query_as(&sql).bind(slug.as_str()).fetch_optional(pool).await })?;
        row.map(Tenant::try_from).transpose()
    }

    pub async fn by_slug(&self, slug: &TenantSlug) -> Result<Tenant> {
        self.find_by_slug(slug).await?.ok_or(StoreError::NotFound { entity: "tenant" })
    }

    /// Changes only the given columns, in one statement: two concurrent updates of different
    /// columns both land (a read-modify-write in Rust would lose one of them).
    pub async fn update(&self, id: TenantId, update: TenantUpdate) -> Result<Tenant> {
        let settings = update.settings.map(|s| Value::Object(s).to_string());
        let (set_region, region) = match update.phone_region {
            Some(region) => (true, region.map(|r| r.to_string())),
            None => (false, None),
        };
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE tenants SET name = COALESCE($2, name), \
                 phone_region = CASE WHEN $3 THEN $4 ELSE phone_region END, \
                 settings = COALESCE($5, settings), updated_at = $6 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(update.name.as_ref().map(|n| n.as_str().to_owned()))
            .bind(set_region)
            .bind(region)
            .bind(settings)
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "tenant" });
        }
        self.get(id).await
    }

    /// Deletes the tenant and, by cascade, everything it owns.
    pub async fn delete(&self, id: TenantId) -> Result<()> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM tenants WHERE id = $1")
                .bind(id.to_string())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "tenant" });
        }
        Ok(())
    }
}
