//! The units of a domain: what they are, how they are found (the users from `[source] subjects` or the
//! directory, the shared drives from what those users see), and the configuration each one's
//! pipeline runs with.

use crate::config::{Config, Subjects};
use crate::drive::DriveError;
use crate::drive::directory::{Directory, active_users};
use crate::mirror::keys::{collision_class, segment};
use crate::mirror::{MY_DRIVE, SHARED_DRIVES};
use crate::model::{DriveId, FileId};
use crate::pipeline::PipelineError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The key segment under the prefix that holds one folder per user.
pub const USERS: &str = "users";

/// One part of a domain mirrored by its own pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// A user's own drive: My Drive (and, with `shared_with_me`, what others shared with them), read
    /// as that user, under `users/<email>/`.
    User {
        /// The user's lower-cased primary email.
        email: String,
    },
    /// A shared drive, read as one of its members, once under `shared-drives/<segment>/`.
    SharedDrive {
        /// The drive.
        id: DriveId,
        /// Its name when listed.
        name: String,
        /// The member it is read as (the first in email order who sees it).
        reader: String,
        /// Its folder under `shared-drives/`: the name as a key segment, with ` (driveId)` when another
        /// drive of the domain already has that name.
        segment: String,
    },
}

/// Why a unit's configuration cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// `[destination] url` cannot take the unit's folder.
    #[error("destination.url {url:?}: cannot hold a unit's folder ({why})")]
    Destination {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// `--user` names nobody this configuration mirrors.
    #[error("--user {0:?}: not a user of source.subjects")]
    UnknownUser(String),
}

impl Unit {
    /// What sharding hashes: the user's email, or `drive:<id>`.
    pub fn shard_key(&self) -> String {
        match self {
            Unit::User { email } => crate::cluster::user_unit(email),
            Unit::SharedDrive { id, .. } => crate::cluster::drive_unit(&id.0),
        }
    }

    /// The unit as logs and reports name it.
    pub fn label(&self) -> String {
        match self {
            Unit::User { email } => email.clone(),
            Unit::SharedDrive { id, name, .. } => format!("shared drive {name:?} ({})", id.0),
        }
    }

    /// `user` or `shared_drive`, for metrics.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Unit::User { .. } => "user",
            Unit::SharedDrive { .. } => "shared_drive",
        }
    }

    /// The folder of `[state] dir/units/` that holds this unit's store.
    pub fn dir_name(&self) -> String {
        match self {
            Unit::User { email } => format!("user-{}", file_safe(email)),
            Unit::SharedDrive { id, .. } => format!("drive-{}", file_safe(&id.0)),
        }
    }

    /// This unit's state folder under the configured `[state] dir`.
    pub fn state_dir(&self, base: &Path) -> PathBuf {
        base.join("units").join(self.dir_name())
    }

    /// The configuration this unit's pipeline runs with: the domain's, read as the unit's subject,
    /// limited to the unit's drive, written under the unit's folder, with the unit's own state and a
    /// share of the state memory. What serves the whole process (metrics listener, webhook) is the
    /// domain's, not the unit's.
    pub fn config(&self, base: &Config) -> Result<Config, UnitError> {
        let mut c = base.clone();
        c.source.subjects = None;
        c.source.webhook = None;
        c.metrics.listen = None;
        c.verify.every = None;
        c.rate_limit.drive_rps = base.rate_limit.user_rps.unwrap_or(base.rate_limit.drive_rps);
        c.state.dir = self.state_dir(&base.state.dir);
        let share = base.state.memory.0 / base.source.drives_in_parallel.max(1) as u64;
        c.state.memory.0 = share.max(crate::state::MIN_STORE_MEMORY);
        let mode = base.destination.key_mode();
        match self {
            Unit::User { email } => {
                c.source.subject = Some(email.clone());
                c.source.drives = vec![MY_DRIVE.to_string()];
                c.destination.url = push_segments(&base.destination.url, &[USERS, &segment(email, None, None, mode)])?;
            }
            Unit::SharedDrive { id, reader, segment: seg, .. } => {
                c.source.subject = Some(reader.clone());
                c.source.drives = vec![id.0.clone()];
                c.source.shared_with_me = false;
                c.source.drive_root = Some(format!("{SHARED_DRIVES}/{seg}"));
            }
        }
        Ok(c)
    }
}

