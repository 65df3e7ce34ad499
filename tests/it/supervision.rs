//! Supervision: a failure (panic or error) injected into each stage in turn is restarted by the
//! supervisor, the events it held are re-delivered, and the run still ends with the exact mirror.
//! A stage that keeps failing stops the pipeline with a clear error and a non-zero exit.

use crate::support::*;

const STAGES: [&str; 7] = ["change_feed", "dedup", "planner", "downloader", "uploader", "verifier", "committer"];

async fn run_with_failure(stage: &str, mode: &str) {
    let env = TestEnv::start(small_corpus(false)).await;
    let extra = format!("[testing]\nfail_stage = \"{stage}\"\nfail_after = 7\nfail_mode = \"{mode}\"\nfail_times = 2");
    let config = env.config(&format!("fail-{stage}"), &env.local_dest("mirror"), &extra);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{stage}/{mode}: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let restarts = stderr.matches("stage failed; restarting it").count();
    // Two failures are injected; a batching stage (the committer) may finish before the second.
    assert!((1..=2).contains(&restarts), "{stage}/{mode}: expected restarts, saw {restarts}\n{}", text(&out));
    assert!(stderr.contains(&format!("injected {mode} in stage {stage}")), "{}", text(&out));
    let expected = expected_files(&env.tree().await);
    assert_exact_mirror(&config, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_any_stage_is_restarted_and_the_mirror_is_exact() {
    for stage in STAGES {
        run_with_failure(stage, "panic").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_any_stage_is_restarted_and_the_mirror_is_exact() {
    for stage in STAGES {
        run_with_failure(stage, "error").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_failing_past_its_restart_budget_stops_the_run_with_state_intact() {
    let env = TestEnv::start(small_corpus(false)).await;
    let extra = "[testing]\nfail_stage = \"uploader\"\nfail_after = 1\nfail_times = 1000\n[supervisor]\nmax_restarts = 3\nwithin = \"60s\"";
    let config = env.config("budget", &env.local_dest("mirror"), extra);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed too often"), "{}", text(&out));
    // The store still opens and a clean run afterwards completes the mirror.
    let clean = env.config("budget", &env.local_dest("mirror"), "");
    let out = mirrorflow(&["run", "--once", clean.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&clean, &expected_files(&env.tree().await)).await;
}

/// `run --once` stopped by SIGTERM part-way exits with its own code (5), not "done", and the next run
/// resumes from the kept state to the exact mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_once_run_says_so_and_the_next_run_finishes() {
    let env = TestEnv::start(small_corpus(false)).await;
    env.control("faults", serde_json::json!({"latency_ms": 150})).await;
    let config = env.config("interrupted", &env.local_dest("mirror"), "");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["run", "--once", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mirror = env.dir.path().join("mirror");
    poll_until(|| count_files(&mirror) >= 3).await;
    let out = sigterm_and_wait(child).await;
    assert!(count_files(&mirror) < expected_files(&env.tree().await).len(), "the run was to be stopped part-way");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"), "{}", text(&out));
    env.control("faults", serde_json::json!({})).await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}

/// Output into closed pipes (`mirrorflow status | head -1`, `run 2>&1 | true`) never panics, and a
/// run whose stderr is closed still finishes its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_and_stderr_never_panic() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("closed", &env.local_dest("mirror"), "");
    let spawn_closed = |args: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
            .args(args)
            .env("MIRRORFLOW_LOG", "mirrorflow=debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close both read ends at once: every write the process makes hits a closed pipe.
        drop(child.stdout.take());
        drop(child.stderr.take());
        child
    };
    let mut run = spawn_closed(&["run", "--once", config.to_str().unwrap()]);
    let status = tokio::task::spawn_blocking(move || run.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "a run with closed output pipes ends normally");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    let mut status_cmd = spawn_closed(&["status", config.to_str().unwrap()]);
    let status = tokio::task::spawn_blocking(move || status_cmd.wait().unwrap()).await.unwrap();
    assert_ne!(status.code(), Some(101), "status panicked on a closed stdout");
}
