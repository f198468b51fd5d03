//! The demo's template-driven tenant: `shop`, whose CRM is a JSON REST CRM reached through the
//! shipped `contactbook` integration template.

use anyhow::Context;
use crmhub_core::{ConnectionId, ConnectionName, ConnectorKind, Credentials, Host, Secret};
use crmhub_server::AppState;
use crmhub_sim::json_crm::{self, DEFAULT_PASSWORD, DEFAULT_USERNAME, JsonCrmSimHandle, JsonCrmSimOptions, NewContact};
use crmhub_store::connections::{ConnectionUpdate, NewConnection};
use serde_json::json;

pub async fn start_contactbook() -> anyhow::Result<JsonCrmSimHandle> {
    let book = json_crm::try_spawn(JsonCrmSimOptions::default()).await.context("starting the JSON CRM simulator")?;
    book.insert_contact(
        NewContact::new("Red")
            .first_name("Susan")
            .email("susan.red@shop.example")
            .phone("+84 912 345 678")
            .company("Redwood Supplies"),
    );
    book.seed_demo_contacts(120);
    Ok(book)
}

/// Creates tenant `shop` and its template connection, or points them at this run's simulator.
pub async fn seed_tenant(state: &AppState, book: &JsonCrmSimHandle) -> anyhow::Result<ConnectionId> {
    let tenant = super::demo::find_or_create_tenant(state, "shop", "Shop support desk").await?;
    let name = ConnectionName::parse("ContactBook (template)")?;
    let host = Host::parse(&book.base_url())?;
    let credentials: Credentials = [("password".to_owned(), Secret::new(DEFAULT_PASSWORD))].into_iter().collect();
    let connections = state.store.connections(tenant.id);
    if let Some(existing) = connections.list().await?.into_iter().find(|c| c.name == name) {
        connections.update(existing.id, ConnectionUpdate { host: Some(host), ..Default::default() }).await?;
        return Ok(existing.id);
    }
    let mut new = NewConnection {
        name,
        kind: ConnectorKind::parse("template:contactbook")?,
        host,
        fields: json!({"username": DEFAULT_USERNAME}).as_object().cloned().unwrap_or_default(),
        credentials,
        template_version: None,
        details: json!({"call_centre_id": "demo-cc-1", "description": "Demo shop's CRM"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    crmhub_server::templates::prepare_connection(
        &state.templates,
        &state.store,
        &state.address_policy(),
        tenant.id,
        &mut new,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(connections.create(new).await?.id)
}