/// The configuration of one user's unit, for `status`, `log`, `dlq` and `verify` with `--user`.
pub fn user_config(base: &Config, email: &str) -> Result<Config, UnitError> {
    let email = email.trim().to_lowercase();
    let listed = match &base.source.subjects {
        Some(Subjects::Listed(list)) => list.iter().any(|e| e.to_lowercase() == email),
        Some(Subjects::Named(_)) => true,
        None => false,
    };
    if !listed {
        return Err(UnitError::UnknownUser(email));
    }
    Unit::User { email }.config(base)
}

/// `url` with `segments` appended as path segments (percent-encoded as a URL needs).
fn push_segments(url: &str, segments: &[&str]) -> Result<String, UnitError> {
    let bad = |why: String| UnitError::Destination { url: url.to_string(), why };
    let mut u = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    {
        let mut path = u.path_segments_mut().map_err(|()| bad("the URL has no path".into()))?;
        path.pop_if_empty();
        for s in segments {
            path.push(s);
        }
    }
    Ok(u.to_string())
}

/// A name as a file name: letters, digits and `@._+-` kept (case too: drive ids differ by case), anything
/// else `%XX`, so two units never share a folder and none escapes `units/`.
fn file_safe(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"@._+-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    match out.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => out,
    }
}

/// The users of the domain whose drives are mirrored, lower-cased, each once, in order.
async fn users(cfg: &Config) -> Result<Vec<String>, PipelineError> {
    match &cfg.source.subjects {
        Some(Subjects::Listed(list)) => {
            let set: BTreeSet<String> = list.iter().map(|e| e.trim().to_lowercase()).collect();
            Ok(set.into_iter().collect())
        }
        Some(s) if s.from_directory() => {
            let admin = cfg.source.subject.clone().unwrap_or_default();
            let retry = crate::open::retry_policy(cfg);
            let dir = Directory::connect(
                &cfg.source.credentials,
                &admin,
                &cfg.source.api_base_url,
                retry,
                cfg.source.timeout.0,
            )
            .await?;
            let listed = dir.users().await?;
            let active = active_users(&listed);
            tracing::info!(users = listed.len(), active = active.len(), "domain directory listed");
            Ok(active)
        }
        _ => Ok(Vec::new()),
    }
}

/// Every unit of the domain: each user's own drive (when `drives` holds `my-drive` or `all`) and each
/// shared drive `drives` asks for, found through the users who see it.
pub async fn discover(cfg: &Config) -> Result<Vec<Unit>, PipelineError> {
    let emails = users(cfg).await?;
    let wants = |s: &str| cfg.source.drives.iter().any(|d| d == s);
    let mut out: Vec<Unit> = Vec::new();
    if wants(MY_DRIVE) || wants("all") {
        out.extend(emails.iter().map(|email| Unit::User { email: email.clone() }));
    }
    let explicit: BTreeSet<&str> =
        cfg.source.drives.iter().map(String::as_str).filter(|d| *d != MY_DRIVE && *d != "all").collect();
    if wants("all") || !explicit.is_empty() {
        let seen = shared_drives(cfg, &emails).await;
        for d in &explicit {
            if !seen.contains_key(&DriveId((*d).to_string())) {
                tracing::warn!(drive = %d, "shared drive in source.drives is visible to none of the users");
            }
        }
        let picked = seen.into_iter().filter(|(id, _)| wants("all") || explicit.contains(id.0.as_str()));
        out.extend(name_drives(picked.collect(), cfg.destination.key_mode()));
    }
    Ok(out)
}

