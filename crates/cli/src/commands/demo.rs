//! `crmhub demo`: crmhub on a fresh SQLite database with everything it needs to show each
//! channel working, no setup and no network: an in-process Vtiger simulator seeded with
//! contacts, and a tenant `demo` connected to it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use crmhub_core::{ConnectionName, ConnectorKind, Credentials, Host, PhoneRegion, Secret, TenantName, TenantSlug};
use crmhub_server::{AppState, Application, Settings};
use crmhub_sim::vtiger::{self, VtigerSimHandle, VtigerSimOptions};
use crmhub_store::connections::{ConnectionUpdate, NewConnection};
use crmhub_store::tenants::{NewTenant, Tenant};
use serde_json::json;

use super::calls;
use super::channel;
use super::kommo_demo;
use super::serve::Signals;
use super::sync_demo;
use super::templates_demo;

/// Contacts the simulator holds besides the protocol's own examples.
const SEEDED_CONTACTS: usize = 300;

/// The social inbox secret of tenant `demo`, for both endpoints: the protocol README's example.
const DEMO_SECRET: &str = "changeme!";

/// Susan Red's mobile, as the simulator holds it (`+84 912 345 678`) and as a Vietnamese PBX
/// sends it: nationally, read through the tenant's phone region.
const SUSAN_MOBILE: (&str, &str) = ("0912345678", "+84912345678");

/// The number the demo's callers dial: a Ho Chi Minh City line of the contact centre.
const CONTACT_CENTRE_NUMBER: &str = "02838221000";

