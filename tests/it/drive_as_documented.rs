//! Drive as Google documents it, not as kindly as an emulator could: changes to shared-drive items may
//! appear only in that drive's own change log ("Retrieve changes"), so the emulator here keeps them out
//! of the user's log (`drive_changes_in_user_log = false`, as every test corpus does); listing page
//! tokens may be rejected later ("should be discarded, and pagination restarted from the first page").

use crate::support::*;
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
    assert!(stdout.contains("1 Google type with no export (Forms, Sites, Maps…)"), "{}", text(&out));

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

fn drive_named(tree: &drive_emulator::EmuTree, name: &str) -> String {
    tree.drives.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no drive {name:?}")).id.clone()
}

/// Drive-level changes as Drive reports them (`changeType = "drive"`, in the user's log only): a drive
/// the account joins is listed and followed from then on (its later changes too, also after a
/// restart), a renamed drive's subtree moves to the new name (nothing left under the old one), and a
/// drive the account loses has its files removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drive_level_changes_join_rename_and_removal() {
    let mut corpus = small_corpus(false);
    corpus.shared_drives = 1;
    let env = TestEnv::start(corpus).await;
    let config = env.config("drives", &env.local_dest("mirror"), "");
    run_once_exact(&env, &config).await;

    // Joined: a drive with a folder tree and files the mirror has never seen changes for.
    mutate(&env, vec![json!({"op": "create_drive", "name": "Team B"})]).await;
    let team_b = drive_named(&env.tree().await, "Team B");
    let r = env.control("mutate", json!({"ops": [{"op": "create_folder", "parent": team_b, "name": "Plans"}]})).await;
    let plans = r["created"][0].as_str().unwrap().to_string();
    let r = env.control("mutate", json!({"ops": [{"op": "create_folder", "parent": plans, "name": "2027"}]})).await;
    let deep = r["created"][0].as_str().unwrap().to_string();
    let mut ops = vec![json!({"op": "create", "parent": team_b, "name": "top.bin", "size": 1000})];
    for n in 0..5 {
        ops.push(json!({"op": "create", "parent": plans, "name": format!("plan-{n}.bin"), "size": 2000 + n}));
        ops.push(json!({"op": "create", "parent": deep, "name": format!("q{n}.bin"), "size": 3000 + n}));
    }
    mutate(&env, ops).await;
    run_once_exact(&env, &config).await;

    // Followed from then on: a change inside the joined drive arrives through its own log.
    mutate(&env, vec![json!({"op": "create", "parent": plans, "name": "later.bin", "size": 777})]).await;
    run_once_exact(&env, &config).await;

    // Renamed, with a change inside it in the same batch: one tree, under the new name only.
    let first = drive_named(&env.tree().await, "Shared drive 1");
    mutate(
        &env,
        vec![
            json!({"op": "rename_drive", "id": first, "name": "Engineering"}),
            json!({"op": "create", "parent": first, "name": "after-rename.bin", "size": 4321}),
        ],
    )
    .await;
    run_once_exact(&env, &config).await;
    let keys = {
        let (_cfg, store, _dest) = open(&config);
        let mut keys = Vec::new();
        store.for_each_file(|r| keys.push(r.key.0)).unwrap();
        keys
    };
    assert!(keys.iter().any(|k| k.contains("shared-drives/Engineering/")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("shared-drives/Shared drive 1")), "{keys:?}");
    let old_dir = config.parent().unwrap().join("mirror/shared-drives/Shared drive 1");
    assert_eq!(count_files(&old_dir), 0, "objects left under the drive's old name");

    // Lost: the account leaves Team B; its files leave the mirror, the rest stays exact.
    mutate(&env, vec![json!({"op": "remove_drive", "id": team_b})]).await;
    run_once_exact(&env, &config).await;
    assert_eq!(count_files(&config.parent().unwrap().join("mirror/shared-drives/Team B")), 0);
}

/// An explicitly configured drive that disappears is reported and its files removed; the run goes on
/// and ends exact, and so does the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_drive_that_disappears_is_reported_not_fatal() {
    let mut corpus = small_corpus(false);
    corpus.shared_drives = 2;
    let env = TestEnv::start(corpus).await;
    let tree = env.tree().await;
    let ids: Vec<String> = tree.drives.iter().map(|d| format!("{:?}", d.id)).collect();
    let config = env.config("explicit", &env.local_dest("mirror"), "");
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml.replace("drives = [\"all\"]", &format!("drives = [\"my-drive\", {}]", ids.join(", ")));
    std::fs::write(&config, toml).unwrap();
    run_once_exact(&env, &config).await;

    let gone = tree.drives[1].id.clone();
    mutate(&env, vec![json!({"op": "remove_drive", "id": gone})]).await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&gone), "the lost drive is reported\n{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    run_once_exact(&env, &config).await;
}

/// The same drive-level changes while running (no restart to reconcile them): the continuous feed
/// applies the drive change from the user's log, joins, renames and removes on the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drive_level_changes_apply_while_running() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("live-drives", &env.local_dest("mirror"), "");
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, toml.replace("drives = [\"all\"]", "drives = [\"all\"]\npoll_interval = \"200ms\""))
        .unwrap();
    let child = spawn_continuous(&config);
    let mirror = env.dir.path().join("mirror");
    let expected_initial = expected_files(&env.tree().await).len();
    poll_until(|| count_files(&mirror) >= expected_initial).await;

    let r = env.control("mutate", json!({"ops": [{"op": "create_drive", "name": "Live"}]})).await;
    let live = r["created"][0].as_str().unwrap().to_string();
    mutate(&env, vec![json!({"op": "create", "parent": live, "name": "x.bin", "size": 5000})]).await;
    poll_until(|| mirror.join("shared-drives/Live/x.bin").exists()).await;

    mutate(&env, vec![json!({"op": "rename_drive", "id": live, "name": "Live renamed"})]).await;
    poll_until(|| mirror.join("shared-drives/Live renamed/x.bin").exists()).await;
    poll_until(|| !mirror.join("shared-drives/Live/x.bin").exists()).await;

    mutate(&env, vec![json!({"op": "remove_drive", "id": live})]).await;
    poll_until(|| !mirror.join("shared-drives/Live renamed/x.bin").exists()).await;

    let out = sigterm_and_wait(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert_paths_follow_drive(&config, &tree);
}

