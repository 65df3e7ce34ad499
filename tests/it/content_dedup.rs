//! Content dedup: a new file whose bytes are already mirrored under another key (same md5) is a
//! server-side copy of that object, not a download; each copy is an object of its own, so removing
//! or changing one never touches another.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn media_bytes(stats: &Value, id: &str) -> u64 {
    stats["media_bytes_by_file"][id].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_already_mirrored_is_copied_not_downloaded_and_copies_stay_independent() {
    let env = TestEnv::start(small_corpus(false)).await;
    let tree = env.tree().await;
    let config = env.config("dedup", &env.local_dest("mirror"), "");
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Three mirrored files get two copies each, one of them in another folder.
    let originals: Vec<_> = tree
        .items
        .iter()
        .filter(|i| i.size.unwrap_or(0) > 0 && i.export_sizes.is_none() && i.parents.contains(&tree.root_id))
        .take(3)
        .cloned()
        .collect();
    assert_eq!(originals.len(), 3);
    let folder = tree.items.iter().find(|i| i.mime_type.ends_with(".folder") && i.drive_id.is_none()).unwrap();
    let mut ops = Vec::new();
    for (n, o) in originals.iter().enumerate() {
        ops.push(json!({"op": "copy", "id": o.id, "parent": tree.root_id, "name": format!("copy {n} of {}", o.name)}));
        ops.push(json!({"op": "copy", "id": o.id, "parent": folder.id, "name": format!("another copy {n}")}));
    }
    let created: Vec<String> = env.control("mutate", json!({"ops": ops})).await["created"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(created.len(), 6, "the emulator made six copies");
    let before = env.stats().await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    let keys = assert_exact_mirror(&config, &expected_files(&tree)).await;
    let after = env.stats().await;
    for id in &created {
        assert_eq!(media_bytes(&after, id), media_bytes(&before, id), "the copy {id} was downloaded: {after}");
    }

    // A copy changes: only it is downloaded, the original's object stays as it was.
    let (original, copy) = (&originals[0].id, &created[0]);
    env.control("mutate", json!({"ops": [{"op": "update_content", "id": copy, "size": 777}]})).await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert!(media_bytes(&env.stats().await, copy) > 0, "new bytes come from Drive");

    // The original is deleted: its copies keep their bytes.
    env.control("mutate", json!({"ops": [{"op": "delete", "id": original}]})).await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    let now = assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert!(!now.contains_key(original.as_str()) && now.contains_key(created[1].as_str()));
    assert_eq!(now[created[1].as_str()], keys[created[1].as_str()]);
    assert_verifies_equal(&config).await;
}

/// Each binary content among `ids`, with the files holding it (only contents held by several).
fn duplicated_contents(tree: &drive_emulator::EmuTree, ids: &[&String]) -> BTreeMap<String, Vec<String>> {
    let mut by_md5: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in tree.items.iter().filter(|i| ids.contains(&&i.id) && i.size.unwrap_or(0) > 0) {
        if let Some(md5) = &item.md5 {
            by_md5.entry(md5.clone()).or_default().push(item.id.clone());
        }
    }
    by_md5.retain(|_, files| files.len() > 1);
    by_md5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_downloads_each_distinct_content_once() {
    let env = TestEnv::start(small_corpus(false)).await;
    let tree = env.tree().await;
    // Before the first run, the last four files listed (so that their copies, listed after them, are
    // planned while they download) get copies: beside them under the same name (a file uploaded
    // twice) and under another, in another folder, and in the shared drive.
    let originals: Vec<_> = tree
        .items
        .iter()
        .filter(|i| i.size.unwrap_or(0) > 0 && i.export_sizes.is_none() && i.drive_id.is_none() && !i.trashed)
        .rev()
        .take(4)
        .cloned()
        .collect();
    assert_eq!(originals.len(), 4);
    let folder = tree.items.iter().find(|i| i.mime_type.ends_with(".folder") && i.drive_id.is_none()).unwrap();
    let drive = &tree.drives[0].id;
    let mut ops = Vec::new();
    for (n, o) in originals.iter().enumerate() {
        ops.push(json!({"op": "copy", "id": o.id, "parent": o.parents[0], "name": format!("{n} {}", o.name)}));
        ops.push(json!({"op": "copy", "id": o.id, "parent": folder.id, "name": format!("copy {n}")}));
    }
    // Listed last: a new file under a name in flight waits for that name's event anyway.
    for (n, o) in originals.iter().enumerate() {
        ops.push(json!({"op": "copy", "id": o.id, "parent": o.parents[0], "name": o.name}));
        ops.push(json!({"op": "copy", "id": o.id, "parent": drive, "name": format!("shared copy {n}")}));
    }
    let created = env.control("mutate", json!({"ops": ops})).await["created"].as_array().map(Vec::len);
    assert_eq!(created, Some(16), "the emulator made sixteen copies");

    // Slow answers keep the originals' downloads in flight while their copies are planned.
    env.control("faults", json!({"latency_ms": 100})).await;
    let config = env.config("dedup-first", &env.local_dest("mirror"), "");
    let c = config.to_str().unwrap();
    let before = env.stats().await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    let expected = expected_files(&tree);
    assert_exact_mirror(&config, &expected).await;
    let after = env.stats().await;
    let ids: Vec<&String> = expected.keys().collect();
    let groups = duplicated_contents(&tree, &ids);
    assert!(groups.len() >= 4, "the copies share their originals' contents: {groups:?}");
    for (md5, files) in &groups {
        let fetched: Vec<&String> =
            files.iter().filter(|id| media_bytes(&after, id) > media_bytes(&before, id)).collect();
        assert_eq!(fetched.len(), 1, "content {md5} held by {files:?} was downloaded by {fetched:?}");
    }
    assert_verifies_equal(&config).await;
}

/// Mirror A; in Drive copy A to B, change A's content (same size), rename B; a run is killed right after
/// A's new bytes are published (its record still says the old content); A is renamed; the next run
/// must not copy A's object (newer bytes than its record) as B's content: a copy source is checked
/// against Drive's md5 before the copy, and an object a crash may have left ahead of its record is
/// fetched again. Checked on a local folder (the file's bytes are hashed) and on S3 (the `drive-md5`
/// metadata and the ETag).
async fn a_crash_never_lets_a_copy_take_bytes_newer_than_the_record(dest: Dest, env: TestEnv) {
    let tree = env.tree().await;
    let config = env.config("dedup", &dest, "");
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let a = tree
        .items
        .iter()
        .find(|i| i.size.unwrap_or(0) > 0 && i.export_sizes.is_none() && i.parents.contains(&tree.root_id))
        .cloned()
        .unwrap();
    let ops = json!({"ops": [{"op": "copy", "id": a.id, "parent": tree.root_id, "name": "B.bin"}]});
    let b = env.control("mutate", ops).await["created"][0].as_str().unwrap().to_string();
    let ops = json!({"ops": [
        {"op": "update_content", "id": a.id},
        {"op": "rename", "id": b, "name": "B renamed.bin"},
    ]});
    env.control("mutate", ops).await;
    let crashing = env.config("dedup", &dest, "[testing]\ncrash_after_writes = 1");
    let out = mirrorflow(&["run", "--once", crashing.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), None, "the run is killed after its first write\n{}", text(&out));
    env.control("mutate", json!({"ops": [{"op": "rename", "id": a.id, "name": "A renamed.bin"}]})).await;

    // The same state and destination, without the crash.
    let config = env.config("dedup", &dest, "");
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert_verifies_equal(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_never_lets_a_copy_take_bytes_newer_than_the_record_on_a_local_folder() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dest = env.local_dest("mirror");
    a_crash_never_lets_a_copy_take_bytes_newer_than_the_record(dest, env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_never_lets_a_copy_take_bytes_newer_than_the_record_on_s3() {
    let s3 = s3_server().await;
    create_bucket(&s3.endpoint, "dedupcrash").await;
    let env = TestEnv::start(small_corpus(false)).await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "dedupcrash".into(), prefix: "m".into() };
    a_crash_never_lets_a_copy_take_bytes_newer_than_the_record(dest, env).await;
}
