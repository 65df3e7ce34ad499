//! Criterion benches of the pipeline's CPU- and store-bound pieces, one stage at a time, without I/O
//! to Drive or to a destination:
//!
//! - `dedup/*`: `Dedup::process` over 100k synthetic change events (new files; a re-run where the
//!   store already holds every file, so each event is a fjall read and a `Skipped` outcome).
//! - `planner/*`: `Planner::process` over 100k file events in 1,000 known folders (path resolution,
//!   name sanitizing, collision claims, one store read per event), and `Planner::new` on a store that
//!   already holds 100k files (start-up cost of every run; the resident-set growth is printed).
//! - `keys/*`: name → key segment (`segment`, `sanitize_name`, `supabase_encode`) per name.
//! - `hash/*`: the chunk path's `ContentHasher` (md5 + sha256 on the stream) fed 1 MiB chunks, and
//!   md5 / sha256 alone for comparison.
//! - `committer/*`: `Store::apply` of 1,024 `Committed` outcomes into fjall (unsynced and with a
//!   checkpoint, i.e. `SyncData`), the whole `Committer::process` of the same batch, and
//!   `Store::dead_letters()` before and after 100k commits (the committer calls it after each batch).
//!
//! Run: `cargo bench --bench stages` (about 2–3 minutes on 2 busy cores; add a filter such as
//! `-- committer/` to run one group)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mirrorflow::config::{ExportConfig, KeyMode};
use mirrorflow::dest::keys;
use mirrorflow::drive::DriveError;
use mirrorflow::hashing::{ContentHasher, Digests};
use mirrorflow::model::*;
use mirrorflow::stages::committer::{CommitState, Committer, Progress};
use mirrorflow::stages::dedup::Dedup;
use mirrorflow::stages::ledger::Ledger;
use mirrorflow::stages::planner::{FolderLookup, Layout, Planner, Scope};
use mirrorflow::stages::{CommitMsg, Emit, Redo, Stage};
use mirrorflow::state::{Checkpoint, CommitBatch, FeedPhase, Store};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const EVENTS: usize = 100_000;
const FOLDERS: usize = 1_000;
const COMMIT_BATCH: usize = 1_024;
const ROOT: &str = "0AROOTROOTROOTUk9PVA";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A Drive-looking id (33 chars starting with `1`), distinct per `(kind, n)`.
fn id(kind: char, n: usize) -> FileId {
    FileId(format!("1{kind}{n:031}"))
}

fn folder_id(n: usize) -> FileId {
    id('F', n)
}

