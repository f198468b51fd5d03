//! `crmhub channel social-inbox set|show|remove` (the same validation as the admin API) and
//! `crmhub sign` (a signed URL as the platform would send it, for testing by hand).

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
#[cfg(feature = "demo")]
use crmhub_core::ConnectionId;
use crmhub_core::signing::social_inbox::MESSAGE_PARAMS;
use crmhub_core::{Secret, SystemClock, TenantSlug};
use crmhub_server::channels::social_inbox::Endpoint;
#[cfg(feature = "demo")]
use crmhub_server::channels::social_inbox::links::endpoint_url;
use crmhub_server::channels::social_inbox::links::signed_url;
use crmhub_server::channels::social_inbox::settings::{self, CardSettings, ChannelInput, ChannelSettings};
use crmhub_server::{AppState, Settings};
use crmhub_store::Store;
use crmhub_store::tenants::Tenant;

use super::print_json;
use crate::cli::TenantArg;

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// The social inbox's "Custom CRM" integration: a signed contact search and contact card.
    #[command(subcommand, name = "social-inbox")]
    SocialInbox(SocialInboxCommand),
}

#[derive(Debug, Subcommand)]
pub enum SocialInboxCommand {
    /// Configure the channel. Replaces its settings (absent ones take their defaults); the
    /// secrets change only when given or --generate-secrets is set, and are generated (and
    /// printed once) when there are none yet.
    Set(SetArgs),
    /// Show the settings, the endpoint URLs to give the platform and the secret ids.
    Show {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Turn the channel off: remove its settings and revoke its secrets at once.
    Remove {
        #[command(flatten)]
        tenant: TenantArg,
        /// Required: the platform's requests fail from then on.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    tenant: TenantArg,
    /// Id of the tenant's connection to search and read cards from.
    #[arg(long)]
    connection: String,
    /// One secret for both endpoints (visible in the process list; generated secrets avoid that).
    #[arg(long)]
    secret: Option<String>,
    /// The search endpoint's secret.
    #[arg(long)]
    search_secret: Option<String>,
    /// The iframe endpoint's secret.
    #[arg(long)]
    iframe_secret: Option<String>,
    /// Replace both secrets with new generated ones.
    #[arg(long)]
    generate_secrets: bool,
    /// How long a replaced secret is still accepted [default: 86400].
    #[arg(long)]
    rotation_grace_secs: Option<u64>,
    /// Tolerated clock difference for a just-expired request [default: 30].
    #[arg(long)]
    skew_secs: Option<u32>,
    /// Furthest in the future a request's `expires` may be [default: 3600].
    #[arg(long)]
    max_ttl_secs: Option<u32>,
    /// Most search results [default: 20].
    #[arg(long)]
    result_limit: Option<u32>,
    /// Seconds a search's results are reused for the same term; a contact renamed or added in
    /// the CRM meanwhile is not seen [default: 0, ask the CRM every time; at most 300].
    #[arg(long)]
    search_cache_secs: Option<u32>,
    /// An origin allowed to frame the card, e.g. https://app.example.com (repeatable)
    /// [default: https://app.socialsignin.net].
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Recent activities on the card; 0 hides them [default: 10].
    #[arg(long)]
    max_activities: Option<u32>,
    /// Leave the CRM's figures (open tickets, …) off the card.
    #[arg(long)]
    hide_figures: bool,
    /// Leave the connection's extra card fields off the card.
    #[arg(long)]
    hide_extra_fields: bool,
}

impl From<SetArgs> for ChannelInput {
    fn from(args: SetArgs) -> Self {
        let defaults = CardSettings::default();
        ChannelInput {
            connection_id: args.connection,
            secret: args.secret.map(Secret::new),
            search_secret: args.search_secret.map(Secret::new),
            iframe_secret: args.iframe_secret.map(Secret::new),
            generate_secrets: args.generate_secrets,
            rotation_grace_secs: args.rotation_grace_secs,
            skew_secs: args.skew_secs,
            max_ttl_secs: args.max_ttl_secs,
            result_limit: args.result_limit,
            search_cache_secs: args.search_cache_secs,
            allowed_origins: Some(args.allowed_origins),
            card: Some(CardSettings {
                max_activities: args.max_activities.unwrap_or(defaults.max_activities),
                show_figures: !args.hide_figures,
                show_extra_fields: !args.hide_extra_fields,
            }),
        }
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("endpoint").required(true).args(["search", "iframe"])))]
pub struct SignArgs {
    /// Tenant slug.
    #[arg(long)]
    tenant: String,
    /// Sign a search for this term.
    #[arg(long, value_name = "TERM")]
    search: Option<String>,
    /// Sign a contact card request for this record id.
    #[arg(long, value_name = "ID")]
    iframe: Option<String>,
    /// Append an (unsigned) message_socialsignin_url.
    #[arg(long, value_name = "URL")]
    message_url: Option<String>,
    /// Append other unsigned message metadata, e.g. social_network_type=twitter (repeatable).
    #[arg(long = "message", value_name = "NAME=VALUE")]
    message: Vec<String>,
    /// Seconds until the URL expires (at most the channel's max_ttl_secs).
    #[arg(long, default_value_t = 300)]
    ttl: u32,
}

pub async fn run(settings: &Settings, store: Store, command: ChannelCommand) -> anyhow::Result<()> {
    let ChannelCommand::SocialInbox(command) = command;
    let public_url = settings.public_url()?;
    match command {
        SocialInboxCommand::Set(args) => {
            // The application's view of the connection, to check that it can serve the channel.
            drop(store);
            let (state, log_writer) = AppState::build(settings.clone(), Arc::new(SystemClock)).await?;
            let tenant = tenant(&state.store, &args.tenant.tenant).await?;
            let view = settings::configure(&state, &tenant, args.into(), &public_url).await;
            log_writer.finish().await;
            let view = view?;
            print_json(&view)?;
            if view.new_secrets.search.is_some() || view.new_secrets.iframe.is_some() {
                eprintln!("Paste the new_secrets into the platform now: they are not shown again.");
            }
            Ok(())
        }
        SocialInboxCommand::Show { tenant: arg } => {
            let tenant = tenant(&store, &arg.tenant).await?;
            match settings::show(&store, &tenant, &public_url).await? {
                Some(view) => print_json(&view),
                None => bail!("the social inbox is not configured for tenant {}", tenant.slug),
            }
        }
        SocialInboxCommand::Remove { tenant: arg, yes } => {
            if !yes {
                bail!("removing the channel makes every request from the platform fail; add --yes to confirm");
            }
            let tenant = tenant(&store, &arg.tenant).await?;
            if !settings::remove(&store, &tenant).await? {
                bail!("the social inbox is not configured for tenant {}", tenant.slug);
            }
            eprintln!("social inbox removed for tenant {}", tenant.slug);
            Ok(())
        }
    }
}

/// Prints a URL signed with the endpoint's current secret, expiring `ttl` seconds from now.
pub async fn sign(settings: &Settings, store: Store, args: SignArgs) -> anyhow::Result<()> {
    let tenant = tenant(&store, &args.tenant).await?;
    let channel = ChannelSettings::load(&store, &tenant)
        .await?
        .with_context(|| format!("the social inbox is not configured for tenant {}", tenant.slug))?;
    let (endpoint, mut params) = match (&args.search, &args.iframe) {
        (Some(term), _) => (Endpoint::Search, vec![("q".to_owned(), term.clone())]),
        (None, Some(id)) => (Endpoint::Iframe, vec![("id".to_owned(), id.clone())]),
        (None, None) => bail!("give --search TERM or --iframe ID"),
    };
    params.extend(message_params(&args)?);
    let secret = current_secret(&store, &tenant, endpoint).await?;
    let expires = store.clock().now_secs() + i64::from(args.ttl.min(channel.max_ttl_secs));
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    println!("{}", signed_url(&settings.public_url()?, &tenant.slug, endpoint, &params, &secret, expires));
    Ok(())
}

/// `--message-url` and `--message NAME=VALUE`, as `message_*` parameters (the prefix may be
/// left out). Only the contract's eight names are unsigned; anything else would be signed.
fn message_params(args: &SignArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut params: Vec<(String, String)> =
        args.message_url.iter().map(|url| ("message_socialsignin_url".to_owned(), url.clone())).collect();
    for pair in &args.message {
        let (name, value) = pair.split_once('=').context("--message: expected NAME=VALUE")?;
        let name = if name.starts_with("message_") { name.to_owned() } else { format!("message_{name}") };
        if !MESSAGE_PARAMS.contains(&name.as_str()) {
            bail!("--message {name}: not a message parameter (one of {})", MESSAGE_PARAMS.join(", "));
        }
        params.push((name, value.to_owned()));
    }
    Ok(params)
}

/// What `crmhub demo` needs: the channel on the demo's connection with one secret for both
/// endpoints, and URLs valid for a day (the longest `max_ttl_secs` allows) so that the
/// printed links keep working while the demo runs.
#[cfg(feature = "demo")]
pub async fn configure_demo(
    state: &AppState,
    slug: &str,
    connection: ConnectionId,
    secret: &str,
    public_url: &url::Url,
    susan: &str,
) -> anyhow::Result<DemoLinks> {
    let store = &state.store;
    let tenant = tenant(store, slug).await?;
    let max_ttl_secs = settings::MAX_MAX_TTL_SECS;
    let input = ChannelInput {
        connection_id: connection.to_string(),
        secret: Some(Secret::new(secret)),
        max_ttl_secs: Some(max_ttl_secs),
        ..Default::default()
    };
    settings::configure(state, &tenant, input, public_url).await?;
    let key = Secret::new(secret);
    let expires = store.clock().now_secs() + i64::from(max_ttl_secs);
    let slug = &tenant.slug;
    Ok(DemoLinks {
        search_endpoint: endpoint_url(public_url, slug, Endpoint::Search),
        iframe_endpoint: endpoint_url(public_url, slug, Endpoint::Iframe),
        search: signed_url(public_url, slug, Endpoint::Search, &[("q", "red")], &key, expires),
        card: signed_url(
            public_url,
            slug,
            Endpoint::Iframe,
            &[
                ("id", susan),
                ("message_social_network_type", "twitter"),
                ("message_sentiment", "negative"),
                ("message_socialsignin_url", "https://app.socialsignin.net/#/inbox"),
            ],
            &key,
            expires,
        ),
    })
}

#[cfg(feature = "demo")]
pub struct DemoLinks {
    pub search_endpoint: String,
    pub iframe_endpoint: String,
    pub search: String,
    pub card: String,
}

async fn tenant(store: &Store, slug: &str) -> anyhow::Result<Tenant> {
    let slug = TenantSlug::parse(slug)?;
    store.tenants().by_slug(&slug).await.with_context(|| format!("tenant {slug}"))
}

async fn current_secret(store: &Store, tenant: &Tenant, endpoint: Endpoint) -> anyhow::Result<Secret> {
    let secrets = store.secrets(tenant.id).valid(endpoint.purpose()).await?;
    let current = secrets.into_iter().find(|s| s.retires_at.is_none());
    Ok(current.with_context(|| format!("tenant {} has no {} secret", tenant.slug, endpoint.name()))?.secret)
}
