//! Turns a [`Config`] into a running actor tree, in three steps: [`open`] the store, the destination and
//! Drive (settling what an interrupted run left); [`compile`] every channel, stage and re-delivery route
//! into a [`Topology`] (no I/O); start it under the supervisor and watch it until the run ends ([`run`]).

use crate::actors::feed::{FeedActor, FeedArgs};
use crate::actors::supervisor::SpawnFn;
use crate::actors::worker::{StageInput, workers};
use crate::actors::{ChildSpec, PipelineSupervisor, SupervisorArgs, SupervisorMsg};
use crate::config::{Config, StageName};
use crate::dest::multipart::{AbortError, Uploads};
use crate::dest::{DestError, Destination};
use crate::drive::{DriveClient, DriveError};
use crate::mirror::{Layout, Scope};
use crate::model::{ChangeEvent, DeadLetter, Planned, Refresh, Uploaded};
use crate::stages::change_feed::{ChangeFeed, DriveSelection, FeedOutputs, listing_jobs};
use crate::stages::committer::{CommitState, Committer, Progress};
use crate::stages::dedup::Dedup;
use crate::stages::downloader::{Downloader, Transfer};
use crate::stages::ledger::Ledger;
use crate::stages::planner::Planner;
use crate::stages::uploader::Uploader;
use crate::stages::verifier::Verifier;
use crate::stages::{CommitMsg, Emit, FailureInjector, Redo, Stage};
use crate::state::{Store, StoreError};
use crate::status::LiveStatus;
use crate::verify::schedule::VerifyStatus;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Drive could not be reached or refused us.
    #[error("{0}")]
    Drive(#[from] DriveError),
    /// The destination could not be opened.
    #[error("{0}")]
    Dest(#[from] DestError),
    /// The state store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A configured shared drive does not exist or is not visible.
    #[error("source.drives: {0}")]
    Scope(String),
    /// A stage failed beyond its restart budget, or could not start.
    #[error("{0}")]
    Supervision(String),
    /// Metrics listener.
    #[error("metrics.listen: {0}")]
    Metrics(String),
    /// The state store records another destination than the configuration names.
    #[error(
        "the state in {state} belongs to destination {recorded:?}, but the configuration names {configured:?}; give each destination its own [state] dir"
    )]
    OtherDestination {
        /// `[state] dir`.
        state: String,
        /// The destination the store describes.
        recorded: String,
        /// The destination the configuration names.
        configured: String,
    },
    /// Adopting an existing destination failed.
    #[error("{0}")]
    Adopt(#[from] crate::adopt::AdoptError),
    /// `[index] url` cannot be used.
    #[error("index.url: {0}")]
    Index(String),
    /// This process's shard cannot be resolved (`[cluster]`, `MIRRORFLOW_SHARD`, the host name).
    #[error("{0}")]
    Shard(#[from] crate::cluster::ShardError),
}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop once caught up.
    pub once: bool,
    /// Print a progress line on stderr.
    pub progress: bool,
    /// A Drive request bucket shared with the other drives this process mirrors (`[source]
    /// subjects`): the process's `drive_rps`, while this run's own client paces its user.
    pub shared_drive_limit: Option<Arc<crate::retry::TokenBucket>>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Counts.
    pub progress: Progress,
    /// Files in the dead-letter store at the end.
    pub dead_letters: Vec<DeadLetter>,
    /// True if stopped by a signal rather than by catching up.
    pub interrupted: bool,
    /// `run --once` with an index: audit entries the index had not applied when the wait for it
    /// (`[index] catch_up_timeout`) ended; 0 when caught up, `None` without an index.
    pub index_behind: Option<u64>,
}

pub use crate::open::{credentials, destination_identity, discover_scope, drive_client, retry_policy};

impl From<crate::open::ScopeError> for PipelineError {
    fn from(e: crate::open::ScopeError) -> Self {
        match e {
            crate::open::ScopeError::Drive(e) => PipelineError::Drive(e),
            crate::open::ScopeError::Selection(s) => PipelineError::Scope(s),
        }
    }
}

/// What a run needs from outside, opened once and shared by every stage.
pub struct Resources {
    /// The state store.
    pub store: Store,
    /// The destination.
    pub dest: Destination,
    /// The Drive client.
    pub drive: Arc<DriveClient>,
    /// My Drive's root and the shared drives in scope.
    pub scope: Scope,
    /// An existing destination is being adopted (its objects are matched, not downloaded again).
    pub adopting: bool,
}

