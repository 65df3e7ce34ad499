//! No everyday change may lose a file: names freed by a rename or a delete and taken at once by a new
//! file, disambiguated keys that another file literally holds, and downloads corrupted on the way
//! (which must never replace the good copy). Each scenario ends in an exact mirror of Drive.

use crate::support::*;
use drive_emulator::EmuTree;
use mirrorflow::model::FileId;
use serde_json::{Value, json};

/// Binary files that are mirrored (live, downloadable, not empty), in listing order.
fn live_binaries(tree: &EmuTree) -> Vec<drive_emulator::EmuItem> {
    let expected = expected_files(tree);
    tree.items
        .iter()
        .filter(|i| expected.contains_key(&i.id) && i.md5.is_some() && i.size.unwrap_or(0) > 0)
        .cloned()
        .collect()
}

async fn mutate(env: &TestEnv, ops: Vec<Value>) -> Value {
    let r = env.control("mutate", json!({ "ops": ops })).await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
    r
}

async fn run_once(config: &std::path::Path) -> std::process::Output {
    mirrorflow(&["run", "--once", config.to_str().unwrap()]).await
}

async fn assert_mirrors_drive(env: &TestEnv, config: &std::path::Path) {
    let tree = env.tree().await;
    assert_exact_mirror(config, &expected_files(&tree)).await;
    assert_paths_follow_drive(config, &tree);
    assert_verifies_equal(config).await;
}

