//! `crmhub tenant …` and `crmhub connection …`: the same validation as the admin API.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use crmhub_core::{
    ConnectionId, ConnectionName, ConnectionStatus, Host, PhoneRegion, TenantId, TenantName, TenantSlug,
};
use crmhub_server::connection_input::{ConnectionInput, check_fields, check_for_kind, parse_credentials};
use crmhub_store::Store;
use crmhub_store::connections::{ConnectionUpdate, NewConnection};
use crmhub_store::tenants::{NewTenant, TenantUpdate};
use serde_json::{Map, Value};

use super::print_json;
use crate::cli::{ConnectionCommand, CredentialArgs, TenantCommand};

pub async fn tenant(store: Store, command: TenantCommand) -> anyhow::Result<()> {
    let tenants = store.tenants();
    match command {
        TenantCommand::Create { slug, name, phone_region } => {
            let tenant = tenants
                .create(NewTenant {
                    slug: TenantSlug::parse(&slug)?,
                    name: TenantName::parse(&name)?,
                    phone_region: phone_region.as_deref().map(PhoneRegion::parse).transpose()?,
                    settings: Map::new(),
                })
                .await?;
            print_json(&tenant)
        }
        TenantCommand::List => print_json(&tenants.list().await?),
        TenantCommand::Show { slug } => print_json(&tenants.by_slug(&TenantSlug::parse(&slug)?).await?),
        TenantCommand::Update { slug, name, phone_region } => {
            let id = tenant_id(&store, &slug).await?;
            let update = TenantUpdate {
                name: name.as_deref().map(TenantName::parse).transpose()?,
                phone_region: phone_region.as_deref().map(|r| PhoneRegion::parse(r).map(Some)).transpose()?,
                settings: None,
            };
            print_json(&store.tenants().update(id, update).await?)
        }
        TenantCommand::Delete { slug, yes } => {
            if !yes {
                bail!(
                    "deleting tenant {slug:?} removes its connections, secrets and jobs for good; add --yes to confirm"
                );
            }
            let id = tenant_id(&store, &slug).await?;
            store.tenants().delete(id).await?;
            eprintln!("tenant {slug} deleted");
            Ok(())
        }
    }
}

pub async fn connection(
    store: Store,
    policy: crmhub_connectors::http::AddressPolicy,
    command: ConnectionCommand,
) -> anyhow::Result<()> {
    match command {
        ConnectionCommand::Create {
            tenant,
            name,
            kind,
            host,
            field,
            credentials,
            template_version,
            call_centre_id,
            description,
        } => {
            let input = ConnectionInput {
                name,
                kind,
                host,
                fields: parse_pairs(&field, "--field")?,
                credentials: read_credentials(&credentials)?,
                template_version,
                call_centre_id,
                description,
                info: None,
                iframe: None,
            };
            let mut new = NewConnection::try_from(input)?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let registry = crmhub_server::templates::TemplateRegistry::default();
            crmhub_server::templates::prepare_connection(&registry, &store, &policy, tenant, &mut new)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            print_json(&store.connections(tenant).create(new).await?)
        }
        ConnectionCommand::List { tenant } => {
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            print_json(&store.connections(tenant).list().await?)
        }
        ConnectionCommand::Show { tenant, id } => {
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            print_json(&store.connections(tenant).get(connection_id(&id)?).await?)
        }
        ConnectionCommand::Update { tenant, id, name, host, field, status } => {
            let update = ConnectionUpdate {
                name: name.as_deref().map(ConnectionName::parse).transpose()?,
                host: host.as_deref().map(Host::parse).transpose()?,
                fields: if field.is_empty() { None } else { Some(check_fields(parse_pairs(&field, "--field")?)?) },
                status: status.as_deref().map(ConnectionStatus::parse).transpose()?,
                ..Default::default()
            };
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let id = connection_id(&id)?;
            if update.fields.is_some() || update.host.is_some() {
                let current = store.connections(tenant).get(id).await?;
                let fields = update.fields.as_ref().unwrap_or(&current.fields);
                let host = update.host.as_ref().unwrap_or(&current.host);
                check_for_kind(&current.kind, host, fields, &store.connections(tenant).credentials(id).await?)?;
            }
            print_json(&store.connections(tenant).update(id, update).await?)
        }
        ConnectionCommand::RotateCredentials { tenant, id, credentials } => {
            let credentials = parse_credentials(read_credentials(&credentials)?)?;
            if credentials.is_empty() {
                bail!("give the new credentials with --credential NAME=VALUE or --credentials-file");
            }
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let current = store.connections(tenant).get(connection_id(&id)?).await?;
            check_for_kind(&current.kind, &current.host, &current.fields, &credentials)?;
            print_json(&store.connections(tenant).replace_credentials(connection_id(&id)?, credentials).await?)
        }
        ConnectionCommand::Test { .. } => unreachable!("connection test runs with the outbound client"),
        ConnectionCommand::Connect { .. } => unreachable!("connection connect runs with the connectors"),
        ConnectionCommand::Requests { tenant, id, limit } => {
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            print_json(&store.request_log(tenant).list(connection_id(&id)?, limit, None).await?)
        }
        ConnectionCommand::Delete { .. } => unreachable!("connection delete runs with the outbound client"),
    }
}

