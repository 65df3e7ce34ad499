//! `mirrorflow verify`: the mirror compared with Drive, key by key, against the emulator and a real S3
//! server (moto) or a local folder; `--checksum` finds same-size corruption; `--repair` puts it right.

use crate::support::*;
use bytes::Bytes;
use mirrorflow::dest::{Destination, ObjectMeta};
use mirrorflow::model::{FileRecord, ObjectKey};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Runs `verify` with `flags` and returns its exit code and JSON report.
async fn verify_json(config: &Path, flags: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(flags);
    args.push(config.to_str().unwrap());
    let out = mirrorflow(&args).await;
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON report: {e}\n{}", text(&out)));
    (out.status.code(), report)
}

fn keys_of(report: &Value, kind: &str) -> BTreeSet<String> {
    report[kind].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_string()).collect()
}

fn relative(dest: &Destination, key: &ObjectKey) -> String {
    let p = dest.prefix();
    if p.is_empty() { key.0.clone() } else { key.0.strip_prefix(&format!("{p}/")).unwrap().to_string() }
}

/// What the test did behind the pipeline's back, as keys relative to the prefix.
struct Damage {
    deleted: BTreeSet<String>,
    truncated: BTreeSet<String>,
    flipped: BTreeSet<String>,
    extra: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

/// Deletes 5 objects, truncates 3 (one a Google export), flips one byte in 2 (same size) and adds 3
/// objects Drive does not have: one in the mirror's folders (extra), two outside them (unknown).
async fn damage(config: &Path) -> Damage {
    let (_cfg, store, dest) = open(config);
    let mut records: Vec<FileRecord> = Vec::new();
    store.for_each_file(|r| records.push(r)).unwrap();
    drop(store);
    records.sort_by(|a, b| a.key.0.cmp(&b.key.0));
    let (docs, binaries): (Vec<_>, Vec<_>) = records
        .into_iter()
        .filter(|r| r.size >= 2)
        .partition(|r| r.mime_type.starts_with("application/vnd.google-apps."));
    assert!(!docs.is_empty() && binaries.len() >= 9, "the corpus has exports and binaries");
    let mut d = Damage {
        deleted: BTreeSet::new(),
        truncated: BTreeSet::new(),
        flipped: BTreeSet::new(),
        extra: BTreeSet::new(),
        unknown: BTreeSet::new(),
    };
    let meta = ObjectMeta::default();
    for r in &binaries[0..5] {
        dest.delete(&r.key).await.unwrap();
        d.deleted.insert(relative(&dest, &r.key));
    }
    for r in [&docs[0], &binaries[5], &binaries[6]] {
        let bytes = dest.get(&r.key).await.unwrap();
        dest.put(&r.key, vec![bytes.slice(0..bytes.len() / 2)], &meta).await.unwrap();
        d.truncated.insert(relative(&dest, &r.key));
    }
    for r in &binaries[7..9] {
        let mut bytes = dest.get(&r.key).await.unwrap().to_vec();
        bytes[0] ^= 0x20;
        dest.put(&r.key, vec![Bytes::from(bytes)], &meta).await.unwrap();
        d.flipped.insert(relative(&dest, &r.key));
    }
    for rel in ["stray.txt", "no-such-folder/deep/x.bin", "my-drive/not in drive.pdf"] {
        dest.put(&dest.key(rel), vec![Bytes::from_static(b"not from drive")], &meta).await.unwrap();
        let kind = if rel.starts_with("my-drive/") { &mut d.extra } else { &mut d.unknown };
        kind.insert(rel.to_string());
    }
    d
}

/// The scenario on one destination. `etag_is_md5`: the store proves a single PUT's md5 in its
/// listing (S3), so a flipped byte shows without `--checksum` there.
async fn damaged_mirror_is_found_and_repaired(dest: Dest, etag_is_md5: bool) {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("verify", &dest, "");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, clean) = verify_json(&config, &[]).await;
    assert_eq!(code, Some(0), "a fresh mirror verifies equal: {clean}");
    assert_eq!(clean["equal"], true);
    let expected = expected_files(&env.tree().await);
    assert_eq!(clean["checked"].as_u64(), Some(expected.len() as u64));

