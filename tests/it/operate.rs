//! Operating a running mirror: the probes on the metrics listener (`/healthz`, `/readyz`), the
//! commands that ask a running mirror through its admin socket, and what ships for monitoring (the
//! Grafana dashboard's metrics are exported, Prometheus scrapes it).

use crate::support::*;
use std::path::PathBuf;
use std::time::Duration;

/// A continuous mirror of a small corpus, polling every 200 ms, with its metrics listener.
struct Running {
    env: TestEnv,
    config: PathBuf,
    metrics_port: u16,
    child: Option<tokio::process::Child>,
}

impl Running {
    /// Writes the config; `extra` is appended (see [`TestEnv::config`]).
    async fn configure(name: &str, extra: &str) -> Running {
        Running::with_env(TestEnv::start(small_corpus(false)).await, name, extra)
    }

    fn with_env(env: TestEnv, name: &str, extra: &str) -> Running {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let extra =
            format!("src.poll_interval = \"200ms\"\n{extra}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
        let config = env.config(name, &env.local_dest("mirror"), &extra);
        Running { env, config, metrics_port, child: None }
    }

    fn start(&mut self) {
        self.child = Some(spawn_continuous(&self.config));
    }

    /// Status and body of GET `path` on the metrics listener; None while it does not answer.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.metrics_port)).await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    /// Polls GET `path` until `want` holds (up to a minute); returns the last answer.
    async fn wait_for(&self, path: &str, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let mut last = None;
        for _ in 0..600 {
            if let Some((s, body)) = self.get(path).await {
                if want(s, &body) {
                    return (s, body);
                }
                last = Some((s, body));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} never answered as expected; last: {last:?}");
    }

    async fn set_latency(&self, ms: u64) {
        self.env.control("faults", serde_json::json!({"latency_ms": ms})).await;
    }

    async fn stop(&mut self) -> std::process::Output {
        sigterm_and_wait(self.child.take().expect("started")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_initial_sync_and_fails_when_a_change_log_goes_unread() {
    let mut m = Running::configure("probes", "").await;
    // Slow Drive: the initial sync takes seconds, so the probes are asked while it runs.
    m.set_latency(150).await;
    m.start();
    let (_, alive) = m.wait_for("/healthz", |s, _| s == 200).await;
    assert_eq!(alive, "ok\n");
    let (status, why) = m.get("/readyz").await.expect("the listener answers");
    assert_eq!(status, 503, "ready before the initial sync: {why}");
    assert!(why.contains("initial sync"), "{why}");
    m.set_latency(0).await;
    m.wait_for("/readyz", |s, _| s == 200).await;
    // Each changes.list now takes 2 s, far beyond 3 x poll_interval (600 ms).
    m.set_latency(2000).await;
    let (_, why) = m.wait_for("/readyz", |s, _| s == 503).await;
    assert!(why.contains("change log") && why.contains("poll_interval"), "{why}");
    assert_eq!(m.get("/healthz").await.map(|(s, _)| s), Some(200), "slow Drive is not dead");
    m.set_latency(0).await;
    m.wait_for("/readyz", |s, _| s == 200).await;
    let out = m.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Runs `args` (the config path appended) against the running mirror: it answers within 15 s.
async fn ask_running(args: &[&str], config: &str) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.push(config);
    let started = std::time::Instant::now();
    let out = mirrorflow(&all).await;
    assert!(started.elapsed() < Duration::from_secs(15), "{args:?} took {:?}", started.elapsed());
    out
}

/// Lines of `status` that do not depend on the clock.
fn status_counts(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with("checkpoint:")).map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_mirror_answers_status_log_dlq_verify_and_versions_as_a_stopped_one_does() {
    let env = TestEnv::start(small_corpus(false)).await;
    let (big, limit) = oversized(&env.tree().await);
    let mut m = Running::with_env(env, "admin", &format!("src.max_file_size = {limit}"));
    let c = m.config.to_str().unwrap().to_string();
    m.start();
    m.wait_for("/readyz", |s, _| s == 200).await;
    let socket = m.env.dir.path().join("admin-state").join("admin.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "admin.sock mode {mode:o}");

    let queries: Vec<Vec<&str>> = vec![
        vec!["log", "--json"],
        vec!["log", "--file", &big],
        vec!["dlq", "list", "--json"],
        vec!["dlq", "list"],
        vec!["verify", "--json"],
        vec!["versions", "list", "--json", &big],
    ];
    let mut running = Vec::new();
    for q in &queries {
        let out = ask_running(q, &c).await;
        running.push(out);
    }
    let status_running = ask_running(&["status"], &c).await;
    assert_eq!(status_running.status.code(), Some(0), "{}", text(&status_running));
    let dlq: serde_json::Value = serde_json::from_slice(&running[2].stdout).unwrap();
    assert_eq!(dlq[0]["id"], big.as_str(), "the running mirror lists its dead letter: {dlq}");

    // dlq retry goes through the running pipeline: the file is fetched again (and, still too large,
    // dead-lettered again: a second entry in the log).
    let retry = ask_running(&["dlq", "retry"], &c).await;
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry));
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 file(s) released"), "{}", text(&retry));
    let dead_lettered_twice = || async {
        let out = mirrorflow(&["log", "--json", "--file", &big, &c]).await;
        String::from_utf8_lossy(&out.stdout).matches("dead_lettered").count() >= 2
    };
    let mut again = false;
    for _ in 0..100 {
        if dead_lettered_twice().await {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(again, "the running pipeline did not fetch the retried file again");

    // verify --repair goes through the running pipeline: a deleted object comes back.
    let mirror = m.env.dir.path().join("mirror");
    let victim = walk(&mirror).into_iter().next().expect("a mirrored file");
    std::fs::remove_file(&victim).unwrap();
    let repair = mirrorflow(&["verify", "--repair", &c]).await;
    assert!(matches!(repair.status.code(), Some(0 | 3)), "{}", text(&repair));
    assert!(victim.exists(), "verify --repair did not bring back {}: {}", victim.display(), text(&repair));
    let running_after: Vec<_> =
        vec![ask_running(&["log", "--json"], &c).await, ask_running(&["dlq", "list", "--json"], &c).await];

    let out = m.stop().await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!socket.exists(), "the socket is removed when the run stops");
    let stopped_after =
        vec![mirrorflow(&["log", "--json", &c]).await, mirrorflow(&["dlq", "list", "--json", &c]).await];
    for (r, s) in running_after.iter().zip(&stopped_after) {
        assert_eq!(r.stdout, s.stdout, "running:\n{}\nstopped:\n{}", text(r), text(s));
    }
    // The first answers equal a stopped mirror's where nothing changed since (dlq list's attempts and
    // the log grew with the retry, so those are compared after it above).
    for (q, r) in queries.iter().zip(&running) {
        if q[0] == "dlq" || q[0] == "log" {
            continue;
        }
        let mut args = q.clone();
        args.push(&c);
        let s = mirrorflow(&args).await;
        assert_eq!(
            (r.status.code(), &r.stdout),
            (s.status.code(), &s.stdout),
            "{q:?}\nrunning:\n{}\nstopped:\n{}",
            text(r),
            text(&s)
        );
    }
    let status_stopped = mirrorflow(&["status", &c]).await;
    assert_eq!(status_counts(&status_running), status_counts(&status_stopped));
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                out.extend(walk(&p));
            }
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The metric names a PromQL expression reads (identifiers starting with `mirrorflow_`; a histogram's
/// `_bucket`/`_sum`/`_count` series count as its name).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("mirrorflow_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` in the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/mirrorflow.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    assert!(exprs.len() >= panels.len(), "every panel has a query");
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_reads_is_exported_by_a_real_run_and_prometheus_scrapes_it() {
    let db = crate::support::pg::fresh_database().await;
    let extra = format!("[verify]\nevery = \"1s\"\n[index]\nurl = \"{db}\"\n");
    let mut m = Running::configure("dashboard", &extra).await;
    m.start();
    m.wait_for("/readyz", |s, _| s == 200).await;
    // The scheduled verify has run once the differences gauge is there.
    let (_, scrape) = m.wait_for("/metrics", |_, body| body.contains("mirrorflow_verify_differences")).await;
    let exported: std::collections::BTreeSet<&str> =
        scrape.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let mut missing = Vec::new();
    for expr in dashboard_exprs() {
        for name in metric_names(&expr) {
            if !exported.contains(name.as_str()) {
                missing.push(format!("{name} (in {expr})"));
            }
        }
    }
    assert!(missing.is_empty(), "the dashboard reads metrics the run does not export: {missing:#?}\n{scrape}");

    // Debian's Prometheus scrapes the running mirror; its query API returns the mirror's counters.
    let prom = Prometheus::start(m.metrics_port, m.env.dir.path()).await;
    let mut committed = 0.0;
    for _ in 0..120 {
        committed = prom.query_sum("mirrorflow_events_total{stage=\"committer\",outcome=\"committed\"}").await;
        if committed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let files = expected_files(&m.env.tree().await).len() as f64;
    assert!(committed >= files, "Prometheus has {committed} committed events, the mirror committed {files} files");
    drop(prom);
    let out = m.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn the_metric_names_of_an_expression_are_found() {
    assert_eq!(
        metric_names("histogram_quantile(0.9, sum by (le) (rate(mirrorflow_stage_seconds_bucket[5m]))) / mirrorflow_x"),
        vec!["mirrorflow_stage_seconds_bucket", "mirrorflow_x"]
    );
}

/// Debian's `prometheus` (scripts/test.sh installs it when missing), scraping one target every
/// second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Prometheus {
    async fn start(target_port: u16, dir: &std::path::Path) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mirrorflow\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Debian's prometheus is installed (scripts/test.sh installs it)");
        Prometheus { child, port }
    }

    /// The sum of an instant query's values (0 while Prometheus has none or is not up yet).
    async fn query_sum(&self, query: &str) -> f64 {
        let base = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let url = url::Url::parse_with_params(&base, &[("query", query)]).unwrap();
        let Ok(r) = reqwest::get(url).await else { return 0.0 };
        let Ok(v) = r.json::<serde_json::Value>().await else { return 0.0 };
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_the_man_page_are_generated_from_the_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let out = mirrorflow(&["completions", shell]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["mirrorflow", "verify", "dlq", "top", "json"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = mirrorflow(&["completions", "tcsh"]).await;
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error: {}", text(&out));
    let man = mirrorflow(&["man"]).await;
    assert_eq!(man.status.code(), Some(0), "{}", text(&man));
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH mirrorflow 1"), "{page}");
    for word in ["verify", "dlq", "top"] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = mirrorflow(&["man", "--dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(dir.path().join("mirrorflow.1").exists() && dir.path().join("mirrorflow-verify.1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_each_stage_of_a_running_mirror_as_plain_lines_when_not_a_terminal() {
    let mut m = Running::configure("top", "").await;
    m.start();
    m.wait_for("/readyz", |s, _| s == 200).await;
    let out = mirrorflow(&["top", "--ticks", "2", "--every", "200ms", m.config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for stage in ["change_feed", "dedup", "planner", "downloader", "uploader", "verifier", "committer"] {
        assert_eq!(shown.lines().filter(|l| l.starts_with(stage)).count(), 2, "{stage} once a tick:\n{shown}");
    }
    let mirrored: u64 = shown
        .split("files mirrored ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no files mirrored count:\n{shown}"));
    assert!(mirrored > 0, "{shown}");
    assert!(shown.contains("breakers: ") && shown.contains(" closed"), "{shown}");
    assert!(!shown.contains('\x1b'), "no terminal codes when stdout is a pipe:\n{shown}");
    let out = m.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = mirrorflow(&["top", "--ticks", "1", m.config.to_str().unwrap()]).await;
    assert_eq!(after.status.code(), Some(1), "a stopped mirror has no live view: {}", text(&after));
}
