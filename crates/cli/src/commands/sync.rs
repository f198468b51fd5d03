//! `crmhub sync …`: contact sync pipelines and their runs (docs/sync.md). The runs themselves
//! are jobs: a `crmhub serve` with workers must be running on the same database.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use crmhub_server::Settings;
use crmhub_server::sync::{PipelineInput, run_view};
use crmhub_store::Store;
use crmhub_store::sync::{Pipeline, RunKind, RunStatus, SyncRun};
use serde_json::{Map, Value, json};

use super::print_json;
use super::records::tenant_id;
use crate::cli::TenantArg;

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Manage sync pipelines (a source connection mirrored into a Unisender list).
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Start a backfill or a reconciliation (returns at once unless --wait).
    Run {
        #[command(flatten)]
        tenant: TenantArg,
        /// The pipeline's id or name.
        #[arg(long)]
        pipeline: String,
        #[arg(long, value_parser = ["backfill", "reconcile"], default_value = "backfill")]
        kind: String,
        /// Follow the run until it ends: a progress bar on a terminal, progress lines otherwise.
        #[arg(long)]
        wait: bool,
    },
    /// A pipeline's latest runs with their progress.
    Status {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        pipeline: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline; its initial backfill starts at once.
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        name: String,
        /// The source connection (Kommo, Vtiger, … — one that lists changes).
        #[arg(long)]
        source: String,
        /// The Unisender connection.
        #[arg(long)]
        destination: String,
        #[arg(long)]
        list_id: String,
        /// SOURCE=DEST, repeatable (default: name=Name).
        #[arg(long = "map")]
        map: Vec<String>,
        /// exclude (default) or delete.
        #[arg(long)]
        deletion: Option<String>,
        /// Poll the source's change feed this often instead of waiting for webhooks.
        #[arg(long)]
        poll_secs: Option<u32>,
    },
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        /// Id or name.
        pipeline: String,
    },
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        pipeline: String,
    },
}

async fn find(store: &Store, tenant: crmhub_core::TenantId, raw: &str) -> anyhow::Result<Pipeline> {
    let sync = store.sync(tenant);
    let found = match raw.parse::<crmhub_store::sync::Uuid>() {
        Ok(id) => sync.pipeline(id).await,
        Err(_) => sync.pipeline_by_name(raw).await,
    };
    found.with_context(|| format!("pipeline {raw}"))
}

