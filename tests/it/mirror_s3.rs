//! Mirroring into a real S3 server (moto) through object_store: exact content under the prefix,
//! both key modes (in "supabase" mode every key uses only Supabase Storage's alphabet), multipart
//! uploads, and a killed large transfer resumed from its recorded parts.

use crate::support::*;
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
    // Files Drive will not hand over (abusive, download disabled, a Form) are skipped: exit 0.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let keys = assert_exact_mirror(&config, &expected).await;
    assert!(keys.values().any(|k| !k.0.is_ascii()), "utf8 mode keeps non-ASCII names");
    assert_keys_fit(&keys);

    let supa = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "mirror".into(), prefix: "supa".into() };
    let config = env.config("s3-supabase", &supa, "dest.keys = \"supabase\"");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    // Files Drive will not hand over (abusive, download disabled, a Form) are skipped: exit 0.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let keys = assert_exact_mirror(&config, &expected).await;
    for key in keys.values() {
        assert!(is_supabase_safe(&key.0), "key outside Supabase's alphabet: {key}");
    }
    assert_keys_fit(&keys);
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

/// Eight multipart files at once under a memory budget of one part: they take turns for it (no upload
/// waits on another's half-filled part) and the mirror is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_large_files_at_once_share_a_budget_of_one_part() {
    let s3 = s3_server().await;
    let mut corpus = small_corpus(false);
    corpus.files = 3;
    let env = TestEnv::start(corpus).await;
    let root = env.tree().await.root_id;
    let ops: Vec<_> = (0..8)
        .map(
            |i| serde_json::json!({"op": "create", "parent": root, "name": format!("large-{i}.bin"), "size": 12 << 20}),
        )
        .collect();
    let r = env.control("mutate", serde_json::json!({ "ops": ops })).await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
    create_bucket(&s3.endpoint, "budget").await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "budget".into(), prefix: "p".into() };
    let settings = "[pipeline]\npart_size = \"5MiB\"\nchunk_size = \"1MiB\"\nmemory_budget = \"5MiB\"\n\
                    [stages.uploader]\nconcurrency = 8\npart_concurrency = 4";
    let config = env.config("s3-budget", &dest, settings);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        mirrorflow(&["run", "--once", config.to_str().unwrap()]),
    )
    .await
    .expect("the uploads finish under the budget (none waits forever)");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected = expected_files(&env.tree().await);
    assert_eq!(expected.values().filter(|e| e.size == 12 << 20).count(), 8);
    assert_exact_mirror(&config, &expected).await;
}

/// Media bytes the emulator has streamed for one file since its counters were last reset.
async fn media_bytes(env: &TestEnv, file: &str) -> u64 {
    env.stats().await["media_bytes_by_file"][file].as_u64().unwrap_or(0)
}

/// A 256 MiB transfer killed part-way continues from its recorded parts: the second run downloads
/// exactly the bytes after the last recorded part (the emulator's byte counter), finishes the same
/// multipart upload, verifies the whole file's md5 (so the saved digest state was right), and leaves
/// no upload open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transfer_killed_part_way_resumes_from_its_recorded_parts() {
    const PART: u64 = 8 << 20;
    let s3 = s3_server().await;
    let mut corpus = small_corpus(false);
    corpus.files = 3;
    corpus.big_file_mib = 256;
    let env = TestEnv::start(corpus).await;
    create_bucket(&s3.endpoint, "crash").await;
    let tree = env.tree().await;
    let big = tree.items.iter().find(|i| i.size.unwrap_or(0) >= 256 << 20).expect("corpus has the big file");
    let size = big.size.unwrap();
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "crash".into(), prefix: "p".into() };
    let settings = "[pipeline]\npart_size = \"8MiB\"\nchunk_size = \"1MiB\"\nchunk_depth = 4\n\
                    [stages.uploader]\npart_concurrency = 2";
    let config = env.config("s3-crash", &dest, settings);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["run", "--once", config.to_str().unwrap()])
        .env("MIRRORFLOW_LOG", "off")
        .spawn()
        .unwrap();
    let mut first_run = 0;
    for _ in 0..3000 {
        first_run = media_bytes(&env, &big.id).await;
        if first_run >= size * 3 / 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    let first_run = media_bytes(&env, &big.id).await.max(first_run);
    assert!(first_run < size, "the kill came after the whole file was read ({first_run} bytes)");
    assert_eq!(open_uploads(&s3.endpoint, "crash").await, 1, "the interrupted upload should be kept to resume");

    env.control("stats/reset", serde_json::json!({})).await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let second_run = media_bytes(&env, &big.id).await;
    let resumed_at = size - second_run;
    assert!(resumed_at >= PART, "nothing was resumed: the second run read {second_run} of {size} bytes");
    assert_eq!(resumed_at % PART, 0, "the download must restart at a part boundary, not at {resumed_at}");
    // Only what was in flight when the process died (parts being sent, queued chunks, socket buffers)
    // is read twice; everything before the last recorded part is not.
    let read_twice = first_run - resumed_at;
    eprintln!("killed after {first_run} of {size} bytes read; resumed at {resumed_at}; {read_twice} bytes read twice");
    assert!(read_twice <= 4 * PART + (16 << 20), "{read_twice} bytes were downloaded twice");
    assert_eq!(open_uploads(&s3.endpoint, "crash").await, 0, "a multipart upload was left open");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}