    let d = damage(&config).await;
    let mut mismatched: BTreeSet<String> = d.truncated.clone();
    if etag_is_md5 {
        mismatched.extend(d.flipped.iter().cloned());
    }
    let (code, found) = verify_json(&config, &[]).await;
    assert_eq!(code, Some(4), "{found}");
    assert_eq!(found["equal"], false);
    assert_eq!(keys_of(&found, "missing"), d.deleted);
    assert_eq!(keys_of(&found, "mismatched"), mismatched);
    assert_eq!(keys_of(&found, "extra"), d.extra);
    assert_eq!(keys_of(&found, "unknown"), d.unknown);

    let (code, found) = verify_json(&config, &["--checksum"]).await;
    assert_eq!(code, Some(4), "{found}");
    let all: BTreeSet<String> = d.truncated.union(&d.flipped).cloned().collect();
    assert_eq!(keys_of(&found, "missing"), d.deleted);
    assert_eq!(keys_of(&found, "mismatched"), all, "--checksum finds the same-size corruption");
    assert_eq!(keys_of(&found, "extra"), d.extra);
    for m in found["mismatched"].as_array().unwrap() {
        assert!(m["file_id"].is_string() && m["reason"].is_string(), "{m}");
    }

    let (code, repaired) = verify_json(&config, &["--checksum", "--repair", "--prune-unknown"]).await;
    assert_eq!(code, Some(0), "{repaired}");
    assert_eq!(repaired["equal"], true);
    let (code, again) = verify_json(&config, &["--checksum"]).await;
    assert_eq!(code, Some(0), "{again}");
    assert_exact_mirror(&config, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_local_mirror_is_found_and_repaired() {
    let env_dir = tempfile::tempdir().unwrap();
    damaged_mirror_is_found_and_repaired(Dest::Local(env_dir.path().join("mirror")), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_s3_mirror_is_found_and_repaired() {
    let s3 = s3_server().await;
    create_bucket(&s3.endpoint, "verify").await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "verify".into(), prefix: "m".into() };
    damaged_mirror_is_found_and_repaired(dest, true).await;
}

/// The scenario: a symbolic link inside a local mirror (`my-drive/archive -> elsewhere`) is
/// reported as a link and never followed, so `--repair` removes nothing behind it; objects outside
/// the mirror's folders are reported as unknown and removed only with `--prune-unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_never_removes_through_a_link_nor_outside_the_mirrors_folders() {
    let env = TestEnv::start(small_corpus(false)).await;
    let mirror = env.dir.path().join("mirror");
    let config = env.config("links", &Dest::Local(mirror.clone()), "");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("sub")).unwrap();
    std::fs::write(elsewhere.join("a.txt"), b"not the mirror's").unwrap();
    std::fs::write(elsewhere.join("sub/b.txt"), b"not the mirror's either").unwrap();
    std::os::unix::fs::symlink(&elsewhere, mirror.join("my-drive/archive")).unwrap();
    let put = |rel: &str| {
        let p = mirror.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"not from drive").unwrap();
    };
    for rel in ["my-drive/not in drive.txt", "notes/readme.txt", "top.txt"] {
        put(rel);
    }
    let set = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<BTreeSet<String>>();

    let (code, found) = verify_json(&config, &[]).await;
    assert_eq!(code, Some(4), "{found}");
    assert_eq!(keys_of(&found, "links"), set(&["my-drive/archive"]), "{found}");
    assert_eq!(found["links"][0]["target"].as_str(), Some(elsewhere.to_str().unwrap()));
    assert_eq!(keys_of(&found, "extra"), set(&["my-drive/not in drive.txt"]), "nothing behind the link: {found}");
    assert_eq!(keys_of(&found, "unknown"), set(&["notes/readme.txt", "top.txt"]));

