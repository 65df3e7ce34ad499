//! `[source] shortcuts`: `link` (the default) mirrors each shortcut as a small `<name>.url`
//! internet-shortcut object opening its target's `webViewLink` — dangling ones and the one pointing at
//! its own ancestor included, never followed into a loop — `skip` mirrors nothing for them, and
//! `follow` mirrors a shortcut to a file as that file's bytes, kept current as the file changes, and
//! any other shortcut as a link. `verify` agrees with each.

use crate::support::*;
use serde_json::json;

const SHORTCUT: &str = "application/vnd.google-apps.shortcut";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortcuts_become_links_or_nothing_and_are_never_followed_into_a_loop() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let shortcuts: Vec<_> = tree.items.iter().filter(|i| i.mime_type == SHORTCUT && !i.trashed).collect();
    assert!(
        shortcuts.iter().any(|s| s.name.contains("cycle")) && shortcuts.iter().any(|s| s.name.contains("Dangling"))
    );

    let linked_dir = env.dir.path().join("linked");
    let linked = env.config("linked", &env.local_dest("linked"), "");
    let out = mirrorflow(&["run", "--once", linked.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&linked, &expected_files(&tree)).await;
    let objects = local_objects(&linked_dir);
    let links: Vec<_> = objects.iter().filter(|(k, _)| k.ends_with(".url")).collect();
    assert_eq!(
        links.len(),
        shortcuts.len(),
        "one link per shortcut: {:?}",
        links.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    let cycle = shortcuts.iter().find(|s| s.name.contains("cycle")).unwrap();
    let target = cycle.shortcut_target.clone().unwrap();
    let (key, body) = links.iter().find(|(k, _)| k.contains("cycle")).unwrap();
    assert!(key.ends_with(".url"), "{key}");
    let body = String::from_utf8_lossy(body);
    let folder_link = &tree.items.iter().find(|i| i.id == target).unwrap().web_view_link;
    assert_eq!(body, format!("[InternetShortcut]\r\nURL={folder_link}\r\n"), "opens the target's webViewLink");
    let dangling = shortcuts.iter().find(|s| s.name.contains("Dangling")).unwrap();
    let (_, body) = links.iter().find(|(k, _)| k.contains("Dangling")).unwrap();
    let missing = dangling.shortcut_target.clone().unwrap();
    let generic = format!("[InternetShortcut]\r\nURL=https://drive.google.com/open?id={missing}\r\n");
    assert_eq!(String::from_utf8_lossy(body), generic, "a dangling shortcut opens the generic address");
    assert_verifies_equal(&linked).await;

    // A renamed shortcut's link moves with it.
    env.control("mutate", json!({"ops": [{"op": "rename", "id": dangling.id, "name": "Renamed shortcut"}]})).await;
    let out = mirrorflow(&["run", "--once", linked.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&linked, &expected_files(&env.tree().await)).await;
    let objects = local_objects(&linked_dir);
    assert!(objects.keys().any(|k| k.ends_with("/Renamed shortcut.url")), "{:?}", objects.keys());
    assert!(!objects.keys().any(|k| k.contains("Dangling")), "the old link stayed");

    // `skip`: nothing for shortcuts, and verify agrees.
    let skipped_dir = env.dir.path().join("skipped");
    let skipped = env.config("skipped", &env.local_dest("skipped"), "src.shortcuts = \"skip\"");
    let out = mirrorflow(&["run", "--once", skipped.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!local_objects(&skipped_dir).keys().any(|k| k.ends_with(".url")));
    assert_verifies_equal(&skipped).await;
    let bad = env.config("bad", &env.local_dest("bad"), "src.shortcuts = \"chase\"");
    let out = mirrorflow(&["validate", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("shortcuts"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_shortcuts_hold_their_targets_bytes_and_follow_its_changes() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let by_name =
        |tree: &drive_emulator::EmuTree, name: &str| tree.items.iter().find(|i| i.name == name).cloned().unwrap();
    let to_file = by_name(&tree, "Shortcut to dup.txt");
    let target = to_file.shortcut_target.clone().unwrap();
    let dir = env.dir.path().join("followed");
    let config = env.config("followed", &env.local_dest("followed"), "src.shortcuts = \"follow\"");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files_following(&tree)).await;
    let objects = local_objects(&dir);
    let target_item = tree.items.iter().find(|i| i.id == target).unwrap();
    let (key, bytes) =
        objects.iter().find(|(k, _)| k.ends_with("/Shortcut to dup.txt")).expect("at the shortcut's key");
    assert_eq!(bytes.len() as u64, target_item.size.unwrap(), "{key} holds the target's bytes");
    // The folder shortcuts (the one to its own ancestor included) and the dangling one stay links.
    let links: Vec<_> = objects.keys().filter(|k| k.ends_with(".url")).collect();
    assert_eq!(links.len(), 3, "{links:?}");
    assert!(links.iter().any(|k| k.contains("cycle")) && links.iter().any(|k| k.contains("Dangling")));
    assert_verifies_equal(&config).await;

    // The target changes: the shortcut's object follows, without any change to the shortcut itself.
    env.control("mutate", json!({"ops": [{"op": "update_content", "id": target, "size": 5555}]})).await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files_following(&tree)).await;
    assert_eq!(local_objects(&dir)[key].len(), 5555);
    assert_verifies_equal(&config).await;

    // The target is deleted: the shortcut dangles, and becomes a link.
    env.control("mutate", json!({"ops": [{"op": "delete", "id": target}]})).await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files_following(&tree)).await;
    let objects = local_objects(&dir);
    assert!(!objects.contains_key(key.as_str()), "the followed bytes are gone");
    assert!(objects.keys().any(|k| k.ends_with("/Shortcut to dup.txt.url")), "{:?}", objects.keys());
    assert_verifies_equal(&config).await;
}

/// A link opens its target's webViewLink while the target exists: when the target is deleted (Drive
/// reports nothing about the shortcut itself), the link is rewritten to Drive's generic address, as
/// `verify` expects; the target changing its content leaves the link as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_follows_its_target_out_of_existence() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let is_file = |id: &str| tree.items.iter().any(|i| i.id == id && !i.trashed && i.size.unwrap_or(0) > 0);
    let (shortcut, target) = tree
        .items
        .iter()
        .filter(|i| i.mime_type == SHORTCUT && !i.trashed)
        .find_map(|s| s.shortcut_target.clone().filter(|t| is_file(t)).map(|t| (s.id.clone(), t)))
        .expect("the hostile corpus has a shortcut to a file");
    let config = env.config("links", &env.local_dest("links"), "");
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;

    env.control("mutate", json!({"ops": [{"op": "update_content", "id": target, "size": 4321}]})).await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;

    env.control("mutate", json!({"ops": [{"op": "delete", "id": target}]})).await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert!(tree.items.iter().all(|i| i.id != target), "the target is gone");
    let after = assert_exact_mirror(&config, &expected_files(&tree)).await;
    assert_eq!(after[shortcut.as_str()], before[shortcut.as_str()], "the link stays at its key");
    assert_verifies_equal(&config).await;
}
