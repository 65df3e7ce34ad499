//! Mirroring into a real S3 server (moto) through object_store: exact content under the prefix,
//! both key modes; in "supabase" mode every key uses only Supabase Storage's alphabet.

mod common;
use common::*;
use mirrorflow::dest::keys::is_supabase_safe;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_mirrors_exactly_into_s3_in_both_key_modes() {
    let s3 = s3_server().await;
    let env = TestEnv::start(small_corpus(true)).await;
    create_bucket(&s3.endpoint, "mirror").await;
    let expected = expected_files(&env.tree().await);

    let utf8 = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "mirror".into(), prefix: "utf8".into() };
    let config = env.config("s3-utf8", &utf8, "[stages.uploader]\nconcurrency = 4");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let keys = assert_exact_mirror(&config, &expected).await;
    assert!(keys.values().any(|k| !k.0.is_ascii()), "utf8 mode keeps non-ASCII names");

    let supa = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "mirror".into(), prefix: "supa".into() };
    let config = env.config("s3-supabase", &supa, "dest.keys = \"supabase\"");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let keys = assert_exact_mirror(&config, &expected).await;
    for key in keys.values() {
        assert!(is_supabase_safe(&key.0), "key outside Supabase's alphabet: {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_the_part_size_goes_multipart_and_verifies() {
    let s3 = s3_server().await;
    let mut corpus = small_corpus(false);
    corpus.files = 5;
    corpus.big_file_mib = 24;
    let env = TestEnv::start(corpus).await;
    create_bucket(&s3.endpoint, "big").await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "big".into(), prefix: "p".into() };
    let config = env.config("s3-big", &dest, "[pipeline]\npart_size = \"5MiB\"\nchunk_size = \"1MiB\"");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected = expected_files(&env.tree().await);
    assert!(expected.values().any(|e| e.size >= 24 << 20));
    assert_exact_mirror(&config, &expected).await;
}

/// In-progress multipart uploads in a bucket (S3 ListMultipartUploads).
async fn open_uploads(endpoint: &str, bucket: &str) -> usize {
    let xml = reqwest::get(format!("{endpoint}/{bucket}?uploads")).await.unwrap().text().await.unwrap();
    xml.matches("<UploadId>").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_killed_mid_way_is_not_left_orphaned() {
    let s3 = s3_server().await;
    let mut corpus = small_corpus(false);
    corpus.files = 3;
    corpus.big_file_mib = 200;
    let env = TestEnv::start(corpus).await;
    create_bucket(&s3.endpoint, "crash").await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "crash".into(), prefix: "p".into() };
    let config =
        env.config("s3-crash", &dest, "[pipeline]\npart_size = \"5MiB\"\n[stages.uploader]\npart_concurrency = 1");
    // Slow the source so the kill lands while parts are being uploaded.
    env.control("faults", serde_json::json!({"latency_ms": 1})).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["run", "--once", config.to_str().unwrap()])
        .env("MIRRORFLOW_LOG", "off")
        .spawn()
        .unwrap();
    let mut seen_open = false;
    for _ in 0..600 {
        if open_uploads(&s3.endpoint, "crash").await > 0 {
            seen_open = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    assert!(seen_open, "the big file never started a multipart upload");
    assert!(open_uploads(&s3.endpoint, "crash").await > 0, "kill did not interrupt the upload");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(open_uploads(&s3.endpoint, "crash").await, 0, "a multipart upload was left orphaned");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}
