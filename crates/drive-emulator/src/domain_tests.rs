//! Domain mode over HTTP: delegation by `sub`, per-user views, shared-drive membership, sharing,
//! the Directory API and download counts.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{DomainUser, Emulator, EmulatorConfig, MutateOp};

const DRIVE: &str = "https://www.googleapis.com/auth/drive.readonly";
const DIRECTORY: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";

fn domain() -> EmulatorConfig {
    let alice = DomainUser { admin: true, drives: vec![0], ..DomainUser::new("alice@example.com", 12) };
    let bob = DomainUser { drives: vec![1], ..DomainUser::new("bob@example.com", 8) };
    let carol = DomainUser { suspended: true, ..DomainUser::new("carol@example.com", 3) };
    EmulatorConfig { seed: 7, shared_drives: 2, domain_users: vec![alice, bob, carol], ..Default::default() }
}

async fn start(cfg: EmulatorConfig) -> Emulator {
    Emulator::start(cfg, "127.0.0.1:0".parse().expect("addr")).await.expect("start")
}

/// A JWT assertion signed with the emulator's service-account key, as a client library builds it.
fn assertion(emu: &Emulator, sub: Option<&str>, scope: &str) -> String {
    use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    let key: Value = serde_json::from_str(&emu.service_account_key_json()).expect("key json");
    let pem = key["private_key"].as_str().expect("private_key");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64).expect("pem");
    let pair = RsaKeyPair::from_pkcs8(&der).expect("pkcs8");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let mut claims =
        json!({"iss": key["client_email"], "scope": scope, "aud": key["token_uri"], "iat": now, "exp": now + 600});
    if let Some(sub) = sub {
        claims["sub"] = json!(sub);
    }
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", enc(&json!({"alg": "RS256", "typ": "JWT"})), enc(&claims));
    let mut sig = vec![0u8; pair.public_modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), input.as_bytes(), &mut sig).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The token endpoint's answer to a JWT-bearer grant.
