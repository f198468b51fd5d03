use crmhub_core::TenantId;

use crate::vault::VaultError;

/// Everything the storage layer can refuse. Client-facing variants carry a message that is safe
/// to show; `Database` and `Migration` are internal and must be logged, not shown.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} not found")]
    NotFound { entity: &'static str },

    /// A uniqueness rule was broken; `field` names what to change.
    #[error("{message}")]
    Conflict { field: &'static str, message: String },

    /// The tenant already has `cap` jobs waiting; the caller should shed load rather than queue
    /// without bound.
    #[error("the job queue for tenant {tenant} is full ({cap} jobs waiting); try again later")]
    QueueFull { tenant: TenantId, cap: u64 },

    /// The job's lease expired and another worker owns it now; this worker's result is void.
    #[error("the job's lease was lost to another worker")]
    LeaseLost,

    /// The database could not be opened or reached. `database` is a SQLite path or
    /// PostgreSQL's host, port and database (`DatabaseUrl::describe`), never a password.
    #[error("cannot open the database {database}: {reason}")]
    Unavailable { database: String, reason: String },

    #[error("invalid database URL: {0}")]
    InvalidUrl(String),

    #[error(transparent)]
    Vault(#[from] VaultError),

    /// A stored row no longer parses (hand-edited database, or a bug).
    #[error("corrupt {entity} row {id}: {reason}")]
    Corrupt { entity: &'static str, id: String, reason: String },

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub(crate) fn corrupt(entity: &'static str, id: impl Into<String>, reason: impl ToString) -> Self {
        Self::Corrupt { entity, id: id.into(), reason: reason.to_string() }
    }
}

/// Maps a unique-constraint violation to a `Conflict` naming the field; other errors pass
/// through unchanged.
pub(crate) fn on_unique(err: sqlx::Error, field: &'static str, message: impl FnOnce() -> String) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict { field, message: message() },
        _ => StoreError::Database(err),
    }
}
