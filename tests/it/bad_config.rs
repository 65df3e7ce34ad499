//! Bad input: a missing file, a TOML syntax error, an unknown key or a wrong type exit with code 2 and
//! name the key (and line); an unreachable Drive or store fails after bounded retries, state intact.

use crate::support::*;
use std::path::Path;

async fn run_config(dir: &Path, text: &str) -> std::process::Output {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    mirrorflow(&["run", "--once", path.to_str().unwrap()]).await
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn good(key: &Path) -> String {
    format!(
        "[source]\ncredentials = \"{}\"\napi_base_url = \"http://127.0.0.1:9/\"\n\n[destination]\nurl = \"file:///tmp/x\"\n",
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_2_and_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    std::fs::write(&key, "{}").unwrap();

    let missing = mirrorflow(&["run", "--once", "/nonexistent/pipeline.toml"]).await;
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(stderr(&missing).contains("/nonexistent/pipeline.toml"), "{}", text(&missing));

    let syntax = run_config(dir.path(), &format!("{}[state\ndir = 1\n", good(&key))).await;
    assert_eq!(syntax.status.code(), Some(2), "{}", text(&syntax));
    assert!(stderr(&syntax).contains("line 7"), "{}", text(&syntax));

    let unknown = run_config(dir.path(), &format!("{}[stages.downloader]\nconcurency = 4\n", good(&key))).await;
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(stderr(&unknown).contains("concurency") && stderr(&unknown).contains("line 8"), "{}", text(&unknown));

    let wrong_type =
        run_config(dir.path(), &format!("{}[stages.uploader]\nconcurrency = \"many\"\n", good(&key))).await;
    assert_eq!(wrong_type.status.code(), Some(2), "{}", text(&wrong_type));
    assert!(
        stderr(&wrong_type).contains("concurrency") && stderr(&wrong_type).contains("line 8"),
        "{}",
        text(&wrong_type)
    );

    // Semantic problems are all reported together, each naming its key.
    let several = good(&key).replace("file:///tmp/x", "ftp://nope")
        + "[stages.dedup]\nconcurrency = 4\n[pipeline]\npart_size = \"1MiB\"\n";
    let out = run_config(dir.path(), &several).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for k in ["destination.url", "stages.dedup.concurrency", "pipeline.part_size"] {
        assert!(stderr(&out).contains(k), "{k} not named: {}", text(&out));
    }
    // ...and with the line that sets it.
    assert!(
        stderr(&out).contains("stages.dedup.concurrency: this stage keeps order and must run with 1 worker (line 8)"),
        "{}",
        text(&out)
    );

    // Export formats follow Google's table per kind: CSV is for Sheets only, and a format that holds
    // part of a file (CSV: the first sheet) is refused unless asked for.
    let exports = format!("{}[source.export]\ndocument = \"csv\"\nspreadsheet = \"csv\"\n", good(&key));
    let out = run_config(dir.path(), &exports).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("source.export.document") && stderr(&out).contains("docx"), "{}", text(&out));
    assert!(
        stderr(&out).contains("source.export.spreadsheet") && stderr(&out).contains("allow_partial"),
        "{}",
        text(&out)
    );

    let validate = mirrorflow(&["validate", dir.path().join("bad.toml").to_str().unwrap()]).await;
    assert_eq!(validate.status.code(), Some(2), "{}", text(&validate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_flags_are_usage_errors() {
    let out = mirrorflow(&["run", "--twice", "x.toml"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let help = mirrorflow(&["--help"]).await;
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("EXIT CODES"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_drive_fails_after_bounded_retries_with_state_intact() {
    let env = TestEnv::start(small_corpus(false)).await;
    // First a good run, so there is state to keep.
    let config = env.config("down", &env.local_dest("mirror"), "");
    assert_eq!(mirrorflow(&["run", "--once", config.to_str().unwrap()]).await.status.code(), Some(0));
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    let dead =
        text_cfg.replace(&env.emu.base_url(), "http://127.0.0.1:9/").replace("max_attempts = 6", "max_attempts = 2");
    std::fs::write(&config, dead).unwrap();
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).to_lowercase().contains("error"), "{}", text(&out));
    // State intact: status still reads it.
    let status = mirrorflow(&["status", "--json", config.to_str().unwrap()]).await;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["files"].as_u64(), Some(expected_files(&env.tree().await).len() as u64));
}

/// A server on loopback that accepts connections and never answers; abort the task to stop it.
async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket); // accepted, never answered
        }
    });
    (addr, held)
}

/// A Drive that accepts connections and never answers: every call times out (`[source] timeout`), is
/// retried a bounded number of times, and the run ends with exit 1 and a message naming the time-out
/// instead of hanging for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_that_never_answers_ends_the_run_naming_the_timeout() {
    let env = TestEnv::start(small_corpus(false)).await;
    let (addr, held) = silent_server().await;
    let silent_url = format!("http://{addr}/");
    let config = env.config("silent", &env.local_dest("mirror"), "");
    let text_cfg = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&env.emu.base_url(), &silent_url)
        .replace("drives = [\"all\"]", "drives = [\"all\"]\ntimeout = \"300ms\"");
    std::fs::write(&config, text_cfg).unwrap();
    let args = ["run", "--once", config.to_str().unwrap()];
    let run = mirrorflow(&args);
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run).await.expect("the run does not hang");
    held.abort();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("source.timeout"), "{}", text(&out));
}

/// A destination that accepts connections and never answers: the first request (the reachability
/// check) times out (`[destination] timeout`), is retried a bounded number of times, and the run ends
/// with exit 1 naming the setting instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_never_answers_ends_the_run_naming_the_timeout() {
    let env = TestEnv::start(small_corpus(false)).await;
    let (addr, held) = silent_server().await;
    let endpoint = format!("http://{addr}");
    let dest = Dest::S3 { endpoint, bucket: "silent".into(), prefix: "p".into() };
    let config = env.config("silent-dest", &dest, "dest.timeout = \"300ms\"");
    let text_cfg = std::fs::read_to_string(&config).unwrap().replace("max_attempts = 6", "max_attempts = 2");
    std::fs::write(&config, text_cfg).unwrap();
    let args = ["run", "--once", config.to_str().unwrap()];
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), mirrorflow(&args))
        .await
        .expect("the run does not hang");
    held.abort();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("destination.timeout"), "{}", text(&out));
}

/// The state belongs to one destination: pointing a config at another one with the same state stops
/// with exit 2 naming both, instead of skipping every file as "unchanged" in the new, empty place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_bound_to_another_destination_is_refused() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("bound", &env.local_dest("first"), "");
    assert_eq!(mirrorflow(&["run", "--once", config.to_str().unwrap()]).await.status.code(), Some(0));
    let second = env.dir.path().join("second");
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    let moved = text_cfg.replace(&env.dir.path().join("first").display().to_string(), &second.display().to_string());
    assert_ne!(moved, text_cfg);
    std::fs::write(&config, moved).unwrap();
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("/first") && err.contains("/second") && err.contains("[state] dir"), "{}", text(&out));
    assert_eq!(count_files(&second), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_fails_clearly() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dest = Dest::S3 { endpoint: "http://127.0.0.1:9".into(), bucket: "b".into(), prefix: "p".into() };
    let config = env.config("nostore", &dest, "");
    let t = std::fs::read_to_string(&config).unwrap().replace("max_attempts = 6", "max_attempts = 2");
    std::fs::write(&config, t).unwrap();
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("destination list"), "{}", text(&out));
}
