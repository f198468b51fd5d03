//! Installation-wide settings: the admin token's hash and the master key rotation.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::{on_pool, on_tx};
use crate::vault::{MasterKey, Vault, seal_with};
use crate::{Result, Store, StoreError};

const ADMIN_TOKEN_HASH: &str = "admin.token_sha256";

/// The job kind whose payload holds a sealed Kommo authorisation code (`code_sealed`, bound
/// to `connection_id`), re-sealed by a master key rotation.
pub const KOMMO_CONNECT_JOB: &str = "kommo.connect";

/// SHA-256 is enough here: admin tokens are 256-bit random values (or operator-chosen and
/// compared the same way), so there is nothing for a slow hash to protect against guessing.
pub fn hash_admin_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What a master key rotation re-encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub old_key_id: String,
    pub new_key_id: String,
    pub values_resealed: u64,
}

impl Store {
    pub async fn admin_token_hash(&self) -> Result<Option<String>> {
        Ok(on_pool!(&self.db, |pool| {
            sqlx::query_scalar("SELECT value FROM installation_settings WHERE key = $1")
                .bind(ADMIN_TOKEN_HASH)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn set_admin_token_hash(&self, hash: &str) -> Result<()> {
        on_pool!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO installation_settings (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(ADMIN_TOKEN_HASH)
            .bind(hash)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Stores the admin token's hash only if none is stored yet; returns whether it did. Two
    /// instances starting together cannot both generate a token.
    pub async fn init_admin_token_hash(&self, hash: &str) -> Result<bool> {
        let done = on_pool!(&self.db, |pool| {
            sqlx::query("INSERT INTO installation_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(ADMIN_TOKEN_HASH)
                .bind(hash)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// Checks a presented admin token against the stored hash in constant time.
    pub async fn verify_admin_token(&self, presented: &str) -> Result<bool> {
        let Some(stored) = self.admin_token_hash().await? else { return Ok(false) };
        Ok(hash_admin_token(presented).as_bytes().ct_eq(stored.as_bytes()).into())
    }

    /// Re-encrypts every sealed value under `new_key` in one transaction and returns a store
    /// that uses it. If this fails nothing changed; the caller keeps the old key.
    pub async fn rotate_master_key(self, new_key: MasterKey) -> Result<(Store, RotationReport)> {
        let old = self.vault.clone();
        let mut resealed = 0u64;
        let mut tx = self.begin().await?;

        for (select, update, context) in [
            (
                "SELECT id, credentials_sealed FROM connections WHERE credentials_sealed IS NOT NULL",
                "UPDATE connections SET credentials_sealed = $2 WHERE id = $1",
                "connection",
            ),
            (
                "SELECT id, sealed FROM tenant_secrets",
                "UPDATE tenant_secrets SET sealed = $2 WHERE id = $1",
                "tenant_secret",
            ),
            // Connectors' state: sessions, and template connections' call-id → record maps,
            // which must survive a rotation (losing one would log a call twice).
            ("SELECT key, sealed FROM auth_state", "UPDATE auth_state SET sealed = $2 WHERE key = $1", "auth_state"),
            // Kommo: the webhook destinations (their URL carries a secret) and the widget's
            // Unisender API keys.
            (
                "SELECT connection_id, destination_sealed FROM kommo_webhooks",
                "UPDATE kommo_webhooks SET destination_sealed = $2 WHERE connection_id = $1",
                "kommo_webhook",
            ),
            (
                "SELECT connection_id, unisender_api_key_sealed FROM kommo_widget_settings",
                "UPDATE kommo_widget_settings SET unisender_api_key_sealed = $2 WHERE connection_id = $1",
                "kommo_widget",
            ),
        ] {
            let rows: Vec<(String, String)> =
                on_tx!(&mut tx, |conn| sqlx::query_as(select).fetch_all(&mut *conn).await)?;
            for (id, sealed) in rows {
                // The same associated data as when sealed: each value stays bound to its row.
                let context = format!("{context}:{id}");
                let fresh = seal_with(&new_key, &old.open(&sealed, &context)?, &context);
                on_tx!(&mut tx, |conn| {
                    sqlx::query(update).bind(&id).bind(&fresh).execute(&mut *conn).await.map(|r| r.rows_affected())
                })?;
                resealed += 1;
            }
        }

        // A Kommo connect job carries its authorisation code sealed in its payload.
        let jobs: Vec<(String, String)> = on_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT id, payload FROM jobs WHERE kind = $1")
                .bind(KOMMO_CONNECT_JOB)
                .fetch_all(&mut *conn)
                .await
        })?;
        for (id, payload) in jobs {
            let mut payload: serde_json::Value =
                serde_json::from_str(&payload).map_err(|e| StoreError::corrupt("job", &id, e))?;
            let (Some(connection), Some(sealed)) = (
                payload.get("connection_id").and_then(|v| v.as_str()).map(str::to_owned),
                payload.get("code_sealed").and_then(|v| v.as_str()).map(str::to_owned),
            ) else {
                continue;
            };
            let context = format!("kommo_code:{connection}");
            payload["code_sealed"] = seal_with(&new_key, &old.open(&sealed, &context)?, &context).into();
            let payload = payload.to_string();
            on_tx!(&mut tx, |conn| {
                sqlx::query("UPDATE jobs SET payload = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(&payload)
                    .execute(&mut *conn)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            resealed += 1;
        }

        let check = seal_with(&new_key, crate::vault::CHECK_PLAINTEXT, crate::vault::CHECK_KEY);
        let updated = on_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE installation_settings SET value = $2 WHERE key = $1")
                .bind(crate::vault::CHECK_KEY)
                .bind(&check)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        if updated != 1 {
            tx.rollback().await?;
            return Err(StoreError::corrupt("installation_settings", crate::vault::CHECK_KEY, "vault check missing"));
        }
        tx.commit().await?;

        let report = RotationReport {
            old_key_id: old.key_id().to_owned(),
            new_key_id: new_key.id().to_owned(),
            values_resealed: resealed,
        };
        let store = Store { vault: std::sync::Arc::new(Vault::new(new_key)), ..self };
        Ok((store, report))
    }
}
