//! Several users of a domain (`[source] subjects`): each user's drive under `users/<email>/`, every
//! shared drive once under `shared-drives/<name>/`, each a unit with its own state; the union of the
//! units is the exact mirror, every content fetched once, and a re-run fetches nothing.

use crate::support::*;
use drive_emulator::{DomainUser, EmuTree, EmulatorConfig};
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
    let owned = assert_exact_domain_units(config, units, expected).await;
    let base = Config::load(config).unwrap();
    let Dest::Local(dir) = local_dest_of(&base) else { unreachable!() };
    let listed: BTreeSet<String> =
        local_objects(&dir).into_keys().filter(|k| !k.split('/').any(|s| s == ".trash" || s == ".versions")).collect();
    let stray: Vec<_> = listed.difference(&owned).collect();
    assert!(stray.is_empty(), "objects no unit owns: {stray:?}");
    assert_no_staging_files(&dir);
}

/// Every unit of `units` holds exactly its expected files, each at a key of its own under its folder
/// with the file's bytes; returns the keys (relative to the destination's root) they hold.
async fn assert_exact_domain_units(
    config: &Path,
    units: &[Unit],
    expected: &BTreeMap<String, BTreeMap<String, Expected>>,
) -> BTreeSet<String> {
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
    owned
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
    let domain = mirrorflow(&["status", config.to_str().unwrap()]).await;
    assert_eq!(domain.status.code(), Some(0), "{}", text(&domain));
    assert!(text(&domain).contains("shard: 0/1"), "{}", text(&domain));
    for u in &units {
        assert!(text(&domain).contains(&format!("{}: ok", u.label())), "{}: {}", u.label(), text(&domain));
    }
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

fn user(email: &str, files: usize, drives: &[usize]) -> DomainUser {
    DomainUser { drives: drives.to_vec(), ..DomainUser::new(email, files) }
}

/// alice and bob (the administrator) with drives of their own, carol suspended; shared drive 0 is
/// alice's and bob's, drive 1 bob's alone.
fn domain_corpus() -> EmulatorConfig {
    EmulatorConfig {
        domain_users: vec![
            user("alice@example.com", 12, &[0]),
            DomainUser { admin: true, ..user("bob@example.com", 9, &[0, 1]) },
            DomainUser { suspended: true, ..user("carol@example.com", 5, &[1]) },
        ],
        shared_drives: 2,
        ..small_corpus(false)
    }
}

/// What each unit must hold in a real domain: a user's My Drive as that user sees it, a shared
/// drive's own files.
async fn expected_in_domain(env: &TestEnv, units: &[Unit]) -> BTreeMap<String, BTreeMap<String, Expected>> {
    let whole = env.tree().await;
    let mut out = BTreeMap::new();
    for u in units {
        let files: BTreeMap<String, Expected> = match u {
            Unit::User { email } => {
                let mine = env.emu.user_tree(email).await;
                let in_drives: BTreeSet<&str> =
                    mine.items.iter().filter(|i| i.drive_id.is_some()).map(|i| i.id.as_str()).collect();
                expected_files(&mine).into_iter().filter(|(id, _)| !in_drives.contains(id.as_str())).collect()
            }
            Unit::SharedDrive { id, .. } => {
                let theirs: BTreeSet<&str> = whole
                    .items
                    .iter()
                    .filter(|i| i.drive_id.as_deref() == Some(id.0.as_str()))
                    .map(|i| i.id.as_str())
                    .collect();
                expected_files(&whole).into_iter().filter(|(id, _)| theirs.contains(id.as_str())).collect()
            }
        };
        out.insert(u.dir_name(), files);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_directorys_active_users_and_every_shared_drive_once_each_content_fetched_once() {
    let env = TestEnv::start(domain_corpus()).await;
    let dest = env.local_dest("dom");
    let extra = "src.subjects = \"domain\"\nsrc.subject = \"bob@example.com\"\nsrc.drives_in_parallel = 3\n\
                 [rate_limit]\nuser_rps = 50.0\n";
    let config = env.config("dom", &dest, extra);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let cfg = Config::load(&config).unwrap();
    let units = mirrorflow::domain::units::discover(&cfg).await.unwrap();
    let labels: Vec<String> = units.iter().map(Unit::label).collect();
    assert_eq!(units.len(), 4, "alice, bob and the two drives, not carol: {labels:?}");
    assert!(!labels.iter().any(|l| l.contains("carol")), "{labels:?}");
    let readers: BTreeMap<String, String> = units
        .iter()
        .filter_map(|u| match u {
            Unit::SharedDrive { name, reader, .. } => Some((name.clone(), reader.clone())),
            Unit::User { .. } => None,
        })
        .collect();
    assert_eq!(readers.values().filter(|r| *r == "alice@example.com").count(), 1, "drive 0 read by alice: {readers:?}");
    assert_eq!(readers.values().filter(|r| *r == "bob@example.com").count(), 1, "drive 1 read by bob: {readers:?}");
    let expected = expected_in_domain(&env, &units).await;
    assert!(expected.values().all(|f| !f.is_empty()), "{expected:?}");
    assert_exact_domain(&config, &units, &expected).await;
    let Dest::Local(dir) = &dest else { unreachable!() };
    assert!(!dir.join("users").join("carol@example.com").exists(), "a suspended user is skipped");

    let stats = env.emu.stats();
    let twice: Vec<_> = stats.downloads_by_file.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "contents fetched more than once: {twice:?}");
    // Within a unit, a second file of the same bytes is a server-side copy (content dedup): each
    // unit fetched each of its distinct contents, and nothing that is not its own.
    for (unit, files) in &expected {
        // An empty file needs no download.
        let contents: BTreeSet<&Option<String>> = files.values().filter(|e| e.size > 0).map(|e| &e.md5).collect();
        let fetched: BTreeSet<&Option<String>> = files
            .iter()
            .filter(|(id, e)| e.size > 0 && stats.downloads_by_file.contains_key(*id))
            .map(|(_, e)| &e.md5)
            .collect();
        assert_eq!(fetched, contents, "contents {unit} fetched");
    }
    let ours: BTreeSet<&String> = expected.values().flat_map(BTreeMap::keys).collect();
    let foreign: Vec<_> = stats.downloads_by_file.keys().filter(|id| !ours.contains(id)).collect();
    assert!(foreign.is_empty(), "fetched files no unit mirrors: {foreign:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_who_cannot_be_impersonated_fails_alone_and_the_others_are_mirrored() {
    let env = TestEnv::start(domain_corpus()).await;
    let dest = env.local_dest("alone");
    let extra = "src.subjects = [\"alice@example.com\", \"carol@example.com\", \"zed@example.com\"]\n";
    let config = env.config("alone", &dest, extra);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for who in ["carol@example.com", "zed@example.com"] {
        assert!(text(&out).contains(&format!("{who} failed")), "{who}: {}", text(&out));
        assert!(text(&out).contains(&format!("acting as {who}: ")), "{who}: {}", text(&out));
    }
    assert!(text(&out).contains("does not exist or is suspended"), "says what to check: {}", text(&out));
    let alice = Unit::User { email: "alice@example.com".into() };
    let expected = expected_in_domain(&env, std::slice::from_ref(&alice)).await;
    assert_exact_domain_units(&config, &[alice], &expected).await;
}

/// Runs `run --once` of `config` as shard `shard` ("i/n"), without blocking the emulator's runtime.
async fn run_shard(config: &Path, shard: &str) -> std::process::Output {
    let (config, shard) = (config.to_path_buf(), shard.to_string());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
            .args(["run", "--once"])
            .arg(&config)
            .env("MIRRORFLOW_SHARD", &shard)
            .env("MIRRORFLOW_LOG", "mirrorflow=warn")
            .output()
            .expect("binary runs")
    })
    .await
    .unwrap()
}

/// Runs every shard of `configs` at once ("i/n", n = configs.len()); each must end with 0.
async fn run_shards(configs: &[std::path::PathBuf]) {
    let n = configs.len();
    let runs = configs.iter().enumerate().map(|(i, c)| {
        let c = c.clone();
        tokio::spawn(async move { run_shard(&c, &format!("{i}/{n}")).await })
    });
    for (i, r) in futures::future::join_all(runs).await.into_iter().enumerate() {
        let out = r.unwrap();
        assert_eq!(out.status.code(), Some(0), "shard {i}/{n}: {}", text(&out));
    }
}

/// Which units each shard's state holds; each unit is in exactly one, and every unit is somewhere.
fn units_by_shard(configs: &[std::path::PathBuf], units: &[Unit]) -> Vec<Vec<Unit>> {
    let held: Vec<Vec<Unit>> = configs
        .iter()
        .map(|c| {
            let cfg = Config::load(c).unwrap();
            units.iter().filter(|u| u.state_dir(&cfg.state.dir).exists()).cloned().collect()
        })
        .collect();
    for u in units {
        let owners = held.iter().filter(|h| h.contains(u)).count();
        assert_eq!(owners, 1, "{} is held by {owners} shards", u.label());
    }
    held
}

/// Every object of the local destination with its bytes' md5.
fn objects_md5(dir: &Path) -> BTreeMap<String, String> {
    local_objects(dir).into_iter().map(|(k, b)| (k, hex::encode(<md5::Md5 as md5::Digest>::digest(&b)))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_split_the_domain_and_a_third_shard_adopts_its_share_without_downloading_or_removing() {
    let users: Vec<DomainUser> =
        (0..6).map(|i| DomainUser { admin: i == 0, ..user(&format!("u{i}@example.com"), 6, &[i % 3]) }).collect();
    let env = TestEnv::start(EmulatorConfig { domain_users: users, shared_drives: 3, ..small_corpus(false) }).await;
    let dest = env.local_dest("sharded");
    let extra = "src.subjects = \"domain\"\nsrc.subject = \"u0@example.com\"\nsrc.drives_in_parallel = 2\n";
    let configs: Vec<std::path::PathBuf> = (0..3).map(|i| env.config(&format!("shard{i}"), &dest, extra)).collect();
    let units = mirrorflow::domain::units::discover(&Config::load(&configs[0]).unwrap()).await.unwrap();
    assert_eq!(units.len(), 9, "six users and three drives");
    let expected = expected_in_domain(&env, &units).await;

    run_shards(&configs[..2]).await;
    let held = units_by_shard(&configs[..2], &units);
    assert!(held.iter().all(|h| !h.is_empty()), "both shards have work: {held:?}");
    let mut owned = BTreeSet::new();
    for (c, mine) in configs.iter().zip(&held) {
        owned.extend(assert_exact_domain_units(c, mine, &expected).await);
    }
    let Dest::Local(dir) = &dest else { unreachable!() };
    let before = objects_md5(dir);
    let listed: BTreeSet<&String> = before.keys().filter(|k| !k.split('/').any(|s| s == ".trash")).collect();
    assert_eq!(listed, owned.iter().collect(), "the union of the shards is the whole mirror, nothing else");
    let fetched = env.emu.stats().downloads_by_file;
    assert!(fetched.values().all(|n| *n == 1), "a content fetched by two shards: {fetched:?}");

    run_shards(&configs).await;
    let held = units_by_shard(&configs, &units);
    assert!(!held[2].is_empty(), "the new shard took over some units");
    for (c, mine) in configs.iter().zip(&held) {
        assert_exact_domain_units(c, mine, &expected).await;
    }
    let after = env.emu.stats().downloads_by_file;
    let whole = env.tree().await;
    // A Google file's export has no checksum Drive vouches for, so an adopting shard exports it
    // again (adoption keeps only objects proven to hold the file's bytes); every binary file's bytes
    // stay where they are.
    let has_md5 = |id: &String| whole.items.iter().any(|i| i.id == *id && i.md5.is_some());
    let again: Vec<_> = after
        .iter()
        .filter(|(id, n)| has_md5(id) && fetched.get(*id) != Some(*n))
        .map(|(id, _)| env_item(&whole, id))
        .collect();
    assert!(again.is_empty(), "resharding downloaded again: {again:?}");
    assert_eq!(objects_md5(dir), before, "resharding changed or removed objects");
}

/// An item's name, size, md5 and drive, for a failure's message.
fn env_item(tree: &EmuTree, id: &str) -> String {
    match tree.items.iter().find(|i| i.id == id) {
        Some(i) => format!(
            "{id} {:?} size {:?} md5 {:?} drive {:?} parents {:?}",
            i.name, i.size, i.md5, i.drive_id, i.parents
        ),
        None => format!("{id} (not in the tree)"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_drive_whose_reader_loses_it_is_never_removed_and_another_member_takes_over() {
    let env = TestEnv::start(domain_corpus()).await;
    let dest = env.local_dest("takeover");
    let extra = "src.subjects = [\"alice@example.com\", \"bob@example.com\"]\n";
    let config = env.config("takeover", &dest, extra);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cfg = Config::load(&config).unwrap();
    let units = mirrorflow::domain::units::discover(&cfg).await.unwrap();
    let shared: Vec<&Unit> = units.iter().filter(|u| matches!(u, Unit::SharedDrive { .. })).collect();
    let Some(Unit::SharedDrive { id, reader, .. }) =
        shared.iter().find(|u| matches!(u, Unit::SharedDrive { reader, .. } if reader == "alice@example.com")).copied()
    else {
        panic!("drive 0 is read by alice: {units:?}")
    };
    let expected = expected_in_domain(&env, &units).await;
    let Dest::Local(dir) = &dest else { unreachable!() };
    let before = objects_md5(dir);

    // The reader leaves the drive after the units were listed: its unit fails, nothing is removed.
    let unit = units.iter().find(|u| matches!(u, Unit::SharedDrive { id: d, .. } if d == id)).unwrap().clone();
    env.control("mutate", serde_json::json!({"ops": [{"op": "remove_member", "drive_id": id.0, "email": reader}]}))
        .await;
    let stale = mirrorflow::pipeline::run(&unit.config(&cfg).unwrap(), Default::default()).await;
    let Err(e) = stale else { panic!("the stale reader's run went on") };
    assert!(e.to_string().contains("not visible to alice@example.com"), "{e}");
    assert_eq!(objects_md5(dir), before, "a reader's lost access removed or changed objects");

    // The next run lists the drives again: bob reads it, and the mirror is exact and unchanged.
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let now = mirrorflow::domain::units::discover(&cfg).await.unwrap();
    assert!(
        now.iter()
            .any(|u| matches!(u, Unit::SharedDrive { id: d, reader, .. } if d == id && reader == "bob@example.com")),
        "{now:?}"
    );
    assert_exact_domain(&config, &now, &expected).await;
    assert_eq!(objects_md5(dir), before, "the takeover changed objects");
}
