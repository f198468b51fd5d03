//! The secret vault: credentials and crmhub's own secrets are sealed with AES-256-GCM under the
//! installation's master key before they reach the database.
//!
//! Sealed form: `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id (a hash of
//! the key, not the key) travels with every value, so a database opened with the wrong key is
//! refused by name instead of failing one decrypt at a time. Each value is bound to the row it
//! belongs to through the AEAD's associated data, so a ciphertext copied into another tenant's
//! row does not open.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use crmhub_core::Secret;
use crmhub_core::secret::random_bytes;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::db::{Db, on_pool};
use crate::{Result, StoreError};

pub(crate) const CHECK_KEY: &str = "vault.check";
pub(crate) const CHECK_PLAINTEXT: &[u8] = b"crmhub vault check";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "the master key does not match this database: its secrets are sealed with key id {sealed_with}, \
         the key given has id {given}. Start with the original key (CRMHUB_MASTER_KEY or the key file); \
         nothing was changed"
    )]
    KeyMismatch { sealed_with: String, given: String },

    #[error(
        "this database holds secrets sealed with key id {sealed_with}, but no master key was found at {path}. \
         Restore the key file or set CRMHUB_MASTER_KEY; nothing was changed"
    )]
    MissingKey { sealed_with: String, path: PathBuf },

    #[error(
        "the master key file {key_file} exists, so this installation had secrets, but the database {database} \
         holds none: it was emptied, truncated or replaced. Restore the database, or, to start a new installation \
         with this key, set vault.allow_new_database = true (CRMHUB_VAULT__ALLOW_NEW_DATABASE=true); nothing was changed"
    )]
    KeyWithoutDatabase { key_file: PathBuf, database: String },

    #[error("master key is malformed: {0}")]
    MalformedKey(String),

    #[error("master key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },

    #[error("a sealed value is malformed")]
    MalformedSealed,

    #[error("a sealed value failed authentication (tampered, or moved from another row)")]
    Decrypt,
}

/// 256-bit master key. Accepted encodings: base64 (standard or URL-safe, padded or not) or 64
/// hex characters.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl MasterKey {
    pub fn generate() -> Self {
        Self::from_bytes(random_bytes::<32>())
    }

    pub fn parse(encoded: &str) -> Result<Self, VaultError> {
        let encoded = encoded.trim();
        let decoded = if encoded.len() == 64 && encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(encoded).ok()
        } else {
            [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(encoded).ok())
        };
        let decoded = Zeroizing::new(
            decoded
                .ok_or_else(|| VaultError::MalformedKey("expected 32 bytes as base64 or 64 hex characters".into()))?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::MalformedKey(format!("expected 32 bytes, got {}", decoded.len())))?;
        Ok(Self::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"crmhub key id v1");
        hasher.update(bytes);
        let id = hex::encode(&hasher.finalize()[..8]);
        Self { bytes: Zeroizing::new(bytes), id }
    }

    /// The id stored next to every value sealed with this key; safe to log.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as standard base64, for writing a key file or showing an operator once.
    pub fn encode(&self) -> Secret {
        Secret::new(STANDARD.encode(*self.bytes))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.bytes).into())
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={})", self.id)
    }
}

/// Where the master key comes from: given directly (config / `CRMHUB_MASTER_KEY`) or a key file
/// that is created (mode 0600) on first start of an empty database.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    Given(MasterKey),
    File(PathBuf),
}

pub struct Vault {
    key: MasterKey,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("key_id", &self.key.id).finish()
    }
}

impl Vault {
    pub fn new(key: MasterKey) -> Self {
        Self { key }
    }

    pub fn key_id(&self) -> &str {
        &self.key.id
    }

    /// Seals `plaintext` bound to `context` (the row it belongs to).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        seal_with(&self.key, plaintext, context)
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let (key_id, nonce, ciphertext) = split_sealed(sealed)?;
        if key_id != self.key.id {
            return Err(VaultError::KeyMismatch { sealed_with: key_id.to_owned(), given: self.key.id.clone() });
        }
        let nonce = Nonce::try_from(nonce.as_slice()).map_err(|_| VaultError::MalformedSealed)?;
        self.key
            .cipher()
            .decrypt(&nonce, Payload { msg: &ciphertext, aad: context.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Decrypt)
    }

