//! `crmhub channel-key create|list|revoke`: the same rules as the admin API, on the database.

use clap::Subcommand;
use crmhub_server::admin::channel_keys::create_key;
use crmhub_store::Store;

use super::print_json;
use super::records::tenant_id;
use crate::cli::TenantArg;

#[derive(Debug, Subcommand)]
pub enum ChannelKeyCommand {
    /// Create a key; it is printed once and never again (only its hash is stored).
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        /// A name to tell keys apart, e.g. "pbx-hanoi".
        #[arg(long)]
        name: String,
        /// What the key may be used for: calls, widget (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List a tenant's keys (names, scopes, prefixes; never the keys).
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Revoke a key at once.
    Revoke {
        #[command(flatten)]
        tenant: TenantArg,
        /// The key's id (from `list`).
        id: String,
    },
}

pub async fn run(store: Store, command: ChannelKeyCommand) -> anyhow::Result<()> {
    match command {
        ChannelKeyCommand::Create { tenant, name, scopes } => {
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let created = create_key(&store, tenant, &name, &scopes).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            print_json(&created)?;
            eprintln!("Give the key to the channel now: it is not shown again.");
            Ok(())
        }
        ChannelKeyCommand::List { tenant } => {
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            print_json(&serde_json::json!({"channel_keys": store.channel_keys(tenant).list().await?}))
        }
        ChannelKeyCommand::Revoke { tenant, id } => {
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            print_json(&store.channel_keys(tenant).revoke(&id).await?)
        }
    }
}