fn hex32(n: usize) -> String {
    format!("{:032x}", (n as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
}

fn drive_file(n: usize, version: u64) -> DriveFile {
    DriveFile {
        id: id('f', n),
        name: format!("report-{n}.pdf"),
        mime_type: "application/pdf".into(),
        parents: vec![folder_id(n % FOLDERS)],
        size: Some(4096),
        md5: Some(hex32(n)),
        sha256: None,
        version,
        modified_time: Some("2024-01-01T00:00:00.000Z".into()),
        trashed: false,
        drive_id: None,
        shortcut_target: None,
        export_links: BTreeMap::new(),
        can_download: true,
        resource_key: None,
        shared_with_me: false,
        web_view_link: None,
        target_link: None,
        content_of: None,
        shortcut_target_key: None,
        owned_by_me: false,
    }
}

fn file_events(count: usize) -> Vec<ChangeEvent> {
    (0..count)
        .map(|n| ChangeEvent {
            seq: ChangeSeq(n as u64 + 1),
            file_id: id('f', n),
            kind: ChangeKind::Upsert(drive_file(n, 7)),
            origin: Origin::Listing,
        })
        .collect()
}

fn file_record(n: usize) -> FileRecord {
    FileRecord {
        id: id('f', n),
        name: format!("report-{n}.pdf"),
        parent: Some(folder_id(n % FOLDERS)),
        mime_type: "application/pdf".into(),
        version: 7,
        md5: Some(hex32(n)),
        sha256: Some(format!("{}{}", hex32(n), hex32(n + 1))),
        size: 4096,
        key: ObjectKey(format!("my-drive/Annual Reports {}/report-{n}.pdf", n % FOLDERS)),
        modified_time: Some("2024-01-01T00:00:00.000Z".into()),
    }
}

fn committed(seq: u64, n: usize) -> Outcome {
    Outcome { seq: ChangeSeq(seq), file_id: id('f', n), kind: OutcomeKind::Committed(file_record(n)) }
}

fn folder_outcomes() -> Vec<Outcome> {
    (0..FOLDERS)
        .map(|n| Outcome {
            seq: ChangeSeq(n as u64 + 1),
            file_id: folder_id(n),
            kind: OutcomeKind::FolderRecorded(FolderRecord {
                id: folder_id(n),
                name: format!("Annual Reports {n}"),
                parent: Some(FileId(ROOT.into())),
                drive_id: None,
                key: ObjectKey(format!("my-drive/Annual Reports {n}")),
                trashed: false,
            }),
        })
        .collect()
}

/// Channels big enough that a stage never waits on them; the receivers are returned so that the
/// items are dropped outside the timed section.
fn emit<O>(cap: usize) -> (Emit<O>, mpsc::Receiver<O>, mpsc::Receiver<CommitMsg>) {
    let (next, next_rx) = mpsc::channel(cap);
    let (commit, commit_rx) = mpsc::channel(cap);
    (Emit { next, commit }, next_rx, commit_rx)
}

fn bench_dedup(c: &mut Criterion) {
    let rt = runtime();
    let events = file_events(EVENTS);
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);

    // Every event is admitted and forwarded (whether the store holds it already is the planner's
    // question, asked in change order).
    g.bench_function("100k_new_files", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let stage = Dedup { ledger: Arc::new(Ledger::new(1, EVENTS)) };
                (stage, events.clone(), emit::<ChangeEvent>(EVENTS + 1))
            },
            |(mut stage, events, (emit, rx, crx))| async move {
                stage.process(events, &emit).await.unwrap();
                (stage, rx, crx)
            },
            BatchSize::PerIteration,
        )
    });

    g.finish();
}

/// Every folder is known from the store, so the planner never asks Drive.
struct NoLookup;

impl FolderLookup for NoLookup {
    async fn lookup(&self, _id: &FileId) -> Result<Option<DriveFile>, DriveError> {
        Ok(None)
    }
}

