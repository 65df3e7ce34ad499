//! A wire-faithful Google Drive v3 emulator on loopback.
//!
//! mirrorflow cannot reach Google from CI or from a new user's machine, so the project ships its own
//! Drive: OAuth token endpoint, files/changes/drives/about endpoints with Google's JSON and error
//! envelope, deterministic corpora (hostile names, shortcuts, shared drives, multi-GiB files generated
//! on the fly), mutations that produce change records, and fault injection. Tests start it in-process
//! on port 0; `mirrorflow emulator` runs it as a server. The control API lives under `/_emu/`.

mod api;
mod app;
mod auth;
mod body;
mod changes;
mod changes_api;
mod consent;
mod content;
mod control;
mod corpus;
mod directory;
mod domain;
#[cfg(test)]
mod domain_tests;
mod download_op;
mod errors;
mod faults;
mod fields;
mod media;
mod model;
mod mutate;
mod params;
mod query;
mod resources;
mod rng;
mod server;
mod state;
mod stats;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use content::DocKind;
pub use control::{EmuDrive, EmuItem, EmuTree};
pub use corpus::{DOWNLOAD_DISABLED_NAME, FORM_NAME, LINK_SHARED_NAME, SHARED_FILE_NAME, SHARED_FOLDER_NAME};
pub use faults::FaultSettings;
pub use mutate::{MutateError, MutateOp};
pub use stats::{BytesServed, EmuStats};

/// Corpus and behaviour knobs; the same values (and seed) always produce the same corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmulatorConfig {
    /// Seed of every generated id, name, size and byte.
    pub seed: u64,
    /// Binary files in My Drive.
    pub files: usize,
    /// Folders in My Drive.
    pub folders: usize,
    /// Maximum folder nesting depth.
    pub depth: usize,
    /// Google Docs/Sheets/Slides/Drawings in My Drive.
    pub gdocs: usize,
    /// Shared drives, each with a few folders, files and a document.
    pub shared_drives: usize,
    /// Add the hostile set (odd names, shortcuts and cycles, abusive file, huge export, ...).
    pub hostile: bool,
    /// When > 0, add one binary file of this many MiB in My Drive's root.
    pub big_file_mib: u64,
    /// Upper bound of items per page, below what clients ask (Drive may return short pages).
    pub page_size_max: usize,
    /// Access token lifetime in seconds.
    pub token_lifetime_secs: u64,
    /// Whether changes to shared-drive items also appear in the user's change log (`changes.list`
    /// without `driveId`, with `includeItemsFromAllDrives`). Google's "Retrieve changes" guide says
    /// they may appear only in the drive's own log and that apps must not rely on the user's log for
    /// them: `false` behaves that way (the tests use it); `true` is the lenient behaviour.
    pub drive_changes_in_user_log: bool,
    /// The accounts of a Google Workspace domain. Empty (the default): one user, as always. Otherwise
    /// the service-account key acts, through domain-wide delegation, as the user its JWT's `sub`
    /// names: each user has their own generated My Drive and change log, sees what others shared
    /// with them and the shared drives they are members of, and the Admin SDK Directory lists them.
    /// `files`, `folders`, `depth`, `gdocs`, `hostile` and `big_file_mib` then do not apply (they
    /// shape the single user's My Drive); `shared_drives` still generates the shared drives.
    pub domain_users: Vec<DomainUser>,
}

/// One account of an emulated Workspace domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainUser {
    /// Primary email (the JWT `sub` that acts as this user).
    pub email: String,
    /// A Workspace administrator: may list the directory (`users.list`).
    #[serde(default)]
    pub admin: bool,
    /// Suspended: listed by the directory with `suspended: true`; delegation to it fails with
    /// `invalid_grant`.
    #[serde(default)]
    pub suspended: bool,
    /// Binary files generated in this user's My Drive (in a few folders), from the seed and the
    /// user's index alone.
    #[serde(default)]
    pub files: usize,
    /// Indices of the generated shared drives (`0..shared_drives`) this user is a member of.
    #[serde(default)]
    pub drives: Vec<usize>,
}

impl DomainUser {
    /// A member of no shared drive, neither admin nor suspended, with `files` files.
    pub fn new(email: &str, files: usize) -> DomainUser {
        DomainUser { email: email.to_string(), admin: false, suspended: false, files, drives: Vec::new() }
    }

