//! Choosing what to mirror: `[source] folders` holds exactly the matching subtree of a full mirror,
//! at the same keys, through files and folders moving into and out of it; `include`, `exclude` and
//! `mime_types` pick files by Drive path and type, and a folder renamed across a pattern carries its
//! files in or out. `verify` agrees with the selection each time.

use crate::support::*;
use drive_emulator::EmuTree;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

fn folder_key(config: &Path, id: &str) -> String {
    let (_cfg, store, _dest) = open(config);
    let folders = store.all_folders().unwrap();
    folders.into_iter().find(|f| f.id.0 == id).map(|f| f.key.0).expect("folder recorded")
}

async fn run_once(config: &Path) {
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

async fn mutate(env: &TestEnv, ops: Vec<Value>) -> Vec<String> {
    let answer = env.control("mutate", json!({ "ops": ops })).await;
    assert_eq!(answer["applied"].as_u64(), Some(ops.len() as u64), "{answer}");
    answer["created"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// Ids of the live items under folder `top` (any depth).
fn subtree(tree: &EmuTree, top: &str) -> Vec<String> {
    let parent_of = |id: &str| tree.items.iter().find(|i| i.id == id).and_then(|i| i.parents.first().cloned());
    tree.items
        .iter()
        .filter(|i| {
            let mut at = i.parents.first().cloned();
            for _ in 0..64 {
                match at {
                    Some(p) if p == top => return true,
                    Some(p) => at = parent_of(&p),
                    None => return false,
                }
            }
            false
        })
        .map(|i| i.id.clone())
        .collect()
}

/// The selected mirror equals the full mirror's objects under the chosen folder's key, and verifies.
async fn assert_subtree_of_full(full: &Path, full_dir: &Path, selected: &Path, selected_dir: &Path, folder: &str) {
    let key = folder_key(full, folder);
    let want: BTreeMap<String, Vec<u8>> =
        local_objects(full_dir).into_iter().filter(|(k, _)| k.starts_with(&format!("{key}/"))).collect();
    let got = local_objects(selected_dir);
    assert!(!want.is_empty(), "the chosen folder holds no file");
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    assert!(want == got, "same keys, different bytes");
    assert_verifies_equal(selected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_hold_the_matching_subtree_of_a_full_mirror_through_moves_in_and_out() {
    let env = TestEnv::start(small_corpus(false)).await;
    let tree = env.tree().await;
    let root = tree.root_id.clone();
    let is_folder =
        |id: &str| tree.items.iter().any(|i| i.id == id && i.mime_type == "application/vnd.google-apps.folder");
    // The My Drive folder with the most files below it.
    let chosen = tree
        .items
        .iter()
        .filter(|i| is_folder(&i.id) && i.parents.first() == Some(&root))
        .max_by_key(|i| subtree(&tree, &i.id).len())
        .unwrap()
        .id
        .clone();
    // Before the first run: a subfolder with a file inside the chosen folder, and an outside folder
    // with a file, to move across the boundary later.
    let created = mutate(
        &env,
        vec![
            json!({"op": "create_folder", "parent": chosen, "name": "leaving"}),
            json!({"op": "create_folder", "parent": root, "name": "arriving"}),
        ],
    )
    .await;
    let (leaving, arriving) = (created[0].clone(), created[1].clone());
    mutate(
        &env,
        vec![
            json!({"op": "create", "parent": leaving, "name": "l.txt", "size": 1234, "mime": "text/plain"}),
            json!({"op": "create", "parent": arriving, "name": "a.txt", "size": 4321, "mime": "text/plain"}),
        ],
    )
    .await;
    let (full_dir, sel_dir) = (env.dir.path().join("full"), env.dir.path().join("sel"));
    let full = env.config("full", &env.local_dest("full"), "");
    let selected = env.config("sel", &env.local_dest("sel"), &format!("src.folders = [\"{chosen}\"]"));
    run_once(&full).await;
    run_once(&selected).await;
    assert_subtree_of_full(&full, &full_dir, &selected, &sel_dir, &chosen).await;

    // Across the boundary: a file in and a file out, a folder in and a folder out, a rename inside.
    let tree = env.tree().await;
    let inside = subtree(&tree, &chosen);
    let file_in = tree.items.iter().find(|i| i.parents.first() == Some(&root) && !is_folder(&i.id)).unwrap().id.clone();
    let file_out = inside
        .iter()
        .find(|id| !is_folder(id) && tree.items.iter().any(|i| &i.id == *id && i.parents.first() != Some(&leaving)))
        .unwrap()
        .clone();
    let renamed = inside.iter().rfind(|id| !is_folder(id) && **id != file_out).unwrap().clone();
    mutate(
        &env,
        vec![
            json!({"op": "move", "id": file_in, "new_parent": chosen}),
            json!({"op": "move", "id": file_out, "new_parent": root}),
            json!({"op": "move", "id": arriving, "new_parent": chosen}),
            json!({"op": "move", "id": leaving, "new_parent": root}),
            json!({"op": "rename", "id": renamed, "name": "renamed inside.bin"}),
        ],
    )
    .await;
    run_once(&full).await;
    run_once(&selected).await;
    assert_subtree_of_full(&full, &full_dir, &selected, &sel_dir, &chosen).await;
    let got = local_objects(&sel_dir);
    assert!(got.keys().any(|k| k.ends_with("/arriving/a.txt")), "the folder moved in was not mirrored: {got:?}");
    assert!(!got.keys().any(|k| k.ends_with("/l.txt")), "the folder moved out is still mirrored");
}

/// The files of `tree` a mirror holds under a rule on each file's Drive path and mime type.
fn expected_where(tree: &EmuTree, keep: impl Fn(&str, &str) -> bool) -> BTreeMap<String, Expected> {
    let by_id: BTreeMap<&str, _> = tree.items.iter().map(|i| (i.id.as_str(), i)).collect();
    let is_root = |id: &str| id == tree.root_id || tree.drives.iter().any(|d| d.id == id);
    let path_of = |id: &str| {
        let mut names = Vec::new();
        let mut at = by_id.get(id).copied();
        while let Some(item) = at {
            names.push(item.name.clone());
            at = item.parents.first().filter(|p| !is_root(p)).and_then(|p| by_id.get(p.as_str()).copied());
        }
        names.reverse();
        names.join("/")
    };
    expected_files(tree)
        .into_iter()
        .filter(|(id, _)| {
            let item = by_id[id.as_str()];
            keep(&path_of(id), &item.mime_type)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_exclude_and_mime_types_pick_files_by_path_and_type() {
    let env = TestEnv::start(small_corpus(false)).await;
    let root = env.tree().await.root_id;
    let created = mutate(
        &env,
        vec![
            json!({"op": "create_folder", "parent": root, "name": "Keep"}),
            json!({"op": "create_folder", "parent": root, "name": "Other"}),
        ],
    )
    .await;
    let (keep, other) = (created[0].clone(), created[1].clone());
    let files = mutate(
        &env,
        vec![
            json!({"op": "create", "parent": keep, "name": "k.csv", "size": 300, "mime": "text/csv"}),
            json!({"op": "create", "parent": keep, "name": "k.txt", "size": 301, "mime": "text/plain"}),
            json!({"op": "create", "parent": other, "name": "o.csv", "size": 302, "mime": "text/csv"}),
            json!({"op": "create", "parent": other, "name": "o.pdf", "size": 303, "mime": "application/pdf"}),
        ],
    )
    .await;

    // Types and an exclude pattern.
    let typed = env.config(
        "typed",
        &env.local_dest("typed"),
        "src.exclude = [\"**/*.txt\"]\nsrc.mime_types = [\"text/*\", \"application/pdf\"]",
    );
    let typed_rule =
        |path: &str, mime: &str| !path.ends_with(".txt") && (mime.starts_with("text/") || mime == "application/pdf");
    // A folder pattern.
    let placed = env.config("placed", &env.local_dest("placed"), "src.include = [\"Keep/**\"]");
    let placed_rule = |path: &str, _: &str| path.starts_with("Keep/");

    for config in [&typed, &placed] {
        run_once(config).await;
    }
    let tree = env.tree().await;
    assert_exact_mirror(&typed, &expected_where(&tree, typed_rule)).await;
    assert_exact_mirror(&placed, &expected_where(&tree, placed_rule)).await;
    assert_eq!(expected_where(&tree, placed_rule).len(), 2, "Keep holds k.csv and k.txt");

    // Renames across the rules: a file out of and into the exclude pattern, and the two folders
    // swapping names (Keep's files leave the include pattern, Other's enter it).
    mutate(
        &env,
        vec![
            json!({"op": "rename", "id": files[0], "name": "k-now.txt"}),
            json!({"op": "rename", "id": files[1], "name": "k-was-txt.csv"}),
            json!({"op": "rename", "id": keep, "name": "Kept before"}),
            json!({"op": "rename", "id": other, "name": "Keep"}),
        ],
    )
    .await;
    for config in [&typed, &placed] {
        run_once(config).await;
    }
    let tree = env.tree().await;
    assert_exact_mirror(&typed, &expected_where(&tree, typed_rule)).await;
    let placed_now = expected_where(&tree, placed_rule);
    assert_eq!(placed_now.keys().cloned().collect::<Vec<_>>().len(), 2);
    assert!(placed_now.contains_key(&files[2]) && placed_now.contains_key(&files[3]), "{placed_now:?}");
    assert_exact_mirror(&placed, &placed_now).await;
    for config in [&typed, &placed] {
        assert_verifies_equal(config).await;
    }

    // A bad pattern is a config error naming its key.
    let bad = env.config("bad", &env.local_dest("bad"), "src.exclude = [\"ok/**\", \"a[\"]");
    let out = mirrorflow(&["validate", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("source.exclude[1]"), "{}", text(&out));
}

/// Drive keeps a name as it was typed, so `café` may arrive composed (NFC) or decomposed (NFD, `e` +
/// U+0301): an `exclude` typed one way keeps out the file named the other way, an `include` takes it
/// in, and `verify` agrees (patterns and names are compared in NFC, the form keys are written in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_match_drive_names_in_either_unicode_form() {
    let env = TestEnv::start(small_corpus(false)).await;
    let root = env.tree().await.root_id;
    let folder = mutate(&env, vec![json!({"op": "create_folder", "parent": root, "name": "Caf\u{e9}"})]).await;
    let files = mutate(
        &env,
        vec![
            json!({"op": "create", "parent": root, "name": "cafe\u{301}.txt", "size": 310, "mime": "text/plain"}),
            json!({"op": "create", "parent": folder[0], "name": "menu.txt", "size": 311, "mime": "text/plain"}),
        ],
    )
    .await;
    let (decomposed_file, in_composed_folder) = (files[0].clone(), files[1].clone());

    let excluding = env.config("excluding", &env.local_dest("excluding"), "src.exclude = [\"**/caf\u{e9}.txt\"]");
    let including = env.config("including", &env.local_dest("including"), "src.include = [\"Cafe\u{301}/**\"]");
    for config in [&excluding, &including] {
        run_once(config).await;
    }
    let tree = env.tree().await;
    let excluded = expected_where(&tree, |path, _| path != "cafe\u{301}.txt");
    assert!(!excluded.contains_key(&decomposed_file) && excluded.contains_key(&in_composed_folder));
    assert_exact_mirror(&excluding, &excluded).await;
    let included = expected_where(&tree, |path, _| path.starts_with("Caf\u{e9}/"));
    assert_eq!(included.keys().collect::<Vec<_>>(), [&in_composed_folder]);
    assert_exact_mirror(&including, &included).await;
    for config in [&excluding, &including] {
        assert_verifies_equal(config).await;
    }
}
