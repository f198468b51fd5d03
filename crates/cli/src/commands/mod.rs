//! One module per command group.

pub(crate) mod calls;
pub(crate) mod channel;
pub(crate) mod channel_keys;
#[cfg(feature = "demo")]
mod demo;
mod jobs;
mod keys;
#[cfg(feature = "demo")]
mod kommo_demo;
mod records;
mod serve;
pub(crate) mod sync;
#[cfg(feature = "demo")]
mod sync_demo;
mod templates;
#[cfg(feature = "demo")]
mod templates_demo;

use std::sync::Arc;

use anyhow::Context;
use crmhub_core::SystemClock;
use crmhub_server::Settings;
use crmhub_server::config::LogFormat;
use crmhub_store::Store;

use crate::cli::{Cli, Command, ConfigCommand, ConnectionCommand, LogFormatArg};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // The demo brings its own configuration; every other command reads the operator's.
    #[cfg(feature = "demo")]
    if let Command::Demo { listen, data_dir } = cli.command {
        // The demo makes its own settings (a fresh SQLite database, simulators on loopback);
        // taking a file's would silently mix the two.
        if let Some(file) = &cli.config {
            anyhow::bail!(
                "crmhub demo runs on its own settings and does not read --config {}; use `crmhub serve --config {}` to run with that file",
                file.display(),
                file.display()
            );
        }
        let format = match cli.log_format {
            Some(LogFormatArg::Json) => LogFormat::Json,
            _ => LogFormat::Pretty,
        };
        crmhub_server::telemetry::init(format, "warn", std::io::stderr)?;
        return demo::run(listen, data_dir).await;
    }

    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(format) = cli.log_format {
        settings.log.format = match format {
            LogFormatArg::Pretty => LogFormat::Pretty,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    crmhub_server::telemetry::init(settings.log.format, &settings.log.level, std::io::stderr)?;

    match cli.command {
        Command::Serve { role } => serve::run(settings, role).await,
        #[cfg(feature = "demo")]
        Command::Demo { .. } => unreachable!("handled above"),
        Command::Migrate => {
            let store = open_store(&settings).await?;
            store.check_ready().await.map_err(anyhow::Error::msg)?;
            println!("database is up to date ({})", store.backend().as_str());
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            println!("{}", serde_json::to_string_pretty(&settings)?);
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Tenant(command) => records::tenant(open_store(&settings).await?, command).await,
        Command::Connection(ConnectionCommand::Test { tenant, id }) => {
            records::test_connection(settings, &tenant.tenant, &id).await
        }
        Command::Connection(ConnectionCommand::Delete { tenant, id }) => {
            records::delete_connection(settings, &tenant.tenant, &id).await
        }
        Command::Connection(ConnectionCommand::Connect { tenant, id, mode }) => {
            records::connect(settings, &tenant.tenant, &id, &mode).await
        }
        Command::Connection(command) => {
            let policy = crmhub_connectors::http::AddressPolicy::new(settings.outbound_policy()?.allow_private);
            records::connection(open_store(&settings).await?, policy, command).await
        }
        Command::Template(command) => templates::run(&settings, command).await,
        Command::Jobs(command) => jobs::run(open_store(&settings).await?, command).await,
        Command::Channel(command) => channel::run(&settings, open_store(&settings).await?, command).await,
        Command::Calls(command) => calls::run(&settings, command).await,
        Command::ChannelKey(command) => channel_keys::run(open_store(&settings).await?, command).await,
        Command::Sign(args) => channel::sign(&settings, open_store(&settings).await?, args).await,
        Command::Sync(command) => sync::run(settings, command).await,
        Command::Keys(command) => keys::run(&settings, command).await,
        Command::AdminToken(command) => keys::admin_token(&settings, open_store(&settings).await?, command).await,
    }
}

/// Opens (and migrates) the configured database with the configured master key.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let options = settings.store_options(Arc::new(SystemClock))?;
    Store::open(options).await.context("opening the database")
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
