//! `crmhub calls list|show` (the admin API's call views, on the database) and
//! `crmhub call simulate` (a whole call played against a running crmhub over HTTP, as a PBX
//! would post it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
#[cfg(feature = "demo")]
use crmhub_core::ConnectionId;
#[cfg(feature = "demo")]
use crmhub_core::PhoneRegion;
use crmhub_server::Settings;
use crmhub_server::channels::calls::admin::{list_calls, show_call};
#[cfg(feature = "demo")]
use crmhub_server::{AppState, admin::channel_keys::create_key};
use crmhub_store::Store;
use serde_json::{Value, json};

use super::print_json;
use super::records::tenant_id;
use crate::cli::TenantArg;

#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// Play a whole call (started, answered, ended, finalized) against a running crmhub, as a
    /// PBX would post it; print the screen pop and, once the call is logged, its CRM record.
    Simulate(SimulateArgs),
    /// List a tenant's calls changed since --since (default: the last 24 hours), newest first.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// Unix milliseconds or an RFC 3339 time (2026-12-01T09:30:00Z).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one call with its events and its log jobs still in the queue.
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        call_id: String,
    },
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    tenant: TenantArg,
    /// The caller's number, as the PBX would send it (e.g. 0912345678).
    #[arg(long)]
    from: String,
    /// The number the caller dialled.
    #[arg(long)]
    to: Option<String>,
    /// Where crmhub runs [default: server.public_url, else http://<server.listen>].
    #[arg(long)]
    url: Option<url::Url>,
    /// A channel key of the tenant with the `calls` scope.
    #[arg(long, env = "CRMHUB_CHANNEL_KEY", hide_env_values = true)]
    key: String,
    /// The admin token, to read the call's CRM record [default: admin.token, i.e. env
    /// CRMHUB_ADMIN_TOKEN].
    #[arg(long)]
    admin_token: Option<String>,
    /// The call's id [default: sim-<unix ms>-<pid>].
    #[arg(long)]
    call_id: Option<String>,
    /// How long the call lasted, as the events report it (the command does not wait for it).
    #[arg(long, default_value_t = 90)]
    duration_secs: u32,
}

