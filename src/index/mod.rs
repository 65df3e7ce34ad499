//! The queryable index of the mirror in PostgreSQL (`[index]`): `file_hierarchy`, `file_versions` and
//! `sync_audit_log`, fed by the sink from the store's audit log after the committer has committed, so
//! the mirror never waits for it. Each batch of audit entries is applied in one PostgreSQL transaction
//! together with the sink's cursor (exactly once); an index that is new, fed by another store, or
//! behind entries the store no longer has is rebuilt from the records in one transaction.

pub mod connect;
pub mod rows;
pub mod schema;
mod sink;

pub use sink::{Sink, SinkHandle};

/// The index boundary's error. Every kind is retried by the sink with backoff (the mirror goes on);
/// `is_retryable` tells a passing outage from one that needs a person (a bad URL, a permission).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The server could not be reached or refused the login.
    #[error("{0}")]
    Connect(String),
    /// A statement failed.
    #[error("index: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Reading the store failed.
    #[error("index: {0}")]
    Store(#[from] crate::state::StoreError),
    /// The cursor moved under the sink (another writer on the same schema): it starts over from it.
    #[error("index: the cursor in PostgreSQL moved under this sink (another mirrorflow writes to this schema?)")]
    CursorMoved,
}

impl IndexError {
    /// True when waiting may fix it (network, server restart); false when a person must (SQL state
    /// of a permission or syntax error, a failed login).
    pub fn is_retryable(&self) -> bool {
        match self {
            IndexError::Postgres(e) => e.as_db_error().is_none_or(|db| {
                let code = db.code().code();
                // Class 08 connection, 40 rollback (serialization, deadlock), 53 resources, 57 operator
                // intervention (admin shutdown), 58 system.
                ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class))
            }),
            IndexError::Connect(msg) => !msg.contains("password authentication failed"),
            IndexError::Store(_) | IndexError::CursorMoved => true,
        }
    }
}