pub async fn run(settings: Settings, command: SyncCommand) -> anyhow::Result<()> {
    match command {
        SyncCommand::Pipeline(PipelineCommand::Create {
            tenant,
            name,
            source,
            destination,
            list_id,
            map,
            deletion,
            poll_secs,
        }) => {
            let mut field_map = Map::new();
            for pair in &map {
                let (from, to) =
                    pair.split_once('=').with_context(|| format!("--map {pair:?}: expected SOURCE=DEST"))?;
                field_map.insert(from.trim().to_owned(), Value::String(to.trim().to_owned()));
            }
            let input = PipelineInput {
                name,
                source_connection_id: source,
                destination_connection_id: destination,
                list_id,
                field_map: (!field_map.is_empty()).then_some(field_map),
                deletion,
                poll_secs,
            };
            let (state, log_writer) =
                crmhub_server::AppState::build(settings, std::sync::Arc::new(crmhub_core::SystemClock)).await?;
            let created = async {
                let tenant = state.store.tenants().get(tenant_id(&state.store, &tenant.tenant).await?).await?;
                crmhub_server::sync::create_pipeline(&state, &tenant, input).await.map_err(|e| match e {
                    crmhub_server::error::ApiError::Invalid(f) => anyhow::anyhow!("{}: {}", f.field, f.message),
                    other => anyhow::anyhow!("{other}"),
                })
            }
            .await;
            log_writer.finish().await;
            let (pipeline, start) = created?;
            let mut body = serde_json::to_value(&pipeline)?;
            body["backfill"] = run_view(&start.run);
            print_json(&body)
        }
        SyncCommand::Pipeline(PipelineCommand::List { tenant }) => {
            let store = super::open_store(&settings).await?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            print_json(&store.sync(tenant).pipelines().await?)
        }
        SyncCommand::Pipeline(PipelineCommand::Show { tenant, pipeline }) => {
            let store = super::open_store(&settings).await?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let pipeline = find(&store, tenant, &pipeline).await?;
            let runs = store.sync(tenant).runs(pipeline.id, 5).await?;
            let mut body = serde_json::to_value(&pipeline)?;
            body["runs"] = Value::Array(runs.iter().map(run_view).collect());
            print_json(&body)
        }
        SyncCommand::Pipeline(PipelineCommand::Delete { tenant, pipeline }) => {
            let store = super::open_store(&settings).await?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let pipeline = find(&store, tenant, &pipeline).await?;
            store.sync(tenant).delete_pipeline(pipeline.id).await?;
            println!("pipeline {} deleted", pipeline.name);
            Ok(())
        }
        SyncCommand::Run { tenant, pipeline, kind, wait } => {
            let store = super::open_store(&settings).await?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let pipeline = find(&store, tenant, &pipeline).await?;
            let kind = RunKind::parse(&kind).context("--kind")?;
            let start = crmhub_server::sync::start_run(&store, &pipeline, kind).await?;
            if !start.created {
                eprintln!("a {} run is already running; following it", kind.as_str());
            }
            if !wait {
                return print_json(&run_view(&start.run));
            }
            let run = follow(&store, tenant, start.run.id).await?;
            print_json(&run_view(&run))?;
            if run.status != RunStatus::Done {
                bail!("the run ended {}: {}", run.status.as_str(), run.last_error.unwrap_or_default());
            }
            Ok(())
        }
        SyncCommand::Status { tenant, pipeline } => {
            let store = super::open_store(&settings).await?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let pipeline = find(&store, tenant, &pipeline).await?;
            let runs = store.sync(tenant).runs(pipeline.id, 10).await?;
            print_json(&json!({"pipeline": pipeline.name, "status": pipeline.status,
                "runs": runs.iter().map(run_view).collect::<Vec<_>>()}))
        }
    }
}

/// One progress line: done/total, rate, ETA and the last error.
pub fn progress_line(run: &SyncRun) -> String {
    let view = run_view(run);
    let total = run.total.map_or_else(|| "?".to_owned(), |t| t.to_string());
    let mut line = format!(
        "{} {}: {}/{} contacts, {:.1}/s",
        run.kind.as_str(),
        run.status.as_str(),
        run.done,
        total,
        view["rate_per_sec"].as_f64().unwrap_or(0.0)
    );
    if let Some(eta) = view["eta_secs"].as_u64() {
        line.push_str(&format!(", ETA {eta}s"));
    }
    if let Some(error) = &run.last_error {
        line.push_str(&format!(", last error: {error}"));
    }
    line
}

/// A bar of `width` cells for done/total (a spinner-like bar when the total is unknown).
pub fn progress_bar(run: &SyncRun, width: usize) -> String {
    let filled = match run.total {
        Some(total) if total > 0 => (run.done.min(total) as usize * width) / total as usize,
        _ => (run.done as usize) % (width + 1),
    };
    format!("[{}{}] {}", "#".repeat(filled), "-".repeat(width - filled), progress_line(run))
}

/// Follows a run until it is no longer running: a bar rewritten with `\r` on a terminal, a
/// line per change otherwise.
async fn follow(
    store: &Store,
    tenant: crmhub_core::TenantId,
    run: crmhub_store::sync::Uuid,
) -> anyhow::Result<SyncRun> {
    let terminal = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let current = store.sync(tenant).run(run).await?;
        let line = if terminal { progress_bar(&current, 30) } else { progress_line(&current) };
        if line != last {
            let mut err = std::io::stderr();
            if terminal {
                write!(err, "\r\x1b[2K{line}")?;
            } else {
                writeln!(err, "{line}")?;
            }
            err.flush()?;
            last = line;
        }
        if current.status != RunStatus::Running {
            if terminal {
                eprintln!();
            }
            return Ok(current);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
