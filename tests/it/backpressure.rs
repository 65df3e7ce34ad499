//! Backpressure: a destination that holds every write stops the pipeline from taking more events from
//! Drive once each stage's input channel is full, each at the `[stages.<name>] capacity` configured for
//! that stage, and the process's memory stays within the README's bound meanwhile. Once the writes go
//! through again, the mirror completes exactly.

use crate::support::slowdown_proxy::SlowDownProxy;
use crate::support::*;
use drive_emulator::EmulatorConfig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Files of 3.5 MiB: each fits in one transfer's queued chunks (`chunk_size × chunk_depth` = 4 MiB),
/// so a downloader could finish it without the uploader, and each is one PUT (under `part_size`).
const FILE_BYTES: u64 = 3_670_016;
const FILES: usize = 120;
const CAPACITY: [(&str, &str, u64); 4] = [
    ("dedup", "feed_dedup", 3),
    ("planner", "dedup_planner", 5),
    ("downloader", "planner_downloader", 7),
    ("uploader", "downloader_uploader", 64),
];
const DOWNLOADERS: u64 = 2;
const UPLOADERS: u64 = 2;

/// One Prometheus scrape, as `name{labels}` → value.
async fn scrape(port: u16) -> BTreeMap<String, f64> {
    let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else { return BTreeMap::new() };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

fn depth(m: &BTreeMap<String, f64>, edge: &str) -> f64 {
    m.get(&format!("mirrorflow_queue_depth{{edge=\"{edge}\"}}")).copied().unwrap_or(-1.0)
}

fn emitted(m: &BTreeMap<String, f64>) -> f64 {
    sum(m, "mirrorflow_events_total{stage=\"change_feed\",outcome=\"emitted\"}")
}

fn finished(m: &BTreeMap<String, f64>) -> f64 {
    sum(m, "mirrorflow_events_total{stage=\"committer\"")
}

/// Peak resident set of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_destination_fills_each_input_to_its_own_capacity_and_memory_stays_bounded() {
    let s3 = s3_server().await;
    let proxy = SlowDownProxy::start(&s3.endpoint, 0.0, 1).await;
    let corpus = EmulatorConfig { files: 0, folders: 0, gdocs: 0, shared_drives: 0, seed: 21, ..Default::default() };
    let env = TestEnv::start(corpus).await;
    let root = env.tree().await.root_id;
    let ops: Vec<_> = (0..FILES)
        .map(
            |i| serde_json::json!({"op": "create", "parent": root, "name": format!("f{i:03}.bin"), "size": FILE_BYTES}),
        )
        .collect();
    env.control("mutate", serde_json::json!({ "ops": ops })).await;
    create_bucket(&s3.endpoint, "held").await;
    let dest = Dest::S3 { endpoint: proxy.endpoint.clone(), bucket: "held".into(), prefix: "m".into() };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut stages = String::new();
    for (stage, _, capacity) in CAPACITY {
        stages.push_str(&format!("[stages.{stage}]\ncapacity = {capacity}\n"));
        match stage {
            "downloader" => stages.push_str(&format!("concurrency = {DOWNLOADERS}\n")),
            "uploader" => stages.push_str(&format!("concurrency = {UPLOADERS}\n")),
            _ => {}
        }
    }
    let extra = format!(
        "dest.timeout = \"10min\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [pipeline]\npart_size = \"5MiB\"\nmemory_budget = \"16MiB\"\n{stages}"
    );
    let config = env.config("held", &dest, &extra);

    // Writes are held from the first upload on; reads (the start-up checks, HEADs) still answer.
    proxy.hold_writes(true);
    let child = spawn_continuous(&config);
    let pid = child.id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (-1.0, -1.0);
    let stalled = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let m = scrape(port).await;
        let full = CAPACITY[..3].iter().all(|(_, edge, c)| depth(&m, edge) == *c as f64);
        let now = (emitted(&m), finished(&m));
        if full && proxy.writes_held() == UPLOADERS && now == last {
            break m;
        }
        last = now;
        assert!(Instant::now() < deadline, "the pipeline never settled behind the held writes: {m:#?}");
    };

    // Every stage's input holds exactly what its own [stages.<name>] capacity allows; the uploader's
    // holds the transfers the downloaders prepared (each downloader waits for its upload to start, so
    // queued transfers hold no bytes).
    for &(stage, edge, capacity) in &CAPACITY[..3] {
        assert_eq!(depth(&stalled, edge), capacity as f64, "{stage}'s input: {stalled:#?}");
    }
    assert_eq!(depth(&stalled, "downloader_uploader"), DOWNLOADERS as f64, "{stalled:#?}");
    // The feed stopped: what it took is what is finished, plus what the channels hold, plus one item
    // in the hands of each dedup and planner worker (blocked on a full channel) and of each uploader.
    let held_in_channels: u64 = CAPACITY[..3].iter().map(|(_, _, c)| c).sum::<u64>() + DOWNLOADERS;
    let in_workers = 1 + 1 + UPLOADERS;
    assert_eq!(emitted(&stalled) - finished(&stalled), (held_in_channels + in_workers) as f64, "{stalled:#?}");
    assert!(emitted(&stalled) < FILES as f64, "the feed should have stopped: {stalled:#?}");

    // The README's memory bound: about 64 MiB for the process, plus chunk_size × chunk_depth per upload
    // in progress, plus the part budget.
    let bound = (64 << 20) + UPLOADERS * (4 << 20) + (16 << 20);
    let peak = peak_rss(pid);
    eprintln!("peak RSS while held: {} MiB (bound {} MiB)", peak >> 20, bound >> 20);
    assert!(peak <= bound, "peak RSS {} MiB over the bound of {} MiB", peak >> 20, bound >> 20);

    // Released, the run completes the mirror.
    proxy.hold_writes(false);
    let mirrored = "mirrorflow_events_total{stage=\"committer\",outcome=\"committed\"}";
    let deadline = Instant::now() + Duration::from_secs(120);
    while sum(&scrape(port).await, mirrored) < FILES as f64 {
        assert!(Instant::now() < deadline, "the mirror did not complete once the writes were released");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = sigterm_and_wait(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}