pub async fn run(listen: SocketAddr, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let signals = Signals::install();
    let (data_dir, _temp) = match data_dir {
        Some(dir) => (dir, None),
        None => {
            let temp = tempfile::Builder::new().prefix("crmhub-demo-").tempdir()?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let mut settings = Settings::defaults()?;
    settings.data_dir = data_dir.clone();
    settings.server.listen = listen.to_string();
    // The demo's simulators listen on loopback; a production configuration refuses it.
    settings.outbound.allow_private = vec!["127.0.0.1/32".into()];

    let crm = start_vtiger().await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    // Kommo redirects the browser to crmhub's own address: the port bound, not the one asked for.
    settings.server.public_url = format!("http://{}", listener.local_addr()?);
    let mut app = Application::builder(settings).listener(listener).build().await?;
    let base = format!("http://{}", app.local_addr());
    let setup = seed_tenant(app.state(), &crm).await?;
    let book = templates_demo::start_contactbook().await?;
    let shop = templates_demo::seed_tenant(app.state(), &book).await?;
    let susan = crm
        .records("Contacts")
        .into_iter()
        .find(|c| c.get("firstname").is_some_and(|f| f == "Susan") && c.get("lastname").is_some_and(|l| l == "Red"))
        .and_then(|c| c.get("id").cloned())
        .context("the simulator has no Susan Red")?;
    let public_url = url::Url::parse(&base)?;
    let social =
        channel::configure_demo(app.state(), "demo", setup.connection, DEMO_SECRET, &public_url, &susan).await?;
    let pbx = calls::configure_demo(app.state(), "demo", setup.connection, SUSAN_MOBILE).await?;
    let kommo = kommo_demo::start(&public_url).await?;
    let kommo_connection = kommo_demo::seed_tenant(app.state(), &kommo).await?;
    let sync = sync_demo::prepare(app.state(), &kommo, kommo_connection, &public_url).await?;

    println!("crmhub demo is running on {base} (data in {})", data_dir.display());
    let admin_token = app.take_generated_admin_token();
    if let Some(token) = &admin_token {
        println!();
        println!("Admin API token: {}", token.expose());
        println!("  curl -H 'Authorization: Bearer {}' {base}/admin/v1/tenants", token.expose());
    }
    println!();
    println!(
        "Tenant `demo` is connected to a simulated Vtiger at {} ({} contacts).",
        crm.base_url(),
        SEEDED_CONTACTS + 2
    );
    println!("  Test the connection: POST {base}/admin/v1/tenants/demo/connections/{}/test", setup.connection);
    println!();
    println!("Social inbox (the platform's \"Custom CRM\" integration), secret `{DEMO_SECRET}` for both endpoints:");
    println!("  Search Endpoint URL: {}", social.search_endpoint);
    println!("  Iframe Endpoint URL: {}", social.iframe_endpoint);
    println!("  Signed search for \"red\" (JSON):");
    println!("    {}", social.search);
    println!("  Signed contact card of Susan Red, with a sample conversation (HTML):");
    println!("    {}", social.card);
    println!("  The links are valid for 24 hours; change any parameter and the signature no longer matches (403).");
    // The binary's own path, so that the hint works for whoever started the demo with `cargo run`.
    let binary = std::env::current_exe().map_or_else(|_| "crmhub".to_owned(), |p| p.display().to_string());
    println!(
        "  More: CRMHUB_DATA_DIR={} CRMHUB_LISTEN={listen} {binary} sign --tenant demo --search NAME",
        data_dir.display()
    );
    println!();
    println!(
        "Call centre (a PBX posting call events), channel key `{}` (scope calls; a new one at every start):",
        pbx.key_name
    );
    println!("  Ring Susan Red's mobile; the answer holds her screen pop:");
    let call = json!({
        "call_id": format!("demo-{}", app.state().store.clock().now_secs()),
        "direction": "inbound",
        "from": pbx.number,
        "to": CONTACT_CENTRE_NUMBER,
    });
    // Written out so that `type` comes first, as a reader expects it (JSON objects print sorted).
    let started = format!(r#"{{"type":"call.started","call":{call}}}"#);
    println!(
        "    curl {base}/t/demo/calls/events -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{started}'",
        pbx.key
    );
    // The admin token is known only on the run that generated it (a fresh data directory).
    let token = admin_token.as_ref().map_or("TOKEN", |t| t.expose());
    println!(
        "  A whole call, logged in the CRM: CRMHUB_CHANNEL_KEY={} CRMHUB_ADMIN_TOKEN={token} {binary} call simulate --url {base} --tenant demo --from {}",
        pbx.key, pbx.number
    );
    println!();
    println!(
        "Tenant `shop` reaches a JSON REST CRM (simulated at {}) through the `contactbook` integration template:",
        book.base_url()
    );
    println!("  Test the connection: POST {base}/admin/v1/tenants/shop/connections/{shop}/test");
    println!("  The template: GET {base}/admin/v1/templates/contactbook (format: docs/templates.md)");
    println!();
    println!(
        "Tenant `{}` reaches a simulated Kommo account ({}, {}), connected at every start through Kommo's OAuth flow:",
        kommo_demo::TENANT,
        kommo.account_domain(),
        kommo.base_url()
    );
    println!(
        "  Test the connection: POST {base}/admin/v1/tenants/{}/connections/{kommo_connection}/test",
        kommo_demo::TENANT
    );
    println!(
        "  Connect again (the authorize URL to open): POST {base}/admin/v1/tenants/{}/connections/{kommo_connection}/oauth/start",
        kommo_demo::TENANT
    );
    println!();
    println!(
        "Contact sync: tenant `{}`'s Kommo contacts mirrored into the list \"{}\" (id {}) of a simulated Unisender at {}, pipeline \"{}\":",
        kommo_demo::TENANT,
        sync_demo::LIST_TITLE,
        sync.setup.list_id,
        sync.unisender.base_url(),
        sync_demo::PIPELINE
    );
    println!(
        "  The webhook's registration at Kommo, the pipeline and its first backfill follow the OAuth flow, within seconds; a line says when the contacts are in the list."
    );
    println!(
        "  Webhook URL, registered at Kommo (contact events); its last segment is the secret that authenticates a delivery (crmhub keeps only its hash; a new one at every start):"
    );
    println!("    {}", sync.setup.hook_url);
    let anna = format!("{}/api/v4/contacts/{}", kommo.base_url(), sync.anna);
    let patch = format!(
        r#"{{"custom_fields_values":[{{"field_code":"EMAIL","values":[{{"value":"{}","enum_code":"WORK"}}]}}]}}"#,
        sync_demo::NEW_EMAIL
    );
    println!(
        "  Change Anna Kowalski's e-mail in Kommo (the simulator's own REST API, with a long-lived token it issued; Kommo then posts the change to the webhook):"
    );
    println!(
        "    curl -X PATCH {anna} -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{patch}'",
        sync.kommo_token
    );
    println!("  See it arrive in the Unisender list (a second or two later):");
    println!(
        "    curl -H 'Authorization: Bearer {token}' {base}/admin/v1/tenants/{}/connections/{}/unisender/contacts/{}",
        kommo_demo::TENANT,
        sync.setup.unisender_connection,
        sync_demo::NEW_EMAIL
    );
    println!("  Kommo's documented webhook example, posted as Kommo posts it (answered 200, `accepted`):");
    println!(
        "    curl {} -H 'Content-Type: application/x-www-form-urlencoded' -H 'User-Agent: amoCRM-WebHook-client/1.0' --data-raw '{}'",
        sync.setup.hook_url,
        sync_demo::KOMMO_EXAMPLE
    );
    println!();
    println!("Health: {base}/healthz  Ready: {base}/readyz  Metrics: {base}/metrics");
    println!("Press Ctrl-C to stop.");
    let state = app.state().clone();
    let at = base.clone();
    let setup = sync.setup.clone();
    tokio::spawn(async move {
        if let Err(e) = kommo_demo::connect(&state, &at, kommo_connection).await {
            eprintln!("Kommo: connecting the demo account failed: {e:#}");
            return;
        }
        say(&format!(
            "Kommo: tenant `{}` is connected (the simulated user consented, crmhub exchanged the code and stored the tokens sealed).",
            kommo_demo::TENANT
        ));
        match sync_demo::complete(&state, kommo_connection, &setup).await {
            Ok(synced) => say(&format!(
                "Sync: webhook registered at Kommo; backfill {}: {} Kommo contacts read, {} e-mail addresses mirrored into the Unisender list \"{}\".",
                synced.run.status.as_str(),
                synced.run.done,
                synced.emails,
                sync_demo::LIST_TITLE
            )),
            Err(e) => eprintln!("Sync: setting up the demo's pipeline failed: {e:#}"),
        }
    });
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        signals.wait().await;
        shutdown.cancel();
    });
    let result = app.run_until_stopped().await;
    crm.shutdown().await;
    book.shutdown().await;
    kommo.shutdown().await;
    sync.unisender.shutdown().await;
    result
}

/// A line on stdout once the demo runs: whoever reads it may have stopped reading (a closed
/// pipe), which must not stop the work that follows.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

async fn start_vtiger() -> anyhow::Result<VtigerSimHandle> {
    let crm = vtiger::try_spawn(VtigerSimOptions::default()).await.context("starting the Vtiger simulator")?;
    let account = crm.insert_record("Accounts", [("accountname", "Redwood Supplies")]);
    let susan = crm.insert_record(
        "Contacts",
        [
            ("firstname", "Susan"),
            ("lastname", "Red"),
            ("email", "susan.red@example.com"),
            ("mobile", "+84 912 345 678"),
            ("title", "Purchasing manager"),
            ("account_id", account.as_str()),
            ("leadsource", "Web Site"),
        ],
    );
    crm.insert_record(
        "ModComments",
        [("commentcontent", "Prefers to be contacted by e-mail."), ("related_to", susan.as_str())],
    );
    crm.insert_record(
        "HelpDesk",
        [
            ("ticket_title", "Late delivery of order 1042"),
            ("ticketstatus", "Open"),
            ("ticketpriorities", "High"),
            ("contact_id", susan.as_str()),
        ],
    );
    crm.insert_record(
        "Contacts",
        [
            ("firstname", "Frank"),
            ("lastname", "Redford"),
            ("email", "frank.redford@example.com"),
            ("phone", "028 3900 1234"),
        ],
    );
    crm.seed_demo_contacts(SEEDED_CONTACTS);
    Ok(crm)
}

struct DemoSetup {
    connection: crmhub_core::ConnectionId,
}

/// Creates tenant `demo` and its Vtiger connection, or — when the demo runs again on the same
/// data directory — points the existing connection at this run's simulator.
async fn seed_tenant(state: &AppState, crm: &VtigerSimHandle) -> anyhow::Result<DemoSetup> {
    let tenant = find_or_create_tenant(state, "demo", "Demo contact centre").await?;
    let name = ConnectionName::parse("Vtiger (simulated)")?;
    let host = Host::parse(&crm.base_url())?;
    let credentials: Credentials =
        [("access_key".to_owned(), Secret::new(crm.admin_access_key()))].into_iter().collect();
    let connections = state.store.connections(tenant.id);
    let existing = connections.list().await?.into_iter().find(|c| c.name == name);
    let connection = match existing {
        Some(connection) => {
            let update = ConnectionUpdate { host: Some(host), ..Default::default() };
            connections.update(connection.id, update).await?;
            connections.replace_credentials(connection.id, credentials).await?
        }
        None => {
            connections
                .create(NewConnection {
                    name,
                    kind: ConnectorKind::Vtiger,
                    host,
                    fields: json!({"username": "admin", "card_fields": ["leadsource", "department"]})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    credentials,
                    template_version: None,
                    details: Default::default(),
                })
                .await?
        }
    };
    Ok(DemoSetup { connection: connection.id })
}

/// The demo tenant `slug`, created on the first run, found again when the demo runs on the same
/// data directory.
pub(super) async fn find_or_create_tenant(state: &AppState, slug: &str, name: &str) -> anyhow::Result<Tenant> {
    let slug = TenantSlug::parse(slug)?;
    if let Some(tenant) = state.store.tenants().find_by_slug(&slug).await? {
        return Ok(tenant);
    }
    let new = NewTenant {
        slug,
        name: TenantName::parse(name)?,
        phone_region: Some(PhoneRegion::parse("VN")?),
        settings: Default::default(),
    };
    Ok(state.store.tenants().create(new).await?)
}
