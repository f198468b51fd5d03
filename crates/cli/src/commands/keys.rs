//! `crmhub keys rotate` and `crmhub admin-token reset`

use anyhow::{Context, bail};
use crmhub_core::Secret;
use crmhub_server::Settings;
use crmhub_store::settings::hash_admin_token;
use crmhub_store::vault::{next_key_path, write_key_file};
use crmhub_store::{MasterKey, MasterKeySource, Store};

use super::open_store;
use crate::cli::{AdminTokenCommand, KeysCommand};

pub async fn run(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    let KeysCommand::Rotate = command;
    let store = open_store(settings).await?;
    let new_key = MasterKey::generate();
    match settings.master_key_source()? {
        MasterKeySource::File(path) => {
            // The new key is on disk before the database changes; if we stop in between, the
            // next start sees which key the database is sealed with and finishes or discards.
            let next = next_key_path(&path);
            write_key_file(&next, &new_key).with_context(|| format!("writing {}", next.display()))?;
            let (store, report) = reseal(store, new_key).await?;
            std::fs::rename(&next, &path).with_context(|| format!("replacing {}", path.display()))?;
            store.close().await;
            println!(
                "master key rotated: {} values re-encrypted; key id {} → {} ({})",
                report.values_resealed,
                report.old_key_id,
                report.new_key_id,
                path.display()
            );
        }
        MasterKeySource::Given(_) => {
            let encoded = new_key.encode();
            let (store, report) = reseal(store, new_key).await?;
            store.close().await;
            println!(
                "master key rotated: {} values re-encrypted; key id {} → {}",
                report.values_resealed, report.old_key_id, report.new_key_id
            );
            println!("Set CRMHUB_MASTER_KEY (or vault.master_key) to the new key before the next start:");
            println!("  {}", encoded.expose());
        }
    }
    println!("Restart every crmhub instance so that it uses the new key.");
    Ok(())
}

async fn reseal(store: Store, key: MasterKey) -> anyhow::Result<(Store, crmhub_store::settings::RotationReport)> {
    store.rotate_master_key(key).await.context("re-encrypting secrets (nothing was changed)")
}

pub async fn admin_token(settings: &Settings, store: Store, command: AdminTokenCommand) -> anyhow::Result<()> {
    let AdminTokenCommand::Reset = command;
    if !settings.admin.token.is_empty() {
        bail!("admin.token is set in the configuration, which wins at every start; change it there instead");
    }
    let token = Secret::generate();
    store.set_admin_token_hash(&hash_admin_token(token.expose())).await?;
    super::serve::print_admin_token_once(token.expose());
    Ok(())
}