/// Opens what a run needs, in the order that keeps the destination consistent with the store: the
/// store (bound to this destination), the destination (reachable; interrupted uploads and uncommitted
/// writes settled), then Drive and the scope.
pub async fn open(cfg: &Config) -> Result<Resources, PipelineError> {
    crate::install_crypto_provider();
    if let Err(e) = crate::metrics::install_recorder() {
        tracing::debug!(error = %e, "metrics recorder");
    }
    if let Some(listen) = &cfg.metrics.listen {
        let addr = listen.parse().map_err(|e| PipelineError::Metrics(format!("{listen}: {e}")))?;
        crate::metrics::install_exporter(addr).map_err(PipelineError::Metrics)?;
    }
    let store = Store::open_with(&cfg.state.dir, cfg.state.store_memory())?;
    let configured = destination_identity(&cfg.destination);
    if let Some(recorded) = store.bind_destination(&configured)? {
        let state = cfg.state.dir.display().to_string();
        return Err(PipelineError::OtherDestination { state, recorded, configured });
    }
    let mut dest = Destination::from_config(&cfg.destination, &cfg.retry)?;
    if let Some(writes) = cfg.testing.crash_after_writes {
        dest = dest.crash_after_writes(writes);
    }
    let t = &cfg.testing;
    if t.multipart_copy_above.is_some() || t.multipart_copy_part_size.is_some() {
        let default = crate::dest::s3_copy::CopyPlan::default();
        let above = t.multipart_copy_above.map_or(default.above, |b| b.0);
        let part_size = t.multipart_copy_part_size.map_or(default.part_size, |b| b.0);
        dest = dest.multipart_copies(crate::dest::s3_copy::CopyPlan { above, part_size });
    }
    dest.check_reachable().await?;
    abort_recorded_uploads(&store, &dest, true).await?;
    settle_unfinished_writes(&store, &dest).await?;
    let territory = crate::mirror::territory(cfg.source.drive_root.as_deref());
    let adopting = crate::adopt::begin_if_needed(&store, &dest, &territory).await?;
    let released = store.release_skips(cfg.source.acknowledge_abuse, crate::model::unix_ms())?;
    if released > 0 {
        tracing::info!(
            released,
            "files Drive refused before (quota deferral over, or abuse now acknowledged) are asked for again"
        );
    }
    let drive = Arc::new(drive_client(cfg).await?);
    let scope = discover_scope(cfg, &drive).await?;
    tracing::info!(my_drive = scope.my_drive_root.is_some(), shared_drives = scope.shared.len(), "scope resolved");
    Ok(Resources { store, dest, drive, scope, adopting })
}

/// Every stage's input channel, each sized by that stage's own `[stages.<name>] capacity` (the feed
/// reads Drive and has none).
struct Inputs {
    dedup: StageInput<ChangeEvent>,
    planner: StageInput<ChangeEvent>,
    downloader: StageInput<Planned>,
    uploader: StageInput<Transfer>,
    verifier: StageInput<Uploaded>,
    committer: StageInput<CommitMsg>,
}

impl Inputs {
    fn new(cfg: &Config) -> Inputs {
        let capacity = |stage| cfg.stages.settings(stage).capacity;
        let redo = redo_capacity(cfg);
        Inputs {
            dedup: StageInput::new(StageName::Dedup, capacity(StageName::Dedup), redo),
            planner: StageInput::new(StageName::Planner, capacity(StageName::Planner), redo),
            downloader: StageInput::new(StageName::Downloader, capacity(StageName::Downloader), redo),
            uploader: StageInput::new(StageName::Uploader, capacity(StageName::Uploader), redo),
            verifier: StageInput::new(StageName::Verifier, capacity(StageName::Verifier), redo),
            // The committer's redo lane holds one replayed batch of a dead committer.
            committer: StageInput::new(
                StageName::Committer,
                committer_capacity(cfg),
                <Committer<Store> as Stage>::BATCH,
            ),
        }
    }

    /// The capacity each stage's input channel was built with.
    fn capacities(&self) -> BTreeMap<StageName, usize> {
        BTreeMap::from([
            (StageName::Dedup, self.dedup.tx.max_capacity()),
            (StageName::Planner, self.planner.tx.max_capacity()),
            (StageName::Downloader, self.downloader.tx.max_capacity()),
            (StageName::Uploader, self.uploader.tx.max_capacity()),
            (StageName::Verifier, self.verifier.tx.max_capacity()),
            (StageName::Committer, self.committer.tx.max_capacity()),
        ])
    }

    /// How full each edge is, for `mirrorflow_queue_depth{edge}`.
    fn gauges(&self) -> Vec<QueueGauge> {
        vec![
            QueueGauge::of("feed_dedup", &self.dedup.tx),
            QueueGauge::of("dedup_planner", &self.planner.tx),
            QueueGauge::of("planner_downloader", &self.downloader.tx),
            QueueGauge::of("downloader_uploader", &self.uploader.tx),
            QueueGauge::of("uploader_verifier", &self.verifier.tx),
            QueueGauge::of("to_committer", &self.committer.tx),
        ]
    }
}

/// One edge's fill level, read by the metrics sampler.
struct QueueGauge {
    edge: &'static str,
    depth: Box<dyn Fn() -> usize + Send + Sync>,
}

impl QueueGauge {
    fn of<T: Send + 'static>(edge: &'static str, tx: &mpsc::Sender<T>) -> QueueGauge {
        let tx = tx.downgrade();
        let depth = move || tx.upgrade().map_or(0, |tx| tx.max_capacity() - tx.capacity());
        QueueGauge { edge, depth: Box::new(depth) }
    }
}

/// The most events unfinished at once: what the channels and workers between the feed and the
/// committer hold when every one of them is full, so the ledger's limit never bites before ordinary
/// backpressure would, while everything sized by work in flight (the watermark's finished seqs, parked
/// events, the redo lanes) stays bounded.
pub fn in_flight_limit(cfg: &Config) -> usize {
    let st = |name| cfg.stages.settings(name);
    // The stages before the committer hold events in their inputs and workers.
    let before_commit = StageName::ALL.into_iter().filter(|s| *s != StageName::Committer);
    let inputs: usize = before_commit.clone().filter(|s| s.has_input()).map(|s| st(s).capacity).sum();
    let workers: usize = before_commit.map(|s| st(s).concurrency).sum();
    inputs + committer_capacity(cfg) + workers
}

