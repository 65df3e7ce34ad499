//! Crash safety: the real binary is killed with SIGKILL at many points of the initial sync and of a
//! catch-up, and restarted each time. The final destination is exact, and no file that was committed
//! before a restart is downloaded again by the runs after it (the emulator's per-file byte counts).

use crate::support::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Files whose current Drive version is committed: those must never be fetched again.
fn committed_ids(config: &Path, tree: &drive_emulator::EmuTree) -> BTreeSet<String> {
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

/// After the crashes: one clean `--once` run exits 0 and leaves the exact mirror, every file where
/// Drive has it now.
async fn clean_run_ends_exact(env: &TestEnv, dest: &Dest, settings: &str) {
    let config = env.config("work", dest, settings);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert_paths_follow_drive(&config, &tree);
}

/// Runs `--once` with `[testing] crash_after_writes = writes`: the process aborts (no cleanup, like
/// `kill -9`) right after that many writes to the destination. Returns true if it crashed.
async fn run_crashing_after(env: &TestEnv, dest: &Dest, writes: u64) -> bool {
    run_crashing_after_with(env, dest, "", writes).await
}

/// [`run_crashing_after`] with more settings in the config.
async fn run_crashing_after_with(env: &TestEnv, dest: &Dest, settings: &str, writes: u64) -> bool {
    let config = env.config("work", dest, &format!("{settings}\n[testing]\ncrash_after_writes = {writes}"));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    if std::env::var("TEST_MIRRORFLOW_LOG").is_ok() {
        eprintln!("RUN crash_after_writes={writes}\n{}", text(&out));
    }
    match out.status.code() {
        // Files Drive will not hand over (hostile corpora) are skipped: a finished run exits 0.
        Some(0) => false,
        None => true,
        _ => panic!("unexpected end\n{}", text(&out)),
    }
}

/// Folder moves (into folders created in the same batch, out of trashed folders), folder renames to
/// `.`/`..`, trashes and removals, with the process killed at twenty amounts of work (destination
/// writes: objects written, tree steps done), never at a wall-clock time. The final state is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_twenty_amounts_of_work_during_subtree_moves_lose_nothing() {
    let mut corpus = small_corpus(false);
    corpus.files = 300;
    corpus.folders = 25;
    corpus.depth = 3;
    let env = TestEnv::start(corpus).await;
    let dest = env.local_dest("mirror");
    let config = env.config("work", &dest, "");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut kills = 0;
    for point in 0..20u64 {
        let tree = env.tree().await;
        let folders: Vec<&drive_emulator::EmuItem> = tree
            .items
            .iter()
            .filter(|i| i.mime_type == "application/vnd.google-apps.folder" && i.drive_id.is_none() && !i.trashed)
            .collect();
        let mut ops = vec![serde_json::json!({"op": "random", "count": 25, "seed": 100 + point})];
        if let Some(f) = folders.get((point as usize * 7) % folders.len().max(1)) {
            let name = if point % 3 == 0 { ".." } else { "moved" };
            ops.push(serde_json::json!({"op": "rename", "id": f.id, "name": format!("{name}-{point}")}));
            ops.push(
                serde_json::json!({"op": "create_folder", "parent": tree.root_id, "name": format!("home-{point}")}),
            );
        }
        let r = env.control("mutate", serde_json::json!({ "ops": ops })).await;
        assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
        if let (Some(home), Some(f)) = (
            r["created"].as_array().and_then(|c| c.last()).and_then(|v| v.as_str()),
            folders.get((point as usize * 7 + 3) % folders.len().max(1)),
        ) {
            let moved = serde_json::json!({"ops": [{"op": "move", "id": f.id, "new_parent": home}]});
            env.control("mutate", moved).await;
        }
        // Kill points spread over small and large amounts of work.
        kills += run_crashing_after(&env, &dest, 1 + (point * 13) % 60).await as usize;
        if point % 4 == 3 {
            // A second crash before the first one's work is finished.
            kills += run_crashing_after(&env, &dest, 2 + point).await as usize;
        }
    }
    assert!(kills >= 15, "too few crashes landed ({kills})");
    clean_run_ends_exact(&env, &dest, "").await;
}

