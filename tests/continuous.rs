//! Continuous mirroring: random mutation sequences (creates, edits, renames to hostile names, moves,
//! folder moves, trash/untrash, deletes, doc edits) followed by a catch-up leave the destination equal
//! to the emulator's tree, with nothing left over outside `.trash/`.

mod common;
use common::*;

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
