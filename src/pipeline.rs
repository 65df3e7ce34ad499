//! Compiles a [`Config`] into the running actor tree: discovers the drives in scope, opens the store,
//! the destination and the Drive client, builds every stage with its bounded channels, starts them
//! under the supervisor, and waits for the end of the run.

use crate::actors::feed::{FeedActor, FeedArgs};
use crate::actors::supervisor::SpawnFn;
use crate::actors::worker::{InHand, SharedInput};
use crate::actors::{
    ChildSpec, PipelineSupervisor, ReplayRoutes, StageWorker, SupervisorArgs, SupervisorMsg, WorkerArgs,
};
use crate::config::Config;
use crate::dest::{DestError, Destination};
use crate::drive::{DriveClient, DriveError, DriveSettings};
use crate::model::{DeadLetter, DriveId};
use crate::retry::RetryPolicy;
use crate::stages::change_feed::{ChangeFeed, DriveSelection, FeedOutputs, listing_jobs};
use crate::stages::committer::{CommitState, Committer, Progress};
use crate::stages::dedup::Dedup;
use crate::stages::downloader::Downloader;
use crate::stages::ledger::Ledger;
use crate::stages::planner::{Layout, Planner, Scope};
use crate::stages::uploader::Uploader;
use crate::stages::verifier::Verifier;
use crate::stages::{CommitMsg, Emit, FailureInjector, Redo, Stage};
use crate::state::{Store, StoreError};
use ractor::Actor;
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
}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop once caught up.
    pub once: bool,
    /// Print a progress line on stderr.
    pub progress: bool,
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
}