/// Renames `r` → `s` and creates a new `r`; deletes `t` and creates a new `t` (the everyday "replace
/// a file"), many at once, so the new files race the moves and removals of the old ones.
async fn replace_files_under_their_names(deletes: &str, seed: u64) {
    let mut corpus = small_corpus(false);
    corpus.seed = seed;
    corpus.files = 120;
    let env = TestEnv::start(corpus).await;
    let config = env.config("names", &env.local_dest("mirror"), &format!("dest.deletes = \"{deletes}\""));
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let tree = env.tree().await;
    let files = live_binaries(&tree);
    assert!(files.len() >= 40, "corpus too small: {}", files.len());
    let mut ops = Vec::new();
    for (i, f) in files.iter().take(40).enumerate() {
        let parent = f.parents[0].clone();
        if i % 2 == 0 {
            ops.push(json!({"op": "rename", "id": f.id, "name": format!("moved-away-{i}.bin")}));
        } else {
            ops.push(json!({"op": "delete", "id": f.id}));
        }
        ops.push(json!({"op": "create", "parent": parent, "name": f.name, "size": 1000 + i}));
    }
    mutate(&env, ops).await;
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_mirrors_drive(&env, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_freed_by_a_rename_or_delete_is_reused_at_once_without_loss() {
    for seed in [3, 17] {
        replace_files_under_their_names("delete", seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trash_the_new_file_never_lands_in_the_trash() {
    replace_files_under_their_names("trash", 5).await;
}

/// A file literally named `x (<id of another file>).txt` holds that key; when the other file is
/// renamed onto a taken `x.txt`, it must get a further suffix, not overwrite the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disambiguated_key_held_by_another_file_is_not_overwritten() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("disamb", &env.local_dest("mirror"), "");
    let root = env.tree().await.root_id;
    let r = mutate(
        &env,
        vec![
            json!({"op": "create", "parent": root, "name": "x.txt", "size": 11}),
            json!({"op": "create", "parent": root, "name": "y.txt", "size": 22}),
        ],
    )
    .await;
    let other = r["created"][1].as_str().unwrap().to_string();
    mutate(&env, vec![json!({"op": "create", "parent": root, "name": format!("x ({other}).txt"), "size": 33})]).await;
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    mutate(&env, vec![json!({"op": "rename", "id": other, "name": "x.txt"})]).await;
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_mirrors_drive(&env, &config).await;
}

/// Every download of the changed files is corrupted (one byte flipped, length intact): each object
/// keeps its last verified bytes, the files are dead-lettered, and once the fault ends `dlq retry`
/// and a run give the exact mirror, including a deletion made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_downloads_never_replace_the_good_copy() {
    for (dest, seed) in [("local", 4u64), ("s3", 9)] {
        let mut corpus = small_corpus(false);
        corpus.seed = seed;
        corpus.files = 80;
        let env = TestEnv::start(corpus).await;
        let _s3;
        let target = if dest == "s3" {
            _s3 = s3_server().await;
            let bucket = format!("corrupt-{seed}-{}", std::process::id());
            create_bucket(&_s3.endpoint, &bucket).await;
            Dest::S3 { endpoint: _s3.endpoint.clone(), bucket, prefix: "m".into() }
        } else {
            env.local_dest("mirror")
        };
        // Part size at its S3 minimum so that some files go up in several parts.
        let config = env.config("corrupt", &target, "[pipeline]\npart_size = \"5MiB\"\nchunk_size = \"256KiB\"");
        let out = run_once(&config).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));

        let tree = env.tree().await;
        let changed: Vec<String> = live_binaries(&tree).iter().take(30).map(|f| f.id.clone()).collect();
        let big = live_binaries(&tree)[30].clone();
        let mut ops: Vec<Value> = changed.iter().map(|id| json!({"op": "update_content", "id": id})).collect();
        // One of them grows past the part size: a multipart upload must be aborted, not completed.
        ops.push(json!({"op": "update_content", "id": big.id, "size": 6 << 20}));
        mutate(&env, ops).await;
        env.control("faults", json!({"corrupt_pct": 100.0})).await;
        let out = run_once(&config).await;
        assert_eq!(out.status.code(), Some(3), "corrupted files must be dead-lettered\n{}", text(&out));
        {
            let (_cfg, store, dst) = open(&config);
            let dead: Vec<String> = store.dead_letters().unwrap().into_iter().map(|d| d.id.0).collect();
            assert_eq!(dead.len(), 31, "{dead:?}");
            let mut checked = 0;
            let mut records = Vec::new();
            store.for_each_file(|r| records.push(r)).unwrap();
            for rec in records {
                let Some(md5) = &rec.md5 else { continue };
                let bytes = dst.get(&rec.key).await.unwrap();
                let got = hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes));
                assert_eq!(&got, md5, "{} no longer holds its last verified bytes", rec.key);
                checked += 1;
            }
            assert!(checked >= 31);
        }

        env.control("faults", json!({})).await;
        mutate(&env, vec![json!({"op": "delete", "id": changed[0]}), json!({"op": "delete", "id": changed[1]})]).await;
        let out = mirrorflow(&["dlq", "retry", config.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let out = run_once(&config).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_mirrors_drive(&env, &config).await;
        let (_cfg, store, _dst) = open(&config);
        assert!(store.dead_letters().unwrap().is_empty());
    }
}

/// Trash a folder `T` holding a folder `A` (files in `A` and in its subfolder), then move `A` back
/// out of `T`: Drive reports a change for `A` only, and the mirror must bring `A`'s subtree back.
/// The same for a folder moved into the scope from outside it (here: from a trashed folder again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_that_comes_back_brings_its_files() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("back", &env.local_dest("mirror"), "");
    let root = env.tree().await.root_id;
    let t = mutate(&env, vec![json!({"op": "create_folder", "parent": root, "name": "T"})]).await["created"][0]
        .as_str()
        .unwrap()
        .to_string();
    let a = mutate(&env, vec![json!({"op": "create_folder", "parent": t, "name": "A"})]).await["created"][0]
        .as_str()
        .unwrap()
        .to_string();
    let sub = mutate(&env, vec![json!({"op": "create_folder", "parent": a, "name": "sub"})]).await["created"][0]
        .as_str()
        .unwrap()
        .to_string();
    let mut ops = Vec::new();
    for i in 0..5 {
        ops.push(json!({"op": "create", "parent": a, "name": format!("a{i}.bin"), "size": 500 + i}));
        ops.push(json!({"op": "create", "parent": sub, "name": format!("s{i}.bin"), "size": 700 + i}));
    }
    mutate(&env, ops).await;
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_mirrors_drive(&env, &config).await;

    mutate(&env, vec![json!({"op": "trash", "id": t})]).await;
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_mirrors_drive(&env, &config).await;

    mutate(&env, vec![json!({"op": "move", "id": a, "new_parent": root})]).await;
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    let back = expected_files(&tree).values().filter(|e| e.name.ends_with(".bin") && e.size < 1000).count();
    assert!(back >= 10, "the files of A and A/sub are live in Drive again ({back})");
    assert_mirrors_drive(&env, &config).await;
}

/// Random everyday changes (freed names reused at once, `x (<id>).ext` names, folders moved into new
/// folders and out of trashed ones, folders renamed to `.`/`..`) caught up in one run: exact mirror,
/// several seeds, to a local folder with trash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_everyday_changes_end_in_an_exact_mirror() {
    for seed in [21u64, 22, 23, 24] {
        let mut corpus = small_corpus(seed % 2 == 0);
        corpus.seed = seed;
        corpus.files = 150;
        corpus.folders = 20;
        let env = TestEnv::start(corpus).await;
        let config = env.config("random", &env.local_dest("mirror"), "dest.deletes = \"trash\"");
        // The hostile corpus holds files Drive will not hand over (abusive, download disabled, a
        // Form): skipped, not dead-lettered, so every run ends with exit 0 and no dead letter.
        let nothing_dead_lettered = |out: &std::process::Output| {
            let (_cfg, store, _dest) = open(&config);
            let reasons: Vec<String> = store.dead_letters().unwrap().into_iter().map(|d| d.reason).collect();
            let ok = out.status.code() == Some(0) && reasons.is_empty();
            assert!(ok, "seed {seed}: {reasons:?}\n{}", text(out));
        };
        nothing_dead_lettered(&run_once(&config).await);
        for round in 0..2 {
            mutate(&env, vec![json!({"op": "random", "count": 150, "seed": seed * 10 + round})]).await;
            nothing_dead_lettered(&run_once(&config).await);
            assert_mirrors_drive(&env, &config).await;
        }
    }
}

