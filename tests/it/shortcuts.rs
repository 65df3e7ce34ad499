//! `[source] shortcuts`: `link` (the default) mirrors each shortcut as a small `<name>.url`
//! internet-shortcut object pointing at its target — dangling ones and the one pointing at its own
//! ancestor included, never followed into a loop — and `skip` mirrors nothing for them. `verify`
//! agrees with either.

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
    assert!(
        body.starts_with("[InternetShortcut]\r\nURL=https://drive.google.com/open?id=") && body.contains(&target),
        "{body}"
    );
    assert_verifies_equal(&linked).await;

    // A renamed shortcut's link moves with it.
    let dangling = shortcuts.iter().find(|s| s.name.contains("Dangling")).unwrap();
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
    let bad = env.config("bad", &env.local_dest("bad"), "src.shortcuts = \"follow\"");
    let out = mirrorflow(&["validate", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("shortcuts"), "{}", text(&out));
}