    pub fn open_string(&self, sealed: &str, context: &str) -> Result<Zeroizing<String>, VaultError> {
        let bytes = self.open(sealed, context)?;
        String::from_utf8(bytes.to_vec()).map(Zeroizing::new).map_err(|_| VaultError::MalformedSealed)
    }
}

pub(crate) fn seal_with(key: &MasterKey, plaintext: &[u8], context: &str) -> String {
    let nonce = random_bytes::<12>();
    let ciphertext = key
        .cipher()
        .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: context.as_bytes() })
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut blob = Vec::with_capacity(12 + ciphertext.len());
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ciphertext);
    format!("v1.{}.{}", key.id, URL_SAFE_NO_PAD.encode(blob))
}

fn split_sealed(sealed: &str) -> Result<(&str, Vec<u8>, Vec<u8>), VaultError> {
    let mut parts = sealed.splitn(3, '.');
    let (Some("v1"), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(VaultError::MalformedSealed);
    };
    let blob = URL_SAFE_NO_PAD.decode(body).map_err(|_| VaultError::MalformedSealed)?;
    if blob.len() < 12 + 16 {
        return Err(VaultError::MalformedSealed);
    }
    let (nonce, ciphertext) = blob.split_at(12);
    Ok((key_id, nonce.to_vec(), ciphertext.to_vec()))
}

/// The key id a sealed value was made with, without opening it.
pub(crate) fn sealed_key_id(sealed: &str) -> Option<&str> {
    split_sealed(sealed).ok().map(|(id, _, _)| id)
}

/// The companion file written during a key rotation, before the database is re-encrypted.
pub fn next_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// Refuses a key file that outlives its database's secrets: that means the database was
/// emptied, truncated or replaced, not that this is a new installation, and starting as one
/// would mint a new admin token and orphan every secret sealed before. Runs before the
/// migrations, so that a refused database is left as it was.
pub(crate) async fn refuse_key_without_database(
    db: &Db,
    source: &MasterKeySource,
    allowed: bool,
    described: &str,
) -> Result<()> {
    let MasterKeySource::File(path) = source else { return Ok(()) };
    if allowed || !(path.exists() || next_key_path(path).exists()) {
        return Ok(());
    }
    // A database without the table at all is as empty as one without the row.
    let check: Option<String> = on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT value FROM installation_settings WHERE key = $1")
            .bind(CHECK_KEY)
            .fetch_optional(pool)
            .await
    })
    .unwrap_or(None);
    if check.is_none() {
        return Err(
            VaultError::KeyWithoutDatabase { key_file: path.to_path_buf(), database: described.to_owned() }.into()
        );
    }
    Ok(())
}

/// Resolves the master key against the database's check value and returns the vault.
pub(crate) async fn open_vault(db: &Db, source: &MasterKeySource) -> Result<Vault> {
    let check: Option<String> = on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT value FROM installation_settings WHERE key = $1")
            .bind(CHECK_KEY)
            .fetch_optional(pool)
            .await
    })?;

    let key = match source {
        MasterKeySource::Given(key) => key.clone(),
        MasterKeySource::File(path) => resolve_key_file(path, check.as_deref())?,
    };

    match &check {
        Some(sealed) => {
            let vault = Vault::new(key);
            vault.open(sealed, CHECK_KEY)?;
            Ok(vault)
        }
        None => {
            let sealed = seal_with(&key, CHECK_PLAINTEXT, CHECK_KEY);
            // Two instances starting together on a new PostgreSQL database race here; the
            // loser's insert is ignored and it must then agree with the winner's key.
            on_pool!(db, |pool| {
                sqlx::query(
                    "INSERT INTO installation_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(CHECK_KEY)
                .bind(&sealed)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })?;
            let stored: String = on_pool!(db, |pool| {
                sqlx::query_scalar("SELECT value FROM installation_settings WHERE key = $1")
                    .bind(CHECK_KEY)
                    .fetch_one(pool)
                    .await
            })?;
            let vault = Vault::new(key);
            vault.open(&stored, CHECK_KEY)?;
            Ok(vault)
        }
    }
}

