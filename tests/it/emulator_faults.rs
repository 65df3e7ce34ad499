//! Fault injection seen through the real client stack: proportions, resets mid-body, scope of faults,
//! and the server's `Retry-After` honoured by a metadata call of our Drive client.

use crate::support::emu::{drive_client, hub_error_reason, start};
use drive_emulator::EmulatorConfig;
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_arrive_in_configured_proportions() {
    let ctx = start(EmulatorConfig::default()).await;
    let tree = ctx.tree().await;
    let id = tree.items[0].id.clone();
    ctx.token().await; // fetch the token before faults start (the token endpoint is never faulted anyway)
    let set = ctx.control("faults", json!({"rate_limit_pct": 10.0, "server_error_pct": 5.0, "seed": 7})).await;
    assert_eq!(set["rate_limit_pct"], 10.0);
    assert_eq!(ctx.control_get("faults").await["seed"], 7);
    let (mut ok, mut limited, mut backend, mut other) = (0, 0, 0, 0);
    for _ in 0..400 {
        match ctx.hub.files().get(&id).param("fields", "id").doit().await {
            Ok(_) => ok += 1,
            Err(e) => match hub_error_reason(&e).as_str() {
                "userRateLimitExceeded" | "rateLimitExceeded" => limited += 1,
                "backendError" => backend += 1,
                r => {
                    other += 1;
                    eprintln!("unexpected {r}");
                }
            },
        }
    }
    assert_eq!(other, 0);
    assert!((20..=60).contains(&limited), "rate limited {limited}/400");
    assert!((6..=36).contains(&backend), "5xx {backend}/400");
    assert_eq!(ok + limited + backend, 400);
    // Every flavour shows up, with Google's status codes.
    let stats = ctx.control_get("stats").await;
    let req = &stats["requests"];
    for key in ["files.get 403", "files.get 429", "files.get 200"] {
        assert!(req[key].as_u64().unwrap_or(0) > 0, "{key} missing in {req}");
    }
    assert!(req["files.get 500"].as_u64().unwrap_or(0) + req["files.get 503"].as_u64().unwrap_or(0) == backend);
    // Control and token endpoints are never faulted.
    ctx.control("faults", json!({"rate_limit_pct": 100.0})).await;
    let minted = ctx.control("refresh_token", json!({})).await;
    let (status, tok) = ctx
        .token_request(&[("grant_type", "refresh_token"), ("refresh_token", minted["refresh_token"].as_str().unwrap())])
        .await;
    assert_eq!(status, 200, "{tok}");
    let err = ctx.hub.files().get(&id).doit().await.unwrap_err();
    assert!(hub_error_reason(&err).contains("ateLimitExceeded"));
    ctx.control("faults", json!({})).await;
    ctx.hub.files().get(&id).doit().await.expect("faults off");
    ctx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_fault_seed_gives_the_same_sequence() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let ctx = start(EmulatorConfig::default()).await;
        let id = ctx.tree().await.items[0].id.clone();
        ctx.token().await;
        ctx.control("faults", json!({"rate_limit_pct": 20.0, "server_error_pct": 10.0, "seed": 3})).await;
        let mut seq = Vec::new();
        for _ in 0..60 {
            let r = ctx.hub.files().get(&id).doit().await;
            seq.push(r.err().map(|e| hub_error_reason(&e)).unwrap_or_default());
        }
        assert!(seq.iter().any(String::is_empty) && seq.iter().any(|s| !s.is_empty()));
        runs.push(seq);
        ctx.emu.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_cut_bodies_part_way() {
    let ctx = start(EmulatorConfig { seed: 5, ..Default::default() }).await;
    let tree = ctx.tree().await;
    let file = tree.items.iter().filter(|i| i.size.is_some()).max_by_key(|i| i.size).unwrap();
    let size = file.size.unwrap();
    assert!(size > 100_000);
    let token = ctx.token().await;
    let url = format!("{}drive/v3/files/{}?alt=media", ctx.base, file.id);
    ctx.control("faults", json!({"reset_pct": 100.0, "seed": 1})).await;
    for _ in 0..3 {
        let resp = ctx.http.get(&url).bearer_auth(&token).send().await.expect("headers arrive");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.content_length(), Some(size));
        let mut body = resp.bytes_stream();
        let mut got = 0u64;
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => got += c.len() as u64,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "body must break off");
        assert!(got > 0 && got < size, "got {got} of {size}");
    }
    // JSON endpoints are not reset; with resets off the body is complete.
    ctx.hub.files().get(&file.id).doit().await.expect("metadata unaffected");
    ctx.control("faults", json!({"latency_ms": 20})).await;
    let full = ctx.http.get(&url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(full.len() as u64, size);
    assert_eq!(Some(hex::encode(<md5::Md5 as md5::Digest>::digest(&full))), file.md5);
    ctx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_call_waits_for_the_servers_retry_after() {
    let ctx = start(EmulatorConfig::default()).await;
    let id = ctx.tree().await.items[0].id.clone();
    let dir = tempfile::tempdir().unwrap();
    let client = drive_client(&ctx, dir.path()).await;
    client.root_folder_id().await.expect("token fetched, faults off");
    ctx.control("stats/reset", json!({})).await;
    // Seed 1 makes the first injected rate limit a 429, the flavour that carries Retry-After.
    ctx.control("faults", json!({"rate_limit_pct": 100.0, "retry_after_secs": 2, "seed": 1})).await;
    let started = Instant::now();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.get_file(&mirrorflow::model::FileId(id)).await })
    };
    // Drive recovers as soon as the first answer (the 429) is out. Our backoff alone would retry within
    // 10 ms, meet the fault again and fail (two attempts): only waiting for Retry-After succeeds.
    for _ in 0..1000 {
        if ctx.control_get("stats").await["requests"]["files.get 429"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ctx.control("faults", json!({})).await;
    let file = call.await.unwrap().expect("the retry after Retry-After succeeds");
    assert!(file.is_some());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}, before the server's Retry-After of 2 s");
    let req = &ctx.control_get("stats").await["requests"];
    assert_eq!(req["files.get 429"], 1, "{req}");
    assert_eq!(req["files.get 200"], 1, "{req}");
    assert!(req.get("files.get 403").is_none(), "{req}");
    ctx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_sent_on_429_only_and_only_when_configured() {
    let ctx = start(EmulatorConfig::default()).await;
    let token = ctx.token().await;
    let url = format!("{}drive/v3/files/{}", ctx.base, ctx.tree().await.items[0].id);
    let mut seen = std::collections::BTreeMap::new();
    for secs in [0u64, 3] {
        ctx.control("faults", json!({"rate_limit_pct": 100.0, "retry_after_secs": secs, "seed": 2})).await;
        for _ in 0..30 {
            let resp = ctx.http.get(&url).bearer_auth(&token).send().await.unwrap();
            let header = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            seen.insert((secs, resp.status().as_u16(), header), ());
        }
    }
    let seen: Vec<_> = seen.into_keys().collect();
    let expected = vec![(0, 403, None), (0, 429, None), (3, 403, None), (3, 429, Some("3".to_string()))];
    assert_eq!(seen, expected);
    ctx.emu.shutdown().await;
}