/// A full relist (here: the saved change token is rejected) is mark and sweep: files and folders
/// deleted or trashed while the token was lost are removed, not kept forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_a_lost_change_token_removes_what_was_deleted_meanwhile() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("sweep", &env.local_dest("mirror"), "");
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let tree = env.tree().await;
    let files = live_binaries(&tree);
    let folder = tree
        .items
        .iter()
        .find(|i| i.mime_type == "application/vnd.google-apps.folder" && !i.trashed && i.drive_id.is_none())
        .unwrap()
        .id
        .clone();
    let mut ops: Vec<Value> = files.iter().take(5).map(|f| json!({"op": "delete", "id": f.id})).collect();
    ops.push(json!({"op": "trash", "id": folder}));
    mutate(&env, ops).await;
    {
        let (_cfg, store, _dest) = open(&config);
        let mut lost = store.checkpoint().unwrap().unwrap();
        assert!(matches!(lost.phase, mirrorflow::state::FeedPhase::Changes { .. }));
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
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_mirrors_drive(&env, &config).await;
}

/// The state is lost over a full destination (and Drive changed meanwhile): the next run adopts every
/// object that holds its file's exact bytes (nothing is downloaded again but the one object whose bytes
/// were damaged), and once its listing is committed, sweeps what no file owns — a stray object and
/// the object of a file deleted meanwhile — into the trash. Local folder and S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_state_over_a_mirror_adopts_it_and_sweeps_orphans() {
    for dest in ["local", "s3"] {
        let env = TestEnv::start(small_corpus(false)).await;
        let _s3;
        let target = if dest == "s3" {
            _s3 = s3_server().await;
            let bucket = format!("adopt-{}", std::process::id());
            create_bucket(&_s3.endpoint, &bucket).await;
            Dest::S3 { endpoint: _s3.endpoint.clone(), bucket, prefix: "m".into() }
        } else {
            env.local_dest("mirror")
        };
        let config = env.config("adopt", &target, "");
        let out = run_once(&config).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));

        let tree = env.tree().await;
        let files = live_binaries(&tree);
        let (damaged, deleted) = (files[0].clone(), files[1].clone());
        let (cfg, store, dst) = open(&config);
        let damaged_key = store.file(&FileId(damaged.id.clone())).unwrap().unwrap().key;
        let deleted_key = store.file(&FileId(deleted.id.clone())).unwrap().unwrap().key;
        drop(store);
        let mut bytes = dst.get(&damaged_key).await.unwrap().to_vec();
        bytes[0] ^= 0xff;
        let meta = mirrorflow::dest::ObjectMeta::default();
        dst.put(&damaged_key, vec![bytes.into()], &meta).await.unwrap();
        let stray = dst.key("my-drive/left behind by nobody.txt");
        dst.put(&stray, vec![bytes::Bytes::from_static(b"stray")], &meta).await.unwrap();
        std::fs::remove_dir_all(&cfg.state.dir).unwrap();
        mutate(&env, vec![json!({"op": "delete", "id": deleted.id})]).await;

        env.control("stats/reset", json!({})).await;
        let out = run_once(&config).await;
        assert_eq!(out.status.code(), Some(0), "{dest}: {}", text(&out));
        let stats = env.stats().await;
        let fetched: Vec<&String> = stats["media_bytes_by_file"].as_object().unwrap().keys().collect();
        assert_eq!(fetched, [&damaged.id], "{dest}: only the damaged object is downloaded again: {stats}");
        assert_mirrors_drive(&env, &config).await;

        let trashed: Vec<String> = dst.list_keys().await.unwrap().into_iter().map(|(k, _)| k.0).collect();
        for swept in [&stray, &deleted_key] {
            let rel = swept.0.strip_prefix(dst.prefix()).unwrap().trim_start_matches('/');
            assert!(
                trashed.iter().any(|k| k.ends_with(&format!(".trash/{rel}"))),
                "{dest}: {swept} not in the trash: {trashed:?}"
            );
        }
        let (_cfg, store, _dst) = open(&config);
        assert!(!store.adopting().unwrap(), "{dest}: the adoption ends with its sweep");
    }
}
