//! Downloads: `alt=media` ranges and errors, exports and their size limit, `exportLinks`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_ranges_and_download_errors() {
    let ctx = start(hostile()).await;
    let tree = ctx.tree().await;
    let file = tree.items.iter().find(|i| i.size.unwrap_or(0) > 100 && !i.abusive && i.drive_id.is_none()).unwrap();
    let size = file.size.unwrap();
    let resp = ctx.hub.files().get(&file.id).param("alt", "media").doit().await.unwrap().0;
    let full = hub_body(resp).await;
    assert_eq!(full.len() as u64, size);
    assert_eq!(Some(md5_hex(&full)), file.md5);
    let token = ctx.token().await;
    let url = format!("{}drive/v3/files/{}?alt=media", ctx.base, file.id);
    let get_range = |range: String| {
        let req = ctx.http.get(&url).bearer_auth(&token).header("Range", range);
        async move { req.send().await.unwrap() }
    };
    let resp = get_range("bytes=10-29".into()).await;
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.headers()["content-range"], format!("bytes 10-29/{size}").as_str());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &full[10..30]);
    let resp = get_range("bytes=-7".into()).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &full[full.len() - 7..]);
    let resp = get_range(format!("bytes={}-", size - 3)).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &full[full.len() - 3..]);
    let resp = get_range(format!("bytes={size}-")).await;
    assert_eq!(resp.status().as_u16(), 416);
    // Zero-byte file.
    let empty = tree.items.iter().find(|i| i.size == Some(0)).unwrap();
    let (status, body) = ctx.api_get(&format!("drive/v3/files/{}?alt=media", empty.id)).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(empty.md5.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
    // Google Doc and folder: fileNotDownloadable; abusive file needs acknowledgeAbuse.
    let doc = tree.items.iter().find(|i| i.export_sizes.is_some()).unwrap();
    let folder = tree.items.iter().find(|i| i.mime_type.ends_with(".folder")).unwrap();
    for id in [&doc.id, &folder.id] {
        let (status, body) = ctx.api_get(&format!("drive/v3/files/{id}?alt=media")).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, envelope(&v).1.as_str()), (403, "fileNotDownloadable"));
    }
    let bad = tree.items.iter().find(|i| i.abusive).unwrap();
    let err = ctx.hub.files().get(&bad.id).param("alt", "media").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "cannotDownloadAbusiveFile");
    let resp = ctx.hub.files().get(&bad.id).param("alt", "media").acknowledge_abuse(true).doit().await.unwrap().0;
    assert_eq!(Some(md5_hex(&hub_body(resp).await)), bad.md5);
    // Downloads disabled by the owner: canDownload false, and alt=media answers cannotDownloadFile.
    let disabled = tree.items.iter().find(|i| i.name == drive_emulator::DOWNLOAD_DISABLED_NAME).unwrap();
    let (_, meta) = ctx.api_get(&format!("drive/v3/files/{}?fields=capabilities", disabled.id)).await;
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["capabilities"]["canDownload"], Value::Bool(false), "{meta}");
    let (status, body) = ctx.api_get(&format!("drive/v3/files/{}?alt=media", disabled.id)).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, envelope(&v).1.as_str()), (403, "cannotDownloadFile"));
    // A link-shared file the user never opened: its resourceKey is listed, and alt=media answers 404
    // unless `X-Goog-Drive-Resource-Keys: <id>/<key>` carries it.
    let linked = tree.items.iter().find(|i| i.name == drive_emulator::LINK_SHARED_NAME).unwrap();
    let (_, meta) = ctx.api_json(&format!("drive/v3/files/{}?fields=resourceKey", linked.id)).await;
    let key = meta["resourceKey"].as_str().expect("resourceKey listed").to_string();
    let (status, _) = ctx.api_get(&format!("drive/v3/files/{}?alt=media", linked.id)).await;
    assert_eq!(status, 404);
    let url = format!("{}drive/v3/files/{}?alt=media", ctx.base, linked.id);
    for header in [format!("{}/{key}", linked.id), format!("other/x, {}/{key}", linked.id)] {
        let resp = ctx
            .http
            .get(&url)
            .bearer_auth(ctx.token().await)
            .header("X-Goog-Drive-Resource-Keys", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(Some(md5_hex(&resp.bytes().await.unwrap())), linked.md5);
    }
    // Unknown id.
    let err = ctx.hub.files().get("1doesNotExist000000000000000000000").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "notFound");
    ctx.emu.shutdown().await;
}

/// Rewrite a docs.google.com exportLink onto the emulator.
fn local_link(ctx: &Ctx, link: &str) -> String {
    link.replace("https://docs.google.com/", &ctx.base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_limit_and_export_links() {
    let ctx = start(hostile()).await;
    let tree = ctx.tree().await;
    let huge = tree.items.iter().find(|i| i.name == "Huge export doc").unwrap();
    let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    let err = ctx.hub.files().export(&huge.id, docx).doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "exportSizeLimitExceeded");
    let (_, meta) = ctx.hub.files().get(&huge.id).param("fields", "exportLinks").doit().await.unwrap();
    let links = meta.export_links.unwrap();
    let link = &links[docx];
    assert_eq!(
        link,
        &format!("https://docs.google.com/feeds/download/documents/export/Export?id={}&exportFormat=docx", huge.id)
    );
    let (status, body) = ctx.api_get(&local_link(&ctx, link).replace(&ctx.base, "")).await;
    assert_eq!(status, 200);
    let want = huge.export_sizes.as_ref().unwrap()[docx];
    assert!(want > 10_000_000);
    assert_eq!(body.len() as u64, want);
    // Small docs of every kind: export and exportLink bytes are identical for each format.
    for doc in tree.items.iter().filter(|i| {
        // A Form has no export format at all (no exportLinks).
        let exportable = i.export_sizes.as_ref().is_some_and(|s| !s.is_empty());
        exportable && i.name != "Huge export doc" && i.drive_id.is_none()
    }) {
        let (_, meta) = ctx.hub.files().get(&doc.id).param("fields", "exportLinks,mimeType").doit().await.unwrap();
        let links = meta.export_links.unwrap();
        assert_eq!(links.len(), doc.export_sizes.as_ref().unwrap().len());
        let (mime, link) = links.iter().next().unwrap();
        let via_export = hub_body(ctx.hub.files().export(&doc.id, mime).doit().await.unwrap()).await;
        let (status, via_link) = ctx.api_get(&local_link(&ctx, link).replace(&ctx.base, "")).await;
        assert_eq!(status, 200);
        assert_eq!(via_export, via_link.to_vec(), "{} {mime}", doc.mime_type);
        assert_eq!(via_export.len() as u64, doc.export_sizes.as_ref().unwrap()[mime]);
    }
    // Unsupported conversion and non-Docs files.
    let err = ctx.hub.files().export(&huge.id, "image/gif").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "badRequest");
    let bin = tree.items.iter().find(|i| i.size.is_some()).unwrap();
    let err = ctx.hub.files().export(&bin.id, "application/pdf").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "fileNotExportable");
    // exportLinks need a token too.
    let resp = ctx.http.get(local_link(&ctx, link)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    ctx.emu.shutdown().await;
}