/// The committer's input holds at least one full batch of 1,024 outcomes, so it can always group.
fn committer_capacity(cfg: &Config) -> usize {
    cfg.stages.settings(StageName::Committer).capacity.max(<Committer<Store> as Stage>::BATCH)
}

/// Room in a redo lane for every admitted event, plus one replay per worker of an item already
/// finished.
fn redo_capacity(cfg: &Config) -> usize {
    let st = |name| cfg.stages.settings(name);
    in_flight_limit(cfg) + 64 + st(StageName::Downloader).concurrency + st(StageName::Uploader).concurrency
}

fn emit_to<O>(next: mpsc::Sender<O>, commit: &mpsc::Sender<CommitMsg>) -> Emit<O> {
    Emit { next, commit: commit.clone() }
}

/// State every stage of one run shares.
struct Shared<'a> {
    cfg: &'a Config,
    res: &'a Resources,
    ledger: Arc<Ledger>,
    faults: Arc<FailureInjector>,
    next_seq: Arc<AtomicU64>,
    wake: Arc<Notify>,
    refresh_wake: Arc<Notify>,
}

/// The compiled pipeline: every channel sized, every stage's workers described (as specs the
/// supervisor starts and restarts), every re-delivery route decided. Compiling reads one value from
/// the store (the next seq) and does no other I/O; the config problems were all collected before, by
/// `Config::load`. Nothing runs until [`Topology::start`].
pub struct Topology {
    children: Vec<ChildSpec>,
    gauges: Vec<QueueGauge>,
    /// The capacity of each stage's input channel, as built.
    pub capacities: BTreeMap<StageName, usize>,
    ledger: Arc<Ledger>,
    commit: mpsc::Sender<CommitMsg>,
    progress: watch::Receiver<Progress>,
    progress_tx: watch::Sender<Progress>,
    wake: Arc<Notify>,
    refresh_wake: Arc<Notify>,
    /// Keeps the last stages' unused output open.
    _sink: mpsc::Receiver<()>,
}

/// Builds the pipeline `cfg` describes over opened `res`ources.
pub fn compile(cfg: &Config, opts: &RunOptions, res: &Resources) -> Result<Topology, PipelineError> {
    let first_seq = res.store.next_seq()?;
    let sh = Shared {
        cfg,
        res,
        ledger: Arc::new(Ledger::new(first_seq, in_flight_limit(cfg))),
        faults: Arc::new(FailureInjector::new(&cfg.testing)),
        next_seq: Arc::new(AtomicU64::new(first_seq)),
        wake: Arc::new(Notify::new()),
        refresh_wake: Arc::new(Notify::new()),
    };
    let inputs = Inputs::new(cfg);
    let (progress_tx, progress) = watch::channel(Progress::default());
    let (sink_tx, sink) = mpsc::channel::<()>(1);
    let commit = inputs.committer.tx.clone();
    let count = |stage| cfg.stages.settings(stage).concurrency;
    let outputs = FeedOutputs { events: inputs.dedup.tx.clone(), commit: commit.clone(), ledger: sh.ledger.clone() };
    let mut children = vec![feed_spec(&sh, opts, outputs)];
    let (i, f) = (&inputs, &sh.faults);
    let (downloaders, uploaders) = (count(StageName::Downloader), count(StageName::Uploader));
    let (to_planner, to_downloader) =
        (emit_to(i.planner.tx.clone(), &commit), emit_to(i.downloader.tx.clone(), &commit));
    let (to_uploader, to_verifier) = (emit_to(i.uploader.tx.clone(), &commit), emit_to(i.verifier.tx.clone(), &commit));
    children.extend(workers(1, dedup(&sh), &i.dedup, to_planner, &i.dedup.redo, f));
    children.extend(workers(1, planner(&sh), &i.planner, to_downloader, &i.planner.redo, f));
    children.extend(workers(downloaders, downloader(&sh), &i.downloader, to_uploader, &i.downloader.redo, f));
    // A dead upload's bytes are fetched again: its items go back to the downloader.
    let upload = uploader(&sh, &i.downloader.redo);
    children.extend(workers(uploaders, upload, &i.uploader, to_verifier, &i.downloader.redo, f));
    let (verify, verifiers) = (verifier(&sh, &i.downloader.redo), count(StageName::Verifier));
    children.extend(workers(verifiers, verify, &i.verifier, emit_to(sink_tx.clone(), &commit), &i.verifier.redo, f));
    let commits = committer(&sh, &i.dedup.redo, &progress_tx);
    children.extend(workers(1, commits, &i.committer, emit_to(sink_tx, &commit), &i.committer.redo, f));
    Ok(Topology {
        children,
        gauges: inputs.gauges(),
        capacities: inputs.capacities(),
        ledger: sh.ledger,
        commit,
        progress,
        progress_tx,
        wake: sh.wake,
        refresh_wake: sh.refresh_wake,
        _sink: sink,
    })
}

fn dedup(sh: &Shared) -> impl Fn() -> Result<Dedup, String> + Send + Sync + 'static {
    let ledger = sh.ledger.clone();
    move || Ok(Dedup { ledger: ledger.clone() })
}