fn resolve_key_file(path: &Path, check: Option<&str>) -> Result<MasterKey> {
    let sealed_with = check.and_then(sealed_key_id);
    let key_file_err = |reason: String| VaultError::KeyFile { path: path.to_path_buf(), reason };

    // A rotation writes `<key>.next` first and renames it over the key file only after the
    // database was re-encrypted. If we stopped in between, the check value tells which key the
    // database is sealed with now.
    let next = next_key_path(path);
    if next.exists() {
        let next_key = read_key_file(&next)?;
        if sealed_with == Some(next_key.id()) {
            std::fs::rename(&next, path).map_err(|e| key_file_err(format!("finishing rotation: {e}")))?;
            tracing::warn!(key_id = next_key.id(), "finished an interrupted master key rotation");
            return Ok(next_key);
        }
        std::fs::remove_file(&next).map_err(|e| key_file_err(format!("removing stale {}: {e}", next.display())))?;
        tracing::warn!("discarded the key of a master key rotation that never committed");
    }

    if path.exists() {
        return read_key_file(path);
    }
    if let Some(sealed_with) = sealed_with {
        return Err(VaultError::MissingKey { sealed_with: sealed_with.to_owned(), path: path.to_path_buf() }.into());
    }
    let key = MasterKey::generate();
    write_key_file(path, &key)?;
    tracing::info!(key_id = key.id(), path = %path.display(), "created a new master key file");
    Ok(key)
}

fn read_key_file(path: &Path) -> Result<MasterKey> {
    let contents = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| VaultError::KeyFile { path: path.to_path_buf(), reason: e.to_string() })?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "master key file is readable by group or others; chmod 600 it");
            }
        }
    }
    Ok(MasterKey::parse(&contents)?)
}

/// Writes a key file that did not exist, readable by the owner only.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<()> {
    let err = |e: std::io::Error| -> StoreError {
        VaultError::KeyFile { path: path.to_path_buf(), reason: e.to_string() }.into()
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(err)?;
    file.write_all(key.encode().expose().as_bytes()).map_err(err)?;
    file.write_all(b"\n").map_err(err)?;
    file.sync_all().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_with_context() {
        let vault = Vault::new(MasterKey::generate());
        let sealed = vault.seal(b"access-key-123", "connection:a");
        assert!(sealed.starts_with(&format!("v1.{}.", vault.key_id())));
        assert_eq!(&**vault.open(&sealed, "connection:a").unwrap(), b"access-key-123");
        assert!(matches!(vault.open(&sealed, "connection:b"), Err(VaultError::Decrypt)));
    }

    #[test]
    fn a_different_key_is_refused_by_id() {
        let sealed = Vault::new(MasterKey::generate()).seal(b"x", "c");
        let other = Vault::new(MasterKey::generate());
        assert!(matches!(other.open(&sealed, "c"), Err(VaultError::KeyMismatch { .. })));
    }

    #[test]
    fn keys_parse_from_base64_and_hex() {
        let key = MasterKey::generate();
        let b64 = key.encode();
        assert_eq!(MasterKey::parse(b64.expose()).unwrap().id(), key.id());
        let hex = hex::encode(*key.bytes);
        assert_eq!(MasterKey::parse(&hex).unwrap().id(), key.id());
        assert!(MasterKey::parse("short").is_err());
        assert!(!format!("{key:?}").contains(b64.expose()));
    }

    #[test]
    fn tampered_values_do_not_open() {
        let vault = Vault::new(MasterKey::generate());
        let mut sealed = vault.seal(b"secret", "c");
        let last = sealed.pop().unwrap();
        sealed.push(if last == 'A' { 'B' } else { 'A' });
        assert!(vault.open(&sealed, "c").is_err());
        assert!(matches!(vault.open("v2.x.y", "c"), Err(VaultError::MalformedSealed)));
    }
}
