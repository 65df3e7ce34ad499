//! A store that refuses one object on purpose (Supabase's `413 EntityTooLarge` over its file size
//! limit, `400 InvalidKey`; S3's `403 AccessDenied`) gets that file dead-lettered at once with what to
//! change, never trips the destination's circuit breaker, and the rest of the mirror goes on;
//! `[destination] max_file_size` dead-letters a larger file before any byte of it is downloaded; and
//! with `keys = "supabase"` every key stays within `max_key_bytes` (900 by default: hosted Supabase
//! stores each object under its own longer path).

use crate::support::refusing_proxy::{Refuse, RefusingProxy};
use crate::support::*;
use mirrorflow::model::FileId;
use std::collections::BTreeMap;

/// Three binary files whose names no other mirrored file shares (a refusal rule matches by name).
fn three_uniquely_named_binaries(tree: &drive_emulator::EmuTree) -> Vec<(String, String)> {
    let expected = expected_files(tree);
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for e in expected.values() {
        *uses.entry(e.name.as_str()).or_default() += 1;
    }
    let binary = |id: &str| tree.items.iter().any(|i| i.id == id && i.export_sizes.is_none() && i.md5.is_some());
    let picks: Vec<(String, String)> = expected
        .iter()
        .filter(|(id, e)| binary(id) && uses[e.name.as_str()] == 1 && e.size > 0)
        .map(|(id, e)| (id.clone(), e.name.clone()))
        .take(3)
        .collect();
    assert_eq!(picks.len(), 3, "the corpus has three uniquely named binary files");
    picks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_store_refuses_is_dead_lettered_at_once_with_what_to_change_and_never_trips_the_breaker() {
    let s3 = s3_server().await;
    let env = TestEnv::start(small_corpus(false)).await;
    let tree = env.tree().await;
    let picks = three_uniquely_named_binaries(&tree);
    let refusals = [Refuse::TooLarge, Refuse::InvalidKey, Refuse::AccessDenied];
    let rules: BTreeMap<String, Refuse> = picks.iter().map(|(_, name)| name.clone()).zip(refusals).collect();
    let proxy = RefusingProxy::start(&s3.endpoint, rules).await;
    create_bucket(&s3.endpoint, "refusals").await;
    let prefix = format!("run-{}", mirrorflow::drive::random_hex(4));
    let dest = Dest::S3 { endpoint: proxy.endpoint.clone(), bucket: "refusals".into(), prefix };
    let config = env.config("refusals", &dest, "");
    // One failure that counts toward the breaker opens it (and holds every upload for 30 s): a
    // refusal must not be one.
    let t = std::fs::read_to_string(&config).unwrap().replacen("[retry]\n", "[retry]\nbreaker_threshold = 1\n", 1);
    std::fs::write(&config, t).unwrap();

    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "some files were dead-lettered: {log}");
    assert!(!log.contains("circuit open"), "a refusal opened the destination's breaker: {log}");
    // Dead-lettered at once: one write each, never tried again.
    let refused = proxy.refused();
    for (_, name) in &picks {
        assert_eq!(refused.get(name), Some(&1), "writes of {name:?} refused: {refused:?}");
    }

    let mut rest = expected_files(&tree);
    for (id, _) in &picks {
        rest.remove(id);
    }
    assert_exact_mirror(&config, &rest).await;

    let (_cfg, store, _dest) = open(&config);
    let dead: BTreeMap<String, _> = store.dead_letters().unwrap().into_iter().map(|d| (d.id.0.clone(), d)).collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    let wanted = [
        ("destination_too_large", "over the store's limit: raise the bucket's or the project's file size limit"),
        ("destination_invalid_key", "lower destination.max_key_bytes"),
        ("destination_access_denied", "give the credentials write access"),
    ];
    for ((id, name), (reason, says)) in picks.iter().zip(wanted) {
        let d = &dead[id];
        assert_eq!(d.reason, reason, "{name}: {d:?}");
        assert!(d.last_error.contains(says), "{name}: {}", d.last_error);
        assert_eq!(d.attempts, 1, "{name}: {d:?}");
    }
    let size = expected_files(&tree)[&picks[0].0].size;
    assert!(dead[&picks[0].0].last_error.starts_with(&format!("{} over", mirrorflow::dest::refusal::human_size(size))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_destination_max_file_size_is_dead_lettered_before_any_byte_is_downloaded() {
    let env = TestEnv::start(small_corpus(false)).await;
    let tree = env.tree().await;
    let (oversized, limit) = oversized(&tree);
    let config = env.config("dest-max", &env.local_dest("mirror"), &format!("dest.max_file_size = {limit}"));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    let stats = env.stats().await;
    let fetched = stats["media_bytes_by_file"].as_object().unwrap();
    assert!(!fetched.is_empty(), "{stats}");
    assert!(!fetched.contains_key(&oversized), "the oversized file was downloaded: {stats}");
    let mut rest = expected_files(&tree);
    rest.remove(&oversized);
    assert_exact_mirror(&config, &rest).await;
    let (_cfg, store, _dest) = open(&config);
    let dead = store.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].id.clone(), dead[0].reason.as_str()), (FileId(oversized), "destination_too_large"));
    assert!(dead[0].last_error.contains("over destination.max_file_size"), "{}", dead[0].last_error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_keys_stay_within_max_key_bytes_however_deep() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let expected = expected_files(&tree);
    let supabase = "dest.keys = \"supabase\"";
    for (name, extra, max) in [
        ("supa-default", supabase.to_string(), mirrorflow::dest::keys::SUPABASE_MAX_KEY_BYTES),
        ("supa-600", format!("{supabase}\ndest.max_key_bytes = 600"), 600),
    ] {
        let config = env.config(name, &env.local_dest(name), &extra);
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let keys = assert_exact_mirror(&config, &expected).await;
        let longest = keys.values().map(|k| k.0.len()).max().unwrap_or(0);
        assert!(longest <= max, "{name}: a key of {longest} bytes, over {max}");
        assert!(longest > max - 128, "{name}: the deep chain should come near the limit, longest {longest}");
        assert!(keys.values().any(|k| k.0.contains("/_deep-")), "{name}: no shortened deep folder");
        assert_paths_follow_drive(&config, &tree);
        assert_verifies_equal(&config).await;
    }
}