/// A transfer killed part-way keeps its multipart upload to resume; when the file is deleted in Drive
/// before the next run, nothing continues that upload, and the run must abort it rather than leave it
/// open for ever (S3 keeps, and bills, the parts of an upload that is never completed or aborted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_upload_of_a_file_deleted_meanwhile_is_aborted() {
    let s3 = s3_server().await;
    let mut corpus = small_corpus(false);
    corpus.files = 3;
    corpus.big_file_mib = 64;
    let env = TestEnv::start(corpus).await;
    create_bucket(&s3.endpoint, "stale").await;
    let tree = env.tree().await;
    let big = tree.items.iter().find(|i| i.size.unwrap_or(0) >= 64 << 20).expect("corpus has the big file").clone();
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "stale".into(), prefix: "p".into() };
    let settings = "[pipeline]\npart_size = \"5MiB\"\nchunk_size = \"1MiB\"\nchunk_depth = 4\n\
                    [stages.uploader]\npart_concurrency = 2";
    let config = env.config("s3-stale", &dest, settings);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["run", "--once", config.to_str().unwrap()])
        .env("MIRRORFLOW_LOG", "off")
        .spawn()
        .unwrap();
    for _ in 0..3000 {
        if media_bytes(&env, &big.id).await >= big.size.unwrap() / 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    assert_eq!(open_uploads(&s3.endpoint, "stale").await, 1, "the interrupted upload should be kept to resume");

    let r = env.control("mutate", serde_json::json!({"ops": [{"op": "delete", "id": big.id}]})).await;
    assert!(r.get("error").is_none_or(|e| e.is_null()), "{r}");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(open_uploads(&s3.endpoint, "stale").await, 0, "the upload of the deleted file was left open");
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
}

/// An upload opened without a record (a process killed between `CreateMultipartUpload` and the record of
/// its id) is found by listing the uploads open at its key, and aborted; a recorded one, or one at a key
/// that merely starts with it, is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_opened_without_a_record_are_found_and_aborted() {
    let s3 = s3_server().await;
    create_bucket(&s3.endpoint, "unrecorded").await;
    let env = TestEnv::start(small_corpus(false)).await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: "unrecorded".into(), prefix: "p".into() };
    let (_cfg, _store, d) = open(&env.config("c", &dest, ""));
    let meta = mirrorflow::dest::ObjectMeta {
        drive_id: "f".into(),
        drive_name: "a & b.bin".into(),
        content_type: None,
        md5: None,
    };
    let key = mirrorflow::model::ObjectKey("p/my-drive/Ünï cødé & <more>/a b.bin".into());
    let longer = mirrorflow::model::ObjectKey(format!("{}.2", key.0));
    let lost = d.create_upload(&key, &meta).await.unwrap();
    let kept = d.create_upload(&key, &meta).await.unwrap();
    d.create_upload(&longer, &meta).await.unwrap();
    assert_eq!(open_uploads(&s3.endpoint, "unrecorded").await, 3);

    let aborted = d.abort_unrecorded_uploads(&key, std::slice::from_ref(&kept)).await.unwrap();
    assert_eq!(aborted, Some(1));
    assert_eq!(open_uploads(&s3.endpoint, "unrecorded").await, 2);
    let listing = reqwest::get(format!("{}/unrecorded?uploads", s3.endpoint)).await.unwrap().text().await.unwrap();
    assert!(!listing.contains(&lost) && listing.contains(&kept), "{listing}");
}

