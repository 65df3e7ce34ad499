//! The token cache of a person signed in with `mirrorflow auth login` (`[source] token_cache`): the
//! refresh token, the last access token and what the sign-in was for. It is a secret, so it is written
//! atomically (a new file renamed over the old, never half-written) with mode 0600, and never printed.

use super::DriveError;
use google_drive3::yup_oauth2::storage::{TokenInfo, TokenStorage, TokenStorageError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One signed-in account, as saved in the cache file.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignIn {
    /// `about.user.emailAddress` at sign-in, for `auth status` and messages.
    pub account: String,
    /// The scopes the user granted.
    pub scopes: Vec<String>,
    /// The OAuth client the tokens belong to (a refresh token only works with its own client).
    pub client_id: String,
    /// Long-lived: gets new access tokens.
    pub refresh_token: String,
    /// The last access token, reused by the next run until it expires.
    #[serde(default)]
    pub access_token: Option<String>,
    /// When `access_token` expires, in seconds since the Unix epoch.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

// No derived Debug: a stray `{:?}` must never print a token.
impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").field("account", &self.account).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

impl SignIn {
    /// Reads the cache; `None` when there is none (nobody signed in yet).
    pub fn load(path: &Path) -> Result<Option<SignIn>, DriveError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DriveError::Auth(format!("cannot read token cache {}: {e}", path.display()))),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            DriveError::Auth(format!(
                "token cache {} is damaged ({e}); sign in again with `mirrorflow auth login`",
                path.display()
            ))
        })
    }

    /// Writes the cache atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), DriveError> {
        let fail = |e: std::io::Error| DriveError::Auth(format!("cannot write token cache {}: {e}", path.display()));
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| fail(std::io::Error::other(e)))?;
        let tmp = create_private_temp(path, &text).map_err(fail)?;
        let renamed = std::fs::rename(&tmp, path);
        if renamed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        renamed.map_err(fail)?;
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// What yup-oauth2 keeps in its token storage.
    fn token_info(&self) -> TokenInfo {
        TokenInfo {
            access_token: self.access_token.clone(),
            refresh_token: Some(self.refresh_token.clone()),
            expires_at: Some(
                self.expires_at
                    .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            ),
            id_token: None,
        }
    }
}

/// A temporary file beside `path` holding `bytes`, written and synced; its path. Its name is random
/// and it is created new: another local user who can write to the folder cannot guess the name
/// ahead, nor have a file or a link there that the secret would be written through.
fn create_private_temp(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let mut attempts = 0;
    loop {
        let tmp = temp_path(path);
        match write_private(&tmp, bytes) {
            // A name taken by chance (or by someone): another random one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = std::fs::remove_file(&tmp);
                }
                return Err(e);
            }
            Ok(()) => return Ok(tmp),
        }
    }
}

/// `<name>.tmp-<random>` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", super::random_hex(12)));
    path.with_file_name(name)
}

/// Creates `path`, which must not exist (`O_EXCL`; a link there is not followed, `O_NOFOLLOW`), with
/// mode 0600 from the start (never briefly world-readable), and writes and syncs `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// yup-oauth2's token storage over the cache file: a refreshed access token is saved, so the next
/// run does not need a refresh of its own.
pub(super) struct CacheStore {
    path: PathBuf,
    sign_in: Mutex<SignIn>,
}

impl CacheStore {
    /// The store of `sign_in`, saved to `path` on every refresh.
    pub(super) fn new(path: PathBuf, sign_in: SignIn) -> CacheStore {
        CacheStore { path, sign_in: Mutex::new(sign_in) }
    }
}

#[async_trait::async_trait]
impl TokenStorage for CacheStore {
    async fn set(&self, _scopes: &[&str], token: TokenInfo) -> Result<(), TokenStorageError> {
        let updated = {
            let mut s = self.sign_in.lock().unwrap_or_else(|p| p.into_inner());
            s.access_token = token.access_token;
            s.expires_at = token.expires_at.map(|t| t.unix_timestamp());
            if let Some(r) = token.refresh_token {
                s.refresh_token = r;
            }
            s.clone()
        };
        let path = self.path.clone();
        // Saving is best effort: a read-only cache costs one refresh per run, not the run.
        let saved = tokio::task::spawn_blocking(move || updated.save(&path)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "the refreshed access token was not saved");
        }
        Ok(())
    }

    async fn get(&self, _scopes: &[&str]) -> Option<TokenInfo> {
        Some(self.sign_in.lock().unwrap_or_else(|p| p.into_inner()).token_info())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignIn {
        SignIn {
            account: "ada@example.com".into(),
            scopes: vec!["https://www.googleapis.com/auth/drive.readonly".into()],
            client_id: "c".into(),
            refresh_token: "1//secret-refresh".into(),
            access_token: Some("ya29.secret-access".into()),
            expires_at: Some(1_900_000_000),
        }
    }

    #[test]
    fn the_cache_round_trips_with_mode_0600_and_no_temp_file_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token.json");
        assert_eq!(SignIn::load(&path).unwrap(), None);
        sample().save(&path).unwrap();
        sample().save(&path).unwrap();
        assert_eq!(SignIn::load(&path).unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("token.json")]);
    }

    #[cfg(unix)]
    #[test]
    fn the_temp_file_is_created_new_and_a_link_there_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        // A link in place of the temp file, and a dangling one: neither is written through.
        let link = dir.path().join("token.json.tmp-x");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = write_private(&link, b"secret").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        let dangling = dir.path().join("token.json.tmp-y");
        std::os::unix::fs::symlink(dir.path().join("new-victim"), &dangling).unwrap();
        assert!(write_private(&dangling, b"secret").is_err());
        assert!(!dir.path().join("new-victim").exists());
        // A plain file already there is not reused either.
        let planted = dir.path().join("token.json.tmp-z");
        std::fs::write(&planted, "planted").unwrap();
        assert!(write_private(&planted, b"secret").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&planted).unwrap(), "planted");
    }

    #[test]
    fn the_temp_name_is_random_and_beside_the_cache() {
        let path = Path::new("/cache/token.json");
        let (a, b) = (temp_path(path), temp_path(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("token.json.tmp-") && !name.contains(&std::process::id().to_string()), "{name}");
    }

    /// Another local user plants a link where the cache's temporary file used to be (its name was
    /// `<cache>.tmp-<pid>`, easy to guess): saving neither writes the secret through it nor fails.
    #[cfg(unix)]
    #[test]
    fn saving_ignores_a_link_planted_at_a_guessable_temp_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let guessed = dir.path().join(format!("token.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &guessed).unwrap();
        sample().save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(SignIn::load(&path).unwrap(), Some(sample()));
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file());
    }

    #[test]
    fn debug_output_holds_no_token() {
        let shown = format!("{:?}", sample());
        assert!(shown.contains("ada@example.com") && !shown.contains("secret"), "{shown}");
    }

    #[test]
    fn a_damaged_cache_says_to_sign_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = SignIn::load(&path).unwrap_err().to_string();
        assert!(e.contains("auth login"), "{e}");
    }
}
