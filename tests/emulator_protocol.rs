//! Wire-protocol tests of the Drive emulator, driven through the real google-drive3 + yup-oauth2 stack.

mod emu_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use emu_support::{Ctx, envelope, hub_error_reason, start};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use mirrorflow::emulator::{EmuTree, EmulatorConfig};
use serde_json::{Value, json};

const FULL_FIELDS: &str = "id,name,mimeType,parents,size,md5Checksum,sha256Checksum,modifiedTime,version,trashed,driveId,shortcutDetails,exportLinks,capabilities/canDownload";

fn hostile() -> EmulatorConfig {
    EmulatorConfig { files: 60, folders: 10, gdocs: 4, shared_drives: 2, hostile: true, seed: 42, ..Default::default() }
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

async fn hub_body(resp: google_drive3::common::Response) -> Vec<u8> {
    resp.into_body().collect().await.expect("body").to_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flow_expiry_and_401_envelope() {
    let ctx = start(EmulatorConfig { token_lifetime_secs: 2, ..Default::default() }).await;
    // No token, and a made-up token: 401 in Google's envelope.
    for auth in [None, Some("Bearer ya29.not-a-token")] {
        let mut req = ctx.http.get(format!("{}drive/v3/files", ctx.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(envelope(&v), (401, "authError".into(), "UNAUTHENTICATED".into()));
        assert_eq!(v["error"]["errors"][0]["domain"], "global");
    }
    // A forged assertion is refused by the token endpoint.
    let (status, v) = ctx
        .token_request(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA"),
        ])
        .await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
    // The hub keeps working across several token lifetimes (yup-oauth2 refetches expired tokens).
    for _ in 0..4 {
        let (_, about) = ctx.hub.about().get().param("fields", "user(emailAddress),kind").doit().await.expect("about");
        assert!(about.user.and_then(|u| u.email_address).unwrap_or_default().contains("emulator"));
        tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    }
    let stats = ctx.control_get("stats").await;
    assert!(stats["requests"]["token 200"].as_u64().unwrap_or(0) >= 2, "{stats}");
    // Refresh-token grant: a 1-second token works, then expires into a 401.
    ctx.control("faults", json!({"token_lifetime_secs": 1})).await;
    let minted = ctx.control("refresh_token", json!({})).await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", minted["refresh_token"].as_str().unwrap()),
        ("client_id", minted["client_id"].as_str().unwrap()),
        ("client_secret", minted["client_secret"].as_str().unwrap()),
    ];
    let (_, tok) = ctx.token_request(&form).await;
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 1);
    let url = format!("{}drive/v3/about?fields=kind", ctx.base);
    let bearer = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(ctx.http.get(&url).bearer_auth(&bearer).send().await.unwrap().status().as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let resp = ctx.http.get(&url).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    ctx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_are_honoured_like_drive() {
    let ctx = start(hostile()).await;
    let (_, list) =
        ctx.hub.files().list().page_size(5).param("fields", "files(id,name),nextPageToken").doit().await.unwrap();
    let raw = serde_json::to_value(&list).unwrap();
    for f in raw["files"].as_array().unwrap() {
        let keys: BTreeSet<&str> =
            f.as_object().unwrap().iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, BTreeSet::from(["id", "name"]));
    }
    assert!(list.next_page_token.is_some());
    // Raw JSON: not-asked fields are absent, not null.
    let (status, v) = ctx.api_json("drive/v3/files?pageSize=3&fields=nextPageToken,files/id").await;
    assert_eq!(status, 200);
    assert_eq!(v.as_object().unwrap().keys().cloned().collect::<Vec<_>>(), vec!["files", "nextPageToken"]);
    assert!(v["files"].as_array().unwrap().iter().all(|f| f.as_object().unwrap().len() == 1));
    // Defaults without fields.
    let (_, v) = ctx.api_json("drive/v3/files?pageSize=2").await;
    let top: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, BTreeSet::from(["files", "incompleteSearch", "kind", "nextPageToken"]));
    let f0: BTreeSet<&str> = v["files"][0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(f0, BTreeSet::from(["id", "kind", "mimeType", "name"]));
    // A binary file: md5 only when asked; nested selections.
    let tree = ctx.tree().await;
    let bin = tree.items.iter().find(|i| i.size.unwrap_or(0) > 0 && i.drive_id.is_none()).unwrap();
    let (_, v) = ctx.api_json(&format!("drive/v3/files/{}?fields=id,capabilities/canDownload", bin.id)).await;
    assert_eq!(v, json!({"id": bin.id, "capabilities": {"canDownload": true}}));
    let (_, v) = ctx.api_json(&format!("drive/v3/files/{}?fields=*", bin.id)).await;
    assert_eq!(v["md5Checksum"].as_str(), bin.md5.as_deref());
    assert_eq!(v["size"], json!(bin.size.unwrap().to_string()));
    assert_eq!(v["kind"], "drive#file");
    let (_, f) = ctx.hub.files().get(&bin.id).param("fields", FULL_FIELDS).doit().await.unwrap();
    assert_eq!((f.md5_checksum.as_ref(), f.sha256_checksum.as_ref()), (bin.md5.as_ref(), bin.sha256.as_ref()));
    assert_eq!(f.capabilities.and_then(|c| c.can_download), Some(true));
    assert!(f.modified_time.is_some() && f.version.is_some() && f.export_links.is_none());
    let (_, v) = ctx.api_json(&format!("drive/v3/files/{}", bin.id)).await;
    assert!(v.get("md5Checksum").is_none() && v.get("size").is_none());
    // Unknown field names → 400 invalidParameter, through the hub too.
    let err = ctx.hub.files().list().param("fields", "files(id,bogusField)").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "invalidParameter");
    let (status, v) = ctx.api_json(&format!("drive/v3/files/{}?fields=id,capabilities/canFly", bin.id)).await;
    assert_eq!((status, envelope(&v).1.as_str()), (400, "invalidParameter"));
    // changes(file(id,name)) selection.
    let (_, start) = ctx.hub.changes().get_start_page_token().doit().await.unwrap();
    let token = start.start_page_token.unwrap();
    ctx.control("mutate", json!({"ops": [{"op": "rename", "id": bin.id, "name": "renamed.bin"}]})).await;
    let (_, v) = ctx
        .api_json(&format!("drive/v3/changes?pageToken={token}&fields=changes(fileId,file(id,name)),newStartPageToken"))
        .await;
    assert_eq!(v["changes"], json!([{"fileId": bin.id, "file": {"id": bin.id, "name": "renamed.bin"}}]));
    assert!(v["newStartPageToken"].is_string());
    // about.get requires fields.
    let (status, v) = ctx.api_json("drive/v3/about").await;
    assert_eq!((status, envelope(&v).1.as_str()), (400, "required"));
    ctx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_alias_queries_and_shared_drive_visibility() {
    let ctx = start(hostile()).await;
    let tree = ctx.tree().await;
    let (_, root) = ctx.hub.files().get("root").param("fields", "id,mimeType,parents,name").doit().await.unwrap();
    assert_eq!(root.id.as_deref(), Some(tree.root_id.as_str()));
    assert_eq!(root.mime_type.as_deref(), Some("application/vnd.google-apps.folder"));
    assert!(root.parents.is_none());
    // 'root' in parents and trashed = false returns exactly the root's live children.
    let q = "'root' in parents and trashed = false";
    let (_, list) = ctx.hub.files().list().q(q).page_size(1000).param("fields", "files(id)").doit().await.unwrap();
    let got: BTreeSet<String> = list.files.unwrap().into_iter().filter_map(|f| f.id).collect();
    let want: BTreeSet<String> =
        tree.items.iter().filter(|i| i.parents.contains(&tree.root_id) && !i.trashed).map(|i| i.id.clone()).collect();
    assert_eq!(got, want);
    assert!(!want.is_empty());
    // mimeType filters.
    let q = format!("'{}' in parents and mimeType = 'application/vnd.google-apps.folder'", tree.root_id);
    let (_, list) = ctx.hub.files().list().q(&q).param("fields", "files(mimeType)").doit().await.unwrap();
    assert!(list.files.unwrap().iter().all(|f| f.mime_type.as_deref() == Some("application/vnd.google-apps.folder")));
    // Unsupported query → 400 invalid.
    let err = ctx.hub.files().list().q("name contains 'x'").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "invalid");
    // Shared drive items: 404 without supportsAllDrives, visible with it; excluded from user listings.
    let shared = tree.items.iter().find(|i| i.drive_id.is_some()).unwrap();
    let err = ctx.hub.files().get(&shared.id).doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "notFound");
    let (_, f) =
        ctx.hub.files().get(&shared.id).supports_all_drives(true).param("fields", "driveId").doit().await.unwrap();
    assert_eq!(f.drive_id, shared.drive_id);
    let (_, user) = ctx.hub.files().list().page_size(1000).param("fields", "files(id,driveId)").doit().await.unwrap();
    assert!(user.files.unwrap().iter().all(|f| f.drive_id.is_none()));
    let drive_id = shared.drive_id.clone().unwrap();
    let err = ctx.hub.files().list().corpora("drive").drive_id(&drive_id).doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "invalid");
    let (_, in_drive) = ctx
        .hub
        .files()
        .list()
        .corpora("drive")
        .drive_id(&drive_id)
        .include_items_from_all_drives(true)
        .supports_all_drives(true)
        .page_size(1000)
        .param("fields", "files(id,driveId)")
        .doit()
        .await
        .unwrap();
    let got: BTreeSet<String> = in_drive.files.unwrap().into_iter().filter_map(|f| f.id).collect();
    let want: BTreeSet<String> =
        tree.items.iter().filter(|i| i.drive_id.as_deref() == Some(&drive_id)).map(|i| i.id.clone()).collect();
    assert_eq!(got, want);
    // drives.list pages through every shared drive.
    let (_, drives) = ctx.hub.drives().list().page_size(1).doit().await.unwrap();
    assert_eq!(drives.drives.unwrap().len(), 1);
    let token = drives.next_page_token.expect("second page");
    let (_, drives) = ctx.hub.drives().list().page_size(1).page_token(&token).doit().await.unwrap();
    assert_eq!(drives.drives.unwrap()[0].id.as_deref(), Some(tree.drives[1].id.as_str()));
    ctx.emu.shutdown().await;
}

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
    for doc in
        tree.items.iter().filter(|i| i.export_sizes.is_some() && i.name != "Huge export doc" && i.drive_id.is_none())
    {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_has_every_trap_and_is_deterministic() {
    let ctx = start(hostile()).await;
    let tree = ctx.tree().await;
    let names: Vec<&str> = tree.items.iter().map(|i| i.name.as_str()).collect();
    for want in [
        "a/b slash.txt",
        "back\\slash.txt",
        ".",
        "..",
        " leading space.txt",
        "trailing space.txt ",
        "caf\u{e9}.txt",
        "cafe\u{301}.txt",
        "README.md",
        "readme.md",
    ] {
        assert!(names.contains(&want), "missing {want:?}");
    }
    assert!(names.iter().any(|n| n.len() > 255));
    assert!(names.iter().filter(|n| n.starts_with("deep")).map(|n| n.len() + 1).sum::<usize>() > 1024, "a deep path");
    assert!(names.iter().any(|n| n.chars().any(char::is_control)));
    assert!(names.iter().any(|n| n.chars().any(|c| c as u32 > 0x1F000)));
    let mut by_parent_name: HashMap<(String, String), Vec<&str>> = HashMap::new();
    for i in &tree.items {
        for p in &i.parents {
            by_parent_name.entry((p.clone(), i.name.clone())).or_default().push(i.mime_type.as_str());
        }
    }
    assert!(by_parent_name.values().any(|v| v.len() >= 3));
    assert!(
        by_parent_name
            .values()
            .any(|v| v.iter().any(|m| m.ends_with(".folder")) && v.iter().any(|m| !m.ends_with(".folder")))
    );
    assert!(tree.items.iter().any(|i| i.parents.len() == 2));
    let ids: BTreeSet<&str> = tree.items.iter().map(|i| i.id.as_str()).collect();
    let shortcuts: Vec<_> = tree.items.iter().filter(|i| i.shortcut_target.is_some()).collect();
    assert!(shortcuts.len() >= 4);
    assert!(shortcuts.iter().any(|s| !ids.contains(s.shortcut_target.as_deref().unwrap())), "dangling");
    assert!(shortcuts.iter().any(|s| is_ancestor(&tree, s.shortcut_target.as_deref().unwrap(), &s.id)), "cycle");
    assert!(tree.items.iter().any(|i| i.abusive));
    assert!(tree.items.iter().all(|i| (20..=40).contains(&i.id.len())));
    // Same seed, same corpus; another seed, another corpus.
    let again = start(hostile()).await;
    assert_eq!(again.tree().await, tree);
    let other = start(EmulatorConfig { seed: 43, ..hostile() }).await;
    assert_ne!(other.tree().await.items[0].id, tree.items[0].id);
    for c in [ctx, again, other] {
        c.emu.shutdown().await;
    }
}

fn is_ancestor(tree: &EmuTree, candidate: &str, id: &str) -> bool {
    let by_id: HashMap<&str, &mirrorflow::emulator::EmuItem> = tree.items.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut stack = vec![id];
    let mut seen = BTreeSet::new();
    while let Some(cur) = stack.pop() {
        if !seen.insert(cur) {
            continue;
        }
        for p in by_id.get(cur).map(|i| i.parents.as_slice()).unwrap_or_default() {
            if p == candidate {
                return true;
            }
            stack.push(p);
        }
    }
    false
}

/// List every file with the hub (all drives), paging with `page_size`.
async fn list_all(ctx: &Ctx, page_size: i32, fields: &str) -> (Vec<google_drive3::api::File>, usize) {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut call = ctx
            .hub
            .files()
            .list()
            .corpora("allDrives")
            .include_items_from_all_drives(true)
            .supports_all_drives(true)
            .page_size(page_size)
            .param("fields", &format!("nextPageToken,files({fields})"));
        if let Some(t) = &token {
            call = call.page_token(t);
        }
        let (_, list) = call.doit().await.expect("files.list");
        pages += 1;
        out.extend(list.files.unwrap_or_default());
        match list.next_page_token {
            Some(t) => token = Some(t),
            None => return (out, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_2500_items_in_files_and_changes() {
    let ctx = start(EmulatorConfig { files: 2500, folders: 30, seed: 7, ..Default::default() }).await;
    let tree = ctx.tree().await;
    assert!(tree.items.len() > 2500);
    let (files, pages) = list_all(&ctx, 1000, "id").await;
    assert_eq!(pages, tree.items.len().div_ceil(1000));
    let listed: Vec<String> = files.into_iter().filter_map(|f| f.id).collect();
    let expected: Vec<String> = tree.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(listed, expected, "stable listing order = creation order");
    // A page token keeps working while items are added; new items appear at the end.
    let (_, first) =
        ctx.hub.files().list().page_size(1000).param("fields", "nextPageToken,files(id)").doit().await.unwrap();
    let (_, start) = ctx.hub.changes().get_start_page_token().doit().await.unwrap();
    let ops: Vec<Value> = (0..2600)
        .map(|n| json!({"op": "create", "parent": tree.root_id, "name": format!("paged-{n}.txt"), "size": n % 50}))
        .collect();
    let created = ctx.control("mutate", json!({"ops": ops})).await;
    let created: Vec<String> = serde_json::from_value(created["created"].clone()).unwrap();
    assert_eq!(created.len(), 2600);
    let mut ids: Vec<String> = first.files.unwrap().into_iter().filter_map(|f| f.id).collect();
    let mut token = first.next_page_token;
    while let Some(t) = token {
        let (_, page) = ctx
            .hub
            .files()
            .list()
            .page_size(1000)
            .page_token(&t)
            .param("fields", "nextPageToken,files(id)")
            .doit()
            .await
            .unwrap();
        ids.extend(page.files.unwrap().into_iter().filter_map(|f| f.id));
        token = page.next_page_token;
    }
    let my_drive = tree.items.iter().filter(|i| i.drive_id.is_none()).count();
    assert_eq!(ids.len(), my_drive + 2600);
    assert_eq!(&ids[my_drive..], created.as_slice());
    // changes.list pages oldest first; nextPageToken on all but the last page, which has newStartPageToken.
    let mut token = start.start_page_token.unwrap();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (_, page) = ctx
            .hub
            .changes()
            .list(&token)
            .page_size(1000)
            .param("fields", "nextPageToken,newStartPageToken,changes(fileId,removed,file(id,name))")
            .doit()
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.changes.unwrap_or_default().into_iter().filter_map(|c| c.file_id));
        match (page.next_page_token, page.new_start_page_token) {
            (Some(next), None) => token = next,
            (None, Some(_)) => break,
            other => panic!("bad page tokens {other:?}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
    let err = ctx.hub.changes().list("bm90LWEtdG9rZW4").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "invalid");
    let err = ctx.hub.files().list().page_token("garbage").doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "invalid");
    ctx.emu.shutdown().await;
}

/// What a mirror keeps per item.
type Row = (String, Vec<String>, String, Option<u64>, Option<String>, bool, u64, Option<String>);

fn row_of_file(f: &google_drive3::api::File) -> Row {
    (
        f.name.clone().unwrap_or_default(),
        f.parents.clone().unwrap_or_default(),
        f.mime_type.clone().unwrap_or_default(),
        f.size.map(|s| s as u64),
        f.md5_checksum.clone(),
        f.trashed.unwrap_or(false),
        f.version.unwrap_or(0) as u64,
        f.drive_id.clone(),
    )
}

const ROW_FIELDS: &str = "id,name,parents,mimeType,size,md5Checksum,trashed,version,driveId";

async fn replay_and_compare(ctx: &Ctx, ops: Value) {
    let (_, start) = ctx.hub.changes().get_start_page_token().supports_all_drives(true).doit().await.unwrap();
    let (files, _) = list_all(ctx, 137, ROW_FIELDS).await;
    let mut mirror: BTreeMap<String, Row> = files.iter().map(|f| (f.id.clone().unwrap(), row_of_file(f))).collect();
    let answer = ctx.control("mutate", json!({"ops": ops})).await;
    assert!(answer.get("error").is_none(), "{answer}");
    let mut token = start.start_page_token.unwrap();
    loop {
        let (_, page) = ctx
            .hub
            .changes()
            .list(&token)
            .page_size(53)
            .include_items_from_all_drives(true)
            .supports_all_drives(true)
            .include_removed(true)
            .param("fields", &format!("nextPageToken,newStartPageToken,changes(fileId,removed,file({ROW_FIELDS}))"))
            .doit()
            .await
            .unwrap();
        for c in page.changes.unwrap_or_default() {
            let id = c.file_id.unwrap();
            match (c.removed.unwrap_or(false), c.file) {
                (true, _) | (false, None) => {
                    mirror.remove(&id);
                }
                (false, Some(f)) => {
                    mirror.insert(id, row_of_file(&f));
                }
            }
        }
        match page.next_page_token {
            Some(t) => token = t,
            None => break,
        }
    }
    let tree = ctx.tree().await;
    let expected: BTreeMap<String, Row> = tree
        .items
        .iter()
        .map(|i| {
            let row = (
                i.name.clone(),
                i.parents.clone(),
                i.mime_type.clone(),
                i.size,
                i.md5.clone(),
                i.trashed,
                i.version,
                i.drive_id.clone(),
            );
            (i.id.clone(), row)
        })
        .collect();
    assert_eq!(mirror.len(), expected.len());
    for (id, row) in &expected {
        assert_eq!(mirror.get(id), Some(row), "item {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_replayed_over_snapshot_equals_tree() {
    let ctx = start(hostile()).await;
    let tree = ctx.tree().await;
    let folder = tree.items.iter().find(|i| i.name == "Hostile").unwrap().id.clone();
    let sub = tree
        .items
        .iter()
        .find(|i| i.mime_type.ends_with(".folder") && i.parents == vec![tree.root_id.clone()] && i.id != folder)
        .unwrap()
        .id
        .clone();
    replay_and_compare(
        &ctx,
        json!([
            {"op": "trash", "id": folder},
            {"op": "random", "count": 150, "seed": 1},
            {"op": "untrash", "id": folder},
            {"op": "delete", "id": sub},
            {"op": "create_gdoc", "parent": "root", "name": "fresh", "kind": "spreadsheet"},
        ]),
    )
    .await;
    replay_and_compare(&ctx, json!([{"op": "random", "count": 300, "seed": 99}])).await;
    // Trashing a folder reports its descendants trashed; versions bump on every change.
    let tree = ctx.tree().await;
    let parent = tree
        .items
        .iter()
        .find(|i| {
            i.mime_type.ends_with(".folder") && !i.trashed && tree.items.iter().any(|c| c.parents.contains(&i.id))
        })
        .unwrap();
    let child = tree.items.iter().find(|c| c.parents.contains(&parent.id)).unwrap();
    ctx.control("mutate", json!({"ops": [{"op": "trash", "id": parent.id}]})).await;
    let after = ctx.tree().await;
    let child_after = after.items.iter().find(|c| c.id == child.id).unwrap();
    assert!(child_after.trashed && !child_after.explicitly_trashed);
    assert!(child_after.version > child.version);
    assert_eq!(child_after.md5, child.md5);
    // Reset returns to the seed's corpus and invalidates old change tokens.
    let (_, start) = ctx.hub.changes().get_start_page_token().doit().await.unwrap();
    ctx.control("reset", json!({})).await;
    assert_eq!(ctx.tree().await, start_tree(&ctx).await);
    let err = ctx.hub.changes().list(&start.start_page_token.unwrap()).doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "invalid");
    ctx.emu.shutdown().await;
}

async fn start_tree(ctx: &Ctx) -> EmuTree {
    let fresh = start(hostile()).await;
    let t = fresh.tree().await;
    fresh.emu.shutdown().await;
    let _ = ctx;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_channels_receive_sync_then_change() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<HashMap<String, String>>();
    let hook = axum::Router::new().route(
        "/hook",
        post(move |headers: http::HeaderMap| {
            let tx = tx.clone();
            async move {
                let map = headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
                let _ = tx.send(map);
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await.ok() });
    let ctx = start(EmulatorConfig::default()).await;
    let (_, start_token) = ctx.hub.changes().get_start_page_token().doit().await.unwrap();
    let channel = google_drive3::api::Channel {
        id: Some("chan-1".into()),
        type_: Some("web_hook".into()),
        address: Some(format!("http://{hook_addr}/hook")),
        token: Some("secret-token".into()),
        ..Default::default()
    };
    let (_, opened) =
        ctx.hub.changes().watch(channel, start_token.start_page_token.as_deref().unwrap()).doit().await.unwrap();
    assert_eq!(opened.kind.as_deref(), Some("api#channel"));
    let resource_id = opened.resource_id.clone().unwrap();
    let sync = rx.recv().await.unwrap();
    assert_eq!(sync["x-goog-resource-state"], "sync");
    assert_eq!(sync["x-goog-channel-id"], "chan-1");
    assert_eq!(sync["x-goog-channel-token"], "secret-token");
    assert_eq!(sync["x-goog-message-number"], "1");
    assert_eq!(sync["x-goog-resource-id"], resource_id);
    assert!(sync.contains_key("x-goog-channel-expiration") && sync.contains_key("x-goog-resource-uri"));
    let root = ctx.tree().await.root_id;
    ctx.control("mutate", json!({"ops": [{"op": "create", "parent": root, "name": "x.txt", "size": 3}]})).await;
    let change = rx.recv().await.unwrap();
    assert_eq!(change["x-goog-resource-state"], "change");
    assert_eq!(change["x-goog-message-number"], "2");
    let stop =
        google_drive3::api::Channel { id: Some("chan-1".into()), resource_id: Some(resource_id), ..Default::default() };
    let resp = ctx.hub.channels().stop(stop.clone()).doit().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let err = ctx.hub.channels().stop(stop).doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "notFound");
    ctx.emu.shutdown().await;
}
