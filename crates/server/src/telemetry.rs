//! Logging setup: `tracing` with a pretty or JSON formatter. `RUST_LOG` overrides the level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber, writing to `writer`. Returns an error if one is installed.
pub fn init<W>(format: LogFormat, level: &str, writer: W) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Third-party crates are noisy at debug; keep them at warn unless asked.
        EnvFilter::new(format!("warn,crmhub={level},crmhub_server={level},crmhub_connectors={level},crmhub_store={level},crmhub_sim={level}"))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("could not install the log subscriber: {e}"))
}