/// The ETag of `key` in `bucket` (a HEAD through object_store).
async fn etag_of(endpoint: &str, bucket: &str, key: &str) -> String {
    use object_store::ObjectStoreExt;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let head = store.head(&object_store::path::Path::from(key)).await.unwrap();
    head.e_tag.unwrap_or_default().trim_matches('"').to_string()
}

/// The `drive-id`, `drive-name` (percent-encoded) and `drive-md5` metadata and the content type of
/// `key` in `bucket` (a HEAD through object_store).
async fn drive_metadata(endpoint: &str, bucket: &str, key: &str) -> [Option<String>; 4] {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let head = object_store::GetOptions { head: true, ..Default::default() };
    let got = object_store::ObjectStore::get_opts(&store, &object_store::path::Path::from(key), head).await.unwrap();
    let get = |a: object_store::Attribute| got.attributes.get(&a).map(|v| v.to_string());
    let meta = |name: &'static str| get(object_store::Attribute::Metadata(name.into()));
    [meta("drive-id"), meta("drive-name"), meta("drive-md5"), get(object_store::Attribute::ContentType)]
}

/// What [`drive_metadata`] must read for the emulator's file `id`: its own id, name, md5 and type.
fn own_metadata(tree: &drive_emulator::EmuTree, id: &str) -> [Option<String>; 4] {
    let item = tree.items.iter().find(|i| i.id == id).unwrap();
    let name: String = url::form_urlencoded::byte_serialize(item.name.as_bytes()).collect();
    [Some(item.id.clone()), Some(name), item.md5.clone(), Some(item.mime_type.clone())]
}

/// Each object carries its own file's metadata: a renamed file, a file moved to another folder and a
/// content-dedup copy are server-side copies (`CopyObject`), and each copy gets the `drive-id`,
/// `drive-name`, `drive-md5` and content type of the file it now mirrors, not its source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_moved_and_dedup_copied_objects_carry_their_own_files_metadata() {
    let s3 = s3_server().await;
    let env = TestEnv::start(small_corpus(false)).await;
    let bucket = format!("copymeta-{}", std::process::id());
    create_bucket(&s3.endpoint, &bucket).await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: bucket.clone(), prefix: "p".into() };
    let config = env.config("s3-copymeta", &dest, "");
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let tree = env.tree().await;
    let media: Vec<_> = tree
        .items
        .iter()
        .filter(|i| i.size.unwrap_or(0) > 0 && i.export_sizes.is_none() && i.parents.contains(&tree.root_id))
        .take(3)
        .cloned()
        .collect();
    assert_eq!(media.len(), 3);
    let folder = tree.items.iter().find(|i| i.mime_type.ends_with(".folder") && i.drive_id.is_none()).unwrap();
    let ops = serde_json::json!({"ops": [
        {"op": "rename", "id": media[0].id, "name": "renamed by the owner.bin"},
        {"op": "move", "id": media[1].id, "new_parent": folder.id},
        {"op": "copy", "id": media[2].id, "parent": folder.id, "name": "a copy with its own name.bin"},
    ]});
    let dedup = env.control("mutate", ops).await["created"][0].as_str().unwrap().to_string();
    let before = env.stats().await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    let keys = assert_exact_mirror(&config, &expected_files(&tree)).await;
    let copied = env.stats().await["media_bytes_by_file"][&dedup].as_u64().unwrap_or(0);
    assert_eq!(copied, before["media_bytes_by_file"][&dedup].as_u64().unwrap_or(0), "the dedup copy was downloaded");

    for id in [&media[0].id, &media[1].id, &media[2].id, &dedup] {
        let got = drive_metadata(&s3.endpoint, &bucket, &keys[id.as_str()].0).await;
        assert_eq!(got, own_metadata(&tree, id), "{}", keys[id.as_str()]);
    }
    assert_verifies_equal(&config).await;
}