fn planner(sh: &Shared) -> impl Fn() -> Result<Planner<DriveClient, Store>, String> + Send + Sync + 'static {
    let (store, drive, scope) = (sh.res.store.clone(), sh.res.drive.clone(), sh.res.scope.clone());
    let ledger = sh.ledger.clone();
    let layout = Layout {
        prefix: sh.res.dest.prefix().to_string(),
        mode: sh.res.dest.key_mode,
        export: sh.cfg.source.export.clone(),
        max_file_size: sh.cfg.source.max_file_size.map(|b| b.0),
        dest_max_file_size: sh.res.dest.max_file_size,
        max_key_bytes: sh.res.dest.max_key_bytes,
    };
    move || {
        Planner::new(store.clone(), drive.clone(), scope.clone(), layout.clone(), ledger.clone())
            .map_err(|e| e.to_string())
    }
}

fn downloader(
    sh: &Shared,
) -> impl Fn() -> Result<Downloader<DriveClient, Destination, Store>, String> + Send + Sync + 'static {
    let (drive, dest, store) = (sh.res.drive.clone(), sh.res.dest.clone(), sh.res.store.clone());
    let cfg = &sh.cfg.pipeline;
    let (chunk_size, chunk_depth, digests) = (cfg.chunk_size.0 as usize, cfg.chunk_depth, cfg.digests());
    let (max_resumes, adopt) = (sh.cfg.retry.max_attempts, sh.res.adopting);
    move || {
        Ok(Downloader {
            source: drive.clone(),
            dest: dest.clone(),
            store: store.clone(),
            chunk_size,
            chunk_depth,
            digests,
            max_resumes,
            adopt,
        })
    }
}

fn uploader(
    sh: &Shared,
    refetch: &Redo<Planned>,
) -> impl Fn() -> Result<Uploader<crate::adapters::UploadTarget>, String> + Send + Sync + 'static {
    let cfg = &sh.cfg.pipeline;
    let (dest, store, chunk_size) = (sh.res.dest.clone(), sh.res.store.clone(), cfg.chunk_size.0 as usize);
    let uploads = crate::dest::multipart::Uploads { dest, book: store.upload_book(), chunk_size };
    let target = crate::adapters::UploadTarget { uploads, store };
    let budget = crate::stages::budget::MemoryBudget::new(cfg.memory_budget.0);
    let part_concurrency = sh.cfg.stages.settings(StageName::Uploader).part_concurrency;
    let (part_size, digests, refetch) = (cfg.part_size.0 as usize, cfg.digests(), refetch.clone());
    let max_key_bytes = sh.res.dest.max_key_bytes;
    move || {
        Ok(Uploader {
            target: target.clone(),
            part_size,
            part_concurrency,
            budget: budget.clone(),
            digests,
            refetch: refetch.clone(),
            max_key_bytes,
        })
    }
}

fn verifier(
    sh: &Shared,
    refetch: &Redo<Planned>,
) -> impl Fn() -> Result<Verifier<Destination>, String> + Send + Sync + 'static {
    let (dest, refetch) = (sh.res.dest.clone(), refetch.clone());
    move || Ok(Verifier { dest: dest.clone(), refetch: refetch.clone() })
}

fn committer(
    sh: &Shared,
    release: &Redo<ChangeEvent>,
    progress: &watch::Sender<Progress>,
) -> impl Fn() -> Result<Committer<Store>, String> + Send + Sync + 'static {
    let (store, ledger) = (sh.res.store.clone(), sh.ledger.clone());
    let (release, progress) = (release.clone(), progress.clone());
    let (next_seq, refresh_wake) = (sh.next_seq.clone(), sh.refresh_wake.clone());
    // Survives the committer's restarts (restart by builder).
    let state = Arc::new(std::sync::Mutex::new(CommitState::default()));
    let audit_retention = sh.cfg.state.audit_retention.0;
    move || {
        Ok(Committer {
            store: store.clone(),
            state: state.clone(),
            ledger: ledger.clone(),
            release: release.clone(),
            progress: progress.clone(),
            next_seq: next_seq.clone(),
            refresh_wake: refresh_wake.clone(),
            audit_retention,
            next_prune: None,
        })
    }
}

fn feed_spec(sh: &Shared, opts: &RunOptions, outputs: FeedOutputs) -> ChildSpec {
    let (store, drive, next_seq) = (sh.res.store.clone(), sh.res.drive.clone(), sh.next_seq.clone());
    let (wake, refresh_wake, faults) = (sh.wake.clone(), sh.refresh_wake.clone(), sh.faults.clone());
    let scope = &sh.res.scope;
    let (jobs, logs) = (listing_jobs(scope), crate::stages::change_feed::change_logs(scope));
    let (drives, selection) = (scope.shared.clone(), DriveSelection::from_config(&sh.cfg.source.drives));
    let (once, poll_interval) = (opts.once, sh.cfg.source.poll_interval.0);
    let spawn: SpawnFn = Arc::new(move |sup| {
        let feed = ChangeFeed {
            source: drive.clone(),
            store: store.clone(),
            jobs: jobs.clone(),
            logs: logs.clone(),
            drives: drives.clone(),
            selection: selection.clone(),
            next_seq: next_seq.clone(),
            once,
            poll_interval,
            wake: wake.clone(),
            refresh_wake: refresh_wake.clone(),
            served: Default::default(),
            faults: faults.clone(),
        };
        let out = outputs.clone();
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, FeedActor::default(), FeedArgs { feed, out }, sup)
                .await
                .map_err(|e| e.to_string())?;
            Ok(actor.get_cell())
        })
    });
    ChildSpec { stage: StageName::ChangeFeed, spawn, in_hand: Arc::default() }
}

