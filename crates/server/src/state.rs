//! What every handler can reach. Cheap to clone: one reference count, whatever it holds
//! (axum clones the state for every extractor and middleware of every request).

use std::sync::Arc;

use anyhow::Context;
use crmhub_connectors::Connectors;
use crmhub_connectors::auth::SharedAuth;
use crmhub_connectors::http::HttpClient;
use crmhub_core::Clock;
use crmhub_store::Store;
use tokio::sync::Notify;

use crate::channels::calls::screen_pop::ScreenPops;
use crate::channels::social_inbox::{ChannelCache, Lookups};
use crate::config::Settings;
use crate::crm_access::CrmRegistry;
use crate::metrics::Metrics;
use crate::request_log_writer::{self, RequestLogWriter};
use crate::templates::TemplateRegistry;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`], reached through it (`state.store`, …).
pub struct Shared {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub http: HttpClient,
    /// Builds a connection's CRM client over the shared HTTP policy and login state.
    pub connectors: Connectors,
    /// Connectors already built, per connection.
    pub crms: CrmRegistry,
    /// Parsed integration template versions.
    pub templates: TemplateRegistry,
    /// Social-inbox channels looked up recently, per tenant slug.
    pub social_inbox: ChannelCache,
    /// Social-inbox searches and cards shared between concurrent (and, for searches, recent)
    /// requests.
    pub social_lookups: Lookups,
    /// Screen-pop lookups shared between concurrent and recent calls.
    pub screen_pops: ScreenPops,
    pub metrics: Arc<Metrics>,
    /// Wakes idle workers of this instance when work is enqueued here.
    pub jobs_wake: Arc<Notify>,
}

impl AppState {
    /// Opens the database and sets up outbound calls. The returned writer must be finished
    /// (`RequestLogWriter::finish`) once no more calls are made, to flush the request log.
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<(Self, RequestLogWriter)> {
        settings.validate()?;
        let store = Store::open(settings.store_options(clock.clone())?).await.context("opening the database")?;
        let metrics = Arc::new(Metrics::new());
        let (sink, writer) = request_log_writer::start(store.clone(), metrics.clone());
        let mut http = HttpClient::new(settings.outbound_policy()?, metrics.outbound.clone(), Arc::new(sink), clock)
            .context("building the outbound HTTP client")?;
        // Several instances share a PostgreSQL database, and so its rate budgets; a SQLite
        // installation is one instance, whose in-process budgets are the whole budget.
        if store.backend() == crmhub_store::Backend::Postgres {
            http = http.with_shared_budget(Arc::new(store.clone()));
        }
        let redirect = settings.public_url()?.join("/oauth/kommo/callback").context("the Kommo redirect URI")?;
        let blocked_store = store.clone();
        let connectors = Connectors::new(http.clone(), SharedAuth::new(Arc::new(store.clone())))
            .with_call_maps(Arc::new(store.clone()))
            .with_kommo_redirect_uri(redirect)
            .with_kommo_block_pause(std::time::Duration::from_secs(settings.kommo.ip_block_pause_secs))
            .with_kommo_rate(crmhub_connectors::http::RateSpec::new(
                settings.kommo.requests_per_second,
                crmhub_connectors::kommo::RATE.burst,
            ))
            // Kommo answered 403 (an IP block): the connector pauses the host; crmhub marks its
            // connections failing until then, and schedules their return.
            .on_host_blocked(Arc::new(move |block: crmhub_connectors::kommo::HostBlock| {
                let store = blocked_store.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(e) =
                            crate::kommo::host_blocked(&store, &block.host, block.until, &block.reason).await
                        {
                            tracing::warn!(host = %block.host, error = %e, "could not record the kommo host block");
                        }
                    });
                }
            }));
        let templates = TemplateRegistry::default();
        let policy = crmhub_connectors::http::AddressPolicy::new(http.policy().allow_private.clone());
        crate::templates::publish_shipped(&store, &policy).await?;
        let state = Self(Arc::new(Shared {
            settings: Arc::new(settings),
            store,
            http,
            connectors,
            crms: CrmRegistry::new(templates.clone(), policy),
            templates,
            social_inbox: ChannelCache::default(),
            social_lookups: Lookups::default(),
            screen_pops: ScreenPops::default(),
            metrics,
            jobs_wake: Arc::new(Notify::new()),
        }));
        Ok((state, writer))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The outbound address policy, which template URLs must obey too.
    pub fn address_policy(&self) -> crmhub_connectors::http::AddressPolicy {
        crmhub_connectors::http::AddressPolicy::new(self.http.policy().allow_private.clone())
    }
}

impl axum::extract::FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}
