//! The shared conformance kit, each connector on an installation of its own.

use async_trait::async_trait;
use crmhub_connectors::conformance::{self, Backend};
use crmhub_core::PhoneRegion;
use serde_json::json;

use crate::connectors::kit;
use crate::peer::{Role, Ws, take};

/// The kit's view of the CRM, read and written through the webservice.
struct RealVtiger(Ws);

#[async_trait]
impl Backend for RealVtiger {
    async fn add_contact(&self, first: &str, last: &str, email: &str, phone: &str) -> String {
        self.0.contact(first, last, json!({"email": email, "mobile": phone})).await
    }

    async fn call_logs(&self, call_id: &str) -> usize {
        let marker = format!("[crmhub-call:{call_id}]");
        let vtql = format!("SELECT id, description FROM Events WHERE description LIKE '%{marker}%' LIMIT 0,100;");
        let rows = self.0.query(&vtql).await;
        rows.iter().filter(|r| r["description"].as_str().is_some_and(|d| d.contains(&marker))).count()
    }

    async fn notes(&self, contact_id: &str) -> Vec<String> {
        let vtql = format!(
            "SELECT commentcontent FROM ModComments WHERE related_to = '{contact_id}' ORDER BY id LIMIT 0,100;"
        );
        let rows = self.0.query(&vtql).await;
        rows.iter().filter_map(|r| r["commentcontent"].as_str().map(str::to_owned)).collect()
    }

    async fn ticket_title(&self, ticket_id: &str, contact_id: &str) -> Option<String> {
        let ticket = self.0.retrieve(ticket_id).await?;
        (ticket["contact_id"] == contact_id).then(|| ticket["ticket_title"].as_str().unwrap_or_default().to_owned())
    }

    async fn remove_contact(&self, id: &str) {
        self.0.delete(id).await;
    }

    fn region(&self) -> Option<PhoneRegion> {
        Some(PhoneRegion::parse("VN").unwrap())
    }
}

#[tokio::test]
async fn the_native_connector_passes_the_conformance_kit() {
    let (peer, _turn) = take(Role::NativeKit).await;
    let backend = RealVtiger(peer.ws().await);
    conformance::run(kit().native(&peer).as_ref(), &backend).await;
}

#[tokio::test]
async fn the_vtiger_template_passes_the_conformance_kit() {
    let (peer, _turn) = take(Role::TemplateKit).await;
    let backend = RealVtiger(peer.ws().await);
    conformance::run(kit().template(&peer).as_ref(), &backend).await;
}