    /// The domain `mirrorflow emulator --users .. --admin ..` serves: `users` then the `admins` not
    /// among them (in order, each once), every one with `files` files and a member of all
    /// `shared_drives` shared drives. Empty when both lists are: single-user mode.
    pub fn domain(users: &[String], admins: &[String], files: usize, shared_drives: usize) -> Vec<DomainUser> {
        let mut out: Vec<DomainUser> = Vec::new();
        for email in users.iter().chain(admins).map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if out.iter().any(|u| u.email.eq_ignore_ascii_case(email)) {
                continue;
            }
            let admin = admins.iter().any(|a| a.trim().eq_ignore_ascii_case(email));
            let drives = (0..shared_drives).collect();
            out.push(DomainUser { admin, drives, ..DomainUser::new(email, files) });
        }
        out
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            seed: 1,
            files: 50,
            folders: 8,
            depth: 3,
            gdocs: 3,
            shared_drives: 1,
            hostile: false,
            big_file_mib: 0,
            page_size_max: 1000,
            token_lifetime_secs: 3600,
            drive_changes_in_user_log: true,
            domain_users: Vec::new(),
        }
    }
}

/// A running emulator (in-process); dropping it without [`Emulator::shutdown`] leaves it serving
/// until the runtime ends.
pub struct Emulator {
    app: Arc<app::App>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Emulator {
    /// Bind `listen` (port 0 allowed) and serve in a background tokio task.
    pub async fn start(config: EmulatorConfig, listen: SocketAddr) -> std::io::Result<Emulator> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let base_url = format!("http://{addr}/");
        let app = Arc::new(app::App::new(config, base_url)?);
        let router = server::router(app.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!("emulator server failed: {e}");
            }
        });
        Ok(Emulator { app, addr, stop: Some(stop), task })
    }

    /// Base URL with a trailing slash, e.g. `http://127.0.0.1:8700/`.
    pub fn base_url(&self) -> String {
        self.app.base_url.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Service-account key JSON (real RSA key, `token_uri` = `{base}token`) usable as credentials.
    pub fn service_account_key_json(&self) -> String {
        self.app.auth.key_json(&self.app.base_url)
    }

    /// Write [`Emulator::service_account_key_json`] to `path`, readable by its owner only (it holds a
    /// private key, like a real service-account key file).
    pub fn write_service_account_key(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        // An existing file keeps its mode on open: tighten it too.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(self.service_account_key_json().as_bytes())
    }

    /// The expected mirror (same as `GET /_emu/tree`), without going through HTTP. In domain mode it
    /// holds every item of every user and every shared drive, with the first user's root as
    /// `root_id`; [`Emulator::user_tree`] is one user's view.
    pub async fn tree(&self) -> EmuTree {
        control::full_tree(&self.app, true, None).await
    }

    /// What `email` sees (same as `GET /_emu/tree?user=EMAIL`): their My Drive (`root_id` is its
    /// root), the items others shared with them (and what lies below those), and the shared drives
    /// they are a member of. An unknown email sees nothing (empty `root_id`).
    pub async fn user_tree(&self, email: &str) -> EmuTree {
        control::full_tree(&self.app, true, Some(email)).await
    }

    /// Request and download counters (same as `GET /_emu/stats`).
    pub fn stats(&self) -> EmuStats {
        self.app.stats.snapshot()
    }

    /// Replace the fault settings (same as `POST /_emu/faults`).
    pub fn set_faults(&self, settings: FaultSettings) {
        self.app.auth.set_lifetime(settings.token_lifetime_secs);
        self.app.faults.set(settings);
    }

    /// Apply mutations in-process (same semantics as `POST /_emu/mutate`); returns created ids.
    /// Stops at the first failing op; the ops before it stay applied.
    pub fn mutate(&self, ops: &[MutateOp]) -> Result<Vec<String>, MutateError> {
        let mut created = Vec::new();
        let mut result = Ok(());
        {
            let mut st = self.app.state();
            let before = st.log.records.len();
            for op in ops {
                match st.apply(op) {
                    Ok(ids) => created.extend(ids),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            self.app.watch.notify_change(|filter| st.changed_since(before, filter));
        }
        result.map(|()| created)
    }

    /// Stop accepting, let in-flight requests finish (bounded by 3 s), and stop the task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(std::time::Duration::from_secs(3), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// CLI entry of `mirrorflow emulator`: serve until SIGINT/SIGTERM, printing `listening on http://ADDR`.
pub async fn run_cli(config: EmulatorConfig, listen: SocketAddr, write_key: Option<PathBuf>) -> std::io::Result<()> {
    let emu = Emulator::start(config, listen).await?;
    if let Some(path) = write_key {
        emu.write_service_account_key(&path)?;
    }
    println!("listening on http://{}", emu.local_addr());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    emu.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
