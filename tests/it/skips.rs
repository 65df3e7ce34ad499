//! Files Drive will not hand over (issue 16): downloads disabled by the owner, a Form (no export),
//! a file flagged abusive without `acknowledge_abuse`. Each is skipped with its reason (never a
//! dead letter: exit 0), shown in `status`, absent from the mirror, and not asked for again until it
//! changes: a relist of the same versions downloads nothing, a new version is tried again.

use crate::support::*;
use mirrorflow::model::FileId;
use serde_json::{Value, json};

async fn run_once(config: &std::path::Path) -> std::process::Output {
    mirrorflow(&["run", "--once", config.to_str().unwrap()]).await
}

/// Drive's answers to downloads (`files.get.media <status>`) in the emulator's stats.
fn media_requests(stats: &Value, status: u16) -> u64 {
    stats["requests"][format!("files.get.media {status}")].as_u64().unwrap_or(0)
}

/// Makes the next run list everything again (Drive rejects the saved change token).
fn lose_change_token(config: &std::path::Path) {
    let (_cfg, store, _dest) = open(config);
    let mut lost = store.checkpoint().unwrap().unwrap();
    for (_, token) in &mut lost.feeds {
        *token = "no-such-token".into();
    }
    let next_seq = store.next_seq().unwrap();
    let batch = mirrorflow::state::CommitBatch { checkpoint: Some(lost), next_seq, ..Default::default() };
    store.apply(&batch).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_drive_will_not_hand_over_are_skipped_with_their_reason_and_not_asked_for_again() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let named = |name: &str| tree.items.iter().find(|i| i.name == name).map(|i| i.id.clone()).unwrap();
    let (disabled, form) = (named(drive_emulator::DOWNLOAD_DISABLED_NAME), named(drive_emulator::FORM_NAME));
    let abusive: Vec<String> = tree.items.iter().filter(|i| i.abusive).map(|i| i.id.clone()).collect();
    assert_eq!(abusive.len(), 1, "the hostile corpus flags one file");
    let config = env.config("skips", &env.local_dest("mirror"), "");

    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "refused files are skipped, not dead-lettered\n{}", text(&out));
    // Absent from the destination (the exact mirror leaves them out and allows nothing extra).
    assert_exact_mirror(&config, &expected_files(&tree)).await;
    let stats = env.stats().await;
    let fetched = stats["media_bytes_by_file"].as_object().unwrap();
    assert!(!fetched.contains_key(&disabled), "a download-disabled file was downloaded: {stats}");
    assert_eq!(media_requests(&stats, 403), 1, "only the abusive file's download is refused: {stats}");

    let status = mirrorflow(&["status", "--json", config.to_str().unwrap()]).await;
    let v: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&status)));
    let run = &v["last_run"]["this_run"];
    assert_eq!((run["download_disabled"].as_u64(), run["abusive"].as_u64()), (Some(1), Some(1)), "{v}");
    assert!(run["no_export"].as_u64() >= Some(1), "{v}");
    assert_eq!(run["dead_lettered"].as_u64(), Some(0), "{v}");
    {
        let (_cfg, store, _dest) = open(&config);
        let reason = |id: &str| store.skip_record(&FileId(id.into())).unwrap().map(|r| r.reason);
        assert_eq!(reason(&disabled).as_deref(), Some("download_disabled"));
        assert_eq!(reason(&form).as_deref(), Some("no_export"));
        assert_eq!(reason(&abusive[0]).as_deref(), Some("abusive"));
        for id in [&disabled, &form, &abusive[0]] {
            assert!(store.file(&FileId(id.clone())).unwrap().is_none(), "{id} has a record");
        }
        assert!(store.dead_letters().unwrap().is_empty());
    }

    // The same versions, listed again: nothing is downloaded, the abusive file is not asked for.
    lose_change_token(&config);
    env.control("stats/reset", json!({})).await;
    let again = run_once(&config).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let stats = env.stats().await;
    assert!(stats["requests"]["files.list 200"].as_u64() > Some(0), "no relist happened: {stats}");
    assert_eq!(stats["bytes_served"]["media"].as_u64(), Some(0), "the relist downloaded bytes: {stats}");
    assert_eq!(media_requests(&stats, 403), 0, "the abusive file was asked for again: {stats}");

    // A new version of the abusive file is tried again (and refused again).
    env.control("mutate", json!({"ops": [{"op": "rename", "id": abusive[0], "name": "renamed.exe"}]})).await;
    env.control("stats/reset", json!({})).await;
    let changed = run_once(&config).await;
    assert_eq!(changed.status.code(), Some(0), "{}", text(&changed));
    assert_eq!(media_requests(&env.stats().await, 403), 1, "a new version is asked for");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_download_quota_is_used_up_is_deferred_not_dead_lettered() {
    let env = TestEnv::start(small_corpus(false)).await;
    let tree = env.tree().await;
    let expected = expected_files(&tree);
    let victim = tree.items.iter().find(|i| expected.contains_key(&i.id) && i.size.unwrap_or(0) > 0).unwrap();
    env.control("faults", json!({"quota_exceeded_ids": [victim.id]})).await;
    let config = env.config("quota", &env.local_dest("mirror"), "");
    let out = run_once(&config).await;
    assert_eq!(out.status.code(), Some(0), "a quota refusal is not a dead letter\n{}", text(&out));
    let (_cfg, store, _dest) = open(&config);
    let rec = store.skip_record(&FileId(victim.id.clone())).unwrap().expect("deferred");
    assert_eq!(rec.reason, "quota_deferred");
    let until = rec.until_unix_ms.unwrap();
    assert!(until >= mirrorflow::state::unix_ms() + 5 * 3600 * 1000, "deferred for hours: {rec:?}");
    assert!(store.file(&FileId(victim.id.clone())).unwrap().is_none());
    assert!(store.dead_letters().unwrap().is_empty());
}
