//! Configuration: built-in defaults → optional TOML file → `CRMHUB_*` environment, layered once
//! at start and validated before anything runs. An error names the key and says what is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crmhub_connectors::http::{OutboundPolicy, RateSpec};
use crmhub_store::{DatabaseUrl, MasterKey, MasterKeySource, StoreOptions};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("config.default.toml");

/// Environment shortcuts for the settings operators set most.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("database_url", "database.url"),
    ("master_key", "vault.master_key"),
    ("admin_token", "admin.token"),
    ("data_dir", "data_dir"),
    ("listen", "server.listen"),
    ("role", "server.role"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub admin: AdminSettings,
    pub vault: VaultSettings,
    pub jobs: JobSettings,
    pub outbound: OutboundSettings,
    pub request_log: RequestLogSettings,
    pub call_maps: CallMapSettings,
    pub kommo: KommoSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Api,
    Worker,
    Both,
}

impl Role {
    pub fn runs_api(self) -> bool {
        matches!(self, Self::Api | Self::Both)
    }

    pub fn runs_workers(self) -> bool {
        matches!(self, Self::Worker | Self::Both)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub public_url: String,
    pub role: Role,
    pub shutdown_grace_secs: u64,
    pub max_body_bytes: usize,
    /// Time limit of the social inbox's signed endpoints (the platform waits for an answer).
    pub social_inbox_timeout_ms: u64,
    /// Time limit of the admin API and the operations endpoints.
    pub admin_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "redact_nonempty")]
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(serialize_with = "redact_nonempty")]
    pub token: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    #[serde(serialize_with = "redact_nonempty")]
    pub master_key: String,
    pub key_file: String,
    pub allow_new_database: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    pub concurrency: usize,
    pub poll_interval_ms: u64,
    pub job_timeout_secs: u64,
    pub lease_secs: u64,
    pub max_attempts: u32,
    pub backoff_base_secs: u64,
    pub backoff_max_secs: u64,
    pub max_queue_depth_per_tenant: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_response_bytes: u64,
    pub max_redirects: u32,
    pub allow_private: Vec<String>,
    pub max_retries: u32,
    pub retry_after_max_wait_secs: u64,
    pub interactive_max_wait_ms: u64,
    pub per_host_rps: f64,
    pub per_host_burst: u32,
    pub per_connection_rps: f64,
    pub per_connection_burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLogSettings {
    pub retention_days: u32,
    pub max_entries_per_connection: u32,
    pub body_preview_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallMapSettings {
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KommoSettings {
    pub ip_block_pause_secs: u64,
    /// Each account's request budget (Kommo allows 7 a second; 6 keeps a margin).
    pub requests_per_second: f64,
}

/// `config check` prints the effective settings; secrets show only whether they are set.
fn redact_nonempty<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if value.is_empty() { "" } else { "[redacted]" })
}

