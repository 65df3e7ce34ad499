//! Asking a running mirror: `status`, `log`, `dlq list`, `dlq retry`, `verify` and `versions list`
//! while `run` holds the state store's lock.
//!
//! A running pipeline serves `admin.sock`, a Unix socket in `[state] dir` (mode 0600, and a peer of
//! another user is refused). A command that finds the store locked sends one JSON request line and
//! relays the JSON reply lines (`{"out": …}`, `{"err": …}`, then `{"exit": N}`) to its own stdout and
//! stderr. The running process answers from its own store handle (fjall reads are concurrent within
//! a process), with the very functions the command runs against a stopped mirror ([`commands`]), so
//! the output is the same. `dlq retry` and `verify --repair` record refresh requests and wake the
//! running feed: the pipeline itself fetches the files again, so there is never a second writer.

pub mod commands;
pub mod snapshot;

use crate::dest::Destination;
use crate::drive::DriveClient;
use crate::stages::ledger::Ledger;
use crate::stages::planner::Scope;
use crate::state::Store;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

/// The socket's name inside `[state] dir`.
pub const SOCKET_FILE: &str = "admin.sock";

/// How long a command waits for a starting mirror's socket to appear (the run holds the store while
/// it checks the destination and Drive, before it serves).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// A command's exit, as the command line reports it (see `mirrorflow --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// 0.
    Success,
    /// 1: the command failed.
    Failed,
    /// 2: bad usage.
    Usage,
    /// 3: some files could not be mirrored.
    DeadLettered,
    /// 4: verify found differences.
    Differences,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::DeadLettered => 3,
            Exit::Differences => 4,
        }
    }
}

/// Why a command could not answer; [`AdminError::exit`] says how the command line exits.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad usage: an unknown file, a configuration that names another destination.
    #[error("{0}")]
    Usage(String),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] crate::state::StoreError),
    /// Writing the answer failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An answer could not be encoded or decoded.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Verify failed.
    #[error("{0}")]
    Verify(#[from] crate::verify::VerifyError),
    /// The state store could not be opened.
    #[error("opening the state in {dir}: {source}")]
    Open {
        /// The state folder.
        dir: String,
        /// Why.
        source: crate::state::StoreError,
    },
    /// A run holds the store but its admin socket does not answer.
    #[error("a mirrorflow run holds the state in {dir}, but its admin socket {socket} does not answer: {why}")]
    NoAnswer {
        /// The state folder.
        dir: String,
        /// The socket's path.
        socket: String,
        /// What failed.
        why: String,
    },
}

impl AdminError {
    /// How the command exits on this error.
    pub fn exit(&self) -> Exit {
        match self {
            AdminError::Usage(_) => Exit::Usage,
            AdminError::Verify(e) if e.is_usage() => Exit::Usage,
            _ => Exit::Failed,
        }
    }
}

/// Where a command writes: its stdout and its stderr.
pub struct Output<'a> {
    /// What the command prints.
    pub out: &'a mut (dyn Write + Send),
    /// Its notes and errors.
    pub err: &'a mut (dyn Write + Send),
}

/// One question to a running mirror.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// `status [--json]`.
    Status {
        /// JSON output.
        json: bool,
    },
    /// `log [--since] [--file] [--json]`.
    Log {
        /// Entries from this Unix ms on.
        since_unix_ms: u64,
        /// Only this file's entries.
        file: Option<String>,
        /// JSON lines.
        json: bool,
    },
    /// `dlq list [--json]`.
    DlqList {
        /// JSON output.
        json: bool,
    },
    /// `dlq retry [ids]`.
    DlqRetry {
        /// The files to retry (all when empty).
        ids: Vec<String>,
    },
    /// `versions list [--json] file`.
    VersionsList {
        /// An id or a key.
        file: String,
        /// JSON output.
        json: bool,
    },
    /// `verify [--checksum] [--repair [--prune-unknown]] [--json]`.
    Verify {
        /// Read and hash every object.
        checksum: bool,
        /// Repair what differs through the running pipeline, then verify again.
        repair: bool,
        /// With repair: remove objects outside the mirror's folders too.
        prune_unknown: bool,
        /// JSON output.
        json: bool,
    },
    /// What `mirrorflow top` shows: one [`snapshot::Snapshot`] as JSON.
    Top,
}

