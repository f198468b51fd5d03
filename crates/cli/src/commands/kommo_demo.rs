//! The demo's Kommo tenant: `marketing`, whose CRM is a simulated Kommo account, connected at
//! every start through Kommo's real OAuth flow — crmhub makes the authorize URL, the simulated
//! user consents, Kommo redirects to crmhub's public callback, and a job exchanges the code.
//!
//! The account is the one in Kommo's own documented webhook example (subdomain `test`, account
//! id 32720107), so that example, posted as Kommo documents it, belongs to this account.

use std::time::Duration;

use anyhow::Context;
use crmhub_core::{ConnectionId, ConnectionName, ConnectionStatus, ConnectorKind, Credentials, Host, Secret};
use crmhub_server::AppState;
use crmhub_sim::kommo::{KommoSim, KommoSimOptions};
use crmhub_store::connections::{ConnectionUpdate, NewConnection};
use crmhub_store::kommo::AuthorizeMode;
use serde_json::json;

pub const TENANT: &str = "marketing";
const SUBDOMAIN: &str = "test";
const ACCOUNT_ID: i64 = 32_720_107;
const SEEDED_CONTACTS: usize = 60;

/// The simulated account, its integration's redirect URI pointing at this crmhub.
pub async fn start(public_url: &url::Url) -> anyhow::Result<KommoSim> {
    let sim = crmhub_sim::kommo::spawn(KommoSimOptions {
        subdomain: SUBDOMAIN.to_owned(),
        account_id: ACCOUNT_ID,
        seed_contacts: SEEDED_CONTACTS,
        ..KommoSimOptions::default()
    })
    .await;
    sim.set_redirect_uri(public_url.join("/oauth/kommo/callback")?.as_str());
    Ok(sim)
}

/// Creates tenant `marketing` and its Kommo connection, or points them at this run's simulator.
pub async fn seed_tenant(state: &AppState, sim: &KommoSim) -> anyhow::Result<ConnectionId> {
    let tenant = super::demo::find_or_create_tenant(state, TENANT, "Demo marketing team").await?;
    let name = ConnectionName::parse("Kommo (simulated)")?;
    let host = Host::parse(&sim.base_url())?;
    let integration = sim.integration();
    let credentials: Credentials = [
        ("client_id".to_owned(), Secret::new(integration.client_id)),
        ("client_secret".to_owned(), Secret::new(integration.client_secret)),
    ]
    .into_iter()
    .collect();
    let fields = json!({"account": sim.account_domain()}).as_object().cloned().unwrap_or_default();
    let connections = state.store.connections(tenant.id);
    if let Some(existing) = connections.list().await?.into_iter().find(|c| c.name == name) {
        // `account_id` goes: the job sets it again once this run's account is connected.
        let update = ConnectionUpdate { host: Some(host), fields: Some(fields), ..Default::default() };
        connections.update(existing.id, update).await?;
        connections.replace_credentials(existing.id, credentials).await?;
        return Ok(existing.id);
    }
    let connection = connections
        .create(NewConnection {
            name,
            kind: ConnectorKind::Kommo,
            host,
            fields,
            credentials,
            template_version: None,
            details: Default::default(),
        })
        .await?;
    Ok(connection.id)
}

/// Runs the OAuth flow as a browser would, once crmhub serves on `base`: the authorize URL,
/// the simulated consent's redirect, crmhub's callback; then waits for the exchange job.
pub async fn connect(state: &AppState, base: &str, connection: ConnectionId) -> anyhow::Result<()> {
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let ready = format!("{base}/healthz");
    for _ in 0..100 {
        if browser.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slug = crmhub_core::TenantSlug::parse(TENANT)?;
    let tenant = state.store.tenants().find_by_slug(&slug).await?.context("tenant marketing is gone")?;
    let record = state.store.connections(tenant.id).get(connection).await?;
    let started = crmhub_server::kommo::start_authorization(state, &tenant, &record, AuthorizeMode::Popup)
        .await
        .map_err(|e| anyhow::anyhow!("starting the Kommo authorisation: {e}"))?;
    let consent = browser.get(&started.authorize_url).send().await.context("Kommo's consent page")?;
    let callback = consent
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .context("Kommo's consent did not redirect to crmhub")?
        .to_owned();
    let answered = browser.get(&callback).send().await.context("crmhub's OAuth callback")?;
    anyhow::ensure!(answered.status().is_success(), "crmhub's OAuth callback answered {}", answered.status());
    // Until the job has exchanged the code, a call with the last run's tokens (which this run's
    // simulator never issued) may mark the connection `needs_reauth`: only the job's success
    // (`active` with the account id it learnt) ends the wait.
    let mut last = None;
    for _ in 0..200 {
        let now = state.store.connections(tenant.id).get(connection).await?;
        if now.status == ConnectionStatus::Active && now.fields.contains_key("account_id") {
            return Ok(());
        }
        last = now.last_error;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the Kommo code exchange did not finish within 10 s ({})", last.unwrap_or_default())
}