/// Drive may answer a `corpora=allDrives` search with `incompleteSearch: true` and items missing (not
/// every corpus was searched). With the emulator doing so for every such search, a joined drive's
/// tree and a shared-drive folder back from the trash (both listed as a folder's children) are
/// listed again within their own drive, and a relist after a lost change token removes nothing that
/// is still in Drive: every run ends with the mirror exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_all_drives_listing_is_narrowed_never_trusted() {
    let mut corpus = small_corpus(false);
    corpus.shared_drives = 1;
    let env = TestEnv::start(corpus).await;
    env.control("faults", json!({"incomplete_all_drives": true})).await;
    let config = env.config("incomplete", &env.local_dest("mirror"), "");
    run_once_exact(&env, &config).await;

    // Joined: its tree comes from listing the drive root's children (then each folder's).
    let r = env.control("mutate", json!({"ops": [{"op": "create_drive", "name": "Team B"}]})).await;
    let team_b = r["created"][0].as_str().unwrap().to_string();
    let r = env.control("mutate", json!({"ops": [{"op": "create_folder", "parent": team_b, "name": "Plans"}]})).await;
    let plans = r["created"][0].as_str().unwrap().to_string();
    let mut ops = vec![json!({"op": "create", "parent": team_b, "name": "top.bin", "size": 1000})];
    for n in 0..4 {
        ops.push(json!({"op": "create", "parent": plans, "name": format!("plan-{n}.bin"), "size": 2000 + n}));
    }
    // And a folder of the first drive goes to the trash.
    let tree = env.tree().await;
    let first = drive_named(&tree, "Shared drive 1");
    let folder = tree
        .items
        .iter()
        .find(|i| {
            i.mime_type == "application/vnd.google-apps.folder"
                && !i.trashed
                && i.drive_id.as_deref() == Some(first.as_str())
                && tree.items.iter().any(|c| c.parents.contains(&i.id) && c.md5.is_some() && !c.trashed)
        })
        .expect("a shared-drive folder holding files")
        .id
        .clone();
    ops.push(json!({"op": "trash", "id": folder}));
    mutate(&env, ops).await;
    run_once_exact(&env, &config).await;

    // Back from the trash: Drive reports the folder alone, so its children are listed.
    mutate(&env, vec![json!({"op": "untrash", "id": folder})]).await;
    run_once_exact(&env, &config).await;
    let mirrored = count_files(&config.parent().unwrap().join("mirror/shared-drives/Team B"));
    assert_eq!(mirrored, 5, "the joined drive's files are all mirrored");

    // A relist (the saved change tokens are lost) with the fault still on: nothing is removed.
    {
        let (_cfg, store, _dest) = open(&config);
        let mut lost = store.checkpoint().unwrap().unwrap();
        for (_, token) in &mut lost.feeds {
            *token = "no-such-token".into();
        }
        let batch = mirrorflow::state::CommitBatch {
            checkpoint: Some(lost),
            next_seq: store.next_seq().unwrap(),
            ..Default::default()
        };
        store.apply(&batch).unwrap();
    }
    run_once_exact(&env, &config).await;
}

/// `run --once` that must end within `limit` (a run that loops is killed and reported).
async fn run_once_within(config: &std::path::Path, limit: std::time::Duration) -> std::process::Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["run", "--once", config.to_str().unwrap()])
        .env("MIRRORFLOW_LOG", "mirrorflow=warn")
        .env_remove("AWS_CA_BUNDLE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary runs");
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("the run did not end within {limit:?} (killed)"),
    }
}

/// Only a 400 that names the page token means a lost change token. A `changes.list` Drive refuses for
/// another reason (here a `fields` mask naming a change field this Drive does not know: 400
/// `invalidParameter` at `fields`) ends the run with an error naming the request and Drive's reason,
/// without listing anything again; once Drive accepts the request, the next run goes on from the
/// saved token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_changes_request_fails_the_run_and_never_relists() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("refused", &env.local_dest("mirror"), "");
    run_once_exact(&env, &config).await;
    let root = env.tree().await.root_id;
    mutate(&env, vec![json!({"op": "create", "parent": root, "name": "after.bin", "size": 4321})]).await;

    env.control("faults", json!({"unknown_change_fields": ["time"]})).await;
    env.control("stats/reset", json!({})).await;
    let out = run_once_within(&config, std::time::Duration::from_secs(120)).await;
    assert_ne!(out.status.code(), Some(0), "a refused changes.list is a failure\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("changes.list") && stderr.contains("invalidParameter"),
        "the error names the request and Drive's reason\n{}",
        text(&out)
    );
    let stats = env.stats().await;
    assert!(stats["requests"]["changes.list 400"].as_u64().unwrap_or(0) >= 1, "{stats}");
    let listed: u64 = stats["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("files.list "))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(listed, 0, "nothing is listed again: {stats}");

    env.control("faults", json!({})).await;
    env.control("stats/reset", json!({})).await;
    run_once_exact(&env, &config).await;
    let stats = env.stats().await;
    assert!(stats["requests"].get("files.list 200").is_none(), "the saved token still served: {stats}");
}