fn bench_planner(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.apply(&CommitBatch { outcomes: folder_outcomes(), ..Default::default() }).unwrap();
    let scope = Scope { my_drive_root: Some(FileId(ROOT.into())), shared: BTreeMap::new(), ..Default::default() };
    let events = file_events(EVENTS);

    // Heap grown by planning 100k files (its outputs dropped). The key claims are written to fjall, so
    // this is mostly fjall's memtable (owned by the store, flushed at its size limit), not planner state.
    {
        let layout = Layout {
            prefix: "mirror".into(),
            mode: KeyMode::Utf8,
            export: ExportConfig::default(),
            max_file_size: None,
            dest_max_file_size: None,
            max_key_bytes: mirrorflow::dest::keys::default_max_key_bytes(KeyMode::Utf8),
        };
        let barrier = Arc::new(Ledger::default());
        let mut planner = Planner::new(store.clone(), Arc::new(NoLookup), scope.clone(), layout, barrier).unwrap();
        let before = heap::live();
        {
            let (emit, rx, crx) = emit::<Planned>(EVENTS + 1);
            rt.block_on(planner.process(events.clone(), &emit)).unwrap();
            drop((emit, rx, crx));
        }
        eprintln!(
            "note: after planning {EVENTS} file events the planner holds {:.1} MiB more heap",
            heap::live().saturating_sub(before) as f64 / (1 << 20) as f64
        );
    }

    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    for (name, mode) in
        [("100k_files_1k_folders", KeyMode::Utf8), ("100k_files_1k_folders_supabase", KeyMode::Supabase)]
    {
        let max_key_bytes = mirrorflow::dest::keys::default_max_key_bytes(mode);
        let layout = Layout {
            prefix: "mirror".into(),
            mode,
            export: ExportConfig::default(),
            max_file_size: None,
            dest_max_file_size: None,
            max_key_bytes,
        };
        g.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || {
                    let barrier = Arc::new(Ledger::default());
                    let planner =
                        Planner::new(store.clone(), Arc::new(NoLookup), scope.clone(), layout.clone(), barrier)
                            .unwrap();
                    (planner, events.clone(), emit::<Planned>(EVENTS + 1))
                },
                |(mut planner, events, (emit, rx, crx))| async move {
                    planner.process(events, &emit).await.unwrap();
                    (planner, rx, crx)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    // Planner start-up on a store that already holds 100k files: `Planner::new` loads the folders only
    // (key claims live in fjall). The first call builds the claims of a store written without them
    // (a one-time migration, in the heap note); the timed calls do not. One element = one file.
    let big_dir = tempfile::tempdir().unwrap();
    let big = Store::open(big_dir.path()).unwrap();
    big.apply(&CommitBatch { outcomes: folder_outcomes(), ..Default::default() }).unwrap();
    for start in (0..EVENTS).step_by(COMMIT_BATCH) {
        let outcomes = (start..(start + COMMIT_BATCH).min(EVENTS)).map(|n| committed(n as u64 + 1, n)).collect();
        big.apply(&CommitBatch { outcomes, ..Default::default() }).unwrap();
    }
    let layout = Layout {
        prefix: "mirror".into(),
        mode: KeyMode::Utf8,
        export: ExportConfig::default(),
        max_file_size: None,
        dest_max_file_size: None,
        max_key_bytes: mirrorflow::dest::keys::MAX_KEY_BYTES,
    };
    let new_planner = || {
        let barrier = Arc::new(Ledger::default());
        Planner::new(big.clone(), Arc::new(NoLookup), scope.clone(), layout.clone(), barrier).unwrap()
    };
    let before = heap::live();
    let p = new_planner();
    eprintln!(
        "note: Planner::new with {EVENTS} files in the store holds {:.1} MiB of heap",
        heap::live().saturating_sub(before) as f64 / (1 << 20) as f64
    );
    drop(p);
    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    g.bench_function("startup_with_100k_files_in_store", |b| b.iter(|| black_box(new_planner())));
    g.finish();
}

/// Counts live heap bytes (the system allocator plus one relaxed atomic per call), so that the memory
/// a stage holds can be printed next to its timings. A global allocator is `unsafe` by definition.
#[allow(unsafe_code)]
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Live heap bytes now.
    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }
}

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

fn names() -> Vec<String> {
    vec![
        "report-1234.pdf".into(),
        "Quarterly Budgets 12".into(),
        "photo-0042.jpg".into(),
        "IMG_20240101_120000.HEIC".into(),
        "a/b slash.txt".into(),
        "back\\slash.txt".into(),
        ".".into(),
        " leading space.txt".into(),
        "ctrl\u{1}\u{1f}char.txt".into(),
        "caf\u{e9}.txt".into(),
        "cafe\u{301}.txt".into(),
        "emoji \u{1f389}\u{1f4c1}.txt".into(),
        format!("long-{}.txt", "\u{fc}".repeat(150)),
        "Résumé – final (v2).docx".into(),
        "данные отчёт 2024.xlsx".into(),
        "报告 第三季度.pptx".into(),
    ]
}