/// One reply line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Text for stdout.
    Out(String),
    /// Text for stderr.
    Err(String),
    /// The command's exit code; the last line.
    Exit(u8),
}

/// The path of the admin socket of the state in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE)
}

/// Asks the mirror running over `dir`, writing its answer to `out`; waits up to [`CONNECT_WAIT`]
/// for a starting mirror's socket.
pub fn ask(dir: &Path, request: &Request, out: &mut Output<'_>) -> Result<u8, AdminError> {
    let path = socket_path(dir);
    let no_answer =
        |why: String| AdminError::NoAnswer { dir: dir.display().to_string(), socket: path.display().to_string(), why };
    let started = std::time::Instant::now();
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(e) if started.elapsed() < CONNECT_WAIT => {
                tracing::debug!(error = %e, "admin socket not ready yet");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(no_answer(e.to_string())),
        }
    };
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(|e| no_answer(e.to_string()))?;
    stream.shutdown(std::net::Shutdown::Write).map_err(|e| no_answer(e.to_string()))?;
    for line in std::io::BufReader::new(&stream).lines() {
        let line = line.map_err(|e| no_answer(e.to_string()))?;
        match serde_json::from_str::<Reply>(&line)? {
            Reply::Out(text) => relay(&mut out.out, &text)?,
            Reply::Err(text) => relay(&mut out.err, &text)?,
            Reply::Exit(code) => return Ok(code),
        }
    }
    Err(no_answer("the answer ended without an exit code".into()))
}

/// Writes `text`; a closed reader (`| head`) is not an error.
fn relay(w: &mut (dyn Write + Send), text: &str) -> Result<(), AdminError> {
    match w.write_all(text.as_bytes()).and_then(|()| w.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// What a running pipeline hands its admin socket.
#[derive(Clone)]
pub struct Served {
    /// `[state] dir`.
    pub state_dir: PathBuf,
    /// Whether `[index]` names a database.
    pub index_configured: bool,
    /// The pipeline's store.
    pub store: Store,
    /// The destination.
    pub dest: Destination,
    /// Drive.
    pub drive: Arc<DriveClient>,
    /// The drives in scope.
    pub scope: Scope,
    /// `[source] export`.
    pub export: crate::config::ExportConfig,
    /// `[source] max_file_size`.
    pub max_file_size: Option<u64>,
    /// See [`crate::verify::Sources::state_inside`].
    pub state_inside: Option<String>,
    /// The pipeline's ledger: a repair waits until it is idle.
    pub ledger: Arc<Ledger>,
    /// Wakes the feed to serve refresh requests at once.
    pub wake: Arc<Notify>,
    /// What `top` shows besides the metrics: per-stage capacities.
    pub top: snapshot::Source,
}

/// The admin socket of a running pipeline; [`AdminServer::stop`] removes it.
pub struct AdminServer {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl AdminServer {
    /// Binds `admin.sock` in the state folder (replacing a dead run's: this process holds the store's
    /// lock, so no other mirror serves it), mode 0600, and answers each connection in its own task.
    pub fn start(served: Served) -> Result<AdminServer, AdminError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = socket_path(&served.state_dir);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&path)?.uid();
        let served = Arc::new(served);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let peer = stream.peer_cred().map(|c| c.uid()).ok();
                if peer != Some(owner) && peer != Some(0) {
                    tracing::warn!(?peer, "admin socket: a connection of another user refused");
                    continue;
                }
                tokio::spawn(serve_connection(served.clone(), stream));
            }
        });
        Ok(AdminServer { task, path })
    }

    /// Stops answering and removes the socket.
    pub fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request from `stream` and writes the answer as reply lines.
async fn serve_connection(served: Arc<Served>, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if tokio::io::BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Reply>(64);
    let work = tokio::spawn(execute_served(served, line, tx));
    while let Some(reply) = rx.recv().await {
        let Ok(mut text) = serde_json::to_string(&reply) else { break };
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            // The asker went away (`| head`): stop the work too.
            work.abort();
            return;
        }
    }
    let _ = work.await;
}

