//! `[cluster]` (issue 34, shards): which shard a process is comes from `MIRRORFLOW_SHARD`, `[cluster]
//! shard` or `[cluster] shards` with the host name's ordinal (a StatefulSet pod's `-<digits>`); a bad one
//! exits 2 naming the key and line; a run publishes its shard in `status.json`, `status` and
//! `mirrorflow_shard_info`.

use crate::support::*;
use serde_json::Value;
use std::path::Path;

/// `mirrorflow validate` with these variables set (and `MIRRORFLOW_SHARD` unset unless given).
fn validate(config: &Path, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"));
    cmd.args(["validate", config.to_str().unwrap()]).env_remove("MIRRORFLOW_SHARD");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

#[test]
fn the_shard_comes_from_the_variable_or_the_host_names_ordinal_and_a_bad_one_names_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    std::fs::write(&key, "{\"type\": \"service_account\"}").unwrap();
    let config = dir.path().join("pipeline.toml");
    let toml = format!(
        "[source]\ncredentials = \"{}\"\n[destination]\nurl = \"file:///tmp/m\"\n[cluster]\nshards = 3\n",
        key.display()
    );
    std::fs::write(&config, toml).unwrap();

    let pod = validate(&config, &[("HOSTNAME", "mirrorflow-2")]);
    assert_eq!(pod.status.code(), Some(0), "{}", text(&pod));
    let fqdn = validate(&config, &[("HOSTNAME", "mirrorflow-0.mirrorflow.default.svc.cluster.local")]);
    assert_eq!(fqdn.status.code(), Some(0), "{}", text(&fqdn));

    let past = validate(&config, &[("HOSTNAME", "mirrorflow-3")]);
    assert_eq!(past.status.code(), Some(2), "{}", text(&past));
    let err = String::from_utf8_lossy(&past.stderr);
    assert!(err.contains("cluster.shards: ") && err.contains("(line 6)"), "{err}");

    let laptop = validate(&config, &[("HOSTNAME", "laptop")]);
    assert_eq!(laptop.status.code(), Some(2), "{}", text(&laptop));
    let err = String::from_utf8_lossy(&laptop.stderr);
    assert!(err.contains("-<digits>") && err.contains("MIRRORFLOW_SHARD") && err.contains("(line 6)"), "{err}");

    // The variable overrides the host name; its count must agree with the file's.
    let given = validate(&config, &[("HOSTNAME", "laptop"), ("MIRRORFLOW_SHARD", "1/3")]);
    assert_eq!(given.status.code(), Some(0), "{}", text(&given));
    let other = validate(&config, &[("HOSTNAME", "mirrorflow-1"), ("MIRRORFLOW_SHARD", "1/4")]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other));
    assert!(String::from_utf8_lossy(&other.stderr).contains("MIRRORFLOW_SHARD: 4 shards here"), "{}", text(&other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_publishes_its_shard_in_status_and_metrics() {
    let env = TestEnv::start(small_corpus(false)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!("[cluster]\nshard = \"1/3\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = env.config("shard", &env.local_dest("mirror"), &extra);

    let child = spawn_continuous(&config);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut scraped = String::new();
    for _ in 0..300 {
        if let Ok(r) = reqwest::get(&url).await {
            scraped = r.text().await.unwrap_or_default();
            if scraped.contains("mirrorflow_shard_info") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let info = scraped.lines().find(|l| l.starts_with("mirrorflow_shard_info{")).unwrap_or_default().to_string();
    let out = sigterm_and_wait(child).await;
    assert!(
        info.contains("shard=\"1\"") && info.contains("count=\"3\"") && info.ends_with(" 1"),
        "{info:?}\n{}",
        text(&out)
    );

    let status = mirrorflow(&["status", "--json", config.to_str().unwrap()]).await;
    let v: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&status)));
    assert_eq!(v["last_run"]["shard"], "1/3", "{v}");
    let human = mirrorflow(&["status", config.to_str().unwrap()]).await;
    assert!(String::from_utf8_lossy(&human.stdout).contains("shard: 1/3"), "{}", text(&human));
}
