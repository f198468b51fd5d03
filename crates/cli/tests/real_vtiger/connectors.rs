//! Both connector kinds, built the way the application builds them, pointed at a peer.

use std::sync::Arc;
use std::time::Duration;

use crmhub_connectors::auth::{MemoryAuthState, SharedAuth};
use crmhub_connectors::http::{AddressPolicy, HttpClient, Lane, OutboundMetrics, OutboundPolicy, RateSpec};
use crmhub_connectors::template::{self, SourceFormat, Template};
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::crm::Crm;
use crmhub_core::{ConnectionId, ConnectorKind, Credentials, Host, PhoneRegion, Secret, SystemClock, TenantId};
use serde_json::json;

use crate::peer::Peer;

const VTIGER_TEMPLATE: &str = include_str!("../../../../templates/vtiger.yaml");

/// The tests read Vtiger itself, not crmhub's request log.
#[derive(Debug)]
struct NoLog;

impl crmhub_core::request_log::RequestLogSink for NoLog {
    fn record(&self, _: crmhub_core::request_log::RequestLogEntry) {}
}

/// One process's connectors: one HTTP client, one login state, as in the application.
pub struct Kit {
    connectors: Connectors,
    template: Arc<Template>,
}

pub fn kit() -> Kit {
    let policy = OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        request_timeout: Duration::from_secs(30),
        // The tests measure the connectors against Vtiger, not the rate budget.
        per_host: RateSpec::new(10_000.0, 10_000),
        per_connection: RateSpec::new(10_000.0, 10_000),
        ..OutboundPolicy::default()
    };
    let http = HttpClient::new(policy, OutboundMetrics::new(), Arc::new(NoLog), Arc::new(SystemClock)).unwrap();
    let connectors = Connectors::new(http, SharedAuth::new(Arc::new(MemoryAuthState::default())));
    let template =
        Arc::new(template::parse(VTIGER_TEMPLATE, SourceFormat::Yaml, &AddressPolicy::default()).expect("template"));
    Kit { connectors, template }
}

impl Kit {
    fn build(&self, peer: &Peer, kind: ConnectorKind) -> Arc<dyn Crm> {
        let host = Host::parse(&peer.url).unwrap();
        let fields = json!({"username": peer.username});
        let credentials: Credentials = [("access_key".to_owned(), Secret::new(&peer.access_key))].into_iter().collect();
        let spec = ConnectionSpec {
            tenant: TenantId::new(),
            id: ConnectionId::new(),
            kind: &kind,
            host: &host,
            fields: fields.as_object().unwrap(),
            credentials: &credentials,
            region: Some(PhoneRegion::parse("VN").unwrap()),
            template: matches!(kind, ConnectorKind::Template(_)).then_some((&self.template, 1)),
        };
        self.connectors.crm(spec, Lane::Interactive).expect("connector")
    }

    pub fn native(&self, peer: &Peer) -> Arc<dyn Crm> {
        self.build(peer, ConnectorKind::Vtiger)
    }

    pub fn template(&self, peer: &Peer) -> Arc<dyn Crm> {
        self.build(peer, ConnectorKind::Template("vtiger".into()))
    }

    /// Both kinds, each with its name for assertion messages.
    pub fn both(&self, peer: &Peer) -> [(&'static str, Arc<dyn Crm>); 2] {
        [("vtiger", self.native(peer)), ("template:vtiger", self.template(peer))]
    }
}