/// Runs one request line and sends its output and exit as replies.
async fn execute_served(served: Arc<Served>, line: String, tx: mpsc::Sender<Reply>) {
    let request: Request = match serde_json::from_str(line.trim_end()) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Reply::Err(format!("error: bad admin request: {e}\n"))).await;
            let _ = tx.send(Reply::Exit(Exit::Usage.code())).await;
            return;
        }
    };
    let exit = match request {
        Request::Verify { checksum, repair, prune_unknown, json } => {
            let mut out = Buffered::default();
            let r = verify(&served, VerifyAsk { checksum, repair, prune_unknown, json }, &mut out.output()).await;
            out.finish(r, &tx).await
        }
        Request::Top => {
            let r = serde_json::to_string(&served.top.snapshot(&served.store, &served.ledger));
            match r {
                Ok(text) => {
                    let _ = tx.send(Reply::Out(text + "\n")).await;
                    Exit::Success
                }
                Err(e) => {
                    let _ = tx.send(Reply::Err(format!("error: {e}\n"))).await;
                    Exit::Failed
                }
            }
        }
        other => {
            let tx2 = tx.clone();
            let task = tokio::task::spawn_blocking(move || {
                let mut w = Streamed { tx: tx2.clone(), err: false };
                let mut e = Streamed { tx: tx2, err: true };
                let mut out = Output { out: &mut w, err: &mut e };
                let target = Target {
                    state_dir: &served.state_dir,
                    index_configured: served.index_configured,
                    store: &served.store,
                    dest: Some(&served.dest),
                    retry_by: commands::RetryBy::Running,
                };
                let r = execute(&target, &other, &mut out);
                if matches!(other, Request::DlqRetry { .. }) {
                    served.wake.notify_one();
                }
                finish_sync(r, &mut out)
            });
            task.await.unwrap_or(Exit::Failed)
        }
    };
    let _ = tx.send(Reply::Exit(exit.code())).await;
}

/// The exit of a command, its error written as the command line writes it.
fn finish_sync(r: Result<Exit, AdminError>, out: &mut Output<'_>) -> Exit {
    match r {
        Ok(exit) => exit,
        Err(e) => {
            let _ = writeln!(out.err, "error: {e}");
            e.exit()
        }
    }
}

/// A writer that sends what is written as reply lines (from a blocking task).
struct Streamed {
    tx: mpsc::Sender<Reply>,
    err: bool,
}

impl Write for Streamed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf).into_owned();
        let reply = if self.err { Reply::Err(text) } else { Reply::Out(text) };
        self.tx.blocking_send(reply).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Output kept in memory, sent once the command ends (verify's report is written at its end).
#[derive(Default)]
struct Buffered {
    out: Vec<u8>,
    err: Vec<u8>,
}

impl Buffered {
    fn output(&mut self) -> Output<'_> {
        Output { out: &mut self.out, err: &mut self.err }
    }

    async fn finish(mut self, r: Result<Exit, AdminError>, tx: &mpsc::Sender<Reply>) -> Exit {
        let exit = finish_sync(r, &mut self.output());
        for (bytes, err) in [(self.out, false), (self.err, true)] {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let _ = tx.send(if err { Reply::Err(text) } else { Reply::Out(text) }).await;
            }
        }
        exit
    }
}

/// What a store-reading command runs against: a stopped mirror's store the command opened, or a
/// running mirror's own.
pub struct Target<'a> {
    /// `[state] dir`.
    pub state_dir: &'a Path,
    /// Whether `[index]` names a database.
    pub index_configured: bool,
    /// The store.
    pub store: &'a Store,
    /// The destination, for `versions list` (None: the request does not need it).
    pub dest: Option<&'a Destination>,
    /// Who serves `dlq retry`'s requests.
    pub retry_by: commands::RetryBy,
}

