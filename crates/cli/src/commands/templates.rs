//! `crmhub template …`

use std::path::Path;

use anyhow::{Context, bail};
use crmhub_connectors::http::AddressPolicy;
use crmhub_server::Settings;
use crmhub_server::error::ApiError;
use crmhub_server::templates::{check_source, store_version};
use serde_json::json;

use super::records::tenant_id;
use super::{open_store, print_json};
use crate::cli::TemplateCommand;

pub async fn run(settings: &Settings, command: TemplateCommand) -> anyhow::Result<()> {
    let policy = AddressPolicy::new(settings.outbound_policy()?.allow_private);
    match command {
        TemplateCommand::Check { file } => {
            let source = read(&file)?;
            match check_source(&source, None, &policy) {
                Ok((template, _)) => {
                    // Warnings do not fail the check: the template is valid, the CRM may refuse.
                    for warning in crmhub_connectors::template::warnings(&template) {
                        println!("{}: warning: {warning}", file.display());
                    }
                    let triggers: Vec<&str> =
                        template.endpoints.iter().filter_map(|e| e.trigger.map(|t| t.as_str())).collect();
                    println!(
                        "{}: ok ({} endpoints; triggers: {})",
                        file.display(),
                        template.endpoints.len(),
                        triggers.join(", ")
                    );
                    Ok(())
                }
                Err(errors) => {
                    for error in &errors.0 {
                        println!("{}: {error}", file.display());
                    }
                    bail!("{} problem(s) in {}", errors.0.len(), file.display())
                }
            }
        }
        TemplateCommand::Publish { file } => {
            let store = open_store(settings).await?;
            let record = store_version(&store, &policy, None, &read(&file)?, None).await.map_err(explain)?;
            print_json(&json!({"name": record.name, "version": record.version, "scope": "published"}))
        }
        TemplateCommand::Create { tenant, file } => {
            let store = open_store(settings).await?;
            let tenant = tenant_id(&store, &tenant.tenant).await?;
            let record = store_version(&store, &policy, Some(tenant), &read(&file)?, None).await.map_err(explain)?;
            print_json(&json!({"name": record.name, "version": record.version, "scope": "private"}))
        }
        TemplateCommand::List { tenant } => {
            let store = open_store(settings).await?;
            let tenant = match tenant {
                Some(slug) => Some(tenant_id(&store, &slug).await?),
                None => None,
            };
            let list = store.templates().list(tenant).await?;
            let rows: Vec<_> = list
                .iter()
                .map(|t| {
                    json!({"name": t.name, "version": t.version, "type": t.kind, "label": t.label,
                                "scope": if t.tenant_id.is_some() { "private" } else { "published" }})
                })
                .collect();
            print_json(&rows)
        }
        TemplateCommand::Show { name, tenant } => {
            let store = open_store(settings).await?;
            let tenant = match tenant {
                Some(slug) => Some(tenant_id(&store, &slug).await?),
                None => None,
            };
            let versions = store.templates().versions(tenant, &name).await?;
            let Some(latest) = versions.first() else { bail!("no template named {name:?}") };
            println!("# {} v{} ({} versions)", latest.name, latest.version, versions.len());
            println!("{}", latest.source);
            Ok(())
        }
    }
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// Template problems, one per line with their paths.
fn explain(error: ApiError) -> anyhow::Error {
    match error {
        ApiError::InvalidTemplate(errors) => anyhow::anyhow!("the template has problems:\n{errors}"),
        other => anyhow::anyhow!("{other}"),
    }
}