/// A started pipeline: the supervisor and its children, and the tasks beside them.
struct Running {
    sup: ActorRef<SupervisorMsg>,
    sup_handle: tokio::task::JoinHandle<()>,
    fatal: watch::Receiver<Option<String>>,
    sampler: tokio::task::JoinHandle<()>,
    webhook: Option<crate::drive::webhook::Webhook>,
    scheduled_verify: Option<tokio::task::JoinHandle<()>>,
    /// Continuous mode: asks Drive again for the files whose download-quota deferral ended.
    deferrals: Option<tokio::task::JoinHandle<()>>,
    sweep: Option<tokio::task::JoinHandle<Result<usize, crate::adopt::AdoptError>>>,
    verify_status: Arc<std::sync::Mutex<VerifyStatus>>,
}

impl Topology {
    /// Starts the supervisor (which starts every stage), the queue-depth sampler, and in continuous
    /// mode the webhook and the scheduled verify.
    async fn start(&mut self, cfg: &Config, opts: &RunOptions, res: &Resources) -> Result<Running, PipelineError> {
        let (fatal_tx, fatal) = watch::channel(None::<String>);
        let sup_args = SupervisorArgs {
            children: std::mem::take(&mut self.children),
            max_restarts: cfg.supervisor.max_restarts,
            within: cfg.supervisor.within.0,
            fatal: fatal_tx,
        };
        let webhook = match (&cfg.source.webhook, opts.once) {
            (Some(w), false) => Some(start_webhook(w, res, &self.wake).await?),
            _ => None,
        };
        let (sup, sup_handle) = Actor::spawn(None, PipelineSupervisor, sup_args)
            .await
            .map_err(|e| PipelineError::Supervision(format!("pipeline failed to start: {e}")))?;
        crate::health::supervisor_running(true);
        let verify_status = Arc::new(std::sync::Mutex::new(VerifyStatus::default()));
        let scheduled_verify = match (cfg.verify.every, opts.once) {
            (Some(every), false) => Some(self.scheduled_verify(cfg, res, every.0, &verify_status).spawn()),
            _ => None,
        };
        let deferrals = (!opts.once).then(|| spawn_deferral_release(res.store.clone(), self.refresh_wake.clone()));
        let sweep = res.adopting.then(|| {
            let territory = crate::mirror::territory(res.scope.drive_root.as_deref());
            tokio::spawn(crate::adopt::sweep_when_listed(res.store.clone(), res.dest.clone(), territory))
        });
        let sampler = spawn_depth_sampler(std::mem::take(&mut self.gauges));
        Ok(Running { sup, sup_handle, fatal, sampler, webhook, scheduled_verify, deferrals, sweep, verify_status })
    }

    fn scheduled_verify(
        &self,
        cfg: &Config,
        res: &Resources,
        every: Duration,
        status: &Arc<std::sync::Mutex<VerifyStatus>>,
    ) -> crate::verify::schedule::Schedule {
        crate::verify::schedule::Schedule {
            every,
            checksum: cfg.verify.checksum,
            store: res.store.clone(),
            dest: res.dest.clone(),
            drive: res.drive.clone(),
            scope: res.scope.clone(),
            export: cfg.source.export.clone(),
            max_file_size: cfg.source.max_file_size.map(|b| b.0),
            state_inside: crate::verify::state_inside_destination(cfg),
            ledger: self.ledger.clone(),
            wake: self.refresh_wake.clone(),
            status: status.clone(),
        }
    }

    fn publish_status(&self, cfg: &Config, running: bool, verify: &Arc<std::sync::Mutex<VerifyStatus>>) {
        let verify = cfg.verify.every.map(|_| verify.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let progress = self.progress.borrow().clone();
        LiveStatus::now(&progress, self.ledger.files_in_flight(), running, verify)
            .with_shard(cfg.cluster.shard().ok())
            .publish(&cfg.state.dir);
    }
}

/// How often continuous mode looks for download-quota deferrals that ended.
const DEFERRAL_CHECK_EVERY: Duration = Duration::from_secs(600);

/// Continuous mode: every [`DEFERRAL_CHECK_EVERY`], the files whose download-quota deferral ended are
/// asked for again through refresh requests (recorded beside the running pipeline, as the scheduled
/// verify's repairs are; the committer applies what they change). Their skip records stay until that
/// commit: the planner no longer counts an ended deferral as a refusal. A start does the same at once
/// (`Store::release_skips`).
fn spawn_deferral_release(store: Store, wake: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DEFERRAL_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match release_ended_deferrals(&store) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(files = n, "download quota deferrals ended: asking Drive for those files again");
                    wake.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the download quota deferrals"),
            }
        }
    })
}

/// Records a refresh request for every file whose download-quota deferral ended; returns how many.
fn release_ended_deferrals(store: &Store) -> Result<usize, crate::state::StoreError> {
    let ended = store.ended_deferrals(crate::model::unix_ms())?;
    let requests: Vec<Refresh> = ended.into_iter().map(Refresh::File).collect();
    store.add_refresh_requests(&requests)?;
    Ok(requests.len())
}

