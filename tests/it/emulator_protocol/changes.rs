//! The change feed replayed over a snapshot, and push-notification channels.

use super::files::{Row, list_all};
use super::*;

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

/// Google delivers push notifications only over HTTPS: a `changes.watch` to a plain `http` address
/// on a public host is a 400 `push.webhookUrlNotHttps` naming it (loopback `http` is the emulator's one
/// allowance, so tests can listen without a certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_address_that_is_not_https_is_refused_as_google_does() {
    let ctx = start(EmulatorConfig::default()).await;
    let (_, start_token) = ctx.hub.changes().get_start_page_token().doit().await.unwrap();
    let token = start_token.start_page_token.unwrap();
    let channel = |address: &str| google_drive3::api::Channel {
        id: Some(format!("chan-{}", address.len())),
        type_: Some("web_hook".into()),
        address: Some(address.into()),
        ..Default::default()
    };
    let err = ctx.hub.changes().watch(channel("http://hooks.example.com/drive"), &token).doit().await.unwrap_err();
    assert_eq!(hub_error_reason(&err), "push.webhookUrlNotHttps");
    let google_drive3::Error::BadRequest(body) = &err else { panic!("{err:?}") };
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(body["error"]["message"], "WebHook callback must be HTTPS: http://hooks.example.com/drive");
    ctx.hub.changes().watch(channel("https://hooks.example.com/drive"), &token).doit().await.expect("https is fine");
    ctx.emu.shutdown().await;
}

/// Items other people shared with the user: `sharedWithMe = true` finds the ones shared directly
/// (with `sharedWithMeTime`, owned by someone else), `files.get` of a parent the user cannot open is a
/// 404, and `restrictToMyDrive` leaves their changes out of the user's log, as Google documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_with_me_items_and_restrict_to_my_drive() {
    let ctx = start(hostile()).await;
    let (_, list) = ctx
        .hub
        .files()
        .list()
        .q("sharedWithMe = true and trashed = false")
        .param("fields", "files(id,name,parents,ownedByMe,sharedWithMeTime)")
        .doit()
        .await
        .unwrap();
    let shared = list.files.unwrap_or_default();
    let mut names: Vec<_> = shared.iter().map(|f| f.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(names, [drive_emulator::SHARED_FILE_NAME, drive_emulator::SHARED_FOLDER_NAME]);
    assert!(shared.iter().all(|f| f.owned_by_me == Some(false) && f.shared_with_me_time.is_some()));
    let budget = shared.iter().find(|f| f.name.as_deref() == Some(drive_emulator::SHARED_FILE_NAME)).unwrap();
    let hidden = budget.parents.clone().unwrap_or_default();
    assert_eq!(hidden.len(), 1, "its folder is the owner's");
    let err = ctx.hub.files().get(&hidden[0]).doit().await.unwrap_err();
    assert!(format!("{err:?}").contains("404"), "{err:?}");

    let tree = ctx.tree().await;
    let plan = tree.items.iter().find(|i| i.name == "plan.txt").unwrap().id.clone();
    let mine = tree.items.iter().find(|i| i.size.is_some() && i.parents.contains(&tree.root_id)).unwrap().id.clone();
    let (_, start) = ctx.hub.changes().get_start_page_token().doit().await.unwrap();
    let token = start.start_page_token.unwrap();
    let ops = json!([{"op": "update_content", "id": plan}, {"op": "update_content", "id": mine}]);
    ctx.control("mutate", json!({"ops": ops})).await;
    for restrict in [true, false] {
        let (_, page) = ctx
            .hub
            .changes()
            .list(&token)
            .restrict_to_my_drive(restrict)
            .param("fields", "changes(fileId)")
            .doit()
            .await
            .unwrap();
        let ids: BTreeSet<String> = page.changes.unwrap_or_default().into_iter().filter_map(|c| c.file_id).collect();
        let want: BTreeSet<String> = if restrict { [mine.clone()].into() } else { [mine.clone(), plan.clone()].into() };
        assert_eq!(ids, want, "restrictToMyDrive = {restrict}");
    }
    ctx.emu.shutdown().await;
}
