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
