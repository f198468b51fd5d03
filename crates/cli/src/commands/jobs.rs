//! `crmhub jobs …`

use anyhow::bail;
use crmhub_core::JobId;
use crmhub_store::Store;
use crmhub_store::jobs::{JobFilter, JobStatus, Redrive};

use super::print_json;
use super::records::tenant_id;
use crate::cli::JobsCommand;

pub async fn run(store: Store, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { tenant, status, limit } => {
            let tenant = match tenant {
                Some(slug) => Some(tenant_id(&store, &slug).await?),
                None => None,
            };
            let status = match status.as_deref() {
                Some(raw) => Some(
                    JobStatus::parse(raw)
                        .ok_or_else(|| anyhow::anyhow!("--status {raw:?}: expected pending, running or dead"))?,
                ),
                None => None,
            };
            print_json(
                &store
                    .jobs()
                    .list(&JobFilter { tenant, status, kind: None, dedupe_key: None, limit: Some(limit) })
                    .await?,
            )
        }
        JobsCommand::Redrive { tenant, ids, all } => {
            if !all && ids.is_empty() {
                bail!("name dead jobs with --id, or redrive every dead job with --all");
            }
            let tenant = match tenant {
                Some(slug) => Some(tenant_id(&store, &slug).await?),
                None => None,
            };
            let which = if all {
                Redrive::AllDead
            } else {
                Redrive::Ids(
                    ids.iter()
                        .map(|id| id.parse::<JobId>().map_err(|_| anyhow::anyhow!("{id:?} is not a job id")))
                        .collect::<Result<_, _>>()?,
                )
            };
            let n = store.jobs().redrive(tenant, which).await?;
            println!("{n} dead job(s) redriven");
            Ok(())
        }
        JobsCommand::Discard { tenant, id } => {
            let tenant = tenant_id(&store, &tenant).await?;
            let id: JobId = id.parse().map_err(|_| anyhow::anyhow!("{id:?} is not a job id"))?;
            store.jobs().discard_dead(tenant, id).await?;
            println!("dead job {id} discarded");
            Ok(())
        }
    }
}
