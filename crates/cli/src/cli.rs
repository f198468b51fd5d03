//! Command-line grammar. Every command has `--help`.

#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "crmhub", version, about = "A self-hosted CRM integration gateway", propagate_version = true)]
pub struct Cli {
    /// TOML configuration file, layered over the built-in defaults (env CRMHUB_* wins over it).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Api,
    Worker,
    Both,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run crmhub: the HTTP API and the background workers (or one of them, see --role).
    Serve {
        /// Which part to run (overrides server.role).
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
    /// Run a self-contained demonstration on SQLite, with simulated CRMs, until Ctrl-C.
    #[cfg(feature = "demo")]
    Demo {
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo keeps its database and key (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's connections to CRMs and services.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Manage integration templates (declarative CRM and SMS APIs).
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Inspect the job queue and redrive dead jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Configure a tenant's channels (the social inbox).
    #[command(subcommand)]
    Channel(crate::commands::channel::ChannelCommand),
    /// The call-centre channel: calls with their CRM logs, and a simulated call.
    #[command(subcommand, visible_alias = "call")]
    Calls(crate::commands::calls::CallsCommand),
    /// Manage the keys machine channels (a PBX, the widget's backend) present.
    #[command(subcommand, name = "channel-key")]
    ChannelKey(crate::commands::channel_keys::ChannelKeyCommand),
    /// Print a signed social-inbox URL, as the platform would send it, for testing by hand.
    Sign(crate::commands::channel::SignArgs),
    /// Contact sync: pipelines from a CRM into a Unisender list, backfills and reconciliations.
    #[command(subcommand)]
    Sync(crate::commands::sync::SyncCommand),
    /// Manage the master key that encrypts secrets at rest.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the admin API token.
    #[command(subcommand, name = "admin-token")]
    AdminToken(AdminTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective settings (secrets redacted).
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// URL-safe handle: lowercase letters, digits and '-'.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// ISO country code used to read local phone numbers (e.g. VN).
        #[arg(long)]
        phone_region: Option<String>,
    },
    /// List tenants.
    List,
    /// Show one tenant.
    Show { slug: String },
    /// Change a tenant's name or phone region.
    Update {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        phone_region: Option<String>,
    },
    /// Delete a tenant and everything it owns.
    Delete {
        slug: String,
        /// Required: deleting is permanent.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct TenantArg {
    /// Tenant slug.
    #[arg(long)]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// A credential as NAME=VALUE (repeatable). Visible to other local users in the process
    /// list; prefer --credentials-file.
    #[arg(long = "credential", value_name = "NAME=VALUE")]
    pub credential: Vec<String>,
    /// A JSON object of credentials; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Create a connection.
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        name: String,
        /// vtiger, kommo, unisender or template:<name>.
        #[arg(long)]
        kind: String,
        /// Base URL of the remote installation (https:// assumed when no scheme is given).
        #[arg(long)]
        host: String,
        /// A non-secret field as NAME=VALUE (repeatable); JSON values are accepted.
        #[arg(long = "field", value_name = "NAME=VALUE")]
        field: Vec<String>,
        #[command(flatten)]
        credentials: CredentialArgs,
        /// For template:NAME connections: the template version (default: the latest).
        #[arg(long)]
        template_version: Option<u32>,
        /// The call centre this connection serves.
        #[arg(long)]
        call_centre_id: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List a tenant's connections.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Show one connection (credential names only).
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
    },
    /// Change a connection's name, host, fields or status.
    Update {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// Replace the non-secret fields (repeatable NAME=VALUE).
        #[arg(long = "field", value_name = "NAME=VALUE")]
        field: Vec<String>,
        /// active, disabled, failing or needs_reauth.
        #[arg(long)]
        status: Option<String>,
    },
    /// Replace all of a connection's credentials.
    RotateCredentials {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
        #[command(flatten)]
        credentials: CredentialArgs,
    },
    /// Log in to the connection's CRM and read its metadata; the status records the outcome.
    Test {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
    },
    /// Start connecting a Kommo connection through OAuth: prints the URL to open as the Kommo
    /// user (good for 20 minutes, once); crmhub's callback finishes the connection.
    Connect {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
        /// popup (the window closes, the main window is redirected) or post_message (the
        /// window tells its opener and closes).
        #[arg(long, default_value = "popup")]
        mode: String,
    },
    /// Show a connection's recent outbound requests (redacted).
    Requests {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete a connection and its request log.
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Validate a template file and list every problem with its path (exit 1 if any).
    Check {
        /// YAML or JSON file.
        file: PathBuf,
    },
    /// Publish a template (or a new version of it) for every tenant.
    Publish { file: PathBuf },
    /// Store a template private to one tenant (or a new version of it).
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        file: PathBuf,
    },
    /// List the latest version of each template (published, plus the tenant's private ones).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show a template's versions and its latest source.
    Show {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs (default: every status, oldest first).
    List {
        /// Only this tenant's jobs.
        #[arg(long)]
        tenant: Option<String>,
        /// pending, running or dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Give dead jobs fresh attempts.
    Redrive {
        #[arg(long)]
        tenant: Option<String>,
        /// Specific job ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        /// Every dead job in scope.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete a dead job for good.
    Discard {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every secret under a new master key. Stop other instances first and restart
    /// them with the new key.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Replace the admin token with a new one, printed once.
    Reset,
}