    let (code, after) = verify_json(&config, &["--repair"]).await;
    assert_eq!(code, Some(4), "the link and the unknown objects remain: {after}");
    assert!(keys_of(&after, "extra").is_empty(), "{after}");
    assert_eq!(keys_of(&after, "unknown"), set(&["notes/readme.txt", "top.txt"]));
    assert_eq!(std::fs::read(elsewhere.join("a.txt")).unwrap(), b"not the mirror's");
    assert_eq!(std::fs::read(elsewhere.join("sub/b.txt")).unwrap(), b"not the mirror's either");
    assert!(mirror.join("notes/readme.txt").exists() && mirror.join("top.txt").exists());

    let (code, after) = verify_json(&config, &["--repair", "--prune-unknown"]).await;
    assert_eq!(code, Some(4), "the link remains: {after}");
    assert!(keys_of(&after, "unknown").is_empty(), "{after}");
    assert!(!mirror.join("top.txt").exists(), "removed per `deletes` (trash)");
    assert_eq!(std::fs::read(mirror.join(".trash/top.txt")).unwrap(), b"not from drive");
    assert!(std::fs::symlink_metadata(mirror.join("my-drive/archive")).unwrap().is_symlink());
    assert_eq!(std::fs::read(elsewhere.join("a.txt")).unwrap(), b"not the mirror's");
    assert_eq!(std::fs::read(elsewhere.join("sub/b.txt")).unwrap(), b"not the mirror's either");

    std::fs::remove_file(mirror.join("my-drive/archive")).unwrap();
    let (code, clean) = verify_json(&config, &[]).await;
    assert_eq!(code, Some(0), "{clean}");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}

/// Hostile names, duplicate names, Google exports and a shared drive verify equal in both key
/// alphabets; the files Drive will not hand over are listed as skipped with their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_mirror_of_the_hostile_corpus_verifies_equal() {
    let s3 = s3_server().await;
    create_bucket(&s3.endpoint, "hostile").await;
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let abusive: Vec<String> = tree.items.iter().filter(|i| i.abusive).map(|i| i.id.clone()).collect();
    assert!(!abusive.is_empty());
    let named = |name: &str| tree.items.iter().find(|i| i.name == name).map(|i| i.id.clone()).unwrap();
    let disabled = named(drive_emulator::DOWNLOAD_DISABLED_NAME);
    let form = named(drive_emulator::FORM_NAME);
    let local = env.local_dest("mirror");
    let supa = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "hostile".into(), prefix: "supa".into() };
    for (name, dest, extra) in [("local", local, ""), ("supabase", supa, "dest.keys = \"supabase\"")] {
        let config = env.config(name, &dest, extra);
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(0), "refused files are skipped, not dead-lettered: {}", text(&out));
        let (code, report) = verify_json(&config, &[]).await;
        assert_eq!(code, Some(0), "{name}: {report}");
        let refused = abusive.len() as u64 + 1; // and the download-disabled file
        assert_eq!(report["checked"].as_u64(), Some(expected_files(&tree).len() as u64 + refused));
        let skipped = report["skipped"].as_array().unwrap();
        let reason_of = |id: &str| {
            let entry = skipped.iter().find(|s| s["file_id"] == id).unwrap_or_else(|| panic!("{id}: {report}"));
            entry["reason"].as_str().unwrap().to_string()
        };
        for id in &abusive {
            assert!(reason_of(id).starts_with("cannotDownloadAbusiveFile"), "{report}");
        }
        assert!(reason_of(&disabled).starts_with("fileNotDownloadable"), "{report}");
        assert!(reason_of(&form).starts_with("noExport"), "{report}");
        let (code, report) = verify_json(&config, &["--checksum"]).await;
        assert_eq!(code, Some(0), "{name} --checksum: {report}");
    }
}