fn bench_keys(c: &mut Criterion) {
    let names = names();
    let disambiguate = id('f', 42);
    let mut g = c.benchmark_group("keys");
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("segment_utf8", |b| {
        b.iter(|| {
            for n in &names {
                black_box(keys::segment(black_box(n), None, None, KeyMode::Utf8));
            }
        })
    });
    g.bench_function("segment_supabase", |b| {
        b.iter(|| {
            for n in &names {
                black_box(keys::segment(black_box(n), None, None, KeyMode::Supabase));
            }
        })
    });
    g.bench_function("segment_disambiguated_export", |b| {
        b.iter(|| {
            for n in &names {
                black_box(keys::segment(black_box(n), Some("docx"), Some(&disambiguate), KeyMode::Utf8));
            }
        })
    });
    g.bench_function("sanitize_name", |b| {
        b.iter(|| {
            for n in &names {
                black_box(keys::sanitize_name(black_box(n)));
            }
        })
    });
    g.bench_function("supabase_encode", |b| {
        b.iter(|| {
            for n in &names {
                black_box(keys::supabase_encode(black_box(n)));
            }
        })
    });
    g.finish();
}

fn bench_hash(c: &mut Criterion) {
    use md5::{Digest, Md5};
    use sha2::Sha256;
    const CHUNK: usize = 1 << 20;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let shared = bytes::Bytes::from(chunk.clone());
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    // With sha256 on its worker thread, the steady state of a long stream is the slower of the two
    // lanes (the worker's queue is bounded, so `update` waits for it).
    g.bench_function("content_hasher_1MiB_chunk", |b| {
        let mut h = ContentHasher::new(Digests::Md5AndSha256);
        b.iter(|| h.update(black_box(&shared)));
        black_box(h.finish());
    });
    g.bench_function("content_hasher_md5_only_1MiB_chunk", |b| {
        let mut h = ContentHasher::new(Digests::Md5);
        b.iter(|| h.update(black_box(&shared)));
        black_box(h.finish());
    });
    g.bench_function("rustcrypto_md5_only_1MiB_chunk", |b| {
        let mut h = Md5::new();
        b.iter(|| h.update(black_box(&chunk)));
        black_box(h.finalize());
    });
    g.bench_function("rustcrypto_sha256_only_1MiB_chunk", |b| {
        let mut h = Sha256::new();
        b.iter(|| h.update(black_box(&chunk)));
        black_box(h.finalize());
    });
    // For comparison: aws-lc-rs (already a dependency) has assembly SHA-256 (AVX2 / SHA extensions).
    g.bench_function("sha256_aws_lc_rs_1MiB_chunk", |b| {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        b.iter(|| h.update(black_box(&chunk)));
        black_box(h.finish());
    });
    g.finish();
}

fn checkpoint(n: u64) -> Checkpoint {
    Checkpoint {
        start_token: "12345".into(),
        phase: FeedPhase::Changes { token: format!("{n}") },
        read_at_unix_ms: 0,
        feeds: vec![(mirrorflow::drive::Corpus::MyDrive, format!("{n}"))],
    }
}

/// A committer stage over a fresh store in `dir`, finishing events in `ledger`, with the receivers of
/// what it releases and publishes.
fn committer_over(
    dir: &tempfile::TempDir,
    ledger: Ledger,
) -> (Committer<mirrorflow::state::Store>, mpsc::Receiver<ChangeEvent>, watch::Receiver<Progress>) {
    let (release, release_rx) = mpsc::channel(16);
    let release = Redo::new("dedup", release);
    let (progress, progress_rx) = watch::channel(Progress::default());
    let committer = Committer {
        store: Store::open(dir.path()).unwrap(),
        state: Arc::new(Mutex::new(CommitState::default())),
        ledger: Arc::new(ledger),
        release,
        progress,
        next_seq: Arc::new(AtomicU64::new(1)),
        refresh_wake: Arc::default(),
        audit_retention: Duration::from_secs(30 * 24 * 3600),
        next_prune: None,
    };
    (committer, release_rx, progress_rx)
}