async fn grant(emu: &Emulator, sub: Option<&str>, scope: &str) -> (u16, Value) {
    let jwt = assertion(emu, sub, scope);
    let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", jwt.as_str())];
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let resp = reqwest::Client::new()
        .post(format!("{}token", emu.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request");
    (resp.status().as_u16(), resp.json().await.expect("token json"))
}

async fn token(emu: &Emulator, sub: Option<&str>, scope: &str) -> String {
    let (status, v) = grant(emu, sub, scope).await;
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().expect("access_token").to_string()
}

async fn get(emu: &Emulator, bearer: &str, path_and_query: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path_and_query}", emu.base_url()))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Every id `files.list` gives for a query (all pages).
async fn list_ids(emu: &Emulator, bearer: &str, query: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut page = String::new();
    loop {
        let path = format!("drive/v3/files?pageSize=7&fields=nextPageToken,files(id)&{query}{page}");
        let (status, v) = get(emu, bearer, &path).await;
        assert_eq!(status, 200, "{v}");
        ids.extend(v["files"].as_array().expect("files").iter().map(|f| f["id"].as_str().expect("id").to_string()));
        match v["nextPageToken"].as_str() {
            Some(t) => page = format!("&pageToken={t}"),
            None => return ids,
        }
    }
}

/// Ids in one user's change log from `start` on (all pages).
async fn change_ids(emu: &Emulator, bearer: &str, start: &str, extra: &str) -> Vec<(String, bool)> {
    let path = format!("drive/v3/changes?pageToken={start}&pageSize=1000&{extra}");
    let (status, v) = get(emu, bearer, &path).await;
    assert_eq!(status, 200, "{v}");
    let changes = v["changes"].as_array().expect("changes").iter();
    changes
        .map(|c| {
            let id = c["fileId"].as_str().or(c["driveId"].as_str()).unwrap_or_default().to_string();
            (id, c["removed"].as_bool().unwrap_or(false))
        })
        .collect()
}

async fn start_token(emu: &Emulator, bearer: &str) -> String {
    let (_, v) = get(emu, bearer, "drive/v3/changes/startPageToken").await;
    v["startPageToken"].as_str().expect("startPageToken").to_string()
}

fn my_drive_ids(tree: &super::EmuTree) -> BTreeSet<String> {
    tree.items.iter().filter(|i| i.drive_id.is_none()).map(|i| i.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_sub_acts_as_that_user_and_an_unknown_or_suspended_one_is_invalid_grant() {
    let emu = start(domain()).await;
    for email in ["alice@example.com", "bob@example.com"] {
        let bearer = token(&emu, Some(email), DRIVE).await;
        let (_, about) = get(&emu, &bearer, "drive/v3/about?fields=user").await;
        assert_eq!(about["user"]["emailAddress"], email);
        assert_eq!(about["user"]["me"], true);
    }
    for sub in ["mallory@example.com", "carol@example.com"] {
        let (status, v) = grant(&emu, Some(sub), DRIVE).await;
        assert_eq!(status, 400, "{sub}: {v}");
        assert_eq!(v, json!({"error": "invalid_grant", "error_description": "Invalid email or User ID"}));
    }
    // Without `sub` the service account acts as itself: its own, empty, My Drive and no shared drive.
    let own = token(&emu, None, DRIVE).await;
    let (_, about) = get(&emu, &own, "drive/v3/about?fields=user").await;
    assert_eq!(about["user"]["emailAddress"], super::resources::USER_EMAIL);
    let all = "corpora=allDrives&includeItemsFromAllDrives=true&supportsAllDrives=true";
    assert!(list_ids(&emu, &own, all).await.is_empty());
    let (_, drives) = get(&emu, &own, "drive/v3/drives").await;
    assert_eq!(drives["drives"], json!([]));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sees_their_own_my_drive_and_not_the_others() {
    let emu = start(domain()).await;
    let (alice_tree, bob_tree) = (emu.user_tree("alice@example.com").await, emu.user_tree("bob@example.com").await);
    let (alice_mine, bob_mine) = (my_drive_ids(&alice_tree), my_drive_ids(&bob_tree));
    let files = |t: &super::EmuTree| t.items.iter().filter(|i| i.drive_id.is_none() && i.size.is_some()).count();
    assert_eq!((files(&alice_tree), files(&bob_tree)), (12, 8));
    assert!(alice_mine.is_disjoint(&bob_mine));
    assert_ne!(alice_tree.root_id, bob_tree.root_id);
    let alice = token(&emu, Some("alice@example.com"), DRIVE).await;
    assert_eq!(list_ids(&emu, &alice, "").await, alice_mine);
    let top: BTreeSet<String> =
        alice_tree.items.iter().filter(|i| i.parents.contains(&alice_tree.root_id)).map(|i| i.id.clone()).collect();
    assert_eq!(list_ids(&emu, &alice, "q='root'+in+parents").await, top);
    let bobs_file = bob_tree.items.iter().find(|i| i.size.is_some() && i.drive_id.is_none()).expect("bob's file");
    let (status, v) = get(&emu, &alice, &format!("drive/v3/files/{}?supportsAllDrives=true", bobs_file.id)).await;
    assert_eq!((status, v["error"]["errors"][0]["reason"].as_str()), (404, Some("notFound")));
    let (status, _) = get(&emu, &alice, &format!("drive/v3/files/{}?alt=media", bobs_file.id)).await;
    assert_eq!(status, 404);
    // A file alice creates is in her log, not in bob's.
    let bob = token(&emu, Some("bob@example.com"), DRIVE).await;
    let (a0, b0) = (start_token(&emu, &alice).await, start_token(&emu, &bob).await);
    let created = emu
        .mutate(&[MutateOp::Create {
            parent: "root".into(),
            name: "new.txt".into(),
            size: 10,
            mime: None,
            user: Some("alice@example.com".into()),
        }])
        .expect("create");
    assert_eq!(change_ids(&emu, &alice, &a0, "").await, vec![(created[0].clone(), false)]);
    assert_eq!(change_ids(&emu, &bob, &b0, "").await, vec![]);
    assert!(
        emu.user_tree("alice@example.com")
            .await
            .items
            .iter()
            .any(|i| i.id == created[0] && i.parents == vec![alice_tree.root_id.clone()])
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_drive_exists_only_for_its_members() {
    let emu = start(domain()).await;
    let whole = emu.tree().await;
    let (d0, d1) = (whole.drives[0].id.clone(), whole.drives[1].id.clone());
    let in_d1 = whole.items.iter().find(|i| i.drive_id.as_deref() == Some(&d1)).expect("item in drive 1");
    let alice = token(&emu, Some("alice@example.com"), DRIVE).await;
    let (_, list) = get(&emu, &alice, "drive/v3/drives?fields=drives(id)").await;
    assert_eq!(list["drives"], json!([{"id": d0}]));
    for path in [
        format!("drive/v3/drives/{d1}"),
        format!("drive/v3/files?corpora=drive&driveId={d1}&includeItemsFromAllDrives=true&supportsAllDrives=true"),
        format!("drive/v3/files/{}?supportsAllDrives=true", in_d1.id),
        format!("drive/v3/changes/startPageToken?driveId={d1}&supportsAllDrives=true"),
    ] {
        assert_eq!(get(&emu, &alice, &path).await.0, 404, "{path}");
    }
    let (status, _) = get(&emu, &alice, &format!("drive/v3/drives/{d0}")).await;
    assert_eq!(status, 200);
    // Membership ends: one drive-level `removed` change in her log, then 404 for the drive.
    let a0 = start_token(&emu, &alice).await;
    emu.mutate(&[MutateOp::RemoveMember { drive_id: d0.clone(), email: "alice@example.com".into() }]).expect("remove");
    let all = "includeItemsFromAllDrives=true&supportsAllDrives=true";
    assert_eq!(change_ids(&emu, &alice, &a0, all).await, vec![(d0.clone(), true)]);
    assert_eq!(get(&emu, &alice, &format!("drive/v3/drives/{d0}")).await.0, 404);
    let (_, list) = get(&emu, &alice, "drive/v3/drives").await;
    assert_eq!(list["drives"], json!([]));
    // A new member sees it at once.
    emu.mutate(&[MutateOp::AddMember { drive_id: d0.clone(), email: "bob@example.com".into() }]).expect("add");
    let bob = token(&emu, Some("bob@example.com"), DRIVE).await;
    let (_, list) = get(&emu, &bob, "drive/v3/drives?fields=drives(id)").await;
    assert_eq!(list["drives"], json!([{"id": d0}, {"id": d1}]));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_item_reaches_the_other_users_shared_with_me_and_change_log() {
    let emu = start(domain()).await;
    let alice_tree = emu.user_tree("alice@example.com").await;
    let folder = alice_tree
        .items
        .iter()
        .find(|i| i.mime_type.ends_with(".folder") && alice_tree.items.iter().any(|c| c.parents.contains(&i.id)))
        .expect("a folder with children");
    let below: BTreeSet<String> =
        alice_tree.items.iter().filter(|i| i.parents.contains(&folder.id)).map(|i| i.id.clone()).collect();
    let (alice, bob) =
        (token(&emu, Some("alice@example.com"), DRIVE).await, token(&emu, Some("bob@example.com"), DRIVE).await);
    let (a0, b0) = (start_token(&emu, &alice).await, start_token(&emu, &bob).await);
    assert!(list_ids(&emu, &bob, "q=sharedWithMe+%3D+true").await.is_empty());
    emu.mutate(&[MutateOp::Share { id: folder.id.clone(), email: "bob@example.com".into() }]).expect("share");
    assert_eq!(list_ids(&emu, &bob, "q=sharedWithMe+%3D+true").await, BTreeSet::from([folder.id.clone()]));
    let child = below.iter().next().expect("child");
    let (status, file) = get(&emu, &bob, &format!("drive/v3/files/{child}?fields=id,ownedByMe,owners")).await;
    assert_eq!((status, file["ownedByMe"].as_bool()), (200, Some(false)));
    assert_eq!(file["owners"][0]["emailAddress"], "alice@example.com");
    let (_, shared) =
        get(&emu, &bob, &format!("drive/v3/files/{}?fields=sharedWithMeTime,sharingUser", folder.id)).await;
    assert_eq!(shared["sharingUser"]["emailAddress"], "alice@example.com");
    assert!(shared["sharedWithMeTime"].is_string(), "{shared}");
    let seen: BTreeSet<String> = change_ids(&emu, &bob, &b0, "").await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(seen, below.iter().cloned().chain([folder.id.clone()]).collect());
    assert_eq!(change_ids(&emu, &alice, &a0, "").await, vec![], "a share is not a change of alice's");
    // Unshared: gone for bob, with removed changes in his log.
    let b1 = start_token(&emu, &bob).await;
    emu.mutate(&[MutateOp::Unshare { id: folder.id.clone(), email: "bob@example.com".into() }]).expect("unshare");
    assert_eq!(get(&emu, &bob, &format!("drive/v3/files/{child}")).await.0, 404);
    let gone = change_ids(&emu, &bob, &b1, "").await;
    assert!(gone.iter().all(|(_, removed)| *removed) && gone.len() == below.len() + 1, "{gone:?}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_pages_the_directory_for_an_admin_with_the_scope_only() {
    let emu = start(domain()).await;
    let admin = token(&emu, Some("alice@example.com"), &format!("{DRIVE} {DIRECTORY}")).await;
    let mut users = Vec::new();
    let mut page = String::new();
    let mut pages = 0;
    loop {
        let path = format!("admin/directory/v1/users?customer=my_customer&maxResults=2{page}");
        let (status, v) = get(&emu, &admin, &path).await;
        assert_eq!((status, v["kind"].as_str()), (200, Some("admin#directory#users")), "{v}");
        pages += 1;
        users.extend(v["users"].as_array().expect("users").iter().cloned());
        match v["nextPageToken"].as_str() {
            Some(t) => page = format!("&pageToken={t}"),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let summary: Vec<(String, bool, bool)> = users
        .iter()
        .map(|u| {
            (u["primaryEmail"].as_str().unwrap_or_default().to_string(), u["isAdmin"] == true, u["suspended"] == true)
        })
        .collect();
    let expected =
        [("alice@example.com", true, false), ("bob@example.com", false, false), ("carol@example.com", false, true)];
    assert_eq!(summary, expected.map(|(e, a, s)| (e.to_string(), a, s)));
    assert!(users.iter().all(|u| u["name"]["fullName"].is_string() && u["id"].is_string()));
    let (status, _) = get(&emu, &admin, "admin/directory/v1/users?domain=example.com&maxResults=501").await;
    assert_eq!(status, 400);
    // A user who is not an admin, and an admin whose token lacks the directory scope: 403.
    let bob = token(&emu, Some("bob@example.com"), &format!("{DRIVE} {DIRECTORY}")).await;
    let (status, v) = get(&emu, &bob, "admin/directory/v1/users?customer=my_customer").await;
    assert_eq!((status, v["error"]["errors"][0]["reason"].as_str()), (403, Some("forbidden")), "{v}");
    assert_eq!(v["error"]["message"], "Not Authorized to access this resource/api");
    let unscoped = token(&emu, Some("alice@example.com"), DRIVE).await;
    let (status, v) = get(&emu, &unscoped, "admin/directory/v1/users?customer=my_customer").await;
    assert_eq!((status, v["error"]["errors"][0]["reason"].as_str()), (403, Some("insufficientPermissions")));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_users_start_empty_and_suspended_users_lose_delegation() {
    let emu = start(domain()).await;
    emu.mutate(&[MutateOp::AddUser { email: "dave@example.com".into(), admin: false, suspended: false }])
        .expect("add user");
    let dave = token(&emu, Some("dave@example.com"), DRIVE).await;
    assert!(list_ids(&emu, &dave, "").await.is_empty());
    let made = emu
        .mutate(&[MutateOp::CreateFolder {
            parent: "root".into(),
            name: "Dave's".into(),
            user: Some("dave@example.com".into()),
        }])
        .expect("create as dave");
    assert_eq!(list_ids(&emu, &dave, "").await, BTreeSet::from([made[0].clone()]));
    emu.mutate(&[MutateOp::SuspendUser { email: "dave@example.com".into() }]).expect("suspend");
    assert_eq!(grant(&emu, Some("dave@example.com"), DRIVE).await.0, 400);
    let unknown =
        MutateOp::CreateFolder { parent: "root".into(), name: "x".into(), user: Some("eve@example.com".into()) };
    assert!(matches!(emu.mutate(&[unknown]), Err(super::MutateError::NotFound(_))));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_counted_per_file_and_per_user() {
    let emu = start(domain()).await;
    let tree = emu.user_tree("bob@example.com").await;
    let file = tree.items.iter().find(|i| i.size.is_some_and(|s| s > 0) && i.drive_id.is_none()).expect("a file");
    let bob = token(&emu, Some("bob@example.com"), DRIVE).await;
    let url = format!("{}drive/v3/files/{}?alt=media", emu.base_url(), file.id);
    for _ in 0..2 {
        let resp = reqwest::Client::new().get(&url).bearer_auth(&bob).send().await.expect("media");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.bytes().await.expect("bytes").len() as u64, file.size.unwrap_or(0));
    }
    let stats = emu.stats();
    assert_eq!(stats.downloads_by_file.get(&file.id), Some(&2));
    assert_eq!(stats.downloads_by_user.get("bob@example.com"), Some(&2));
    assert_eq!(stats.downloads_by_user.get("alice@example.com"), None);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_domain_users_a_jwt_sub_changes_nothing() {
    let emu = start(EmulatorConfig { files: 5, ..Default::default() }).await;
    let bearer = token(&emu, Some("anyone@example.com"), DRIVE).await;
    let (_, about) = get(&emu, &bearer, "drive/v3/about?fields=user").await;
    assert_eq!(about["user"]["emailAddress"], super::resources::USER_EMAIL);
    let tree = emu.tree().await;
    let all = "corpora=allDrives&includeItemsFromAllDrives=true&supportsAllDrives=true";
    let listed = list_ids(&emu, &bearer, all).await;
    assert_eq!(listed, tree.items.iter().map(|i| i.id.clone()).collect());
    assert_eq!(emu.user_tree(super::resources::USER_EMAIL).await, tree);
    emu.shutdown().await;
}

#[test]
fn the_cli_domain_lists_users_then_admins_once_each_member_of_every_drive() {
    let users = ["alice@example.com".to_string(), "bob@example.com".to_string()];
    let admins = ["Bob@example.com".to_string(), "root@example.com".to_string()];
    let domain = DomainUser::domain(&users, &admins, 5, 2);
    let got: Vec<(&str, bool)> = domain.iter().map(|u| (u.email.as_str(), u.admin)).collect();
    assert_eq!(got, [("alice@example.com", false), ("bob@example.com", true), ("root@example.com", true)]);
    assert!(domain.iter().all(|u| u.files == 5 && u.drives == [0, 1]));
    assert!(DomainUser::domain(&[], &[], 5, 2).is_empty());
}
