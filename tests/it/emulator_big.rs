//! Large files: ranged reads of a 64 MiB file reproduce md5Checksum; a 4 GiB file streams while the
//! process's resident memory stays flat (bytes are generated on the fly, never held).

use crate::support::emu::start;
use drive_emulator::EmulatorConfig;
use futures::StreamExt;
use md5::{Digest, Md5};

/// The two tests measure this process's memory: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_of_a_64_mib_file_match_md5_checksum() {
    let _serial = SERIAL.lock().await;
    let ctx = start(EmulatorConfig { big_file_mib: 64, files: 5, ..Default::default() }).await;
    let (_, list) = ctx
        .hub
        .files()
        .list()
        .q("mimeType = 'application/octet-stream'")
        .param("fields", "files(id,name,size,md5Checksum,sha256Checksum)")
        .doit()
        .await
        .unwrap();
    let big = list.files.unwrap().into_iter().find(|f| f.name.as_deref() == Some("big-64MiB.bin")).expect("big file");
    let size = big.size.unwrap() as u64;
    assert_eq!(size, 64 << 20);
    let token = ctx.token().await;
    let url = format!("{}drive/v3/files/{}?alt=media", ctx.base, big.id.as_deref().unwrap());
    let mut md5 = Md5::new();
    let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let bounds = [0, 7 << 20, (7 << 20) + 12_345, 40 << 20, size];
    for w in bounds.windows(2) {
        let range = format!("bytes={}-{}", w[0], w[1] - 1);
        let resp = ctx.http.get(&url).bearer_auth(&token).header("Range", range).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 206);
        assert_eq!(resp.content_length(), Some(w[1] - w[0]));
        let mut body = resp.bytes_stream();
        let mut got = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            got += chunk.len() as u64;
            md5.update(&chunk);
            sha.update(&chunk);
        }
        assert_eq!(got, w[1] - w[0]);
    }
    assert_eq!(Some(hex::encode(md5.finalize())), big.md5_checksum);
    assert_eq!(Some(hex::encode(sha.finish().as_ref())), big.sha256_checksum);
    ctx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_file_streams_with_flat_memory() {
    let _serial = SERIAL.lock().await;
    let ctx = start(EmulatorConfig { big_file_mib: 4096, files: 5, ..Default::default() }).await;
    // Metadata without checksums (hashing 4 GiB is not what this test measures).
    let (_, list) = ctx.hub.files().list().param("fields", "files(id,name,size)").doit().await.unwrap();
    let big = list.files.unwrap().into_iter().find(|f| f.name.as_deref() == Some("big-4096MiB.bin")).expect("big file");
    let size = big.size.unwrap() as u64;
    assert_eq!(size, 4 << 30);
    let token = ctx.token().await;
    let url = format!("{}drive/v3/files/{}?alt=media", ctx.base, big.id.as_deref().unwrap());
    let before = vm_rss_kib();
    let resp = ctx.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.content_length(), Some(size));
    let mut body = resp.bytes_stream();
    let (mut got, mut peak) = (0u64, before);
    while let Some(chunk) = body.next().await {
        got += chunk.unwrap().len() as u64;
        if got % (256 << 20) < 65_536 {
            peak = peak.max(vm_rss_kib());
        }
    }
    let after = vm_rss_kib();
    assert_eq!(got, size);
    assert!(peak.max(after) < before + 64 * 1024, "RSS grew from {before} KiB to peak {peak} KiB / {after} KiB");
    let stats = ctx.control_get("stats").await;
    assert_eq!(stats["bytes_served"]["media"], size);
    assert_eq!(stats["media_bytes_by_file"][big.id.as_deref().unwrap()], size);
    ctx.emu.shutdown().await;
}