/// Runs a store-reading request (not `verify`, not `top`) against `target`.
pub fn execute(target: &Target<'_>, request: &Request, out: &mut Output<'_>) -> Result<Exit, AdminError> {
    match request {
        Request::Status { json } => {
            commands::status(target.state_dir, target.index_configured, target.store, *json, out)
        }
        Request::Log { since_unix_ms, file, json } => {
            let file = file.clone().map(crate::model::FileId);
            commands::log(target.store, *since_unix_ms, file.as_ref(), *json, out)
        }
        Request::DlqList { json } => commands::dlq_list(target.store, *json, out),
        Request::DlqRetry { ids } => {
            let ids: Vec<_> = ids.iter().cloned().map(crate::model::FileId).collect();
            let n = commands::dlq_retry(target.store, &ids, &target.retry_by)?;
            let next = match &target.retry_by {
                commands::RetryBy::Running => "the running mirror mirrors them again now".to_string(),
                commands::RetryBy::NextRun(config) => {
                    format!("run `mirrorflow run --once {config}` to mirror them again")
                }
            };
            writeln!(out.out, "{n} file(s) released from the dead-letter store; {next}")?;
            Ok(Exit::Success)
        }
        Request::VersionsList { file, json } => {
            let dest = target.dest.ok_or_else(|| AdminError::Usage("versions list needs the destination".into()))?;
            commands::versions_list(target.store, dest, file, *json, out)
        }
        Request::Verify { .. } | Request::Top => {
            Err(AdminError::Usage("verify and top are answered by a running mirror only".into()))
        }
    }
}

/// Answers a store-reading request (`status`, `log`, `dlq`, `versions list`) for the mirror `cfg`
/// describes (`config` is its file, named in the answers): from the store, or, while a run holds the
/// store's lock, from that run through its admin socket. Returns the exit code.
pub fn answer(
    cfg: &crate::config::Config,
    config: &Path,
    request: &Request,
    out: &mut Output<'_>,
) -> Result<u8, AdminError> {
    let dir = &cfg.state.dir;
    if matches!(request, Request::Log { .. }) && !dir.exists() {
        writeln!(out.err, "nothing is logged yet: there is no state in {}", dir.display())?;
        return Ok(Exit::Success.code());
    }
    let store = match crate::open::state_store(cfg) {
        Ok(store) => store,
        Err(e) if e.is_locked() => return ask(dir, request, out),
        Err(source) => return Err(AdminError::Open { dir: dir.display().to_string(), source }),
    };
    let dest = match request {
        Request::VersionsList { .. } => Some(bound_destination(cfg, &store)?),
        _ => None,
    };
    let target = Target {
        state_dir: dir,
        index_configured: cfg.index.url().is_some(),
        store: &store,
        dest: dest.as_ref(),
        retry_by: commands::RetryBy::NextRun(config.display().to_string()),
    };
    execute(&target, request, out).map(Exit::code)
}

/// The configured destination, refused when the store belongs to another one.
fn bound_destination(cfg: &crate::config::Config, store: &Store) -> Result<Destination, AdminError> {
    match crate::open::check_binding(cfg, store) {
        Ok(()) => {}
        Err(crate::open::BindingError::Store(e)) => return Err(e.into()),
        Err(crate::open::BindingError::Other(o)) => return Err(AdminError::Usage(o.to_string())),
    }
    crate::open::destination(cfg).map_err(|e| AdminError::Usage(e.to_string()))
}

/// `verify`'s flags.
struct VerifyAsk {
    checksum: bool,
    repair: bool,
    prune_unknown: bool,
    json: bool,
}

/// `verify` in the running process: reconciles with its own store, Drive and destination; a repair
/// records refresh requests, wakes the feed, waits until the pipeline has served them, and
/// verifies again.
async fn verify(served: &Served, ask: VerifyAsk, out: &mut Output<'_>) -> Result<Exit, AdminError> {
    use crate::verify::{Sources, VerifyOptions, reconcile, request_repairs};
    let sources = Sources {
        store: Some(&served.store),
        dest: &served.dest,
        drive: &served.drive,
        scope: &served.scope,
        export: &served.export,
        max_file_size: served.max_file_size,
        state_inside: served.state_inside.clone(),
    };
    let opts = VerifyOptions { checksum: ask.checksum, progress: false, prune_unknown: ask.prune_unknown };
    let found = reconcile(&sources, &opts).await?;
    if !ask.repair || found.equal() {
        return commands::verify_report(&found, ask.json, 0, out);
    }
    if !ask.json {
        found.write_human(&mut out.out)?;
        writeln!(out.out, "repairing…")?;
    }
    let requested = request_repairs(&served.store, &found, ask.prune_unknown)?;
    tracing::info!(requests = requested, "repairing through the running pipeline");
    served.wake.notify_one();
    while !served.ledger.is_idle() || served.store.has_pending_refreshes()? {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = reconcile(&sources, &opts).await?;
    commands::verify_report(&after, ask.json, served.store.dead_letter_count()?, out)
}
