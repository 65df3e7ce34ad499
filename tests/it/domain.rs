//! Several users of a domain (`[source] subjects`): each user's drive under `users/<email>/`, every
//! shared drive once under `shared-drives/<name>/`, each a unit with its own state; the union of the
//! units is the exact mirror, every content fetched once, and a re-run fetches nothing.

use crate::support::*;
use drive_emulator::{EmuTree, EmulatorConfig};
use mirrorflow::config::Config;
use mirrorflow::dest::Destination;
use mirrorflow::domain::Unit;
use mirrorflow::model::ObjectKey;
use mirrorflow::state::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The emulator's one account (it answers every subject as this user until it serves a domain).
const USER: &str = "mirrorflow-emulator@mirrorflow-emulator.iam.gserviceaccount.com";

/// The files each unit must hold: the user's My Drive files, and each shared drive's own.
fn expected_by_unit(tree: &EmuTree, units: &[Unit]) -> BTreeMap<String, BTreeMap<String, Expected>> {
    let all = expected_files(tree);
    let drive_of: BTreeMap<&str, Option<&str>> =
        tree.items.iter().map(|i| (i.id.as_str(), i.drive_id.as_deref())).collect();
    units
        .iter()
        .map(|u| {
            let want: Option<&str> = match u {
                Unit::User { .. } => None,
                Unit::SharedDrive { id, .. } => Some(id.0.as_str()),
            };
            let files = all.iter().filter(|(id, _)| drive_of[id.as_str()] == want).map(|(k, v)| (k.clone(), v.clone()));
            (u.dir_name(), files.collect())
        })
        .collect()
}

/// Asserts the destination is exactly the union of the units: every unit's store holds its expected
/// files at keys under its own folder, each object holds its file's bytes, no key is held twice, and
/// nothing else is under the destination (trash and versions apart). Returns every unit's keys.
async fn assert_exact_domain(config: &Path, units: &[Unit], expected: &BTreeMap<String, BTreeMap<String, Expected>>) {
    let base = Config::load(config).unwrap();
    let mut owned: BTreeSet<String> = BTreeSet::new();
    for unit in units {
        let cfg = unit.config(&base).unwrap();
        let store = Store::open(&cfg.state.dir).unwrap();
        let dest = Destination::from_config(&cfg.destination, &cfg.retry).unwrap();
        let mut keys: BTreeMap<String, ObjectKey> = BTreeMap::new();
        store.for_each_file(|r| drop(keys.insert(r.id.0.clone(), r.key.clone()))).unwrap();
        let want = &expected[&unit.dir_name()];
        let got: BTreeSet<&String> = keys.keys().collect();
        assert_eq!(got, want.keys().collect::<BTreeSet<_>>(), "files of {}", unit.label());
        let root = match unit {
            Unit::User { .. } => "my-drive/".to_string(),
            Unit::SharedDrive { segment, .. } => format!("shared-drives/{segment}/"),
        };
        for (id, e) in want {
            let key = &keys[id];
            assert!(key.0.starts_with(&root), "{key} of {} is outside {root}", unit.label());
            let bytes = dest.get(key).await.unwrap_or_else(|err| panic!("{key} of {}: {err}", unit.label()));
            assert_eq!(bytes.len() as u64, e.size, "size of {key}");
            if let Some(md5) = &e.md5 {
                assert_eq!(&hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes)), md5, "md5 of {key}");
            }
            let full = match unit {
                Unit::User { email } => format!("users/{email}/{}", key.0),
                Unit::SharedDrive { .. } => key.0.clone(),
            };
            assert!(owned.insert(full.clone()), "{full} is held by two units");
        }
        drop(store);
    }
    let Dest::Local(dir) = local_dest_of(&base) else { unreachable!() };
    let listed: BTreeSet<String> =
        local_objects(&dir).into_keys().filter(|k| !k.split('/').any(|s| s == ".trash" || s == ".versions")).collect();
    let stray: Vec<_> = listed.difference(&owned).collect();
    assert!(stray.is_empty(), "objects no unit owns: {stray:?}");
    assert_no_staging_files(&dir);
}

fn local_dest_of(cfg: &Config) -> Dest {
    Dest::Local(cfg.destination.url.strip_prefix("file://").unwrap().into())
}

fn downloads(stats: &serde_json::Value) -> BTreeMap<String, u64> {
    serde_json::from_value(stats["media_bytes_by_file"].clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_user_under_their_folder_and_each_shared_drive_once_exactly_and_a_rerun_fetches_nothing() {
    let env = TestEnv::start(EmulatorConfig { shared_drives: 2, ..small_corpus(false) }).await;
    let dest = env.local_dest("domain");
    let config = env.config("domain", &dest, &format!("src.subjects = [\"{USER}\"]\nsrc.drives_in_parallel = 2\n"));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let cfg = Config::load(&config).unwrap();
    let units = mirrorflow::domain::units::discover(&cfg).await.unwrap();
    let tree = env.tree().await;
    assert_eq!(units.len(), 1 + tree.drives.len(), "{units:?}");
    let expected = expected_by_unit(&tree, &units);
    assert_exact_domain(&config, &units, &expected).await;
    let Dest::Local(dir) = &dest else { unreachable!() };
    assert!(dir.join("users").join(USER).join("my-drive").is_dir());
    for d in &tree.drives {
        assert!(dir.join("shared-drives").join(&d.name).is_dir(), "{} mirrored once under shared-drives/", d.name);
    }
    assert!(!dir.join("my-drive").exists() && !dir.join("users").join(USER).join("shared-drives").exists());
    let fetched = downloads(&env.stats().await);

    let again = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("0 files written"), "{}", text(&again));
    assert_eq!(downloads(&env.stats().await), fetched, "the re-run downloaded again");

    let status = mirrorflow(&["status", "--user", USER, config.to_str().unwrap()]).await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let mine = expected[&Unit::User { email: USER.into() }.dir_name()].len();
    assert!(text(&status).contains(&format!("files mirrored: {mine}")), "{}", text(&status));
    let nobody = mirrorflow(&["status", "--user", "nobody@example.com", config.to_str().unwrap()]).await;
    assert_eq!(nobody.status.code(), Some(2), "{}", text(&nobody));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_subjects_are_refused_naming_the_key() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dest = env.local_dest("bad");
    for (extra, says) in [
        ("src.subjects = []", "source.subjects: the list is empty"),
        ("src.subjects = [\"not-an-email\"]", "not an email address"),
        ("src.subjects = [\"a@x.com\", \"A@x.com\"]", "listed twice"),
        ("src.subjects = \"everyone\"", "is neither"),
        ("src.subjects = \"domain\"", "name one with source.subject"),
    ] {
        let config = env.config("bad", &dest, extra);
        let out = mirrorflow(&["validate", config.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", text(&out));
        assert!(text(&out).contains(says), "{extra}: {}", text(&out));
    }
}