/// A rename and a deletion Drive made that the mirror has not followed yet are differences; the
/// repair runs the pipeline, which follows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_not_yet_mirrored_are_differences_until_repaired() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("behind", &env.local_dest("mirror"), "");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_cfg, store, dest) = open(&config);
    let mut records: Vec<FileRecord> = Vec::new();
    store.for_each_file(|r| records.push(r)).unwrap();
    drop(store);
    records.retain(|r| r.md5.is_some());
    records.sort_by(|a, b| a.key.0.cmp(&b.key.0));
    let (renamed, deleted) = (&records[0], &records[1]);
    let ops = serde_json::json!({"ops": [
        {"op": "rename", "id": renamed.id.0, "name": "renamed by verify test.bin"},
        {"op": "delete", "id": deleted.id.0},
    ]});
    env.control("mutate", ops).await;
    let (code, found) = verify_json(&config, &[]).await;
    assert_eq!(code, Some(4), "{found}");
    let missing = keys_of(&found, "missing");
    assert_eq!(missing.len(), 1, "{found}");
    assert!(missing.iter().next().unwrap().ends_with("/renamed by verify test.bin"), "{found}");
    let extra: BTreeSet<String> = [relative(&dest, &renamed.key), relative(&dest, &deleted.key)].into();
    assert_eq!(keys_of(&found, "extra"), extra);
    let (code, report) = verify_json(&config, &["--repair"]).await;
    assert_eq!(code, Some(0), "{report}");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}

/// A running pipeline holds the state: `verify` beside it is answered by the running mirror (its
/// admin socket) instead of being refused: it reports the mirror as it stands (whether or not the
/// initial sync is done; `operate::` checks the answer equals a stopped mirror's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_beside_a_running_pipeline_is_answered_by_it() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("busy", &env.local_dest("mirror"), "");
    let child = spawn_continuous(&config);
    let status = env.dir.path().join("busy-state").join("status.json");
    poll_until(|| status.exists()).await;
    let out = mirrorflow(&["verify", config.to_str().unwrap()]).await;
    assert_ne!(out.status.code(), Some(2), "refused beside a running pipeline: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("checked"), "{}", text(&out));
    sigterm_and_wait(child).await;
}

/// `[verify] every`: a running pipeline finds an object deleted behind its back and one added behind
/// it, puts the first back and trashes the second through the pipeline, then a later run finds the
/// mirror clean; `status.json` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_verify_repairs_an_object_deleted_behind_the_pipelines_back() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("scheduled", &env.local_dest("mirror"), "[verify]\nevery = \"1s\"");
    let expected = expected_files(&env.tree().await);
    let mirror = env.dir.path().join("mirror");
    let child = spawn_continuous(&config);
    poll_until(|| count_files(&mirror) == expected.len()).await;
    let status_file = env.dir.path().join("scheduled-state").join("status.json");
    let verify_status = || -> Value {
        std::fs::read(&status_file).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()).unwrap_or_default()
            ["verify"]
            .clone()
    };
    // Wait for a clean run first, so the deletion below is what the next run finds.
    poll_until(|| verify_status()["last_clean_unix_ms"].is_u64()).await;
    let victim = walk(&mirror).into_iter().find(|p| !p.to_string_lossy().contains("/.trash/")).unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    // And an object no Drive file maps to, in a folder Drive does not have.
    let stray = mirror.join("my-drive/no such folder/stray.txt");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"not from drive").unwrap();
    let deleted_at = mirrorflow::state::unix_ms();
    poll_until(|| std::fs::read(&victim).is_ok_and(|b| b == bytes)).await;
    poll_until(|| !stray.exists()).await;
    let trashed = mirror.join(".trash/my-drive/no such folder/stray.txt");
    assert_eq!(std::fs::read(&trashed).unwrap(), b"not from drive", "the stray is trashed per `deletes`");
    poll_until(|| verify_status()["last_clean_unix_ms"].as_u64().is_some_and(|t| t > deleted_at)).await;
    let status = verify_status();
    assert!(status["runs"].as_u64().unwrap() >= 2, "{status}");
    let out = sigterm_and_wait(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = mirrorflow(&["status", config.to_str().unwrap()]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("scheduled verify: "), "{}", text(&out));
    assert_exact_mirror(&config, &expected).await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}