/// One `CopyObject` copies 5 GiB at most (AWS, Supabase), so larger objects are copied in parts
/// (`UploadPartCopy`). With that limit lowered to 6 MiB and parts of 5 MiB, 12 MiB files uploaded in
/// one PUT are renamed, moved, copied in Drive (a dedup copy) and deleted (trashed): the mirror is
/// exact, each copied object has the ETag only a 3-part upload gets (`<hex>-3`; a `CopyObject` keeps
/// the md5), still carries Drive's md5 as metadata, and no upload is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_above_the_copy_limit_are_copied_in_parts() {
    const SIZE: u64 = 12 << 20;
    let s3 = s3_server().await;
    let mut corpus = small_corpus(false);
    corpus.files = 3;
    let env = TestEnv::start(corpus).await;
    let tree = env.tree().await;
    let folder = tree.items.iter().find(|i| i.mime_type.ends_with(".folder") && i.drive_id.is_none()).unwrap();
    let ops: Vec<_> = (0..4)
        .map(|i| serde_json::json!({"op": "create", "parent": tree.root_id, "name": format!("large-{i}.bin"), "size": SIZE}))
        .collect();
    let r = env.control("mutate", serde_json::json!({ "ops": ops })).await;
    let large: Vec<String> = r["created"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(large.len(), 4, "{r}");
    // A bucket of its own: a reused moto server keeps the objects of an earlier run.
    let bucket = format!("bigcopy-{}", std::process::id());
    create_bucket(&s3.endpoint, &bucket).await;
    let dest = Dest::S3 { endpoint: s3.endpoint.clone(), bucket: bucket.clone(), prefix: "p".into() };
    let settings = "dest.deletes = \"trash\"\n[pipeline]\npart_size = \"16MiB\"\nchunk_size = \"1MiB\"\n\
                    [testing]\nmultipart_copy_above = \"6MiB\"\nmultipart_copy_part_size = \"5MiB\"";
    let config = env.config("s3-bigcopy", &dest, settings);
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let keys = assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    for id in &large {
        let etag = etag_of(&s3.endpoint, &bucket, &keys[id].0).await;
        assert!(!etag.contains('-'), "uploaded in one PUT, so not multipart yet: {etag}");
    }

    let ops = serde_json::json!({"ops": [
        {"op": "rename", "id": large[0], "name": "renamed.bin"},
        {"op": "move", "id": large[1], "new_parent": folder.id},
        {"op": "copy", "id": large[2], "parent": folder.id, "name": "copy of large-2.bin"},
        {"op": "delete", "id": large[3]},
    ]});
    let r = env.control("mutate", ops).await;
    let dedup = r["created"][0].as_str().unwrap().to_string();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    let expected = expected_files(&tree);
    let keys = assert_exact_mirror(&config, &expected).await;

    let (_cfg, store, destination) = open(&config);
    for id in [&large[0], &large[1], &dedup] {
        let key = &keys[id.as_str()];
        let etag = etag_of(&s3.endpoint, &bucket, &key.0).await;
        assert!(etag.ends_with("-3"), "{key} was not copied in 3 parts: ETag {etag}");
        let stored = destination.stored_content(key).await.unwrap().unwrap();
        assert_eq!((stored.size, stored.md5.as_ref()), (SIZE, expected[id.as_str()].md5.as_ref()), "{key}");
        assert_eq!(drive_metadata(&s3.endpoint, &bucket, &key.0).await, own_metadata(&tree, id), "{key}");
    }
    let trashed: Vec<_> =
        destination.list_keys().await.unwrap().into_iter().filter(|(k, _)| k.0.starts_with("p/.trash/")).collect();
    assert_eq!(trashed.len(), 1, "{trashed:?}");
    assert_eq!(trashed[0].1, SIZE);
    let etag = etag_of(&s3.endpoint, &bucket, &trashed[0].0.0).await;
    assert!(etag.ends_with("-3"), "the trashed copy was not copied in 3 parts: ETag {etag}");
    assert_eq!(open_uploads(&s3.endpoint, &bucket).await, 0, "a multipart copy left its upload open");
    drop(store); // verify opens it
    assert_verifies_equal(&config).await;
}
