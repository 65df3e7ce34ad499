//! Crash safety: the real binary is killed with SIGKILL at many points of the initial sync and of a
//! catch-up, and restarted each time. The final destination is exact, and no file that was committed
//! before a restart is downloaded again by the runs after it (the emulator's per-file byte counts).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Files whose current Drive version is committed: those must never be fetched again.
fn committed_ids(config: &Path, tree: &mirrorflow::emulator::EmuTree) -> BTreeSet<String> {
    let (_cfg, store, _dest) = open(config);
    let versions: std::collections::BTreeMap<&str, u64> =
        tree.items.iter().map(|i| (i.id.as_str(), i.version)).collect();
    let mut ids = BTreeSet::new();
    store
        .for_each_file(|r| {
            if versions.get(r.id.0.as_str()) == Some(&r.version) {
                ids.insert(r.id.0);
            }
        })
        .unwrap();
    ids
}

/// Starts `mirrorflow run --once` quietly.
fn spawn_once(config: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["run", "--once", config.to_str().unwrap()])
        .env("MIRRORFLOW_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts the binary and SIGKILLs it after `after` (if it has not finished by then).
async fn run_and_kill(config: &Path, after: Duration) -> bool {
    let mut child = spawn_once(config);
    tokio::select! {
        status = child.wait() => { status.unwrap(); false }
        _ = tokio::time::sleep(after) => { child.kill().await.unwrap(); true }
    }
}

/// Starts the binary and SIGKILLs it once the mirror folder holds `files` objects (by work done).
async fn run_and_kill_at_count(config: &Path, mirror: &Path, files: usize) -> bool {
    let mut child = spawn_once(config);
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            return false;
        }
        if count_files(mirror) >= files {
            child.kill().await.unwrap();
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Kills at each delay, checking after every restart that no previously committed file was fetched.
async fn crash_at(env: &TestEnv, config: &Path, delays: &[u64]) -> usize {
    let mut kills = 0;
    for ms in delays {
        let before = committed_ids(config, &env.tree().await);
        env.control("stats/reset", serde_json::json!({})).await;
        if run_and_kill(config, Duration::from_millis(*ms)).await {
            kills += 1;
        }
        let stats = env.stats().await;
        let fetched: Vec<&String> =
            before.iter().filter(|id| stats["media_bytes_by_file"].get(id.as_str()).is_some()).collect();
        assert!(fetched.is_empty(), "committed files downloaded again after a restart: {fetched:?}");
    }
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_initial_sync_and_catch_up_loses_nothing_and_repeats_nothing() {
    let mut corpus = small_corpus(false);
    corpus.files = 400;
    corpus.folders = 30;
    let env = TestEnv::start(corpus).await;
    env.control("faults", serde_json::json!({"latency_ms": 3})).await;
    let config = env.config("crash", &env.local_dest("mirror"), "[stages.downloader]\nconcurrency = 4");

    // Initial sync, killed at five amounts of work done and six points in time.
    let mirror = env.dir.path().join("mirror");
    let mut kills = 0;
    for files in [40, 100, 170, 250, 330] {
        let before = committed_ids(&config, &env.tree().await);
        env.control("stats/reset", serde_json::json!({})).await;
        kills += run_and_kill_at_count(&config, &mirror, files).await as usize;
        let stats = env.stats().await;
        let fetched: Vec<&String> =
            before.iter().filter(|id| stats["media_bytes_by_file"].get(id.as_str()).is_some()).collect();
        assert!(fetched.is_empty(), "committed files downloaded again after a restart: {fetched:?}");
    }
    kills += crash_at(&env, &config, &[40, 90, 150, 220, 300, 380]).await;
    assert!(kills >= 5, "too few kills landed during the initial sync ({kills})");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert_paths_follow_drive(&config, &tree);

    // Catch-up after a burst of changes, killed at ten more points.
    let r = env.control("mutate", serde_json::json!({"ops": [{"op": "random", "count": 300, "seed": 11}]})).await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
    let before_catch_up = committed_ids(&config, &env.tree().await);
    let kills = crash_at(&env, &config, &[20, 45, 70, 100, 130, 170, 210, 260, 320]).await;
    assert!(kills >= 3, "too few kills landed during the catch-up ({kills})");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert_paths_follow_drive(&config, &tree);
    assert!(!before_catch_up.is_empty());
}
