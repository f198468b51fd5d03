//! Contacts read throughput of the Kommo connector against the Kommo simulator, over real HTTP
//! on loopback: the whole account read through the change feed (250 contacts a page), once
//! with Kommo's budget on (the simulator enforcing its 7-per-second limit too) and once with
//! both off. The budget row must sit at the budget: about 6 requests a second, never a 429.
//!
//! `cargo bench -p crmhub-connectors --bench kommo_read` (release build; about 20 s).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmhub_connectors::auth::{MemoryAuthState, SharedAuth};
use crmhub_connectors::http::{HttpClient, Lane, OutboundMetrics, OutboundPolicy, RateSpec};
use crmhub_connectors::kommo::RATE;
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::crm::ChangeCursor;
use crmhub_core::request_log::{RequestLogEntry, RequestLogSink};
use crmhub_core::{ConnectionId, ConnectorKind, Credentials, Host, Secret, SystemClock, TenantId};
use crmhub_sim::kommo::{KommoSimOptions, spawn};
use serde_json::json;

const CONTACTS: usize = 5_000;
const REDIRECT: &str = "https://crmhub.example/oauth/kommo/callback";

#[derive(Debug, Default)]
struct Requests(Mutex<usize>);

impl RequestLogSink for Requests {
    fn record(&self, _entry: RequestLogEntry) {
        *self.0.lock().unwrap() += 1;
    }
}

struct Row {
    name: &'static str,
    contacts: usize,
    requests: usize,
    elapsed: Duration,
    rejected: u64,
}

async fn read_all(name: &'static str, budget: Option<RateSpec>) -> Row {
    let sim =
        spawn(KommoSimOptions { rate_limit: budget.map(|_| 7), seed_contacts: CONTACTS, ..KommoSimOptions::default() })
            .await;
    sim.set_redirect_uri(REDIRECT);
    let requests = Arc::new(Requests::default());
    let policy = OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        request_timeout: Duration::from_secs(10),
        per_host: RateSpec::new(1_000_000.0, 1_000_000),
        ..OutboundPolicy::default()
    };
    let http = HttpClient::new(policy, OutboundMetrics::new(), requests.clone(), Arc::new(SystemClock)).unwrap();
    let connectors = Connectors::new(http, SharedAuth::new(Arc::new(MemoryAuthState::default())))
        .with_kommo_redirect_uri(REDIRECT.parse().unwrap())
        .with_kommo_rate(budget.unwrap_or(RateSpec::new(1_000_000.0, 1_000_000)));
    let integration = sim.integration();
    let credentials: Credentials = [
        ("client_id".to_owned(), Secret::new(integration.client_id)),
        ("client_secret".to_owned(), Secret::new(integration.client_secret)),
    ]
    .into_iter()
    .collect();
    let host = Host::parse(&sim.base_url()).unwrap();
    let fields = json!({"account": sim.account_domain()});
    let spec = ConnectionSpec {
        tenant: TenantId::new(),
        id: ConnectionId::new(),
        kind: &ConnectorKind::Kommo,
        host: &host,
        fields: fields.as_object().unwrap(),
        credentials: &credentials,
        region: None,
        template: None,
    };
    let kommo = connectors.kommo(spec, Lane::Background).unwrap();
    kommo.exchange_code(&Secret::new(sim.widget_install_code())).await.unwrap();
    let crm = connectors.crm(spec, Lane::Background).unwrap();
    // Let the connect's requests leave the simulator's one-second window.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = *requests.0.lock().unwrap();
    let started = Instant::now();
    let mut cursor: Option<ChangeCursor> = None;
    let mut contacts = 0;
    loop {
        let page = crm.list_changes(cursor.as_ref()).await.expect("change feed");
        contacts += page.updated.len();
        cursor = Some(page.next);
        if !page.more {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(contacts, sim.contact_count(), "every contact read once");
    Row { name, contacts, requests: *requests.0.lock().unwrap() - before, elapsed, rejected: sim.rejected_429() }
}

#[tokio::main]
async fn main() {
    let rows = [read_all("budget on (Kommo 7/s)", Some(RATE)).await, read_all("budget off", None).await];
    println!("\nKommo contacts read, {CONTACTS} contacts, 250 per page, one connection\n");
    println!("| run | contacts | requests | seconds | contacts/s | requests/s | 429s |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        let secs = row.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {} |",
            row.name,
            row.contacts,
            row.requests,
            secs,
            row.contacts as f64 / secs,
            row.requests as f64 / secs,
            row.rejected
        );
    }
}