impl Settings {
    /// Defaults alone (what a test starts from before overriding fields).
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::extract(Figment::from(Toml::string(DEFAULTS)))
    }

    /// Defaults, then `file` (which must exist when given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(EnvStrings(environment()));
        let settings = Self::extract(figment)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Lossy: an environment value is a string until a typed field reads it as a number or a
    /// boolean, so `CRMHUB_ADMIN_TOKEN=0123456789012345` stays the string it is.
    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        figment.extract_lossy().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
            ConfigError::Parse(messages.join("; "))
        })
    }

    /// Checks what types alone cannot; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.public_url()?;
        self.database_url()?;
        self.master_key_source()?;
        self.outbound_policy()?;
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        let server = &self.server;
        if !(100..=60_000).contains(&server.social_inbox_timeout_ms) {
            return Err(invalid("server.social_inbox_timeout_ms", "must be between 100 and 60000"));
        }
        if self.outbound.interactive_max_wait_ms >= server.social_inbox_timeout_ms {
            return Err(invalid(
                "outbound.interactive_max_wait_ms",
                format!(
                    "must be shorter than server.social_inbox_timeout_ms ({}), or a search waiting for budget times \
                     out instead of being told to come back",
                    server.social_inbox_timeout_ms
                ),
            ));
        }
        if !(100..=3_600_000).contains(&server.admin_timeout_ms) {
            return Err(invalid("server.admin_timeout_ms", "must be between 100 and 3600000"));
        }
        if server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be at least 1"));
        }
        let jobs = &self.jobs;
        if !(1..=256).contains(&jobs.concurrency) {
            return Err(invalid("jobs.concurrency", "must be between 1 and 256"));
        }
        if jobs.job_timeout_secs == 0 {
            return Err(invalid("jobs.job_timeout_secs", "must be at least 1"));
        }
        if jobs.lease_secs <= jobs.job_timeout_secs {
            return Err(invalid(
                "jobs.lease_secs",
                format!("must be longer than jobs.job_timeout_secs ({})", jobs.job_timeout_secs),
            ));
        }
        if jobs.max_attempts == 0 {
            return Err(invalid("jobs.max_attempts", "must be at least 1"));
        }
        if jobs.max_queue_depth_per_tenant == 0 {
            return Err(invalid("jobs.max_queue_depth_per_tenant", "must be at least 1"));
        }
        if jobs.backoff_base_secs == 0 || jobs.backoff_max_secs < jobs.backoff_base_secs {
            return Err(invalid(
                "jobs.backoff_max_secs",
                "must be at least jobs.backoff_base_secs (which must be ≥ 1)",
            ));
        }
        if !(10..=86_400).contains(&self.kommo.ip_block_pause_secs) {
            return Err(invalid("kommo.ip_block_pause_secs", "must be between 10 and 86400"));
        }
        if !(self.kommo.requests_per_second.is_finite() && (0.1..=1000.0).contains(&self.kommo.requests_per_second)) {
            return Err(invalid("kommo.requests_per_second", "must be between 0.1 and 1000"));
        }
        if self.call_maps.retention_days == 0 {
            return Err(invalid("call_maps.retention_days", "must be at least 1"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if !matches!(self.log.level.as_str(), "trace" | "debug" | "info" | "warn" | "error") {
            return Err(invalid("log.level", "must be one of trace, debug, info, warn, error"));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            invalid("server.listen", format!("{:?} is not an address such as 127.0.0.1:8080", self.server.listen))
        })
    }

    /// The base URL clients use; defaults to `http://<listen>`.
    pub fn public_url(&self) -> Result<url::Url, ConfigError> {
        let raw = if self.server.public_url.is_empty() {
            format!("http://{}", self.server.listen)
        } else {
            self.server.public_url.clone()
        };
        let url = url::Url::parse(&raw).map_err(|e| invalid("server.public_url", format!("{e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("server.public_url", "must be an http or https URL"));
        }
        Ok(url)
    }

    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        if self.database.url.trim().is_empty() {
            return Ok(DatabaseUrl::sqlite_file(self.data_dir.join("crmhub.db")));
        }
        DatabaseUrl::parse(&self.database.url).map_err(|e| invalid("database.url", e.to_string()))
    }

    pub fn master_key_source(&self) -> Result<MasterKeySource, ConfigError> {
        if !self.vault.master_key.trim().is_empty() {
            let key =
                MasterKey::parse(&self.vault.master_key).map_err(|e| invalid("vault.master_key", e.to_string()))?;
            return Ok(MasterKeySource::Given(key));
        }
        Ok(MasterKeySource::File(self.key_file()))
    }

    /// How to open the store: the same for the server and for CLI commands.
    pub fn store_options(&self, clock: std::sync::Arc<dyn crmhub_core::Clock>) -> Result<StoreOptions, ConfigError> {
        let mut options = StoreOptions::new(self.database_url()?, self.master_key_source()?);
        options.max_connections = self.database.max_connections;
        options.clock = clock;
        options.max_queue_depth_per_tenant = self.jobs.max_queue_depth_per_tenant;
        options.default_max_attempts = self.jobs.max_attempts;
        options.allow_new_database = self.vault.allow_new_database;
        Ok(options)
    }

    pub fn key_file(&self) -> PathBuf {
        if self.vault.key_file.is_empty() {
            self.data_dir.join("master.key")
        } else {
            PathBuf::from(&self.vault.key_file)
        }
    }

    pub fn outbound_policy(&self) -> Result<OutboundPolicy, ConfigError> {
        let o = &self.outbound;
        let allow_private = o
            .allow_private
            .iter()
            .map(|raw| {
                raw.parse::<ipnet::IpNet>()
                    .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| invalid("outbound.allow_private", format!("{raw:?} is not an IP address or CIDR")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if o.per_host_rps <= 0.0 || o.per_connection_rps <= 0.0 {
            return Err(invalid("outbound.per_host_rps", "rates must be positive"));
        }
        if o.max_response_bytes < 1024 {
            return Err(invalid("outbound.max_response_bytes", "must be at least 1024"));
        }
        Ok(OutboundPolicy {
            connect_timeout: Duration::from_millis(o.connect_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(o.request_timeout_ms.max(1)),
            max_response_bytes: o.max_response_bytes,
            max_redirects: o.max_redirects,
            allow_private,
            max_retries: o.max_retries,
            retry_after_max_wait: Duration::from_secs(o.retry_after_max_wait_secs),
            interactive_max_wait: Duration::from_millis(o.interactive_max_wait_ms),
            per_host: RateSpec::new(o.per_host_rps, o.per_host_burst),
            per_connection: RateSpec::new(o.per_connection_rps, o.per_connection_burst),
            log_body_bytes: self.request_log.body_preview_bytes,
        })
    }
}

/// `CRMHUB_*` names that are not crmhub's settings: `CRMHUB_CHANNEL_KEY` is the key a client
/// (`crmhub call simulate`) presents to a running crmhub, and must not make every other command
/// run in the same shell refuse to start.
const CLIENT_ENV: &[&str] = &["channel_key"];

/// `CRMHUB_SECTION__KEY` → `section.key`, plus the shortcuts. `CRMHUB_TEST_*` belongs to the
/// test-suite and is ignored, and so are the [`CLIENT_ENV`] names; every other `CRMHUB_*` name
/// must be a real setting.
fn environment() -> Env {
    Env::prefixed("CRMHUB_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            !key.starts_with("test_") && !CLIENT_ENV.contains(&key.as_str())
        })
        .map(|key| {
            ENV_ALIASES
                .iter()
                .find(|(alias, _)| key == *alias)
                .map_or_else(|| key.as_str().to_owned().into(), |(_, path)| (*path).into())
        })
        .split("__")
}

/// figment's `Env` reads what `environment()` names, but would turn every value that looks like
/// a number into one (`0123` → 123, an all-digit token → "found unsigned int"). Here values stay
/// strings, except a `[…]` list (`CRMHUB_OUTBOUND__ALLOW_PRIVATE=["10.0.0.0/8"]`); typed fields
/// read them through `extract_lossy`.
struct EnvStrings(Env);

impl Provider for EnvStrings {
    fn metadata(&self) -> Metadata {
        Metadata::named("CRMHUB_* environment variables")
    }

    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        let mut values = Figment::new();
        for (key, raw) in self.0.iter() {
            let value: Value = if raw.trim_start().starts_with('[') {
                raw.parse().unwrap_or_else(|_| Value::from(raw.clone()))
            } else {
                Value::from(raw)
            };
            values = values.merge(Serialized::default(key.as_str(), value));
        }
        values.data()
    }
}

/// One figment error as "key: problem (source)".
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let source = error.metadata.as_ref().map(|m| match &m.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        Some(other) => other.to_string(),
        None => m.name.to_string(),
    });
    let mut message = error.kind.to_string();
    if let figment::error::Kind::UnknownField(field, _) = &error.kind {
        let full = if key.is_empty() {
            field.clone()
        } else if error.path.last() == Some(field) {
            key.clone()
        } else {
            format!("{key}.{field}")
        };
        // An unknown key carries the metadata of the section it sits in, not of the layer
        // that added it; the environment says whether it was one of its names.
        let from_env = environment().iter().any(|(name, _)| name.as_str() == full);
        let source = if from_env { Some("CRMHUB_* environment variables".to_owned()) } else { source };
        message = format!("unknown key {full:?}");
        return match source {
            Some(s) => format!("{message} (in {s})"),
            None => message,
        };
    }
    if !key.is_empty() {
        message = format!("{key}: {message}");
    }
    match source {
        Some(s) => format!("{message} (in {s})"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Settings::load` with exactly these environment variables (figment's jail serialises
    /// the tests that change the process environment). The jail's closure type is figment's.
    #[allow(clippy::result_large_err)]
    fn load(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (key, value) in vars {
                jail.set_env(key, value);
            }
            loaded = Some(Settings::load(file));
            Ok(())
        });
        loaded.expect("the jail ran")
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_valid() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.server.role, Role::Both);
        assert_eq!(s.listen_addr().unwrap().port(), 8080);
        assert!(matches!(s.database_url().unwrap(), DatabaseUrl::Sqlite(p) if p.ends_with("crmhub.db")));
    }

    #[test]
    fn file_then_env_override_in_order() {
        let f = file("[server]\nlisten = \"127.0.0.1:9000\"\nrole = \"api\"\n[jobs]\nconcurrency = 2\n");
        let s = load(Some(f.path()), &[("CRMHUB_JOBS__CONCURRENCY", "7"), ("CRMHUB_ROLE", "worker")]).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:9000", "file beats defaults");
        assert_eq!(s.jobs.concurrency, 7, "env beats file");
        assert_eq!(s.server.role, Role::Worker, "shortcut");
        let s = load(None, &[("CRMHUB_OUTBOUND__ALLOW_PRIVATE", "[\"127.0.0.1\", \"10.0.0.0/8\"]")]).unwrap();
        assert_eq!(s.outbound_policy().unwrap().allow_private.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = file("[server]\nlisten = \"127.0.0.1:9000\"\nlistne = \"x\"\n");
        let err = load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("server.listne"), "{err}");
        let err = load(None, &[("CRMHUB_JOBS__CONCURENCY", "3")]).unwrap_err().to_string();
        assert!(err.contains("jobs.concurency") && err.contains("environment"), "{err}");
        // The test-suite's own variables are not settings.
        load(None, &[("CRMHUB_TEST_DATABASE_URL", "postgres://x")]).unwrap();
        // Nor is the channel key `crmhub call simulate` reads.
        load(None, &[("CRMHUB_CHANNEL_KEY", "crmhub_x")]).unwrap();
    }

    #[test]
    fn malformed_toml_is_refused_with_its_location() {
        let f = file("[server\nlisten = 1");
        let err = load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("invalid configuration"), "{err}");
        assert!(err.contains(&f.path().display().to_string()) || err.contains("line"), "{err}");
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        let err = load(None, &[("CRMHUB_JOBS__CONCURRENCY", "many")]).unwrap_err().to_string();
        assert!(err.contains("jobs.concurrency"), "{err}");
        let err = load(None, &[("CRMHUB_DATABASE_URL", "mysql://root@localhost/crm")]).unwrap_err().to_string();
        assert!(err.contains("database.url") && err.contains("unknown scheme \"mysql\""), "{err}");
        let err = load(None, &[("CRMHUB_LISTEN", "localhost")]).unwrap_err().to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = load(None, &[("CRMHUB_OUTBOUND__ALLOW_PRIVATE", "[\"ten.0.0.1\"]")]).unwrap_err().to_string();
        assert!(err.contains("outbound.allow_private"), "{err}");
        let err = load(None, &[("CRMHUB_JOBS__LEASE_SECS", "10")]).unwrap_err().to_string();
        assert!(err.contains("jobs.lease_secs"), "{err}");
        let err = load(None, &[("CRMHUB_MASTER_KEY", "not-a-key")]).unwrap_err().to_string();
        assert!(err.contains("vault.master_key"), "{err}");
        let err = load(None, &[("CRMHUB_ROLE", "everything")]).unwrap_err().to_string();
        assert!(err.contains("server.role"), "{err}");
        let err = load(None, &[("CRMHUB_OUTBOUND__INTERACTIVE_MAX_WAIT_MS", "8000")]).unwrap_err().to_string();
        assert!(err.contains("outbound.interactive_max_wait_ms"), "{err}");
        for (key, value) in [("CRMHUB_SERVER__SOCIAL_INBOX_TIMEOUT_MS", "0"), ("CRMHUB_SERVER__ADMIN_TIMEOUT_MS", "99")]
        {
            let err = load(None, &[(key, value)]).unwrap_err().to_string();
            let name = key.strip_prefix("CRMHUB_SERVER__").unwrap().to_ascii_lowercase();
            assert!(err.contains(&format!("server.{name}")), "{err}");
        }
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/crmhub.toml")), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile(_)));
    }

    #[test]
    fn secrets_never_print_from_config_check() {
        let s = load(None, &[("CRMHUB_ADMIN_TOKEN", "a-very-long-admin-token")]).unwrap();
        let shown = serde_json::to_string(&s).unwrap();
        assert!(!shown.contains("a-very-long-admin-token") && shown.contains("[redacted]"));
    }

    #[test]
    fn environment_values_are_strings_until_a_typed_field_reads_them() {
        let s =
            load(None, &[("CRMHUB_ADMIN_TOKEN", "0123456789012345678"), ("CRMHUB_JOBS__CONCURRENCY", "007")]).unwrap();
        assert_eq!(s.admin.token, "0123456789012345678", "an all-digit token, leading zero kept");
        assert_eq!(s.jobs.concurrency, 7, "a typed field still reads a number");
        let s = load(None, &[("CRMHUB_DATA_DIR", "0042"), ("CRMHUB_VAULT__ALLOW_NEW_DATABASE", "true")]).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("0042"));
        assert!(s.vault.allow_new_database);
    }
}
