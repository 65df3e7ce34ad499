//! `[source] shared_with_me = true`: the items other people shared with the user, outside their My
//! Drive, are mirrored under `<prefix>/shared-with-me/<folder path>/<name>` and kept current from the
//! user's whole change log (no `restrictToMyDrive`); without it they are not mirrored, and switching it
//! on or off over an existing mirror lists everything again so they arrive or leave. `verify` agrees.

use crate::support::*;
use drive_emulator::{SHARED_FILE_NAME, SHARED_FOLDER_NAME};
use serde_json::json;

/// The keys of a local mirror that lie under `shared-with-me/`.
fn shared_keys(dir: &std::path::Path) -> Vec<String> {
    local_objects(dir).into_keys().filter(|k| k.starts_with("shared-with-me/")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_shared_with_the_user_are_mirrored_under_shared_with_me_and_kept_current() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let id_of = |name: &str| tree.items.iter().find(|i| i.name == name).map(|i| i.id.clone()).unwrap();
    assert!(tree.items.iter().filter(|i| i.shared_with_me).count() == 2, "the corpus shares a folder and a file");

    let dir = env.dir.path().join("with");
    let config = env.config("with", &env.local_dest("with"), "src.shared_with_me = true");
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files_in(&tree, true)).await;
    let folder = format!("shared-with-me/{SHARED_FOLDER_NAME}");
    let mut want = vec![
        format!("{folder}/drafts/draft 1.md"),
        format!("{folder}/plan.txt"),
        format!("shared-with-me/{SHARED_FILE_NAME}"),
    ];
    want.sort();
    assert_eq!(shared_keys(&dir), want, "the layout of the items shared with the user");
    assert!(local_objects(&dir).keys().any(|k| k.starts_with("my-drive/")), "My Drive is mirrored as before");
    assert_verifies_equal(&config).await;

    // The owner changes them: new content, a new file in a subfolder, the shared file deleted, the
    // folder renamed. The user's log reports each; the mirror follows.
    let ops = json!({"ops": [
        {"op": "update_content", "id": id_of("plan.txt"), "size": 4321},
        {"op": "create", "parent": id_of("drafts"), "name": "draft 2.md", "size": 99},
        {"op": "delete", "id": id_of(SHARED_FILE_NAME)},
        {"op": "rename", "id": id_of(SHARED_FOLDER_NAME), "name": "From Ana"},
    ]});
    env.control("mutate", ops).await;
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = env.tree().await;
    assert_exact_mirror(&config, &expected_files_in(&tree, true)).await;
    let want = [
        "shared-with-me/From Ana/drafts/draft 1.md",
        "shared-with-me/From Ana/drafts/draft 2.md",
        "shared-with-me/From Ana/plan.txt",
    ];
    assert_eq!(shared_keys(&dir), want);
    assert_eq!(local_objects(&dir)["shared-with-me/From Ana/plan.txt"].len(), 4321);
    assert_verifies_equal(&config).await;

    // Without the key nothing shared with the user is mirrored, and verify calls such objects extra.
    let without_dir = env.dir.path().join("without");
    let without = env.config("without", &env.local_dest("without"), "");
    let out = mirrorflow(&["run", "--once", without.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&without, &expected_files(&tree)).await;
    assert!(shared_keys(&without_dir).is_empty());
    assert_verifies_equal(&without).await;

    // Switched on over that mirror: the user's log changes, so everything is listed again and the
    // shared items arrive; switched off again, they leave.
    let switched = env.config("without", &env.local_dest("without"), "src.shared_with_me = true");
    let out = mirrorflow(&["run", "--once", switched.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&switched, &expected_files_in(&tree, true)).await;
    assert_eq!(shared_keys(&without_dir), want);
    let off = env.config("without", &env.local_dest("without"), "");
    let out = mirrorflow(&["run", "--once", off.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&off, &expected_files(&tree)).await;
    assert!(shared_keys(&without_dir).is_empty(), "{:?}", shared_keys(&without_dir));
}