/// Every shared drive any of `emails` sees: its name and the first of them (in order) who sees it.
async fn shared_drives(cfg: &Config, emails: &[String]) -> BTreeMap<DriveId, (String, String)> {
    let mut seen: BTreeMap<DriveId, (String, String)> = BTreeMap::new();
    for email in emails {
        match drives_of(cfg, email).await {
            Ok(drives) => {
                for (id, name) in drives {
                    seen.entry(id).or_insert_with(|| (name, email.clone()));
                }
            }
            Err(e) => tracing::warn!(user = %email, error = %e, "cannot list this user's shared drives"),
        }
    }
    seen
}

async fn drives_of(cfg: &Config, email: &str) -> Result<Vec<(DriveId, String)>, DriveError> {
    let mut c = cfg.clone();
    c.source.subject = Some(email.to_string());
    crate::open::drive_client(&c).await?.shared_drives().await
}

/// Each drive's folder under `shared-drives/`: its name as a segment; a name another drive (of lower
/// id) already has gets ` (driveId)`, so no two drives share a folder whichever shard mirrors them.
fn name_drives(drives: BTreeMap<DriveId, (String, String)>, mode: crate::config::KeyMode) -> Vec<Unit> {
    let mut taken = BTreeSet::new();
    drives
        .into_iter()
        .map(|(id, (name, reader))| {
            let plain = segment(&name, None, None, mode);
            let seg = if taken.insert(collision_class(&plain)) {
                plain
            } else {
                segment(&name, None, Some(&FileId(id.0.clone())), mode)
            };
            taken.insert(collision_class(&seg));
            Unit::SharedDrive { id, name, reader, segment: seg }
        })
        .collect()
}

/// Drops the state of units another shard owns now: their objects stay where they are, and the new
/// owner adopts them (an empty state over a folder that holds a mirror keeps the objects whose bytes
/// match, without downloading them again).
pub fn release(cfg: &Config, elsewhere: &[Unit]) {
    for unit in elsewhere {
        let dir = unit.state_dir(&cfg.state.dir);
        if dir.exists() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(unit = %unit.label(), "unit released: another shard owns it now"),
                Err(e) => tracing::warn!(unit = %unit.label(), error = %e, "cannot drop a released unit's state"),
            }
        }
    }
}

impl From<UnitError> for PipelineError {
    fn from(e: UnitError) -> Self {
        PipelineError::Scope(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyMode;

    #[test]
    fn a_unit_folder_never_escapes_units_and_never_shares_with_another() {
        assert_eq!(file_safe("alice@example.com"), "alice@example.com");
        assert_ne!(file_safe("0AbC"), file_safe("0abc"));
        assert_eq!(file_safe("../x"), "%2E.%2Fx");
        assert_ne!(file_safe("a/b"), file_safe("a%2Fb"));
        assert!(!file_safe("a/b").contains('/'));
    }

    #[test]
    fn drives_of_the_same_name_get_their_own_folders() {
        let mut drives = BTreeMap::new();
        drives.insert(DriveId("0B".into()), ("Team".to_string(), "a@x.com".to_string()));
        drives.insert(DriveId("0A".into()), ("team".to_string(), "b@x.com".to_string()));
        drives.insert(DriveId("0C".into()), ("Other".to_string(), "a@x.com".to_string()));
        let segments: Vec<String> = name_drives(drives, KeyMode::Utf8)
            .into_iter()
            .map(|u| match u {
                Unit::SharedDrive { segment, .. } => segment,
                Unit::User { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(segments, vec!["team".to_string(), "Team (0B)".to_string(), "Other".to_string()]);
    }

    #[test]
    fn a_users_prefix_is_under_users_and_a_drives_under_shared_drives() {
        assert_eq!(push_segments("s3://b/mirror", &[USERS, "a@x.com"]).unwrap(), "s3://b/mirror/users/a@x.com");
        assert_eq!(push_segments("s3://b/mirror/", &[SHARED_DRIVES, "T"]).unwrap(), "s3://b/mirror/shared-drives/T");
        assert_eq!(push_segments("file:///tmp/m", &[USERS, "a b#"]).unwrap(), "file:///tmp/m/users/a%20b%23");
    }
}
