//! Files Drive hands over only as its reference documents, round 2: a shortcut's target that needs a
//! resource key (`shortcutDetails.targetResourceKey`, sent in `X-Goog-Drive-Resource-Keys`),
//! `acknowledgeAbuse` (files.get: it "applies only … if the user is the owner of the file or an
//! organizer of the shared drive"), and Google Vids ("files.download … the only way to download
//! Google Vids files": a long-running operation polled until it gives a download URI).

use crate::support::*;
use mirrorflow::model::FileId;
use serde_json::{Value, json};

async fn mutate(env: &TestEnv, ops: Vec<Value>) -> Vec<String> {
    let r = env.control("mutate", json!({ "ops": ops })).await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
    r["created"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

async fn run_once(config: &std::path::Path) {
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn requests(stats: &Value, key: &str) -> u64 {
    stats["requests"][key].as_u64().unwrap_or(0)
}

/// `follow`: a shortcut to another user's link-shared file the user never opened (Drive shows it,
/// metadata and bytes, only to requests carrying its key) is looked up and downloaded with the key
/// the shortcut names, and holds the target's bytes, not a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_shortcut_reaches_a_target_that_needs_its_resource_key() {
    let env = TestEnv::start(small_corpus(false)).await;
    let root = env.tree().await.root_id;
    let target = mutate(&env, vec![json!({"op": "create_link_shared", "name": "by-link.pdf", "size": 5_432})]).await;
    let target = target[0].clone();
    let op = json!({"op": "create_shortcut", "parent": root, "name": "Shortcut to by-link", "target": target});
    let shortcut = mutate(&env, vec![op]).await[0].clone();

    let config = env.config("follow", &env.local_dest("mirror"), "src.shortcuts = \"follow\"");
    run_once(&config).await;
    let tree = env.tree().await;
    let expected = expected_files_following(&tree);
    let size = tree.items.iter().find(|i| i.id == target).unwrap().size.unwrap();
    assert_eq!(expected[&shortcut].size, size, "the harness expects the target's bytes");
    let keys = assert_exact_mirror(&config, &expected).await;
    assert!(!keys[&shortcut].0.ends_with(".url"), "followed to the bytes, not a link: {:?}", keys[&shortcut]);
    let stats = env.stats().await;
    assert_eq!(stats["media_bytes_by_file"][&target].as_u64(), Some(size), "{stats}");
}

/// `acknowledge_abuse = true`: the abuse-flagged file the user owns is downloaded (acknowledged);
/// the one another user owns (shared with the user) cannot be acknowledged by them, so it is skipped
/// with that reason, and not asked for again by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_abuse_is_used_only_where_it_applies_and_others_are_skipped_once() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let owned = tree.items.iter().find(|i| i.abusive).unwrap().clone();
    let foreign = tree.items.iter().find(|i| i.name == "plan.txt").unwrap().clone();
    env.control("faults", json!({"abuse_ids": [foreign.id]})).await;
    let extra = "src.acknowledge_abuse = true\nsrc.shared_with_me = true";
    let config = env.config("ack", &env.local_dest("mirror"), extra);

    run_once(&config).await;
    let mut expected = expected_files_in(&tree, true);
    assert!(expected.remove(&foreign.id).is_some(), "plan.txt is in the shared-with-me scope");
    let owned_bytes = Expected { name: owned.name.clone(), md5: owned.md5.clone(), size: owned.size.unwrap() };
    expected.insert(owned.id.clone(), owned_bytes);
    assert_exact_mirror(&config, &expected).await;
    let stats = env.stats().await;
    assert_eq!(requests(&stats, "files.get.media 403"), 1, "only the foreign file is refused: {stats}");
    {
        let (_cfg, store, _dest) = open(&config);
        let rec = store.skip_record(&FileId(foreign.id.clone())).unwrap().expect("a skip record");
        assert_eq!(rec.reason, "abusive_not_owned");
        assert!(store.skip_record(&FileId(owned.id.clone())).unwrap().is_none());
        assert!(store.dead_letters().unwrap().is_empty());
    }

    // The next start does not ask for it again: acknowledging cannot change Drive's answer.
    env.control("stats/reset", json!({})).await;
    run_once(&config).await;
    let stats = env.stats().await;
    assert_eq!(requests(&stats, "files.get.media 403"), 0, "asked for again: {stats}");
    let (_cfg, store, _dest) = open(&config);
    assert_eq!(store.skip_record(&FileId(foreign.id)).unwrap().map(|r| r.reason).as_deref(), Some("abusive_not_owned"));
}

/// A Google Vid is mirrored as `<name>.mp4`: `files.download` starts an operation, `operations.get`
/// is polled until it is done, and its `downloadUri` gives the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_vid_is_mirrored_as_mp4_through_the_download_operation() {
    let env = TestEnv::start(small_corpus(false)).await;
    let root = env.tree().await.root_id;
    let vid = mutate(&env, vec![json!({"op": "create_gdoc", "parent": root, "name": "Launch video", "kind": "vid"})])
        .await[0]
        .clone();
    let config = env.config("vids", &env.local_dest("mirror"), "");
    run_once(&config).await;
    let tree = env.tree().await;
    let expected = expected_files(&tree);
    assert!(expected.contains_key(&vid), "the harness expects the Vid");
    let keys = assert_exact_mirror(&config, &expected).await;
    assert!(keys[&vid].0.ends_with("/Launch video.mp4"), "{:?}", keys[&vid]);
    let stats = env.stats().await;
    assert_eq!(requests(&stats, "files.download 200"), 1, "{stats}");
    assert!(requests(&stats, "operations.get 200") >= 2, "polled until done: {stats}");
    assert_eq!(requests(&stats, "download_uri 200"), 1, "{stats}");
    assert_verifies_equal(&config).await;
}
