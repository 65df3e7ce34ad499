//! Faults: a chaos run against a Drive that rate-limits, fails and drops connections part-way through
//! bodies (and, into S3, a store that throttles with 503 SlowDown) still ends with the exact mirror,
//! every file verified, and the dead-letter store holding exactly the permanently failing file (one
//! over `max_file_size`) with its reason, while the files Drive will not hand over (abusive, download
//! disabled) are skipped, not dead-lettered; `dlq retry` mirrors the dead letter once its cause is fixed.

use crate::support::slowdown_proxy::SlowDownProxy;
use crate::support::*;

/// An emulator with the hostile corpus that rate-limits 10 %, fails 2 % and resets 1 % of requests.
async fn chaotic_drive() -> TestEnv {
    let env = TestEnv::start(small_corpus(true)).await;
    env.control(
        "faults",
        serde_json::json!({"rate_limit_pct": 10.0, "server_error_pct": 2.0, "reset_pct": 1.0, "seed": 5}),
    )
    .await;
    env
}

/// A config for `dest` with the chaos retry policy (many attempts, short delays) and a
/// `max_file_size` that dead-letters exactly the corpus's largest file.
async fn chaos_config(env: &TestEnv, name: &str, dest: &Dest) -> std::path::PathBuf {
    let (_, limit) = oversized(&env.tree().await);
    let extra =
        format!("src.max_file_size = {limit}\n[retry]\nmax_attempts = 12\nbase_delay = \"5ms\"\nmax_delay = \"200ms\"");
    let config = env.config(name, dest, &extra);
    // The harness already writes a [retry] table; keep the chaos one.
    let t = std::fs::read_to_string(&config).unwrap();
    let t = t.replacen("[retry]\nmax_attempts = 6\nbase_delay = \"20ms\"\nmax_delay = \"500ms\"\n", "", 1);
    std::fs::write(&config, t).unwrap();
    config
}

/// Runs `--once`; exit 3: some files were dead-lettered.
async fn run_once(config: &std::path::Path) {
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

/// Asserts the exact mirror, that Drive faults really happened, that the dead-letter store holds
/// exactly the oversized file, and that the abuse-flagged files are skipped with their reason.
async fn assert_exact_with_only_the_oversized_file_dead_lettered(env: &TestEnv, config: &std::path::Path) {
    let tree = env.tree().await;
    let (oversized, _) = oversized(&tree);
    let mut expected = expected_files(&tree);
    assert!(expected.remove(&oversized).is_some());
    assert_exact_mirror(config, &expected).await;
    let stats = env.stats().await;
    let faults: u64 = stats["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.ends_with(" 403") || k.ends_with(" 429") || k.ends_with(" 500") || k.ends_with(" 503"))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    assert!(faults > 5, "the chaos run saw too few faults to mean anything: {stats}");

    let (_cfg, store, _dest) = open(config);
    let dl = store.dead_letters().unwrap();
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!((dl[0].id.0.as_str(), dl[0].reason.as_str()), (oversized.as_str(), "fileTooLarge"));
    let abusive: Vec<&str> = tree.items.iter().filter(|i| i.abusive).map(|i| i.id.as_str()).collect();
    assert!(!abusive.is_empty());
    for id in abusive {
        let skip = store.skip_record(&mirrorflow::model::FileId(id.into())).unwrap();
        assert_eq!(skip.map(|s| s.reason), Some("abusive".to_string()), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_drive_still_ends_exact_with_only_the_oversized_file_dead_lettered() {
    let env = chaotic_drive().await;
    let config = chaos_config(&env, "chaos", &env.local_dest("mirror")).await;
    run_once(&config).await;
    assert_exact_with_only_the_oversized_file_dead_lettered(&env, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_drive_and_s3_slowdowns_still_ends_exact_with_only_the_oversized_file_dead_lettered() {
    let s3 = s3_server().await;
    let proxy = SlowDownProxy::start(&s3.endpoint, 5.0, 11).await;
    let env = chaotic_drive().await;
    create_bucket(&s3.endpoint, "chaos").await;
    let prefix = format!("run-{}", mirrorflow::drive::random_hex(4));
    let dest = Dest::S3 { endpoint: proxy.endpoint.clone(), bucket: "chaos".into(), prefix };
    let config = chaos_config(&env, "chaos-s3", &dest).await;
    run_once(&config).await;
    let (injected, forwarded) = (proxy.injected(), proxy.forwarded());
    assert!(injected > 0, "the proxy answered none of the run's {forwarded} S3 requests with SlowDown");
    eprintln!("S3 SlowDown injected during the run: {injected} of {} requests", injected + forwarded);
    // The checks read the mirror back through the same throttling proxy.
    assert_exact_with_only_the_oversized_file_dead_lettered(&env, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_retry_mirrors_a_dead_lettered_file_after_its_cause_is_fixed() {
    let env = TestEnv::start(small_corpus(true)).await;
    let (oversized, limit) = oversized(&env.tree().await);
    let config = env.config("dlq", &env.local_dest("mirror"), &format!("src.max_file_size = {limit}"));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let list = mirrorflow(&["dlq", "list", "--json", config.to_str().unwrap()]).await;
    let dl: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(dl.as_array().unwrap().len(), 1, "{dl}");
    let id = dl[0]["id"].as_str().unwrap().to_string();
    assert_eq!((id.as_str(), dl[0]["reason"].as_str()), (oversized.as_str(), Some("fileTooLarge")), "{dl}");

    // The cause is fixed: the user raises the size limit.
    let t = std::fs::read_to_string(&config).unwrap().replace(&format!("max_file_size = {limit}\n"), "");
    std::fs::write(&config, t).unwrap();
    env.control("stats/reset", serde_json::json!({})).await;
    let retry = mirrorflow(&["dlq", "retry", config.to_str().unwrap(), &id]).await;
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_cfg, store, _dest) = open(&config);
    assert!(store.file(&mirrorflow::model::FileId(id.clone())).unwrap().is_some());
    assert!(store.dead_letters().unwrap().is_empty());
    // Only the retried file was downloaded again.
    let stats = env.stats().await;
    let fetched: Vec<&String> = stats["media_bytes_by_file"].as_object().unwrap().keys().collect();
    assert_eq!(fetched, vec![&id], "{stats}");
}
