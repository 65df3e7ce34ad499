//! `[destination] versions = N`: the contents a file's object held before it was replaced or removed
//! are kept under `.versions/<key>/`, at most N per key, listed by `versions list`, restored by
//! `versions restore`, and indexed in `file_versions`.

use crate::support::pg;
use crate::support::*;
use md5::Digest;
use serde_json::{Value, json};

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(md5::Md5::digest(bytes))
}

async fn run_once(config: &str) {
    let out = mirrorflow(&["run", "--once", config]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

async fn versions_list(config: &str, file: &str) -> Vec<Value> {
    let out = mirrorflow(&["versions", "list", "--json", config, file]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// `(version_number, checksum, is_current)` of a file's `file_versions` rows, by version.
async fn indexed_versions(db: &str, file: &str) -> Vec<(i64, Option<String>, bool)> {
    let client = pg::connect(db).await;
    client
        .query(
            "SELECT version_number, checksum, is_current FROM mirrorflow.file_versions
             WHERE drive_file_id = $1 ORDER BY version_number",
            &[&file],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_versions_keep_the_two_previous_contents_and_one_comes_back_on_restore() {
    let env = TestEnv::start(small_corpus(false)).await;
    let db = pg::fresh_database().await;
    let dir = env.dir.path().join("mirror");
    let extra = format!("dest.versions = 2\n[index]\nurl = \"{db}\"\n");
    let config = env.config("versions", &Dest::Local(dir.clone()), &extra);
    let c = config.to_str().unwrap();
    run_once(c).await;

    let tree = env.tree().await;
    let file = tree
        .items
        .iter()
        .find(|i| i.size.unwrap_or(0) > 0 && i.export_sizes.is_none() && i.parents.contains(&tree.root_id))
        .unwrap()
        .clone();
    let key_of = || {
        let (_cfg, store, dest) = open(&config);
        let key = store.file(&mirrorflow::model::FileId(file.id.clone())).unwrap().unwrap().key;
        mirrorflow::index::rows::relative(&key, dest.prefix())
    };
    let key = key_of();
    let mut contents = vec![std::fs::read(dir.join(&key)).unwrap()];
    for size in [1001u64, 2002, 3003] {
        env.control("mutate", json!({"ops": [{"op": "update_content", "id": file.id, "size": size}]})).await;
        run_once(c).await;
        contents.push(std::fs::read(dir.join(&key)).unwrap());
        assert_eq!(contents.last().unwrap().len() as u64, size);
    }
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    assert_verifies_equal(&config).await;

    // Exactly the two previous contents are kept, oldest first, and listed.
    let listed = versions_list(c, &file.id).await;
    let md5s: Vec<&str> = listed.iter().map(|v| v["md5"].as_str().unwrap()).collect();
    assert_eq!(md5s, [md5_hex(&contents[1]), md5_hex(&contents[2])]);
    let kept_dir = dir.join(".versions").join(&key);
    let mut on_disk: Vec<String> =
        std::fs::read_dir(&kept_dir).unwrap().map(|e| md5_hex(&std::fs::read(e.unwrap().path()).unwrap())).collect();
    on_disk.sort();
    let mut want = vec![md5_hex(&contents[1]), md5_hex(&contents[2])];
    want.sort();
    assert_eq!(on_disk, want, "the oldest content was pruned, the two previous are objects");
    assert_eq!(versions_list(c, &key).await.len(), 2, "a file is found by its key too");
    let rows = indexed_versions(&db, &file.id).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.2).map(|r| r.1.clone()).collect::<Vec<_>>(), [Some(md5_hex(&contents[3]))]);

    // Restore the first kept content: the current one is kept first, so nothing is lost.
    let first = listed[0]["name"].as_str().unwrap().to_string();
    let out = mirrorflow(&["versions", "restore", c, &file.id, "--to", &first]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(md5_hex(&std::fs::read(dir.join(&key)).unwrap()), md5_hex(&contents[1]));
    let after: Vec<String> =
        versions_list(c, &file.id).await.iter().map(|v| v["md5"].as_str().unwrap().to_string()).collect();
    assert!(after.contains(&md5_hex(&contents[3])), "the content replaced by the restore is kept: {after:?}");
    let out = mirrorflow(&["versions", "restore", c, &file.id, "--to", "no-such-version"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = mirrorflow(&["log", "--file", &file.id, c]).await;
    assert!(text(&out).contains("restored"), "{}", text(&out));

    // Deleted in Drive: its last content is kept too, and its versions outlive it in the index.
    env.control("mutate", json!({"ops": [{"op": "delete", "id": file.id}]})).await;
    run_once(c).await;
    let kept: Vec<String> =
        versions_list(c, &file.id).await.iter().map(|v| v["md5"].as_str().unwrap().to_string()).collect();
    assert!(kept.contains(&md5_hex(&contents[1])), "the restored content, removed, is kept: {kept:?}");
    assert!(kept.len() <= 2, "at most two per key: {kept:?}");
    let rows = indexed_versions(&db, &file.id).await;
    assert_eq!(rows.len(), kept.len(), "{rows:?}");
    assert!(rows.iter().all(|r| !r.2), "no current content once the file is gone: {rows:?}");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}

/// Every kept version's object exists and holds the bytes its record says (a crash never files new
/// content under an old version's name), and no key keeps more than `n`.
async fn assert_kept_versions_hold_their_content(config: &std::path::Path, n: usize) {
    let (_cfg, store, dest) = open(config);
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store.record_ids_page(mirrorflow::state::RecordKind::Version, after.as_ref(), 100).unwrap();
        let Some(last) = page.last().cloned() else { break };
        ids.extend(page);
        after = Some(last);
    }
    let mut checked = 0;
    for id in ids {
        let kept = store.kept_versions(&id).unwrap();
        let mut per_key: std::collections::BTreeMap<&str, usize> = Default::default();
        for v in &kept {
            *per_key.entry(v.key.as_str()).or_default() += 1;
            let bytes = dest.get(&v.object).await.unwrap_or_else(|e| panic!("kept version {} of {id}: {e}", v.object));
            assert_eq!(Some(md5_hex(&bytes)), v.md5, "content of {}", v.object);
            assert_eq!(bytes.len() as u64, v.size);
            checked += 1;
        }
        assert!(per_key.values().all(|c| *c <= n), "{id} keeps more than {n} per key: {kept:?}");
    }
    assert!(checked > 0, "the changes kept no version at all");
}

/// Random changes caught up by runs killed at many amounts of destination work (copies to
/// `.versions/` among them), with versions and the index on: the mirror is exact, every kept
/// version holds what its record says, and the index equals the mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_while_keeping_versions_lose_nothing_and_misfile_nothing() {
    for seed in [41u64, 42, 43, 44] {
        let mut corpus = small_corpus(seed % 2 == 0);
        corpus.seed = seed;
        corpus.files = 120;
        corpus.folders = 15;
        let env = TestEnv::start(corpus).await;
        let db = pg::fresh_database().await;
        let dir = env.dir.path().join("mirror");
        let settings = format!("dest.versions = 2\n[index]\nurl = \"{db}\"\n");
        let dest = Dest::Local(dir.clone());
        let config = env.config("work", &dest, &settings);
        run_once(config.to_str().unwrap()).await;
        for round in 0..2u64 {
            env.control("mutate", json!({"ops": [{"op": "random", "count": 120, "seed": seed * 10 + round}]})).await;
            let mut crashes = 0;
            for writes in [2u64, 5, 9, 14, 20, 27, 35, 50] {
                let crashing =
                    env.config("work", &dest, &format!("{settings}\n[testing]\ncrash_after_writes = {writes}"));
                let out = mirrorflow(&["run", "--once", crashing.to_str().unwrap()]).await;
                match out.status.code() {
                    None => crashes += 1,
                    Some(0) => {}
                    other => panic!("seed {seed}: unexpected exit {other:?}\n{}", text(&out)),
                }
            }
            assert!(crashes >= 3, "seed {seed}: too few crashes landed ({crashes})");
            let config = env.config("work", &dest, &settings);
            run_once(config.to_str().unwrap()).await;
            assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
            assert_kept_versions_hold_their_content(&config, 2).await;
            pg::assert_index_equals_mirror(&config, &dir, &db).await;
        }
    }
}

/// The id of the one file a `mutate` created.
async fn create_file(env: &TestEnv, parent: &str, name: &str, size: u64) -> String {
    let out =
        env.control("mutate", json!({"ops": [{"op": "create", "parent": parent, "name": name, "size": size}]})).await;
    out["created"][0].as_str().unwrap_or_else(|| panic!("created: {out}")).to_string()
}

/// The scenario: X.txt (file A) gets versions, A is deleted, a new X.txt (file B) takes its
/// key. Restoring A there would overwrite B's object: restore refuses (exit 2, naming B) and B's
/// bytes stay; `--as` writes A's version to a free key outside the mirror's folders; a state bound to
/// another destination is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_removed_file_never_overwrites_the_file_that_took_its_key() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("taken", &Dest::Local(dir.clone()), "dest.versions = 2\n");
    let c = config.to_str().unwrap();
    run_once(c).await;
    let root = env.tree().await.root_id;
    let a = create_file(&env, &root, "X.txt", 100).await;
    run_once(c).await;
    env.control("mutate", json!({"ops": [{"op": "update_content", "id": a, "size": 200}]})).await;
    run_once(c).await;
    env.control("mutate", json!({"ops": [{"op": "delete", "id": a}]})).await;
    run_once(c).await;
    let b = create_file(&env, &root, "X.txt", 300).await;
    run_once(c).await;

    let (_cfg, store, dest) = open(&config);
    let b_key = store.file(&mirrorflow::model::FileId(b.clone())).unwrap().unwrap().key;
    let kept = store.kept_versions(&mirrorflow::model::FileId(a.clone())).unwrap();
    drop(store);
    assert!(kept.iter().all(|v| v.key == b_key), "B took A's key: {kept:?} / {b_key}");
    let rel = mirrorflow::index::rows::relative(&b_key, dest.prefix());
    let b_bytes = std::fs::read(dir.join(&rel)).unwrap();
    assert_eq!(b_bytes.len(), 300);

    let first = kept[0].name.clone();
    let out = mirrorflow(&["versions", "restore", c, &a, "--to", &first]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(&b), "the refusal names the holder: {}", text(&out));
    assert_eq!(std::fs::read(dir.join(&rel)).unwrap(), b_bytes, "B's object is untouched");

    let out = mirrorflow(&["versions", "restore", c, &a, "--to", &first, "--as", "my-drive/X again.txt"]).await;
    assert_eq!(out.status.code(), Some(2), "a key in the mirror's folders is refused: {}", text(&out));
    let out = mirrorflow(&["versions", "restore", c, &a, "--to", &first, "--as", "restored/X.txt"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let restored = std::fs::read(dir.join("restored/X.txt")).unwrap();
    assert_eq!(Some(md5_hex(&restored)), kept[0].md5, "A's version at the named key");
    let out = mirrorflow(&["versions", "restore", c, &a, "--to", &first, "--as", "restored/X.txt"]).await;
    assert_eq!(out.status.code(), Some(2), "a restore never overwrites an object: {}", text(&out));
    assert_eq!(std::fs::read(dir.join(&rel)).unwrap(), b_bytes);

    // The same state under a configuration naming another destination.
    let other = env.config("taken", &Dest::Local(env.dir.path().join("other")), "dest.versions = 2\n");
    let out = mirrorflow(&["versions", "restore", other.to_str().unwrap(), &a, "--to", &first]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("belongs to destination"), "{}", text(&out));
}

/// A kept version is a file of its own on a local folder, not a hard link: writing into the live file
/// in place after a restore, or into the trashed copy of a removed file, leaves every kept version
/// holding what its record says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_version_is_a_copy_of_its_own_on_a_local_folder() {
    use std::io::Write;
    let env = TestEnv::start(small_corpus(false)).await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("copies", &Dest::Local(dir.clone()), "dest.versions = 2\n");
    let c = config.to_str().unwrap();
    run_once(c).await;
    let root = env.tree().await.root_id;
    let id = create_file(&env, &root, "kept.bin", 100).await;
    run_once(c).await;
    env.control("mutate", json!({"ops": [{"op": "update_content", "id": id, "size": 200}]})).await;
    run_once(c).await;
    let first = versions_list(c, &id).await[0]["name"].as_str().unwrap().to_string();
    let out = mirrorflow(&["versions", "restore", c, &id, "--to", &first]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let append = |path: std::path::PathBuf| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"written in place").unwrap();
    };
    append(dir.join("my-drive/kept.bin"));
    assert_kept_versions_hold_their_content(&config, 3).await;

    env.control("mutate", json!({"ops": [{"op": "delete", "id": id}]})).await;
    run_once(c).await;
    append(dir.join(".trash/my-drive/kept.bin"));
    assert_kept_versions_hold_their_content(&config, 3).await;
}