pub async fn tenant_id(store: &Store, slug: &str) -> anyhow::Result<TenantId> {
    let slug = TenantSlug::parse(slug)?;
    Ok(store.tenants().by_slug(&slug).await.with_context(|| format!("tenant {slug}"))?.id)
}

fn connection_id(raw: &str) -> anyhow::Result<ConnectionId> {
    raw.parse().map_err(|_| anyhow::anyhow!("{raw:?} is not a connection id"))
}

/// `NAME=VALUE` pairs; a value that is valid JSON (number, object, …) is taken as JSON.
fn parse_pairs(pairs: &[String], flag: &str) -> anyhow::Result<Map<String, Value>> {
    pairs
        .iter()
        .map(|pair| {
            let (name, value) =
                pair.split_once('=').with_context(|| format!("{flag} {pair:?}: expected NAME=VALUE"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
            Ok((name.to_owned(), value))
        })
        .collect()
}

fn read_credentials(args: &CredentialArgs) -> anyhow::Result<Map<String, Value>> {
    let mut all = Map::new();
    if let Some(file) = &args.credentials_file {
        let text = read_file_or_stdin(file)?;
        let parsed: Map<String, Value> =
            serde_json::from_str(&text).with_context(|| format!("{}: expected a JSON object", file.display()))?;
        all.extend(parsed);
    }
    for pair in &args.credential {
        let (name, value) = pair.split_once('=').context("--credential: expected NAME=VALUE")?;
        all.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Ok(all)
}

fn read_file_or_stdin(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// `crmhub connection test`: the same check as the admin API's, with the request log flushed.
pub async fn test_connection(settings: crmhub_server::Settings, slug: &str, id: &str) -> anyhow::Result<()> {
    let (state, log_writer) =
        crmhub_server::AppState::build(settings, std::sync::Arc::new(crmhub_core::SystemClock)).await?;
    let tenant = tenant_id(&state.store, slug).await?;
    let tenant = state.store.tenants().get(tenant).await?;
    let connection = state.store.connections(tenant.id).get(connection_id(id)?).await?;
    let report =
        crmhub_server::crm_access::check(&state.crms, &state.store, &state.connectors, &tenant, &connection).await;
    log_writer.finish().await;
    let report = report?;
    print_json(&report)?;
    if !report.ok {
        bail!("the connection test failed");
    }
    Ok(())
}

/// `crmhub connection delete`: what the admin API's delete does, a Kommo connection's webhook
/// destination unregistered at Kommo first (best effort), so that Kommo stops calling it.
pub async fn delete_connection(settings: crmhub_server::Settings, slug: &str, id: &str) -> anyhow::Result<()> {
    let (state, log_writer) =
        crmhub_server::AppState::build(settings, std::sync::Arc::new(crmhub_core::SystemClock)).await?;
    let deleted = async {
        let tenant = tenant_id(&state.store, slug).await?;
        let tenant = state.store.tenants().get(tenant).await?;
        let connection = state.store.connections(tenant.id).get(connection_id(id)?).await?;
        crmhub_server::kommo::unregister_on_delete(&state, &tenant, &connection).await;
        state.store.connections(tenant.id).delete(connection.id).await?;
        anyhow::Ok(())
    }
    .await;
    log_writer.finish().await;
    deleted?;
    eprintln!("connection {id} deleted");
    Ok(())
}

/// `crmhub connection connect`: the same as `POST …/oauth/start`; prints the URL to open.
pub async fn connect(settings: crmhub_server::Settings, slug: &str, id: &str, mode: &str) -> anyhow::Result<()> {
    let mode = crmhub_store::kommo::AuthorizeMode::parse(mode)
        .with_context(|| format!("--mode {mode:?}: use popup or post_message"))?;
    let (state, log_writer) =
        crmhub_server::AppState::build(settings, std::sync::Arc::new(crmhub_core::SystemClock)).await?;
    let started = async {
        let tenant = tenant_id(&state.store, slug).await?;
        let tenant = state.store.tenants().get(tenant).await?;
        let connection = state.store.connections(tenant.id).get(connection_id(id)?).await?;
        crmhub_server::kommo::start_authorization(&state, &tenant, &connection, mode)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
    .await;
    log_writer.finish().await;
    let started = started?;
    println!("{}", started.authorize_url);
    eprintln!("open this URL as the Kommo user within 20 minutes; it works once");
    Ok(())
}