async fn start_webhook(
    w: &crate::config::WebhookConfig,
    res: &Resources,
    wake: &Arc<Notify>,
) -> Result<crate::drive::webhook::Webhook, PipelineError> {
    let listen = w.listen.parse().map_err(|e| PipelineError::Scope(format!("webhook.listen: {e}")))?;
    let logs = crate::stages::change_feed::change_logs(&res.scope);
    let hook = crate::drive::webhook::Webhook::start(
        listen,
        w.public_url.clone(),
        w.channel_ttl.0,
        res.drive.clone(),
        wake.clone(),
        logs,
    )
    .await
    .map_err(PipelineError::Supervision)?;
    tracing::info!(listen = %hook.local_addr, "push notifications registered");
    Ok(hook)
}

/// How the watch over a running pipeline ended.
enum End {
    /// `--once` caught up, or a failure (the pipeline's own or the adoption sweep's).
    Finished(Result<(), PipelineError>),
    /// A stop signal.
    Interrupted,
}

/// Runs the pipeline described by `cfg`.
pub async fn run(cfg: &Config, opts: RunOptions) -> Result<RunSummary, PipelineError> {
    let mut res = open(cfg).await?;
    if let Some(limit) = &opts.shared_drive_limit {
        res.drive = Arc::new((*res.drive).clone().with_shared_limit(limit.clone()));
    }
    let synced = res.store.checkpoint()?.is_some_and(|c| matches!(c.phase, crate::state::FeedPhase::Changes { .. }));
    let logs = crate::stages::change_feed::change_logs(&res.scope);
    crate::health::run_started(cfg.source.poll_interval.0, synced, &logs);
    crate::metrics::baseline(res.store.dead_letter_count()?);
    crate::metrics::shard_info(cfg.cluster.shard()?);
    let mut topo = compile(cfg, &opts, &res)?;
    let mut index = start_index(cfg, &res, &topo)?;
    let mut running = match topo.start(cfg, &opts, &res).await {
        Ok(running) => running,
        Err(e) => {
            if let Some(sink) = index.take() {
                sink.stop();
            }
            return Err(e);
        }
    };
    let admin = start_admin(cfg, &res, &topo);
    let end = watch_until_done(cfg, &opts, &topo, &mut running).await;
    if let Some(admin) = admin {
        admin.stop();
    }
    let interrupted = matches!(end, End::Interrupted);
    if interrupted {
        running.sup.cast(SupervisorMsg::StopStage(StageName::ChangeFeed)).ok();
        drain(&topo.ledger, &topo.commit, Duration::from_secs(30)).await;
    }
    running.stop().await;
    if opts.progress {
        let _ = writeln!(std::io::stderr());
    }
    topo.publish_status(cfg, false, &running.verify_status);
    if let End::Finished(Err(e)) = end {
        if let Some(sink) = index.take() {
            sink.stop();
        }
        return Err(e);
    }
    if !interrupted || topo.ledger.is_idle() {
        abort_recorded_uploads(&res.store, &res.dest, false).await?;
    }
    let dead_letters = res.store.dead_letters()?;
    let index_behind = match index.as_mut() {
        Some(sink) if !interrupted => Some(wait_for_index(sink, cfg.index.catch_up_timeout.0).await),
        _ => None,
    };
    if let Some(sink) = index {
        sink.stop();
    }
    let progress = topo.progress.borrow().clone();
    drop(topo.progress_tx);
    Ok(RunSummary { progress, dead_letters, interrupted, index_behind })
}

/// Serves the admin socket (`admin.sock` in the state folder) so the commands that read the store
/// can ask this run; a socket that cannot be bound is logged, not fatal (the mirror goes on).
fn start_admin(cfg: &Config, res: &Resources, topo: &Topology) -> Option<crate::admin::AdminServer> {
    let served = crate::admin::Served {
        state_dir: cfg.state.dir.clone(),
        index_configured: cfg.index.url().is_some(),
        store: res.store.clone(),
        dest: res.dest.clone(),
        drive: res.drive.clone(),
        scope: res.scope.clone(),
        export: cfg.source.export.clone(),
        max_file_size: cfg.source.max_file_size.map(|b| b.0),
        state_inside: crate::verify::state_inside_destination(cfg),
        ledger: topo.ledger.clone(),
        wake: topo.refresh_wake.clone(),
        top: crate::admin::snapshot::Source { capacities: topo.capacities.clone(), progress: topo.progress.clone() },
    };
    match crate::admin::AdminServer::start(served) {
        Ok(server) => Some(server),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve the admin socket: status, log and dlq answer once this run stops");
            None
        }
    }
}

/// Starts the index sink when `[index]` names a database; without one, forgets any earlier index's
/// position so the audit log is pruned by retention alone.
fn start_index(
    cfg: &Config,
    res: &Resources,
    topo: &Topology,
) -> Result<Option<crate::index::SinkHandle>, PipelineError> {
    let Some(url) = cfg.index.url() else {
        res.store.forget_index()?;
        return Ok(None);
    };
    let target = crate::index::connect::Target::parse(url.expose()).map_err(PipelineError::Index)?;
    tracing::info!(index = %target.display, schema = %cfg.index.schema, "index sink starting");
    let sink = crate::index::Sink {
        target,
        schema: cfg.index.schema.clone(),
        store: res.store.clone(),
        prefix: res.dest.prefix().to_string(),
        wake: topo.progress.clone(),
        audit_retention: cfg.state.audit_retention.0,
    };
    sink.spawn().map(Some).map_err(|e| PipelineError::Index(e.to_string()))
}