fn bench_committer(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("committer");
    g.throughput(Throughput::Elements(COMMIT_BATCH as u64));

    // Store::apply alone, on a store that grows as it would during a sync (new file ids each batch).
    for (name, synced) in [("store_apply_1024", false), ("store_apply_1024_synced_checkpoint", true)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut next = 0usize;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let outcomes: Vec<Outcome> =
                        (next..next + COMMIT_BATCH).map(|n| committed(n as u64 + 1, n)).collect();
                    next += COMMIT_BATCH;
                    let cp = synced.then(|| checkpoint(next as u64));
                    CommitBatch { outcomes, checkpoint: cp, next_seq: next as u64 + 1, ..Default::default() }
                },
                |batch| {
                    store.apply(&batch).unwrap();
                    batch
                },
                BatchSize::SmallInput,
            )
        });
    }

    // The committer stage as the pipeline runs it: watermark, checkpoint gate (one page mark per
    // batch, so every batch persists with SyncData), spawn_blocking store write, release, progress.
    let dir = tempfile::tempdir().unwrap();
    let (mut committer, mut release_rx, _progress_rx) = committer_over(&dir, Ledger::default());
    let (emit, _next_rx, _commit_rx) = emit::<()>(1);
    let committer = &mut committer;
    let mut next = 0usize;
    g.sample_size(20);
    g.bench_function("stage_process_1024_with_checkpoint", |b| {
        b.iter_batched(
            || {
                let mut msgs: Vec<CommitMsg> =
                    (next..next + COMMIT_BATCH).map(|n| CommitMsg::Outcome(committed(n as u64 + 1, n))).collect();
                next += COMMIT_BATCH;
                msgs.push(CommitMsg::Mark { last_seq: next as u64, checkpoint: checkpoint(next as u64) });
                msgs
            },
            |msgs| rt.block_on(committer.process(msgs, &emit)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    while release_rx.try_recv().is_ok() {}

    // One event (seq 1) never finishes while `held` later events already have: the watermark cannot
    // move, every later seq and page mark waits in the ledger and the committer's state. A batch must
    // cost the same whatever that backlog (issue 11: it used to clone the whole state twice per batch).
    // The pipeline's ledger admits far fewer (its limit, ~2.6k by default); 100k shows the cost is flat.
    for held in [0usize, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(1, held + 1);
        for seq in 2..=held as u64 + 1 {
            ledger.settle(ChangeSeq(seq));
        }
        let (mut committer, mut release_rx, _progress_rx) = committer_over(&dir, ledger);
        let committer = &mut committer;
        let mut next = held + 1;
        g.bench_function(format!("held_event_process_1024_after_{held}_finished"), |b| {
            b.iter_batched(
                || {
                    let msgs: Vec<CommitMsg> = (next..next + COMMIT_BATCH)
                        .map(|n| CommitMsg::Outcome(committed(n as u64 + 1, n)))
                        .chain([CommitMsg::Mark { last_seq: (next + COMMIT_BATCH) as u64, checkpoint: checkpoint(0) }])
                        .collect();
                    next += COMMIT_BATCH;
                    msgs
                },
                |msgs| rt.block_on(committer.process(msgs, &emit)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        while release_rx.try_recv().is_ok() {}
    }
    g.finish();

    // `Store::dead_letters()` (called by the committer after every batch holding a Committed outcome)
    // on an empty dead-letter store, before and after 100k files were committed: each commit also
    // writes a dead-letter removal, which the scan has to step over.
    let mut g = c.benchmark_group("committer");
    for files in [0usize, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for start in (0..files).step_by(COMMIT_BATCH) {
            let outcomes = (start..(start + COMMIT_BATCH).min(files)).map(|n| committed(n as u64 + 1, n)).collect();
            store.apply(&CommitBatch { outcomes, ..Default::default() }).unwrap();
        }
        g.bench_function(format!("dead_letters_scan_after_{files}_commits"), |b| {
            b.iter(|| assert!(store.dead_letters().unwrap().is_empty()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = bench_keys, bench_hash, bench_dedup, bench_planner, bench_committer
}
criterion_main!(benches);
