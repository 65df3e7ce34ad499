//! Continuous mirroring: random mutation sequences (creates, edits, renames to hostile names, moves,
//! folder moves, trash/untrash, deletes, doc edits) followed by a catch-up leave the destination equal
//! to the emulator's tree, with nothing left over outside `.trash/`.

use crate::support::*;

async fn mutate_and_catch_up(seed: u64, ops: u64, hostile: bool) {
    let mut corpus = small_corpus(hostile);
    corpus.seed = seed;
    let env = TestEnv::start(corpus).await;
    let config = env.config(&format!("cont-{seed}"), &env.local_dest("mirror"), "[source]\n");
    let config_text = std::fs::read_to_string(&config).unwrap().replace("[source]\n\n", "");
    std::fs::write(&config, config_text).unwrap();
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out));
    // Mutate in several rounds, catching up after each, so changes land on an existing mirror.
    for round in 0..3u64 {
        let r = env
            .control(
                "mutate",
                serde_json::json!({"ops": [{"op": "random", "count": ops / 3, "seed": seed * 100 + round}]}),
            )
            .await;
        assert!(r.get("error").is_none_or(|e| e.is_null()), "mutate: {r}");
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        assert!(matches!(out.status.code(), Some(0 | 3)), "seed {seed} round {round}: {}", text(&out));
        let tree = env.tree().await;
        assert_exact_mirror(&config, &expected_files(&tree)).await;
        assert_paths_follow_drive(&config, &tree);
        assert_verifies_equal(&config).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mutations_seed_1() {
    mutate_and_catch_up(1, 500, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mutations_seed_2() {
    mutate_and_catch_up(2, 500, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mutations_seed_3() {
    mutate_and_catch_up(3, 500, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_mode_follows_changes_and_sigterm_drains_and_exits_zero() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("follow", &env.local_dest("mirror"), "");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text_cfg = std::fs::read_to_string(&config)
        .unwrap()
        .replace("drives = [\"all\"]", "drives = [\"all\"]\npoll_interval = \"200ms\"")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    std::fs::write(&config, text_cfg).unwrap();
    let child = spawn_continuous_logging(&config, "mirrorflow=info");
    let mirror = env.dir.path().join("mirror");
    let expected_initial = expected_files(&env.tree().await).len();
    poll_until(|| count_files(&mirror) >= expected_initial).await;
    // The first sync's summary is logged on the next 2-second tick once the pipeline is idle.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    // A change while running is picked up by the next poll.
    let root = env.tree().await.root_id;
    let r = env
        .control(
            "mutate",
            serde_json::json!({"ops": [{"op": "create", "parent": root, "name": "late-arrival.txt", "size": 1234}]}),
        )
        .await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
    poll_until(|| mirror.join("my-drive/late-arrival.txt").exists()).await;
    // Prometheus counts the real work.
    let scrape = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        scrape.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    assert!(
        value("mirrorflow_events_total{stage=\"committer\",outcome=\"committed\"}") >= expected_initial as f64,
        "{scrape}"
    );
    assert!(value("mirrorflow_bytes_total{direction=\"download\"}") > 0.0, "{scrape}");
    assert!(value("mirrorflow_drive_requests_total") > 0.0, "{scrape}");
    assert!(scrape.contains("mirrorflow_stage_seconds") && scrape.contains("mirrorflow_queue_depth"), "{scrape}");
    // And the summary of that poll's work.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    // SIGTERM: drain, persist, exit 0.
    let out = sigterm_and_wait(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("caught up: 1 mirrored (0.0 MiB)"), "no summary of the late arrival's poll:\n{log}");
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files(&tree)).await;
}