/// `run --once`: the mirror is done; gives the index up to `timeout` to apply the rest. Returns how
/// far behind it still is.
async fn wait_for_index(sink: &mut crate::index::SinkHandle, timeout: Duration) -> u64 {
    match sink.wait_caught_up(timeout).await {
        Ok(behind) => behind,
        Err(e) => {
            tracing::warn!(error = %e, "index: cannot tell how far behind it is");
            u64::MAX
        }
    }
}

/// Follows a running pipeline until `--once` catches up, a stage fails for good, or a signal comes;
/// every two seconds it prints the progress line, logs the idle summary and publishes `status.json`.
async fn watch_until_done(cfg: &Config, opts: &RunOptions, topo: &Topology, running: &mut Running) -> End {
    let mut progress_rx = topo.progress.clone();
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut meter = crate::progress::Meter::default();
    let mut last_summary = progress_rx.borrow().clone();
    // Made once: a signal that arrives while another branch runs is still seen on the next turn.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            changed = progress_rx.changed() => {
                if changed.is_err() {
                    return End::Finished(Err(PipelineError::Supervision("the committer stopped unexpectedly".into())));
                }
                if opts.once && progress_rx.borrow().caught_up {
                    return End::Finished(finish_adoption(running.sweep.take()).await);
                }
            }
            changed = running.fatal.changed() => {
                // A closed channel means the supervisor is gone: fatal, never a loop that spins.
                let msg = match changed {
                    Ok(()) => running.fatal.borrow().clone(),
                    Err(_) => Some("the pipeline supervisor stopped unexpectedly".into()),
                };
                if let Some(msg) = msg { return End::Finished(Err(PipelineError::Supervision(msg))); }
            }
            _ = ticker.tick() => {
                let now = progress_rx.borrow().clone();
                if opts.progress { print_progress(&mut meter, &now, &topo.ledger); }
                if !opts.once && topo.ledger.is_idle() {
                    if let Some(line) = crate::progress::summary(&last_summary, &now) {
                        tracing::info!("{line}");
                    }
                    last_summary = now;
                }
                topo.publish_status(cfg, true, &running.verify_status);
            }
            _ = &mut shutdown => {
                tracing::info!("signal received: stopping the feed and draining");
                return End::Interrupted;
            }
        }
    }
}

impl Running {
    /// Stops the tasks beside the pipeline, then the supervisor and every stage.
    async fn stop(&mut self) {
        self.sampler.abort();
        if let Some(task) = self.scheduled_verify.take() {
            task.abort();
        }
        if let Some(task) = self.deferrals.take() {
            task.abort();
        }
        if let Some(task) = self.sweep.take() {
            task.abort();
        }
        if let Some(hook) = self.webhook.take() {
            hook.stop().await;
        }
        self.sup.cast(SupervisorMsg::Shutdown).ok();
        let _ = (&mut self.sup_handle).await;
        crate::health::supervisor_running(false);
    }
}

/// `--once` over an adoption: the listing is committed by now, so the sweep is done or about to be.
async fn finish_adoption(
    sweep: Option<tokio::task::JoinHandle<Result<usize, crate::adopt::AdoptError>>>,
) -> Result<(), PipelineError> {
    match sweep {
        None => Ok(()),
        Some(task) => match task.await {
            Ok(result) => result.map(|_| ()).map_err(PipelineError::from),
            Err(e) => Err(PipelineError::Supervision(format!("orphan sweep: {e}"))),
        },
    }
}

/// Aborts the multipart uploads no transfer will continue (see [`Uploads::abort_recorded`]).
async fn abort_recorded_uploads(store: &Store, dest: &Destination, keep_resumable: bool) -> Result<(), PipelineError> {
    let uploads = Uploads { dest: dest.clone(), book: store.upload_book(), chunk_size: 0 };
    uploads.abort_recorded(keep_resumable).await.map_err(|e| match e {
        AbortError::Dest(e) => PipelineError::Dest(e),
        AbortError::Store(e) => PipelineError::Store(e),
    })
}

/// Settles what a crashed run wrote and did not commit, so the destination matches the committed
/// records again before anything is replayed: a move of recorded bytes that already removed its source
/// is moved back (the record still names the source, and a replay may find nothing left to do, e.g. a
/// folder moved and moved back), and writes no record owns are removed (the events that made them are
/// replayed from the checkpoint and write again wherever Drive has the file now).
async fn settle_unfinished_writes(store: &Store, dest: &Destination) -> Result<(), PipelineError> {
    use crate::state::Unfinished;
    for (intent, verdict) in store.pending_intents()? {
        let key = &intent.key;
        let staged = dest.remove_staging_leftovers(key).await?;
        if staged > 0 {
            tracing::info!(%key, staged, "removed the staging files of an interrupted local write");
        }
        match verdict {
            Unfinished::Owned => repair_unless_proven(store, dest, key).await?,
            Unfinished::MovedFrom(source, size) => {
                let source_gone = dest.head(&source).await?.is_none();
                if source_gone && dest.head(key).await? == Some(size) {
                    tracing::info!(from = %key, to = %source, "moving back an uncommitted move");
                    dest.copy(key, &source).await?;
                }
                dest.delete(key).await?;
            }
            Unfinished::Orphan => {
                tracing::info!(%key, "removing a write an interrupted run did not commit");
                dest.delete(key).await?;
            }
        }
        store.clear_intent(key)?;
    }
    // Copies into these folders are noted nowhere before they are made (a version kept before a write,
    // a trash move of a removal), so a killed one is found by walking the folder.
    let copies_into = [
        (dest.versions > 0, ".versions", "removed the staging files of interrupted version copies"),
        (
            matches!(dest.delete_policy, crate::config::DeletePolicy::Trash),
            ".trash",
            "removed the staging files of interrupted trash moves",
        ),
    ];
    for (_, folder, what) in copies_into.into_iter().filter(|(used, _, _)| *used) {
        let staged = dest.remove_staging_leftovers_under(folder).await?;
        if staged > 0 {
            tracing::info!(staged, "{what}");
        }
    }
    Ok(())
}

