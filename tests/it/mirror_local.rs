//! Mirroring into a local folder through the real binary: exact content, hostile names kept safe,
//! a second run transfers nothing, dead letters reported with their own exit code.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_mirrors_exactly_into_a_folder_and_a_second_run_transfers_nothing() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let (oversized, limit) = oversized(&tree);
    let config = env.config("local", &env.local_dest("mirror"), &format!("src.max_file_size = {limit}"));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    // A file over max_file_size is dead-lettered: exit 3, named with its reason. (The files Drive
    // will not hand over are skipped, not dead-lettered: see skips.rs.)
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("fileTooLarge") && stdout.contains(&oversized), "{}", text(&out));
    assert!(!stdout.contains("cannotDownloadAbusiveFile"), "{}", text(&out));
    let mut expected = expected_files(&tree);
    assert!(expected.remove(&oversized).is_some());
    assert!(expected.len() > 60, "corpus too small: {}", expected.len());
    let keys = assert_exact_mirror(&config, &expected).await;
    assert_paths_follow_drive(&config, &tree);
    assert_keys_fit(&keys);
    // Every key stays inside the mirror folder on disk.
    let root = env.dir.path().join("mirror");
    for key in keys.values() {
        let p = root.join(&key.0);
        assert!(p.canonicalize().unwrap().starts_with(root.canonicalize().unwrap()), "{key} escapes");
    }

    env.control("stats/reset", serde_json::json!({})).await;
    let again = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    let stats = env.stats().await;
    let served = &stats["bytes_served"];
    assert_eq!(served["media"].as_u64(), Some(0), "second run downloaded bytes: {stats}");
    assert_eq!(served["export"].as_u64().unwrap_or(0), 0, "second run exported bytes: {stats}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 files mirrored"), "{}", text(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_corpus_exits_zero_and_status_reports_it() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("clean", &env.local_dest("mirror"), "");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected = expected_files(&env.tree().await);
    assert_exact_mirror(&config, &expected).await;
    let status = mirrorflow(&["status", "--json", config.to_str().unwrap()]).await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["files"].as_u64(), Some(expected.len() as u64));
    assert_eq!(v["dead_lettered"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_only_mirrors_exactly_and_records_no_sha256() {
    let env = TestEnv::start(small_corpus(false)).await;
    let on = env.config("sha256-on", &env.local_dest("with-sha256"), "");
    let off = env.config("sha256-off", &env.local_dest("md5-only"), "[pipeline]\nsha256 = false\n");
    let expected = expected_files(&env.tree().await);
    for config in [&on, &off] {
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_exact_mirror(config, &expected).await;
    }
    let recorded_sha256 = |config: &std::path::Path| {
        let (_cfg, store, _dest) = open(config);
        let mut n = 0;
        store.for_each_file(|r| n += usize::from(r.sha256.is_some())).unwrap();
        n
    };
    // With sha256 on, every streamed file (binary or export) records one, checked against its bytes by
    // assert_exact_mirror; with sha256 = false none is computed (this corpus has no duplicate content
    // that would become a server-side copy carrying Drive's).
    assert!(expected.len() > 10, "corpus has {} files", expected.len());
    assert_eq!(recorded_sha256(&on), expected.len());
    assert_eq!(recorded_sha256(&off), 0);
}

/// object_store writes a local object to `<file>#<digits>` and renames it into place, so a write killed
/// in between leaves that staging file. The next start removes it with the write's intent: beside an
/// object a record owns (a new content was being written) and where nothing was written yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staging_files_of_killed_local_writes_are_removed_at_the_next_start() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("staging", &Dest::Local(dir.clone()), "");
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let (owned, orphan) = {
        let (_cfg, store, _dest) = open(&config);
        let mut records = Vec::new();
        store.for_each_file(|r| records.push(r.clone())).unwrap();
        let rec = records.into_iter().find(|r| r.key.0.matches('/').count() >= 2).expect("a file in a folder");
        let orphan =
            mirrorflow::model::ObjectKey(format!("{}/never-finished.bin", rec.key.0.rsplit_once('/').unwrap().0));
        let intent = |key: &mirrorflow::model::ObjectKey| mirrorflow::state::Intent {
            key: key.clone(),
            file: rec.id.clone(),
            moves_recorded_bytes: false,
        };
        store.record_intents(&[intent(&rec.key), intent(&orphan)]).unwrap();
        (rec.key, orphan)
    };
    // A trash move killed mid-copy leaves its staging file under `.trash/` (a removal notes no intent).
    let trashed = dir.join(".trash").join(format!("{}#5", owned.0));
    std::fs::create_dir_all(trashed.parent().unwrap()).unwrap();
    let staged = [dir.join(format!("{}#17", owned.0)), dir.join(format!("{}#3", orphan.0)), trashed];
    for path in &staged {
        std::fs::write(path, b"half a write").unwrap();
    }
    let unrelated = dir.join(format!("{}#notdigits", owned.0));
    std::fs::write(&unrelated, b"not a staging name").unwrap();

    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for path in &staged {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    assert!(unrelated.exists(), "a name that is not object_store's staging name was removed");
    std::fs::remove_file(&unrelated).unwrap();
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}
