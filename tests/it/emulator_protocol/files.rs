//! files.list / files.get / drives: `fields` masks, the root alias and queries, the hostile corpus, paging.

use super::*;

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
    let by_id: HashMap<&str, &drive_emulator::EmuItem> = tree.items.iter().map(|i| (i.id.as_str(), i)).collect();
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
pub(super) async fn list_all(ctx: &Ctx, page_size: i32, fields: &str) -> (Vec<google_drive3::api::File>, usize) {
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
pub(super) type Row = (String, Vec<String>, String, Option<u64>, Option<String>, bool, u64, Option<String>);
