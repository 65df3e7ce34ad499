//! Opening what the commands read and write, in one place: the Drive client and the scope it sees
//! (`run`, `verify`), the identity a store is bound to, the state store opened to read beside no
//! pipeline and checked against that identity (`verify`, `versions`, `log`, `status`, `dlq`), and the
//! destination (`versions`). `pipeline` opens the rest of a run (`pipeline::open`). Each command keeps
//! its own wording of a failure; what is opened, and how, is decided here.

use crate::config::Config;
use crate::dest::{DestError, Destination};
use crate::drive::{DriveClient, DriveError, DriveSettings};
use crate::mirror::Scope;
use crate::model::DriveId;
use crate::retry::RetryPolicy;
use crate::state::{Store, StoreError};
use std::io::Write as _;

/// Why the scope could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// Drive could not be asked.
    #[error("{0}")]
    Drive(#[from] DriveError),
    /// `[source]`'s selection does not parse.
    #[error("{0}")]
    Selection(String),
}

/// Builds the Drive client from config.
pub async fn drive_client(cfg: &Config) -> Result<DriveClient, DriveError> {
    DriveClient::connect(DriveSettings {
        credentials: credentials(cfg),
        api_base_url: cfg.source.api_base_url.clone(),
        docs_base_url: cfg.source.docs_base_url.clone(),
        page_size: cfg.source.page_size,
        acknowledge_abuse: cfg.source.acknowledge_abuse,
        retry: retry_policy(cfg),
        breaker: cfg.retry.breaker(),
        rps: cfg.rate_limit.drive_rps,
        timeout: cfg.source.timeout.0,
    })
    .await
}

/// `[source] credentials` with what goes with it.
pub fn credentials(cfg: &Config) -> crate::drive::auth::Credentials {
    crate::drive::auth::Credentials {
        path: cfg.source.credentials.clone(),
        subject: cfg.source.subject.clone(),
        token_cache: cfg.source.token_cache.clone(),
        scope: crate::drive::auth::scope_url(&cfg.source.scope).unwrap_or_default(),
    }
}

/// The retry policy of `[retry]`, as the Drive client runs it.
pub fn retry_policy(cfg: &Config) -> RetryPolicy {
    RetryPolicy {
        max_attempts: cfg.retry.max_attempts,
        base_delay: cfg.retry.base_delay.0,
        max_delay: cfg.retry.max_delay.0,
    }
}

/// Resolves `[source] drives` into My Drive's root and the shared drives to mirror.
pub async fn discover_scope(cfg: &Config, drive: &DriveClient) -> Result<Scope, ScopeError> {
    let mut scope = Scope {
        selection: cfg.selection().map_err(|e| ScopeError::Selection(e.to_string()))?,
        shared_with_me: cfg.source.shared_with_me,
        drive_root: cfg.source.drive_root.clone(),
        ..Default::default()
    };
    let wants = |s: &str| cfg.source.drives.iter().any(|d| d == s);
    if wants("my-drive") || wants("all") {
        scope.my_drive_root = Some(drive.root_folder_id().await?);
    }
    let explicit: Vec<&String> = cfg.source.drives.iter().filter(|d| *d != "my-drive" && *d != "all").collect();
    if wants("all") || !explicit.is_empty() {
        let visible = drive.shared_drives().await?;
        for (id, name) in &visible {
            if wants("all") || explicit.iter().any(|d| **d == id.0) {
                scope.shared.insert(id.clone(), name.clone());
            }
        }
        for d in explicit {
            if !scope.shared.contains_key(&DriveId(d.clone())) && cfg.source.drive_root.is_some() {
                // A domain's shared-drive unit: its reader lost access (or the drive is gone). Nothing
                // of it may be removed on that account's say: the unit fails, and the next round reads
                // it through another member (or leaves it in place when nobody sees it any more).
                let reader = cfg.source.subject.as_deref().unwrap_or("the reader");
                return Err(ScopeError::Selection(format!(
                    "shared drive {d} is not visible to {reader} any more; nothing of it is removed, and the next \
                     round reads it through another member"
                )));
            }
            if !scope.shared.contains_key(&DriveId(d.clone())) {
                // Deleted, or the account lost access: reported, and the rest of the mirror goes on (the
                // feed removes what the mirror held of it; it is followed again if it comes back).
                tracing::warn!(drive = %d, "shared drive in source.drives is not visible to this account (deleted, access lost, or a wrong id)");
                let _ = writeln!(
                    std::io::stderr(),
                    "mirrorflow: warning: shared drive {d:?} in source.drives is not visible to this account (deleted, access lost, or a wrong id)"
                );
            }
        }
    }
    Ok(scope)
}

/// What a name in the store says about the destination: its URL (bucket and prefix) and, for
/// S3-compatible stores, the endpoint.
pub fn destination_identity(d: &crate::config::DestinationConfig) -> String {
    let url = d.url.trim_end_matches('/');
    match &d.endpoint {
        Some(e) => format!("{url} at {}", e.trim_end_matches('/')),
        None => url.to_string(),
    }
}

/// The state store of `[state] dir`, opened to read beside no pipeline (a running one holds its lock:
/// [`StoreError::is_locked`] tells the caller to ask that run instead).
pub fn state_store(cfg: &Config) -> Result<Store, StoreError> {
    Store::open_with(&cfg.state.dir, cfg.state.store_memory())
}

/// The store was written for another destination than the configuration names: reading it against
/// this one would report (or restore) the wrong objects.
#[derive(Debug, thiserror::Error)]
#[error("the state in {state} belongs to destination {recorded:?}, but the configuration names {configured:?}")]
pub struct OtherDestination {
    /// The state folder.
    pub state: String,
    /// The destination the store is bound to.
    pub recorded: String,
    /// The destination the configuration names.
    pub configured: String,
}

/// Why a store's destination could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The store could not be read.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// It belongs to another destination.
    #[error("{0}")]
    Other(#[from] OtherDestination),
}

/// Confirms that `store` belongs to the destination `cfg` names (a store bound to none yet belongs to
/// any).
pub fn check_binding(cfg: &Config, store: &Store) -> Result<(), BindingError> {
    let configured = destination_identity(&cfg.destination);
    match store.bound_destination()? {
        Some(recorded) if recorded != configured => {
            Err(OtherDestination { state: cfg.state.dir.display().to_string(), recorded, configured }.into())
        }
        _ => Ok(()),
    }
}

/// The configured destination (`[destination]`, with `[retry]`).
pub fn destination(cfg: &Config) -> Result<Destination, DestError> {
    Destination::from_config(&cfg.destination, &cfg.retry)
}