/// A key a crashed run wrote while a committed record owns it may hold newer bytes than the record
/// says (the write was published, its outcome never committed). Unless the object provably holds the
/// record's content (size and an md5 the store reports), its owner is repaired from Drive: a replay
/// of its event may otherwise count as already applied, and the record's md5 would name bytes the
/// object no longer holds (copies check their source anyway, see the uploader).
async fn repair_unless_proven(
    store: &Store,
    dest: &Destination,
    key: &crate::model::ObjectKey,
) -> Result<(), PipelineError> {
    let Some(owner) = store.claim_holder(&crate::dest::keys::collision_class(key.as_str()))? else { return Ok(()) };
    let Some(record) = store.file(&owner)?.filter(|r| r.key == *key) else { return Ok(()) };
    let content = dest.stored_content(key).await?;
    if record.md5.as_deref().is_some_and(|md5| content.is_some_and(|c| c.proves(md5, record.size))) {
        return Ok(());
    }
    tracing::info!(%key, file = %owner, "an interrupted write left this object unlike its record; fetching the file from Drive again");
    store.add_refresh_requests(&[crate::model::Refresh::Repair(owner)])?;
    Ok(())
}

/// After a stop signal, waits (bounded) until every admitted file is committed and the committer's
/// queue is empty; what is left is replayed from the checkpoint by the next run.
async fn drain(ledger: &Ledger, commit: &mpsc::Sender<CommitMsg>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let idle = || ledger.is_idle() && commit.capacity() == commit.max_capacity();
    while !idle() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !idle() {
        tracing::warn!(
            in_flight = ledger.files_in_flight(),
            "stop timeout: abandoning in-flight work (it is replayed on the next run)"
        );
    }
}

/// Rewrites the terminal's progress line (files, bytes, rates, ETA).
fn print_progress(meter: &mut crate::progress::Meter, p: &Progress, ledger: &Ledger) {
    let rates = meter.sample(std::time::Instant::now(), p);
    let pending = ledger.issued().saturating_sub(p.outcomes);
    let line = crate::progress::line(p, ledger.files_in_flight(), pending, rates);
    // `\x1b[K` clears what a longer earlier line left; only written to a terminal.
    let _ = write!(std::io::stderr(), "\r{line}\x1b[K");
    let _ = std::io::stderr().flush();
}

/// Publishes every edge's fill level once a second.
fn spawn_depth_sampler(gauges: Vec<QueueGauge>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for g in &gauges {
                crate::metrics::queue_depth(g.edge, (g.depth)());
            }
        }
    })
}

/// Ctrl-C or SIGTERM (a domain run between its rounds waits on it too).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(stages: &str) -> Config {
        let text = format!("[source]\ncredentials = \"k.json\"\n[destination]\nurl = \"file:///tmp/m\"\n{stages}");
        Config::parse(&text).unwrap()
    }

    #[test]
    fn each_stage_capacity_sizes_that_stage_s_own_input_channel() {
        let cfg = config(
            "[stages.dedup]\ncapacity = 3\n[stages.planner]\ncapacity = 5\n[stages.downloader]\ncapacity = 7\n\
             [stages.uploader]\ncapacity = 11\n[stages.verifier]\ncapacity = 13\n[stages.committer]\ncapacity = 2048\n",
        );
        let capacities = Inputs::new(&cfg).capacities();
        let expected = BTreeMap::from([
            (StageName::Dedup, 3),
            (StageName::Planner, 5),
            (StageName::Downloader, 7),
            (StageName::Uploader, 11),
            (StageName::Verifier, 13),
            (StageName::Committer, 2048),
        ]);
        assert_eq!(capacities, expected);
    }

    #[test]
    fn unset_capacities_take_the_default_and_the_committer_always_holds_a_batch() {
        let cfg = config("[stages.committer]\ncapacity = 8\n");
        let capacities = Inputs::new(&cfg).capacities();
        assert_eq!(capacities[&StageName::Planner], crate::config::DEFAULT_CAPACITY);
        assert_eq!(capacities[&StageName::Committer], <Committer<Store> as Stage>::BATCH);
    }

    #[test]
    fn the_in_flight_limit_is_every_input_channel_plus_every_worker() {
        let cfg = config(
            "[stages.dedup]\ncapacity = 3\n[stages.planner]\ncapacity = 5\n[stages.downloader]\ncapacity = 7\nconcurrency = 2\n\
             [stages.uploader]\ncapacity = 11\nconcurrency = 3\n[stages.verifier]\ncapacity = 13\nconcurrency = 1\n",
        );
        let channels = 3 + 5 + 7 + 11 + 13 + <Committer<Store> as Stage>::BATCH;
        let workers = 1 + 1 + 1 + 2 + 3 + 1; // feed, dedup, planner, downloaders, uploaders, verifier
        assert_eq!(in_flight_limit(&cfg), channels + workers);
    }
}