/// The same on S3, where a file is written in parts: files of 6–16 MiB (5 MiB parts, so every one is a
/// multipart upload) are created, rewritten and moved with their folders while the process is killed
/// at twenty amounts of work (parts sent, uploads completed, server-side copies, deletes). The final
/// mirror is exact and no multipart upload is left open in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_twenty_amounts_of_work_on_s3_lose_nothing_and_leave_no_upload_open() {
    let s3 = s3_server().await;
    create_bucket(&s3.endpoint, "kill").await;
    let mut corpus = small_corpus(false);
    corpus.files = 80;
    corpus.folders = 10;
    corpus.depth = 2;
    let env = TestEnv::start(corpus).await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "kill".into(), prefix: "m".into() };
    let settings = "[pipeline]\npart_size = \"5MiB\"\n[stages.uploader]\npart_concurrency = 2";
    let config = env.config("work", &dest, settings);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut kills = 0;
    for point in 0..20u64 {
        let tree = env.tree().await;
        let root = &tree.root_id;
        let live = |folder: bool| {
            tree.items
                .iter()
                .filter(move |i| {
                    (i.mime_type == "application/vnd.google-apps.folder") == folder
                        && i.drive_id.is_none()
                        && !i.trashed
                        && i.id != *root
                })
                .collect::<Vec<_>>()
        };
        let folders = live(true);
        let files: Vec<_> =
            live(false).into_iter().filter(|i| !i.mime_type.starts_with("application/vnd.google-apps.")).collect();
        let pick = |v: &Vec<&drive_emulator::EmuItem>, n: u64| v[(n as usize) % v.len()].id.clone();
        let mib = |n: u64| (6 + n % 11) << 20;
        let mut ops = vec![
            serde_json::json!({"op": "create", "parent": pick(&folders, point * 3), "name": format!("big-{point}.bin"), "size": mib(point)}),
            serde_json::json!({"op": "update_content", "id": pick(&files, point * 5 + 1), "size": mib(point + 4)}),
        ];
        if point % 2 == 0 {
            ops.push(
                serde_json::json!({"op": "move", "id": pick(&folders, point * 7 + 1), "new_parent": tree.root_id}),
            );
        }
        // Last: the random mix may delete what the ops above name.
        ops.push(serde_json::json!({"op": "random", "count": 10, "seed": 500 + point}));
        let r = env.control("mutate", serde_json::json!({ "ops": ops })).await;
        assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
        kills += run_crashing_after_with(&env, &dest, settings, 1 + (point * 11) % 40).await as usize;
        if point % 5 == 4 {
            // A second crash before the first one's work is finished.
            kills += run_crashing_after_with(&env, &dest, settings, 3 + point).await as usize;
        }
    }
    assert!(kills >= 15, "too few crashes landed ({kills})");
    clean_run_ends_exact(&env, &dest, settings).await;
    let open = reqwest::get(format!("{}/kill?uploads", s3.endpoint)).await.unwrap().text().await.unwrap();
    assert_eq!(open_uploads(&s3.endpoint, "kill").await, 0, "a multipart upload was left open: {open}");
}

/// A folder of 600 files is moved in steps of 256 files, each committed as soon as its objects are
/// moved: killed in the middle of the second step, the store already holds the first step's files at
/// their new keys (the folder's own record still old), and the next run finishes the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_folder_move_is_committed_in_steps_and_a_kill_keeps_the_steps_done() {
    let mut corpus = small_corpus(false);
    corpus.files = 20;
    let env = TestEnv::start(corpus).await;
    let tree = env.tree().await;
    let made = env
        .control("mutate", serde_json::json!({"ops": [{"op": "create_folder", "parent": tree.root_id, "name": "big"}]}))
        .await;
    let big = made["created"][0].as_str().unwrap().to_string();
    let files: Vec<serde_json::Value> = (0..600)
        .map(|n| serde_json::json!({"op": "create", "parent": big, "name": format!("f{n}.txt"), "size": 100 + n}))
        .collect();
    env.control("mutate", serde_json::json!({ "ops": files })).await;
    let dest = env.local_dest("mirror");
    let config = env.config("work", &dest, "");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    env.control("mutate", serde_json::json!({"ops": [{"op": "rename", "id": big, "name": "bigger"}]})).await;
    // A moved file is one rename on a local folder: 400 writes end inside the second step.
    assert!(run_crashing_after(&env, &dest, 400).await, "the run was not killed");
    {
        let (_cfg, store, _dest) = open(&config);
        let moved = store
            .files_in_folder(&mirrorflow::model::FileId(big.clone()))
            .unwrap()
            .iter()
            .filter(|r| r.key.0.contains("/bigger/"))
            .count();
        assert!((256..600).contains(&moved), "{moved} files were recorded at their new keys before the kill");
        let folder = store.folder(&mirrorflow::model::FileId(big.clone())).unwrap().unwrap();
        assert_eq!(folder.name, "big", "the folder's record moves with the last step");
    }
    clean_run_ends_exact(&env, &dest, "").await;
}

/// Model-based: a random sequence of Drive operations (the emulator's random mix, everyday compound
/// changes included) with the process crashed at random amounts of work between them; whatever the
/// sequence and crash points, one clean run afterwards leaves the exact mirror of the model (the
/// emulator's tree). The real binary is crashed, not an in-process pipeline: an abort is the only
/// faithful crash.
mod model {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // 5 cases in the suite; `PROPTEST_CASES=50` for a longer search.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5),
            max_shrink_iters: 4,
            ..ProptestConfig::default()
        })]
        #[test]
        fn random_operations_and_crash_points_end_in_the_exact_mirror(
            seed in 0u64..10_000,
            steps in proptest::collection::vec((5u64..40, 1u64..70), 2..5),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let mut corpus = small_corpus(seed % 3 == 0);
                corpus.seed = seed;
                corpus.files = 120;
                let env = TestEnv::start(corpus).await;
                let dest = env.local_dest("mirror");
                run_crashing_after(&env, &dest, 1 << 40).await;
                for (n, (ops, writes)) in steps.iter().enumerate() {
                    let body = serde_json::json!({"ops": [{"op": "random", "count": ops, "seed": seed * 31 + n as u64}]});
                    env.control("mutate", body).await;
                    run_crashing_after(&env, &dest, *writes).await;
                }
                let config = env.config("work", &dest, "");
                let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
                assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out));
                let tree = env.tree().await;
                assert_exact_mirror(&config, &expected_files(&tree)).await;
                assert_paths_follow_drive(&config, &tree);
                assert_verifies_equal(&config).await;
            });
        }
    }
}
