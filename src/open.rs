//! Opening what the commands read and write, in one place: the Drive client and the scope it sees
//! (`run`, `verify`, `versions`, `log`), the identity a store is bound to, and the state store opened
//! to read beside no pipeline. `pipeline` opens the rest of a run (`pipeline::open`).

use crate::config::Config;
use crate::drive::{DriveClient, DriveError, DriveSettings};
use crate::mirror::Scope;
use crate::model::DriveId;
use crate::retry::RetryPolicy;
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