pub async fn run(settings: &Settings, command: CallsCommand) -> anyhow::Result<()> {
    match command {
        CallsCommand::Simulate(args) => simulate(settings, args).await,
        CallsCommand::List { tenant, since, limit } => {
            let store = super::open_store(settings).await?;
            let since = since.as_deref().map(parse_since).transpose()?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            print_json(&list_calls(&store, tenant, since, Some(limit)).await.map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        CallsCommand::Show { tenant, call_id } => {
            show(super::open_store(settings).await?, &tenant.tenant, &call_id).await
        }
    }
}

async fn show(store: Store, slug: &str, call_id: &str) -> anyhow::Result<()> {
    let tenant = tenant_id(&store, slug).await?;
    match show_call(&store, tenant, call_id).await.map_err(|e| anyhow::anyhow!("{e}"))? {
        Some(view) => print_json(&view),
        None => bail!("tenant {slug} has no call {call_id:?}"),
    }
}

/// `--since`: Unix milliseconds, as the admin API takes it, or an RFC 3339 time.
fn parse_since(raw: &str) -> anyhow::Result<i64> {
    if let Ok(millis) = raw.parse::<i64>() {
        return Ok(millis);
    }
    crmhub_core::time::parse_rfc3339(raw).map(|secs| secs * 1000).with_context(|| {
        format!("--since {raw:?}: expected Unix milliseconds or an RFC 3339 time (2026-12-01T09:30:00Z)")
    })
}

/// How long `simulate` waits for the call's final CRM log: a log job runs within a second or
/// two on an idle instance, and retries of a failing CRM back off far beyond this.
const LOG_WAIT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(250);

async fn simulate(settings: &Settings, args: SimulateArgs) -> anyhow::Result<()> {
    let base = match args.url.clone() {
        Some(url) => url,
        None => settings.public_url()?,
    };
    // The record id is read from the admin API's view of the call, not by posting the last
    // event again until its answer names the record: every post is stored in the call's event
    // history and counted as a duplicate in the metrics, so polling that way would leave a
    // trail of fake repeats; the admin view is a plain read, and it also shows a log job that
    // died, with its reason, instead of a silent timeout.
    let admin_token = args
        .admin_token
        .clone()
        .or_else(|| (!settings.admin.token.is_empty()).then(|| settings.admin.token.clone()))
        .context(
            "crmhub call simulate reads the call's CRM record through the admin API: give --admin-token or set CRMHUB_ADMIN_TOKEN",
        )?;
    let client = Client { http: reqwest::Client::new(), base };
    let slug = &args.tenant.tenant;
    let call_id = args.call_id.clone().unwrap_or_else(|| {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("sim-{millis}-{}", std::process::id())
    });
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // The events say the call has just ended after ringing for a few seconds.
    let ended_at = now;
    let answered_at = now.saturating_sub(u64::from(args.duration_secs));
    let started_at = answered_at.saturating_sub(5);
    let agent = json!({"id": "sim", "name": "Simulated agent"});

    println!("Call {call_id} from {} to tenant {slug} at {}", args.from, client.base);
    let mut started = json!({"call_id": call_id, "direction": "inbound", "from": args.from, "started_at": started_at});
    if let Some(to) = &args.to {
        started["to"] = json!(to);
    }
    let answer = client.event(slug, &args.key, json!({"type": "call.started", "call": started})).await?;
    print_screen_pop(&answer["call"]["screen_pop"]);
    let events = [
        ("call.answered", json!({"call_id": call_id, "answered_at": answered_at, "agent": agent})),
        (
            "call.ended",
            json!({"call_id": call_id, "ended_at": ended_at, "duration_secs": args.duration_secs, "end_reason": "completed"}),
        ),
        (
            "call.finalized",
            json!({"call_id": call_id, "duration_secs": args.duration_secs, "disposition": "simulated",
                   "notes": "Played by crmhub call simulate."}),
        ),
    ];
    for (kind, call) in events {
        let answer = client.event(slug, &args.key, json!({"type": kind, "call": call})).await?;
        println!("{kind}: {}", answer["effect"].as_str().unwrap_or("?"));
    }

    println!("Waiting up to {} s for the call's CRM log…", LOG_WAIT.as_secs());
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    loop {
        let call = client.admin_call(slug, &call_id, &admin_token).await?;
        let crm = &call["crm"];
        if let (Some(record), true) = (crm["record_id"].as_str(), crm["up_to_date"] == json!(true)) {
            let contact = call["contact_id"].as_str().map(|c| format!(" on contact {c}")).unwrap_or_default();
            println!("Logged in the CRM as record {record}{contact}");
            return Ok(());
        }
        let dead = call["jobs"].as_array().into_iter().flatten().find(|j| j["status"] == json!("dead"));
        if let Some(job) = dead {
            bail!(
                "the call's log job {} died: {}",
                job["id"].as_str().unwrap_or("?"),
                job["last_error"].as_str().unwrap_or("no reason recorded")
            );
        }
        if tokio::time::Instant::now() >= deadline {
            let error = call["jobs"].as_array().into_iter().flatten().find_map(|j| j["last_error"].as_str());
            let error = error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
            bail!(
                "the call was not logged within {} s{error}; see `crmhub calls show --tenant {slug} {call_id}`",
                LOG_WAIT.as_secs()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn print_screen_pop(pop: &Value) {
    let number = pop["number"].as_str().unwrap_or("withheld");
    let matched = pop["match"].as_str().unwrap_or("?");
    println!("Screen pop: match {matched} for {number}");
    for contact in pop["contacts"].as_array().into_iter().flatten() {
        let company = contact["company"].as_str().map(|c| format!(" ({c})")).unwrap_or_default();
        println!(
            "  {} {}{company}",
            contact["id"].as_str().unwrap_or("?"),
            contact["name"].as_str().unwrap_or("(no name)")
        );
        if let Some(card) = contact["card_url"].as_str() {
            println!("    card: {card}");
        }
    }
    if let Some(error) = pop["error"].as_str() {
        println!("  the lookup failed: {error}");
    }
}

/// crmhub's HTTP API, with its failures said in terms of what to fix.
struct Client {
    http: reqwest::Client,
    base: url::Url,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    /// Posts one event; its 202 answer.
    async fn event(&self, slug: &str, key: &str, event: Value) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(self.url(&format!("/t/{slug}/calls/events")))
            .bearer_auth(key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(event.to_string());
        let (status, body) = self.send(request).await?;
        match status.as_u16() {
            202 => Ok(body),
            401 | 403 => bail!(
                "crmhub refused the channel key ({status}): give a key of tenant {slug} with the `calls` scope (--key or CRMHUB_CHANNEL_KEY; `crmhub channel-key create --tenant {slug} --name pbx --scope calls`)"
            ),
            _ => bail!("{} was refused: {status} {}", event["type"].as_str().unwrap_or("the event"), error_text(&body)),
        }
    }

    /// `GET /admin/v1/tenants/{slug}/calls/{call_id}`.
    async fn admin_call(&self, slug: &str, call_id: &str, token: &str) -> anyhow::Result<Value> {
        let mut url = url::Url::parse(&self.url(&format!("/admin/v1/tenants/{slug}/calls/")))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{} cannot be a base URL", self.base))?
            .pop()
            .push(call_id);
        let (status, body) = self.send(self.http.get(url).bearer_auth(token)).await?;
        match status.as_u16() {
            200 => Ok(body),
            401 | 403 => bail!("crmhub refused the admin token ({status}): check --admin-token or CRMHUB_ADMIN_TOKEN"),
            _ => bail!("reading the call failed: {status} {}", error_text(&body)),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let response = request.timeout(Duration::from_secs(30)).send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!("crmhub is not running at {} (cannot connect: {e})", self.base)
            } else {
                anyhow::anyhow!("calling crmhub at {}: {e}", self.base)
            }
        })?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("reading crmhub's answer ({status})"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }
}

/// The message of crmhub's `{"error":{"code","message","field"?}}`, or the body as it came.
fn error_text(body: &Value) -> String {
    match body["error"]["message"].as_str() {
        Some(message) => match body["error"]["field"].as_str() {
            Some(field) => format!("({field}) {message}"),
            None => message.to_owned(),
        },
        None => body.to_string(),
    }
}

/// What `crmhub demo` needs to print a ready call: the channel on the demo's connection, a
/// fresh `calls` key, and the demo caller's number as the tenant's region reads it.
#[cfg(feature = "demo")]
pub struct DemoCalls {
    pub key_name: String,
    pub key: String,
    pub number: String,
}

/// The demo keys' name: `demo-pbx`, then `demo-pbx-2`, … on later runs.
#[cfg(feature = "demo")]
const DEMO_KEY_NAME: &str = "demo-pbx";

/// Configures the calls channel on `connection` and makes a new demo key. A key is shown only
/// when it is created, and the demo prints one at every start, so on a data directory used
/// before the earlier runs' keys are revoked and a new one is made; names stay taken by revoked
/// keys, hence the run's number in the name.
/// `national` and `international` are the demo caller's number in both forms: the national one
/// when the tenant reads numbers as Vietnamese (as the demo tenant is created), else the other.
#[cfg(feature = "demo")]
pub async fn configure_demo(
    state: &AppState,
    slug: &str,
    connection: ConnectionId,
    (national, international): (&str, &str),
) -> anyhow::Result<DemoCalls> {
    use crmhub_server::channels::calls::settings::{self, CallSettings};
    use crmhub_store::tenants::TenantUpdate;

    let store = &state.store;
    let mut tenant = store.tenants().by_slug(&crmhub_core::TenantSlug::parse(slug)?).await?;
    let vn = PhoneRegion::parse("VN")?;
    if tenant.phone_region.is_none() {
        let update = TenantUpdate { phone_region: Some(Some(vn)), ..Default::default() };
        tenant = store.tenants().update(tenant.id, update).await?;
    }
    let input = CallSettings {
        connection_id: connection,
        sms_connection_id: None,
        screen_pop_cache_secs: settings::DEFAULT_SCREEN_POP_CACHE_SECS,
        max_matches: settings::DEFAULT_MAX_MATCHES,
    };
    settings::configure(state, &tenant, input).await?;
    let keys = store.channel_keys(tenant.id);
    let earlier: Vec<_> = keys
        .list()
        .await?
        .into_iter()
        .filter(|k| k.name == DEMO_KEY_NAME || k.name.starts_with(&format!("{DEMO_KEY_NAME}-")))
        .collect();
    for key in earlier.iter().filter(|k| k.revoked_at.is_none()) {
        keys.revoke(&key.id).await?;
    }
    let key_name = match earlier.len() {
        0 => DEMO_KEY_NAME.to_owned(),
        n => format!("{DEMO_KEY_NAME}-{}", n + 1),
    };
    let created =
        create_key(store, tenant.id, &key_name, &["calls".to_owned()]).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let number = if tenant.phone_region == Some(vn) { national } else { international };
    Ok(DemoCalls { key_name, key: created.key, number: number.to_owned() })
}