/// Builds the Drive client from config.
pub async fn drive_client(cfg: &Config) -> Result<DriveClient, DriveError> {
    DriveClient::connect(DriveSettings {
        credentials: cfg.source.credentials.clone(),
        subject: cfg.source.subject.clone(),
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

fn retry_policy(cfg: &Config) -> RetryPolicy {
    RetryPolicy {
        max_attempts: cfg.retry.max_attempts,
        base_delay: cfg.retry.base_delay.0,
        max_delay: cfg.retry.max_delay.0,
    }
}

/// Resolves `[source] drives` into My Drive's root and the shared drives to mirror.
pub async fn discover_scope(cfg: &Config, drive: &DriveClient) -> Result<Scope, PipelineError> {
    let mut scope = Scope::default();
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

fn emit_to<O>(next: mpsc::Sender<O>, commit: &mpsc::Sender<CommitMsg>) -> Emit<O> {
    Emit { next, commit: commit.clone() }
}

/// One stage's input: the main channel upstream sends into (its capacity is the backpressure) and the
/// redo lane for work already admitted (sized from the ledger's limit; see [`Redo`]).
struct Channels<T> {
    tx: mpsc::Sender<T>,
    redo: Redo<T>,
    rx: SharedInput<T>,
}

fn channel<T>(stage: &'static str, capacity: usize, redo_capacity: usize) -> Channels<T> {
    let (tx, rx) = mpsc::channel(capacity);
    let (redo_tx, redo_rx) = mpsc::channel(redo_capacity);
    let lanes = crate::actors::worker::Lanes::new(redo_rx, rx);
    Channels { tx, redo: Redo::new(stage, redo_tx), rx: Arc::new(tokio::sync::Mutex::new(lanes)) }
}

/// The most events unfinished at once: what the channels and workers between the feed and the
/// committer hold when every one of them is full, so the ledger's limit never bites before ordinary
/// backpressure would, while everything sized by work in flight (the watermark's finished seqs, parked
/// events, the redo lanes) stays bounded.
pub fn in_flight_limit(cfg: &Config) -> usize {
    let st = |name| cfg.stages.settings(name);
    let stages = ["change_feed", "dedup", "planner", "downloader", "uploader", "verifier"];
    let channels: usize = stages.iter().map(|n| st(n).capacity).sum::<usize>() + committer_capacity(cfg);
    let workers: usize = stages.iter().map(|n| st(n).concurrency).sum();
    channels + workers
}

fn committer_capacity(cfg: &Config) -> usize {
    cfg.stages.settings("committer").capacity.max(1024)
}

/// Makes the spec of one worker of stage `S`, whose stage is built fresh by `build` at every start.
fn worker_spec<S, F>(build: F, input: SharedInput<S::In>, emit: Emit<S::Out>) -> ChildSpec
where
    S: Stage + Sync,
    S::In: Sync,
    S::Out: Sync,
    F: Fn() -> Result<S, String> + Send + Sync + 'static,
{
    let in_hand: InHand = Arc::default();
    let slot = in_hand.clone();
    let build = Arc::new(build);
    let spawn: SpawnFn = Arc::new(move |sup| {
        let (build, input, emit, in_hand) = (build.clone(), input.clone(), emit.clone(), slot.clone());
        Box::pin(async move {
            let stage = build()?;
            let args = WorkerArgs { stage, input, emit, in_hand };
            let (actor, _) =
                Actor::spawn_linked(None, StageWorker::<S>::default(), args, sup).await.map_err(|e| e.to_string())?;
            Ok(actor.get_cell())
        })
    });
    ChildSpec { stage: S::NAME, spawn, in_hand }
}

/// What names one destination: its URL (bucket and prefix) and, for S3-compatible stores, the endpoint.
/// How a state store names the destination it describes: URL and endpoint.
pub fn destination_identity(d: &crate::config::DestinationConfig) -> String {
    let url = d.url.trim_end_matches('/');
    match &d.endpoint {
        Some(e) => format!("{url} at {}", e.trim_end_matches('/')),
        None => url.to_string(),
    }
}

/// Runs the pipeline described by `cfg`.
pub async fn run(cfg: &Config, opts: RunOptions) -> Result<RunSummary, PipelineError> {
    crate::install_crypto_provider();
    if let Some(listen) = &cfg.metrics.listen {
        let addr = listen.parse().map_err(|e| PipelineError::Metrics(format!("{listen}: {e}")))?;
        crate::metrics::install_exporter(addr).map_err(PipelineError::Metrics)?;
    }
    let store = Store::open(&cfg.state.dir)?;
    let configured = destination_identity(&cfg.destination);
    if let Some(recorded) = store.bind_destination(&configured)? {
        let state = cfg.state.dir.display().to_string();
        return Err(PipelineError::OtherDestination { state, recorded, configured });
    }
    let mut dest = Destination::from_config(&cfg.destination, &cfg.retry)?;
    if let Some(writes) = cfg.testing.crash_after_writes {
        dest = dest.crash_after_writes(writes);
    }
    dest.check_reachable().await?;
    abort_recorded_uploads(&store, &dest, true).await?;
    settle_unfinished_writes(&store, &dest).await?;
    let adopting = crate::adopt::begin_if_needed(&store, &dest).await?;
    let drive = Arc::new(drive_client(cfg).await?);
    let scope = discover_scope(cfg, &drive).await?;
    tracing::info!(my_drive = scope.my_drive_root.is_some(), shared_drives = scope.shared.len(), "scope resolved");

    let st = |name| cfg.stages.settings(name);
    let faults = Arc::new(FailureInjector::new(&cfg.testing));
    let first_seq = store.next_seq()?;
    let limit = in_flight_limit(cfg);
    let ledger = Arc::new(Ledger::new(first_seq, limit));
    // Room for every admitted event, plus one replay per worker of an item already finished.
    let redo = limit + 64 + cfg.stages.settings("downloader").concurrency + cfg.stages.settings("uploader").concurrency;
    let next_seq = Arc::new(AtomicU64::new(first_seq));
    let (progress_tx, mut progress_rx) = watch::channel(Progress::default());
    let (fatal_tx, mut fatal_rx) = watch::channel(None::<String>);

    let to_dedup = channel("dedup", st("change_feed").capacity, redo);
    let to_planner = channel("planner", st("dedup").capacity, redo);
    let to_downloader = channel("downloader", st("planner").capacity, redo);
    let to_uploader = channel("uploader", st("downloader").capacity, redo);
    let to_verifier = channel("verifier", st("uploader").capacity, redo);
    // The committer's redo lane holds one replayed batch of a dead committer.
    let to_committer = channel::<CommitMsg>("committer", committer_capacity(cfg), Committer::BATCH);
    let commit = to_committer.tx.clone();
    let (unit_tx, _unit_rx) = mpsc::channel::<()>(1);

    let mut children = Vec::new();
    let wake = Arc::new(Notify::new());
    let refresh_wake = Arc::new(Notify::new());
    let wakes = (wake.clone(), refresh_wake.clone());
    let outputs = FeedOutputs { events: to_dedup.tx.clone(), commit: commit.clone(), ledger: ledger.clone() };
    children.push(feed_spec(cfg, &opts, &store, &drive, &scope, &next_seq, &wakes, &faults, outputs));
    {
        let (ledger, faults) = (ledger.clone(), faults.clone());
        let build = move || Ok(Dedup { ledger: ledger.clone(), faults: faults.clone() });
        children.push(worker_spec(build, to_dedup.rx.clone(), emit_to(to_planner.tx.clone(), &commit)));
    }
    {
        let (store, drive, scope, faults, ledger) =
            (store.clone(), drive.clone(), scope.clone(), faults.clone(), ledger.clone());
        let layout = Layout {
            prefix: dest.prefix().to_string(),
            mode: dest.key_mode,
            export: cfg.source.export.clone(),
            max_file_size: cfg.source.max_file_size.map(|b| b.0),
        };
        let build = move || {
            Planner::new(store.clone(), drive.clone(), scope.clone(), layout.clone(), ledger.clone(), faults.clone())
                .map_err(|e| e.to_string())
        };
        children.push(worker_spec(build, to_planner.rx.clone(), emit_to(to_downloader.tx.clone(), &commit)));
    }
    for _ in 0..st("downloader").concurrency {
        let (drive, dest, faults, store) = (drive.clone(), dest.clone(), faults.clone(), store.clone());
        let (chunk_size, chunk_depth) = (cfg.pipeline.chunk_size.0 as usize, cfg.pipeline.chunk_depth);
        let (max_resumes, digests) = (cfg.retry.max_attempts, cfg.pipeline.digests());
        let build = move || {
            Ok(Downloader {
                source: drive.clone(),
                dest: dest.clone(),
                store: store.clone(),
                chunk_size,
                chunk_depth,
                digests,
                max_resumes,
                faults: faults.clone(),
                adopt: adopting,
            })
        };
        children.push(worker_spec(build, to_downloader.rx.clone(), emit_to(to_uploader.tx.clone(), &commit)));
    }
    let budget = crate::stages::budget::MemoryBudget::new(cfg.pipeline.memory_budget.0);
    for _ in 0..st("uploader").concurrency {
        let (dest, faults, store, budget) = (dest.clone(), faults.clone(), store.clone(), budget.clone());
        let (part_size, part_concurrency) = (cfg.pipeline.part_size.0 as usize, st("uploader").part_concurrency);
        let (refetch, digests) = (to_downloader.redo.clone(), cfg.pipeline.digests());
        let chunk_size = cfg.pipeline.chunk_size.0 as usize;
        let build = move || {
            Ok(Uploader {
                dest: dest.clone(),
                part_size,
                chunk_size,
                part_concurrency,
                budget: budget.clone(),
                digests,
                store: store.clone(),
                refetch: refetch.clone(),
                faults: faults.clone(),
            })
        };
        children.push(worker_spec(build, to_uploader.rx.clone(), emit_to(to_verifier.tx.clone(), &commit)));
    }
    for _ in 0..st("verifier").concurrency {
        let (dest, faults, refetch, store) = (dest.clone(), faults.clone(), to_downloader.redo.clone(), store.clone());
        let build = move || {
            Ok(Verifier { dest: dest.clone(), store: store.clone(), refetch: refetch.clone(), faults: faults.clone() })
        };
        children.push(worker_spec(build, to_verifier.rx.clone(), emit_to(unit_tx.clone(), &commit)));
    }
    {
        let (store, ledger, faults, release, progress) =
            (store.clone(), ledger.clone(), faults.clone(), to_dedup.redo.clone(), progress_tx.clone());
        let (next_seq, refresh_wake) = (next_seq.clone(), refresh_wake.clone());
        let state = Arc::new(std::sync::Mutex::new(CommitState::default()));
        let audit_retention = cfg.state.audit_retention.0;
        let build = move || {
            Ok(Committer {
                store: store.clone(),
                state: state.clone(),
                ledger: ledger.clone(),
                release: release.clone(),
                progress: progress.clone(),
                next_seq: next_seq.clone(),
                refresh_wake: refresh_wake.clone(),
                faults: faults.clone(),
                audit_retention,
                next_prune: None,
            })
        };
        children.push(worker_spec(build, to_committer.rx.clone(), emit_to(unit_tx.clone(), &commit)));
    }

    let routes = ReplayRoutes {
        dedup: to_dedup.redo.clone(),
        planner: to_planner.redo.clone(),
        downloader: to_downloader.redo.clone(),
        verifier: to_verifier.redo.clone(),
        committer: to_committer.redo.clone(),
    };
    let depth_sampler = spawn_depth_sampler(
        vec![("feed_dedup", to_dedup.tx.clone()), ("dedup_planner", to_planner.tx.clone())],
        to_downloader.tx.clone(),
        to_uploader.tx.clone(),
        to_verifier.tx.clone(),
        commit.clone(),
    );
    let sup_args = SupervisorArgs {
        children,
        routes,
        max_restarts: cfg.supervisor.max_restarts,
        within: cfg.supervisor.within.0,
        fatal: fatal_tx,
    };
    let webhook = match (&cfg.source.webhook, opts.once) {
        (Some(w), false) => {
            let listen = w.listen.parse().map_err(|e| PipelineError::Scope(format!("webhook.listen: {e}")))?;
            let hook = crate::drive::webhook::Webhook::start(
                listen,
                w.public_url.clone(),
                w.channel_ttl.0,
                drive.clone(),
                wake.clone(),
                crate::stages::change_feed::change_logs(&scope),
            )
            .await
            .map_err(PipelineError::Supervision)?;
            tracing::info!(listen = %hook.local_addr, "push notifications registered");
            Some(hook)
        }
        _ => None,
    };
    let (sup, sup_handle) = Actor::spawn(None, PipelineSupervisor, sup_args)
        .await
        .map_err(|e| PipelineError::Supervision(format!("pipeline failed to start: {e}")))?;

    let verify_status = Arc::new(std::sync::Mutex::new(crate::verify::schedule::VerifyStatus::default()));
    let scheduled_verify = match (cfg.verify.every, opts.once) {
        (Some(every), false) => Some(
            crate::verify::schedule::Schedule {
                every: every.0,
                checksum: cfg.verify.checksum,
                store: store.clone(),
                dest: dest.clone(),
                drive: drive.clone(),
                scope: scope.clone(),
                export: cfg.source.export.clone(),
                max_file_size: cfg.source.max_file_size.map(|b| b.0),
                state_inside: crate::verify::state_inside_destination(cfg),
                ledger: ledger.clone(),
                wake: refresh_wake.clone(),
                status: verify_status.clone(),
            }
            .spawn(),
        ),
        _ => None,
    };
    let live_verify = || cfg.verify.every.map(|_| verify_status.lock().unwrap_or_else(|p| p.into_inner()).clone());
    let mut sweep = adopting.then(|| tokio::spawn(crate::adopt::sweep_when_listed(store.clone(), dest.clone())));
    let mut interrupted = false;
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut meter = crate::progress::Meter::default();
    let mut last_summary = progress_rx.borrow().clone();
    // Made once: a signal that arrives while another branch runs is still seen on the next turn.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            changed = progress_rx.changed() => {
                if changed.is_err() {
                    break Err(PipelineError::Supervision("the committer stopped unexpectedly".into()));
                }
                if opts.once && progress_rx.borrow().caught_up {
                    break finish_adoption(sweep.take()).await;
                }
            }
            changed = fatal_rx.changed() => {
                // A closed channel means the supervisor is gone: fatal, never a loop that spins.
                let msg = match changed {
                    Ok(()) => fatal_rx.borrow().clone(),
                    Err(_) => Some("the pipeline supervisor stopped unexpectedly".into()),
                };
                if let Some(msg) = msg { break Err(PipelineError::Supervision(msg)); }
            }
            _ = ticker.tick() => {
                let now = progress_rx.borrow().clone();
                if opts.progress { print_progress(&mut meter, &now, &ledger); }
                if !opts.once && ledger.is_idle() {
                    if let Some(line) = crate::progress::summary(&last_summary, &now) {
                        tracing::info!("{line}");
                    }
                    last_summary = now;
                }
                write_live_status(&cfg.state.dir, &progress_rx.borrow(), ledger.files_in_flight(), true, live_verify());
            }
            _ = &mut shutdown => {
                tracing::info!("signal received: stopping the feed and draining");
                interrupted = true;
                break Ok(());
            }
        }
    };
    if interrupted {
        sup.cast(SupervisorMsg::StopStage("change_feed")).ok();
        drain(&ledger, &commit, Duration::from_secs(30)).await;
    }
    depth_sampler.abort();
    if let Some(task) = scheduled_verify {
        task.abort();
    }
    if let Some(task) = sweep {
        task.abort();
    }
    if let Some(hook) = webhook {
        hook.stop().await;
    }
    sup.cast(SupervisorMsg::Shutdown).ok();
    let _ = sup_handle.await;
    if opts.progress {
        let _ = writeln!(std::io::stderr());
    }
    write_live_status(&cfg.state.dir, &progress_rx.borrow(), ledger.files_in_flight(), false, live_verify());
    result?;
    if !interrupted || ledger.is_idle() {
        abort_recorded_uploads(&store, &dest, false).await?;
    }
    let dead_letters = store.dead_letters()?;
    let progress = progress_rx.borrow().clone();
    Ok(RunSummary { progress, dead_letters, interrupted })
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

/// Aborts recorded multipart uploads. At the start (`keep_resumable`), an interrupted run's uploads
/// with recorded parts are kept: the file's next transfer continues them if its content is unchanged,
/// and aborts them otherwise. At a clean end (nothing in flight) every upload still recorded belongs to
/// no transfer: kept to resume, its file was then deleted, left the scope or was dead-lettered. It is
/// aborted, so no multipart upload is left open (S3 bills its parts and never lists them as objects).
async fn abort_recorded_uploads(store: &Store, dest: &Destination, keep_resumable: bool) -> Result<(), PipelineError> {
    let recorded = store.recorded_upload_ids()?;
    for (file, rec) in store.pending_uploads()? {
        if rec.upload_id.is_empty() {
            match dest.abort_unrecorded_uploads(&rec.key, &recorded).await? {
                Some(0) => {}
                Some(n) => {
                    tracing::info!(%file, key = %rec.key, n, "aborted uploads a killed run opened without recording them")
                }
                None => {
                    tracing::warn!(%file, key = %rec.key, "a killed run may have left an unfinished upload here; this store cannot list them (the bucket's lifecycle rules remove them)")
                }
            }
            store.clear_upload(&file)?;
            continue;
        }
        if let (true, Some(point)) = (keep_resumable, &rec.resume) {
            tracing::info!(%file, key = %rec.key, parts = point.parts.len(), offset = point.offset, "keeping an interrupted multipart upload to resume");
            continue;
        }
        tracing::info!(%file, key = %rec.key, "aborting a multipart upload no transfer will continue");
        dest.abort_upload(&rec.key, &rec.upload_id).await?;
        store.clear_upload(&file)?;
    }
    Ok(())
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
        match verdict {
            Unfinished::Owned => {}
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
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn feed_spec(
    cfg: &Config,
    opts: &RunOptions,
    store: &Store,
    drive: &Arc<DriveClient>,
    scope: &Scope,
    next_seq: &Arc<AtomicU64>,
    (wake, refresh_wake): &(Arc<Notify>, Arc<Notify>),
    faults: &Arc<FailureInjector>,
    outputs: FeedOutputs,
) -> ChildSpec {
    let (store, drive, next_seq, wake, faults) =
        (store.clone(), drive.clone(), next_seq.clone(), wake.clone(), faults.clone());
    let refresh_wake = refresh_wake.clone();
    let (jobs, logs) = (listing_jobs(scope), crate::stages::change_feed::change_logs(scope));
    let (drives, selection) = (scope.shared.clone(), DriveSelection::from_config(&cfg.source.drives));
    let (once, poll_interval) = (opts.once, cfg.source.poll_interval.0);
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
    ChildSpec { stage: "change_feed", spawn, in_hand: Arc::default() }
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

/// The file a running pipeline refreshes every two seconds, for `mirrorflow status` (the store itself is
/// locked by the running process).
pub const LIVE_STATUS_FILE: &str = "status.json";

fn write_live_status(
    dir: &std::path::Path,
    p: &Progress,
    in_flight: usize,
    running: bool,
    verify: Option<crate::verify::schedule::VerifyStatus>,
) {
    let v = serde_json::json!({
        "verify": verify,
        "running": running,
        "pid": std::process::id(),
        "updated_unix_ms": crate::state::unix_ms(),
        "in_flight": in_flight,
        "this_run": {"mirrored": p.committed, "bytes": p.bytes, "removed": p.removed, "skipped": p.skipped,
                     "no_export": p.no_export, "folders": p.folders, "dead_lettered": p.dead_lettered},
    });
    let tmp = dir.join(format!("{LIVE_STATUS_FILE}.tmp"));
    if std::fs::write(&tmp, v.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(LIVE_STATUS_FILE));
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

fn spawn_depth_sampler(
    edges: Vec<(&'static str, mpsc::Sender<crate::model::ChangeEvent>)>,
    down: mpsc::Sender<crate::model::Planned>,
    up: mpsc::Sender<crate::stages::downloader::Transfer>,
    verify: mpsc::Sender<crate::model::Uploaded>,
    commit: mpsc::Sender<CommitMsg>,
) -> tokio::task::JoinHandle<()> {
    fn depth<T>(s: &mpsc::Sender<T>) -> usize {
        s.max_capacity() - s.capacity()
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for (name, tx) in &edges {
                crate::metrics::queue_depth(name, depth(tx));
            }
            crate::metrics::queue_depth("planner_downloader", depth(&down));
            crate::metrics::queue_depth("downloader_uploader", depth(&up));
            crate::metrics::queue_depth("uploader_verifier", depth(&verify));
            crate::metrics::queue_depth("to_committer", depth(&commit));
        }
    })
}

async fn shutdown_signal() {
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
