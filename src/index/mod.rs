//! The queryable index of the mirror in PostgreSQL (`[index]`): `file_hierarchy`, `file_versions` and
//! `sync_audit_log`, fed by the sink from the store's audit log after the committer has committed, so
//! the mirror never waits for it. Each batch of audit entries is applied in one PostgreSQL transaction
//! together with the sink's cursor (exactly once); an index that is new, fed by another store, or
//! behind entries the store no longer has is rebuilt from the records in one transaction.
//!
//! It works through a transaction-mode pooler (Supabase's on port 6543, PgBouncer's
//! `pool_mode = transaction`), which hands each transaction whichever server session is free: every
//! statement is unnamed (`query_typed`/`execute_typed`, or the simple query protocol; clippy.toml
//! refuses the methods that prepare named ones), and no state outlives a transaction (the migration
//! lock is `pg_advisory_xact_lock`, no `SET`, `LISTEN` or temporary table).
//!
//! Several stores (mirrors, the shards of one deployment) share a schema side by side: every row
//! carries the `store_id` of the store it came from, each store has its own cursor, and a store
//! only ever replaces or prunes its own rows.

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
    /// A statement failed (shown with its SQLSTATE and the server's message).
    #[error("index: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Reading the store failed.
    #[error("index: {0}")]
    Store(#[from] crate::state::StoreError),
    /// The cursor moved under the sink (another writer on the same schema): it starts over from it.
    #[error("index: the cursor in PostgreSQL moved under this sink (another mirrorflow writes to this schema?)")]
    CursorMoved,
}

/// `e` as a person can act on it: a server error with its SQLSTATE, message, detail and hint (the
/// driver's own text says only "db error"), any other with its causes.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {}): {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// `name` as a quoted SQL identifier (`"user"`, embedded quotes doubled): the configured schema is
/// spliced into statements, and a plain name may still be a reserved word.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
