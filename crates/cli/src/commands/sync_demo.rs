//! The demo's contact sync: tenant `marketing`'s simulated Kommo account mirrored into a list of
//! a simulated Unisender account, kept current by Kommo's webhooks.
//!
//! Both simulators are new at every start, so is everything that points at them: the Unisender
//! connection is pointed at this run's simulator, the pipeline is made again (its index described
//! the last run's list) and the webhook destination gets a new secret (the last one named the
//! last run's port). The destination and the pipeline need the Kommo account connected, so they
//! are made by [`complete`] once the OAuth flow has succeeded; [`prepare`] makes what is printed.

use std::time::Duration;

use anyhow::Context;
use crmhub_connectors::http::Lane;
use crmhub_core::{ConnectionId, ConnectionName, ConnectorKind, Credentials, Host, Secret, TenantSlug};
use crmhub_server::AppState;
use crmhub_server::kommo::client::{KommoAccount, WEBHOOK_EVENTS};
use crmhub_server::sync::PipelineInput;
use crmhub_sim::kommo::KommoSim;
use crmhub_sim::unisender::{UnisenderSim, UnisenderSimOptions};
use crmhub_store::connections::{ConnectionUpdate, NewConnection};
use crmhub_store::kommo::hash_token;
use crmhub_store::sync::{RunStatus, SyncRun};
use crmhub_store::tenants::Tenant;

use crate::commands::kommo_demo::TENANT;

/// The Unisender list the pipeline mirrors into.
pub const LIST_TITLE: &str = "Kommo contacts";
/// The pipeline's name (`crmhub sync status --tenant marketing --pipeline …`).
pub const PIPELINE: &str = "Kommo to Unisender";
/// The e-mail address the printed PATCH gives Anna Kowalski.
pub const NEW_EMAIL: &str = "anna.kowalski@example.org";

/// What the demo prints about the sync, made before it prints.
pub struct SyncDemo {
    pub unisender: UnisenderSim,
    pub setup: Setup,
    /// Anna Kowalski's id in the Kommo simulator.
    pub anna: i64,
    /// A long-lived token of the Kommo simulator, for its REST API.
    pub kommo_token: String,
}

async fn tenant(state: &AppState) -> anyhow::Result<Tenant> {
    let slug = TenantSlug::parse(TENANT)?;
    state.store.tenants().find_by_slug(&slug).await?.context("tenant marketing is gone")
}

/// Starts the Unisender simulator with its list, points tenant `marketing`'s Unisender connection
/// at it, and forgets the last run's pipeline and webhook destination.
pub async fn prepare(
    state: &AppState,
    kommo: &KommoSim,
    kommo_connection: ConnectionId,
    public_url: &url::Url,
) -> anyhow::Result<SyncDemo> {
    let unisender = crmhub_sim::unisender::spawn(UnisenderSimOptions::default()).await;
    let list_id = unisender.create_list(LIST_TITLE);
    let tenant = tenant(state).await?;
    let name = ConnectionName::parse("Unisender (simulated)")?;
    let host = Host::parse(&unisender.base_url())?;
    let credentials: Credentials = [("api_key".to_owned(), Secret::new(unisender.api_key()))].into_iter().collect();
    let connections = state.store.connections(tenant.id);
    let unisender_connection = match connections.list().await?.into_iter().find(|c| c.name == name) {
        Some(existing) => {
            let update = ConnectionUpdate { host: Some(host), ..Default::default() };
            connections.update(existing.id, update).await?;
            connections.replace_credentials(existing.id, credentials).await?;
            existing.id
        }
        None => {
            connections
                .create(NewConnection {
                    name,
                    kind: ConnectorKind::Unisender,
                    host,
                    fields: Default::default(),
                    credentials,
                    template_version: None,
                    details: Default::default(),
                })
                .await?
                .id
        }
    };
    let sync = state.store.sync(tenant.id);
    if let Ok(old) = sync.pipeline_by_name(PIPELINE).await {
        sync.delete_pipeline(old.id).await?;
    }
    state.store.kommo(tenant.id).delete_webhook(kommo_connection).await?;
    let hook_secret = Secret::generate();
    let mut hook_url = public_url.clone();
    hook_url
        .path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the public URL cannot take a path"))?
        .pop_if_empty()
        .extend(["hooks", "kommo", &kommo_connection.to_string(), hook_secret.expose()]);
    let anna = *kommo.contact_ids().first().context("the Kommo simulator has no contacts")?;
    let kommo_token = kommo.issue_long_lived_token(Duration::from_secs(30 * 86_400));
    let setup = Setup { unisender_connection, list_id, hook_url, hook_secret };
    Ok(SyncDemo { unisender, setup, anna, kommo_token })
}

/// How the pipeline's first backfill ended.
pub struct Synced {
    pub run: SyncRun,
    /// The e-mail addresses the pipeline has put in the list.
    pub emails: usize,
}

/// Once the Kommo account is connected: registers the webhook destination at Kommo (then keeps
/// its secret's hash), creates the pipeline (its backfill starts by itself) and waits for the
/// backfill to end.
pub async fn complete(state: &AppState, kommo_connection: ConnectionId, demo: &Setup) -> anyhow::Result<Synced> {
    let tenant = tenant(state).await?;
    let connection = state.store.connections(tenant.id).get(kommo_connection).await?;
    let account = KommoAccount::build(&state.store, &state.connectors, &tenant, &connection, Lane::Interactive)
        .await
        .map_err(|e| anyhow::anyhow!("the Kommo account: {e}"))?;
    account
        .subscribe_webhook(&demo.hook_url, &WEBHOOK_EVENTS)
        .await
        .map_err(|e| anyhow::anyhow!("registering the webhook at Kommo: {e}"))?;
    state
        .store
        .kommo(tenant.id)
        .save_webhook(
            kommo_connection,
            &Secret::new(demo.hook_url.as_str()),
            &hash_token(demo.hook_secret.expose()),
            &WEBHOOK_EVENTS,
        )
        .await?;
    let input = PipelineInput {
        name: PIPELINE.to_owned(),
        source_connection_id: kommo_connection.to_string(),
        destination_connection_id: demo.unisender_connection.to_string(),
        list_id: demo.list_id.clone(),
        field_map: None,
        deletion: None,
        poll_secs: None,
    };
    let (pipeline, start) = crmhub_server::sync::create_pipeline(state, &tenant, input)
        .await
        .map_err(|e| anyhow::anyhow!("creating the sync pipeline: {e}"))?;
    state.jobs_wake.notify_waiters();
    let sync = state.store.sync(tenant.id);
    for _ in 0..1200 {
        let run = sync.run(start.run.id).await?;
        if run.status != RunStatus::Running {
            let emails = sync.indexed_emails(pipeline.id).await?.len();
            return Ok(Synced { run, emails });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the pipeline's backfill did not end within 2 minutes")
}

/// What [`complete`] needs, cloned into the task that connects the account.
#[derive(Clone)]
pub struct Setup {
    pub unisender_connection: ConnectionId,
    pub list_id: String,
    /// `{public_url}/hooks/kommo/{connection}/{secret}`: the secret is the last segment.
    pub hook_url: url::Url,
    hook_secret: Secret,
}

/// Kommo's documented webhook example (contract §5), exactly: a contact added in account
/// `test` (32720107), form-encoded as Kommo posts it.
pub use crmhub_sim::kommo::DOCUMENTED_WEBHOOK_EXAMPLE as KOMMO_EXAMPLE;
