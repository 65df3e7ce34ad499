//! Criterion bench of the whole pipeline in-process: the Drive emulator (in the same process and
//! runtime) → `pipeline::run` with `once: true` → a local folder.
//!
//! - `pipeline/1000_files_4KiB`: a fresh state and destination each iteration, 1,000 files of 4 KiB.
//! - `pipeline/1_file_64MiB`: one 64 MiB file (download, stream hashing, local write, verify).
//! - `pipeline_noop/rerun_1000_files_mirrored`: a run on a fully mirrored state with no change in Drive
//!   (startup, scope discovery, one `changes.list`, clean stop).
//!
//! `[rate_limit] drive_rps` is lifted to 100,000 here: the default of 150 requests/s models Google's
//! per-user quota and would make this bench measure the limiter (1,000 files ≥ 6.7 s).
//!
//! Run: `cargo bench --bench pipeline` (about a minute)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use drive_emulator::{Emulator, EmulatorConfig, MutateOp};
use mirrorflow::config::Config;
use mirrorflow::pipeline::{RunOptions, run};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

/// An emulator holding only `files` files of `size` bytes (spread over a few folders' worth of names
/// in My Drive's root), plus nothing else: no docs, no shared drive, no random corpus.
async fn emulator(files: usize, size: u64) -> Emulator {
    let cfg = EmulatorConfig { files: 0, folders: 0, gdocs: 0, shared_drives: 0, ..EmulatorConfig::default() };
    let emu = Emulator::start(cfg, "127.0.0.1:0".parse().unwrap()).await.expect("emulator starts");
    let ops: Vec<MutateOp> = (0..files)
        .map(|i| MutateOp::Create {
            parent: "root".into(),
            name: format!("file-{i:06}.bin"),
            size,
            mime: None,
            user: None,
        })
        .collect();
    let created = emu.mutate(&ops).expect("mutate");
    assert_eq!(created.len(), files);
    emu
}

struct Bench {
    dir: tempfile::TempDir,
    key: PathBuf,
    base: String,
    runs: AtomicUsize,
}

impl Bench {
    fn new(emu: &Emulator) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        emu.write_service_account_key(&key).unwrap();
        Bench { dir, key, base: emu.base_url(), runs: AtomicUsize::new(0) }
    }

    /// A config with its own state dir and destination folder; `name` reuses them across calls.
    fn config(&self, name: &str) -> Config {
        let d = self.dir.path();
        let text = format!(
            "[source]\ncredentials = \"{key}\"\napi_base_url = \"{base}\"\ndocs_base_url = \"{base}\"\ndrives = [\"all\"]\n\n\
             [destination]\nurl = \"file://{dest}\"\n\n[state]\ndir = \"{state}\"\n\n\
             [retry]\nmax_attempts = 6\nbase_delay = \"20ms\"\nmax_delay = \"500ms\"\n\n\
             [rate_limit]\ndrive_rps = 100000\n",
            key = self.key.display(),
            base = self.base,
            dest = d.join(format!("{name}-dest")).display(),
            state = d.join(format!("{name}-state")).display(),
        );
        let path = d.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        Config::load(&path).expect("config loads")
    }

    /// A config nobody used before (fresh state and destination).
    fn fresh(&self) -> Config {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        self.config(&format!("run{n}"))
    }
}

fn remove_run(cfg: &Config) {
    let _ = std::fs::remove_dir_all(&cfg.state.dir);
    if let Some(p) = cfg.destination.url.strip_prefix("file://") {
        let _ = std::fs::remove_dir_all(Path::new(p));
    }
}

async fn mirror(cfg: &Config, expect_files: u64) {
    let summary =
        run(cfg, RunOptions { once: true, progress: false, ..Default::default() }).await.expect("pipeline run");
    assert!(!summary.interrupted);
    assert_eq!(summary.progress.committed, expect_files, "{:?}", summary.progress);
}

fn bench_small_files(c: &mut Criterion) {
    const FILES: usize = 1_000;
    let rt = runtime();
    let emu = rt.block_on(emulator(FILES, 4096));
    let bench = Bench::new(&emu);
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.throughput(Throughput::Elements(FILES as u64));
    g.bench_function("1000_files_4KiB", |b| {
        b.to_async(&rt).iter_batched(
            || bench.fresh(),
            |cfg| async move {
                mirror(&cfg, FILES as u64).await;
                cfg
            },
            BatchSize::PerIteration,
        )
    });

    g.finish();

    // Fully mirrored, nothing changed: the cost of a catch-up that finds nothing to do (one run per
    // iteration, so no throughput).
    let settled = bench.config("settled");
    rt.block_on(mirror(&settled, FILES as u64));
    let mut g = c.benchmark_group("pipeline_noop");
    g.sample_size(10);
    g.bench_function("rerun_1000_files_mirrored", |b| b.to_async(&rt).iter(|| mirror(&settled, 0)));
    g.finish();
    // Clean up the fresh runs' folders (they live in the tempdir anyway).
    for n in 0..bench.runs.load(Ordering::SeqCst) {
        remove_run(&bench.config(&format!("run{n}")));
    }
    rt.block_on(emu.shutdown());
}

fn bench_big_file(c: &mut Criterion) {
    const SIZE: u64 = 64 << 20;
    let rt = runtime();
    let emu = rt.block_on(emulator(1, SIZE));
    let bench = Bench::new(&emu);
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE));
    g.bench_function("1_file_64MiB", |b| {
        b.to_async(&rt).iter_batched(
            || bench.fresh(),
            |cfg| async move {
                mirror(&cfg, 1).await;
                remove_run(&cfg);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    rt.block_on(emu.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    targets = bench_small_files, bench_big_file
}
criterion_main!(benches);
