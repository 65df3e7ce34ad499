//! `run --dry-run` lists what the next run would upload, replace, move and remove, with sizes, and
//! changes nothing: the destination and the state are the same afterwards, and the real run then
//! does what was listed.

use crate::support::*;
use serde_json::{Value, json};

/// The parts of `status --json` a write would change.
async fn state_of(config: &std::path::Path) -> Value {
    let out = mirrorflow(&["status", "--json", config.to_str().unwrap()]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    json!([
        v["files"],
        v["folders"],
        v["bytes"],
        v["dead_lettered"],
        v["checkpoint"]["start_token"],
        v["checkpoint"]["phase"]
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_each_action_with_its_size_and_changes_nothing() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("dry", &env.local_dest("mirror"), "");
    let cfg = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", cfg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let tree = env.tree().await;
    let in_root: Vec<_> =
        tree.items.iter().filter(|i| i.parents.first() == Some(&tree.root_id) && i.md5.is_some()).collect();
    let (renamed, updated, deleted) = (in_root[0].id.clone(), in_root[1].id.clone(), in_root[2].id.clone());
    let (_cfg, store, _dest) = open(&config);
    let key_of = |id: &str| store.file(&mirrorflow::model::FileId(id.to_string())).unwrap().unwrap().key.0;
    let (renamed_from, deleted_key) = (key_of(&renamed), key_of(&deleted));
    drop(store);
    let ops = json!({"ops": [
        {"op": "create", "parent": tree.root_id, "name": "brand-new.bin", "size": 2000, "mime": "application/octet-stream"},
        {"op": "rename", "id": renamed, "name": "renamed by the user.bin"},
        {"op": "update_content", "id": updated, "size": 3000},
        {"op": "delete", "id": deleted},
    ]});
    env.control("mutate", ops).await;

    let (objects_before, state_before) = (local_objects(&dir), state_of(&config).await);
    let out = mirrorflow(&["run", "--dry-run", "--json", cfg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let actions = plan["actions"].as_array().unwrap();
    let find = |what: &str, f: &dyn Fn(&Value) -> bool| actions.iter().filter(|a| a["action"] == what && f(a)).count();
    assert_eq!(
        find("upload", &|a| a["key"].as_str().unwrap().ends_with("/brand-new.bin") && a["size"] == 2000),
        1,
        "{plan}"
    );
    let moved =
        |a: &Value| a["from"] == renamed_from && a["to"]["key"].as_str().unwrap().ends_with("/renamed by the user.bin");
    assert_eq!(find("move", &moved), 1, "{plan}");
    assert_eq!(find("replace", &|a| a["file_id"] == updated && a["size"] == 3000), 1, "{plan}");
    assert_eq!(find("remove", &|a| a["key"] == deleted_key), 1, "{plan}");
    assert_eq!(actions.len(), 4, "nothing else: {plan}");
    assert_eq!(plan["deletes"], "trash");
    let human = mirrorflow(&["run", "--dry-run", cfg]).await;
    assert!(text(&human).contains("1 to move, 1 to remove (deletes = trash); nothing was changed"), "{}", text(&human));

    assert!(local_objects(&dir) == objects_before, "the dry run changed the destination");
    assert_eq!(state_of(&config).await, state_before, "the dry run changed the state");
    let out = mirrorflow(&["run", "--once", cfg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    let after = mirrorflow(&["run", "--dry-run", "--json", cfg]).await;
    let plan: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(plan["actions"], json!([]), "after the run there is nothing left to do");
}
