//! Drive as Google documents it, not as kindly as an emulator could: changes to shared-drive items may
//! appear only in that drive's own change log ("Retrieve changes"), so the emulator here keeps them out
//! of the user's log (`drive_changes_in_user_log = false`, as every test corpus does); listing page
//! tokens may be rejected later ("should be discarded, and pagination restarted from the first page").

mod common;
use common::*;
use serde_json::{Value, json};

async fn mutate(env: &TestEnv, ops: Vec<Value>) {
    let r = env.control("mutate", json!({ "ops": ops })).await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
}

async fn run_once_exact(env: &TestEnv, config: &std::path::Path) {
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(config, &expected_files(&tree)).await;
    assert_paths_follow_drive(config, &tree);
}

/// Creates, content updates, renames, moves, trashes and deletes inside two shared drives (and My
/// Drive) after the first sync: each reaches the mirror through its drive's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_drive_changes_are_read_from_each_drives_own_log() {
    for seed in [31u64, 32] {
        let mut corpus = small_corpus(false);
        corpus.seed = seed;
        corpus.shared_drives = 2;
        assert!(!corpus.drive_changes_in_user_log);
        let env = TestEnv::start(corpus).await;
        let config = env.config("logs", &env.local_dest("mirror"), "");
        run_once_exact(&env, &config).await;

        let tree = env.tree().await;
        let mut ops = Vec::new();
        for (n, drive) in tree.drives.iter().enumerate() {
            ops.push(
                json!({"op": "create", "parent": drive.id, "name": format!("new-in-drive-{n}.bin"), "size": 1234 + n}),
            );
            let files: Vec<_> = tree
                .items
                .iter()
                .filter(|i| i.drive_id.as_deref() == Some(drive.id.as_str()) && i.md5.is_some() && !i.trashed)
                .collect();
            assert!(files.len() >= 3, "corpus has files in shared drive {}", drive.id);
            ops.push(json!({"op": "update_content", "id": files[0].id, "size": 4321}));
            ops.push(json!({"op": "rename", "id": files[1].id, "name": format!("renamed-in-drive-{n}.bin")}));
            ops.push(json!({"op": "delete", "id": files[2].id}));
        }
        mutate(&env, ops).await;
        run_once_exact(&env, &config).await;

        mutate(&env, vec![json!({"op": "random", "count": 200, "seed": seed})]).await;
        run_once_exact(&env, &config).await;
    }
}

/// Killed during the initial listing (by amount of work), then every listing page token expires: the
/// next run restarts that listing from its first page instead of failing for ever, and ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_listing_page_token_restarts_the_listing() {
    let mut corpus = small_corpus(false);
    corpus.files = 120;
    corpus.page_size_max = 7;
    let env = TestEnv::start(corpus).await;
    let mirror = env.local_dest("mirror");
    let crashing = env.config("expire", &mirror, "[testing]\ncrash_after_writes = 40");
    let out = mirrorflow(&["run", "--once", crashing.to_str().unwrap()]).await;
    assert_ne!(out.status.code(), Some(0), "the run was to be killed part-way\n{}", text(&out));
    {
        let (_cfg, store, _dest) = open(&crashing);
        let phase = store.checkpoint().unwrap().expect("a checkpoint was saved before the kill").phase;
        assert!(
            matches!(phase, mirrorflow::state::FeedPhase::Listing { page_token: Some(_), .. }),
            "the kill was to come part-way through a listing: {phase:?}"
        );
    }
    let r = env.control("expire_page_tokens", json!({})).await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
    let config = env.config("expire", &mirror, "");
    run_once_exact(&env, &config).await;
}

/// A file deleted between its change and its download (404 on its bytes) is not a failure: the run
/// exits 0 with no dead letter, and the next run applies the removal. Both for a new file (no record:
/// its removal is out of scope, which also clears any dead letter) and a changed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_before_its_download_is_not_dead_lettered() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("gone", &env.local_dest("mirror"), "");
    run_once_exact(&env, &config).await;
    let tree = env.tree().await;
    let changed =
        tree.items.iter().find(|i| i.md5.is_some() && !i.trashed && i.size.unwrap_or(0) > 0).unwrap().id.clone();
    let r = env
        .control(
            "mutate",
            json!({"ops": [
                {"op": "create", "parent": tree.root_id, "name": "short-lived.bin", "size": 999},
                {"op": "update_content", "id": changed},
            ]}),
        )
        .await;
    let created = r["created"][0].as_str().unwrap().to_string();
    env.control("faults", json!({"delete_on_download_ids": [created, changed]})).await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "a file gone from Drive is not a failure\n{}", text(&out));
    let stats = env.stats().await;
    assert!(
        stats["requests"]["files.get.media 404"].as_u64().unwrap_or(0) >= 2,
        "both downloads found the files gone: {stats}"
    );
    env.control("faults", json!({})).await;
    run_once_exact(&env, &config).await;
    let (_cfg, store, _dest) = open(&config);
    assert!(store.dead_letters().unwrap().is_empty());
}

/// Google's export table, per type: an Apps Script project is exported as JSON (its only format), a
/// spreadsheet configured as ODS gets today's ODS MIME type and `.ods`, and a Form, which Drive cannot
/// export, is not mirrored but reported in the run summary and status, never skipped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_google_type_is_exported_as_googles_table_says_or_reported() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("exports", &env.local_dest("mirror"), "[source.export]\nspreadsheet = \"ods\"");
    let root = env.tree().await.root_id;
    mutate(
        &env,
        vec![
            json!({"op": "create_gdoc", "parent": root, "name": "Build script", "kind": "script"}),
            json!({"op": "create_gdoc", "parent": root, "name": "Feedback form", "kind": "form"}),
            json!({"op": "create_gdoc", "parent": root, "name": "Budget", "kind": "spreadsheet"}),
        ],
    )
    .await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 Google file(s) have no export format"), "{}", text(&out));

    let tree = env.tree().await;
    let mut expected = expected_files(&tree);
    let ods = "application/vnd.oasis.opendocument.spreadsheet";
    let sheets: Vec<_> =
        tree.items.iter().filter(|i| i.mime_type == "application/vnd.google-apps.spreadsheet").collect();
    for sheet in &sheets {
        if let Some(e) = expected.get_mut(&sheet.id) {
            e.size = sheet.export_sizes.as_ref().unwrap()[ods];
        }
    }
    let keys = assert_exact_mirror(&config, &expected).await;
    let id_named = |name: &str| tree.items.iter().find(|i| i.name == name).unwrap().id.clone();
    assert!(keys[&id_named("Build script")].as_str().ends_with("my-drive/Build script.json"), "{keys:?}");
    assert!(keys[&id_named("Budget")].as_str().ends_with("my-drive/Budget.ods"), "{keys:?}");
    assert!(!keys.contains_key(&id_named("Feedback form")));
    let (cfg, _store, _dest) = open(&config);
    let status: Value = serde_json::from_slice(&std::fs::read(cfg.state.dir.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["this_run"]["no_export"], 1, "{status}");
}
