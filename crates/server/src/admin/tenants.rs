//! `/admin/v1/tenants`

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use crmhub_core::{PhoneRegion, TenantName, TenantSlug};
use crmhub_store::tenants::{NewTenant, Tenant, TenantUpdate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AdminAuth, tenant_id};
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants", get(list).post(create))
        .route("/admin/v1/tenants/{slug}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    slug: String,
    name: String,
    phone_region: Option<String>,
    #[serde(default)]
    settings: Map<String, Value>,
}

impl TryFrom<CreateTenant> for NewTenant {
    type Error = crmhub_core::FieldError;

    fn try_from(body: CreateTenant) -> Result<Self, Self::Error> {
        Ok(NewTenant {
            slug: TenantSlug::parse(&body.slug)?,
            name: TenantName::parse(&body.name)?,
            phone_region: body.phone_region.as_deref().map(PhoneRegion::parse).transpose()?,
            settings: crmhub_core::tenant::tenant_settings(body.settings)?,
        })
    }
}

/// `phone_region: null` clears it; an absent key leaves it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    name: Option<String>,
    #[serde(default, with = "crate::admin::tenants::double_option")]
    phone_region: Option<Option<String>>,
    settings: Option<Map<String, Value>>,
}

pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

async fn create(
    _: AdminAuth,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    let tenant = state.store.tenants().create(body.try_into()?).await?;
    tracing::info!(tenant = %tenant.slug, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant)))
}

async fn list(_: AdminAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"tenants": state.store.tenants().list().await?})))
}

async fn show(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<Json<Tenant>> {
    let id = tenant_id(&state, &slug).await?;
    Ok(Json(state.store.tenants().get(id).await?))
}

async fn update(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    JsonBody(body): JsonBody<UpdateTenant>,
) -> ApiResult<Json<Tenant>> {
    let id = tenant_id(&state, &slug).await?;
    let update = TenantUpdate {
        name: body.name.as_deref().map(TenantName::parse).transpose()?,
        phone_region: body.phone_region.map(|r| r.as_deref().map(PhoneRegion::parse).transpose()).transpose()?,
        settings: body.settings.map(crmhub_core::tenant::tenant_settings).transpose()?,
    };
    Ok(Json(state.store.tenants().update(id, update).await?))
}

async fn remove(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<StatusCode> {
    let id = tenant_id(&state, &slug).await?;
    state.store.tenants().delete(id).await?;
    tracing::info!(tenant = %slug, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}
