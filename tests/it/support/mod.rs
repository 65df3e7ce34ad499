//! Shared harness of the integration tests: an in-process Drive emulator on a free port, the real
//! `mirrorflow` binary, a real S3 server (moto), and the check that a destination is an exact mirror.
#![allow(dead_code)]

pub mod emu;
pub mod pg;
pub mod refusing_proxy;
pub mod slowdown_proxy;

use drive_emulator::{EmuTree, Emulator, EmulatorConfig};
use mirrorflow::config::Config;
use mirrorflow::dest::Destination;
use mirrorflow::dest::keys::{MAX_KEY_BYTES, fit_parent};
use mirrorflow::model::{FileId, ObjectKey};
use mirrorflow::state::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Where a test mirrors to.
#[derive(Clone, Debug)]
pub enum Dest {
    /// A local folder.
    Local(PathBuf),
    /// A bucket on the S3 server, under a prefix.
    S3 { endpoint: String, bucket: String, prefix: String },
}

/// One emulator plus a scratch folder holding the key, configs, state and local mirrors.
pub struct TestEnv {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
}

impl TestEnv {
    pub async fn start(cfg: EmulatorConfig) -> TestEnv {
        let emu = Emulator::start(cfg, "127.0.0.1:0".parse().unwrap()).await.expect("emulator starts");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        emu.write_service_account_key(&key).unwrap();
        // It holds a private key: readable by its owner only.
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
        TestEnv { emu, dir, key }
    }

    pub fn local_dest(&self, name: &str) -> Dest {
        Dest::Local(self.dir.path().join(name))
    }

    /// Writes a pipeline config for `dest` with extra TOML appended; returns its path.
    pub fn config(&self, name: &str, dest: &Dest, extra: &str) -> PathBuf {
        let base = self.emu.base_url();
        let destination = match dest {
            Dest::Local(p) => format!("url = \"file://{}\"", p.display()),
            Dest::S3 { endpoint, bucket, prefix } => format!(
                "url = \"s3://{bucket}/{prefix}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\""
            ),
        };
        let (dest_extra, rest) = split_destination_extra(extra);
        let (src_extra, rest) = split_source_extra(&rest);
        let text = format!(
            "[source]\ncredentials = \"{key}\"\napi_base_url = \"{base}\"\ndocs_base_url = \"{base}\"\ndrives = [\"all\"]\n{src_extra}\n[destination]\n{destination}\n{dest_extra}\n[state]\ndir = \"{state}\"\n\n[retry]\nmax_attempts = 6\nbase_delay = \"20ms\"\nmax_delay = \"500ms\"\n\n{rest}\n",
            key = self.key.display(),
            state = self.dir.path().join(format!("{name}-state")).display(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub async fn tree(&self) -> EmuTree {
        self.emu.tree().await
    }

    pub async fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}_emu/{path}", self.emu.base_url());
        let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "control {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    pub async fn stats(&self) -> serde_json::Value {
        let url = format!("{}_emu/stats", self.emu.base_url());
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }
}

/// Lines of `extra` that belong in `[destination]` start with `dest.`; the rest is appended as is.
fn split_destination_extra(extra: &str) -> (String, String) {
    let mut d = String::new();
    let mut rest = String::new();
    for line in extra.lines() {
        match line.strip_prefix("dest.") {
            Some(l) => d.push_str(&format!("{l}\n")),
            None => rest.push_str(&format!("{line}\n")),
        }
    }
    (d, rest)
}

/// Lines of `extra` that belong in `[source]` start with `src.`; the rest is returned as is.
fn split_source_extra(extra: &str) -> (String, String) {
    let mut src = String::new();
    let mut rest = String::new();
    for line in extra.lines() {
        match line.strip_prefix("src.") {
            Some(l) => src.push_str(&format!("{l}\n")),
            None => rest.push_str(&format!("{line}\n")),
        }
    }
    (src, rest)
}

/// A real dead letter for a corpus whose refusals Drive gives are skips, not dead letters: the
/// largest binary file an exact mirror of `tree` holds, and a `max_file_size` just under its size
/// (the planner dead-letters it with `fileTooLarge`). Returns its id and that limit.
pub fn oversized(tree: &EmuTree) -> (String, u64) {
    let expected = expected_files(tree);
    let mut sizes: Vec<(u64, &String)> = expected
        .iter()
        .filter(|(id, _)| tree.items.iter().any(|i| &i.id == *id && i.export_sizes.is_none()))
        .map(|(id, e)| (e.size, id))
        .collect();
    sizes.sort();
    let (largest, id) = sizes.pop().expect("a binary file");
    let next = sizes.pop().map_or(0, |(s, _)| s);
    assert!(next < largest, "two files of the largest size {largest}: no single file to dead-letter");
    (id.clone(), largest - 1)
}

/// Starts `mirrorflow run` in continuous mode (output piped, warnings only); the caller stops it.
pub fn spawn_continuous(config: &Path) -> tokio::process::Child {
    spawn_continuous_logging(config, "mirrorflow=warn")
}

/// [`spawn_continuous`] with its own `MIRRORFLOW_LOG` filter.
pub fn spawn_continuous_logging(config: &Path, filter: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["run", config.to_str().unwrap()])
        .env("MIRRORFLOW_LOG", filter)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to a running `mirrorflow` and waits (up to 40 s, a deadline against hangs) for it.
pub async fn sigterm_and_wait(child: tokio::process::Child) -> Output {
    let pid = child.id().expect("still running").to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("stops in time")
        .unwrap()
}

/// Runs the real binary (without blocking the emulator's runtime).
pub async fn mirrorflow(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
            .args(&args)
            .env("MIRRORFLOW_LOG", std::env::var("TEST_MIRRORFLOW_LOG").unwrap_or("mirrorflow=warn".into()))
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .expect("binary runs")
    })
    .await
    .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What the mirror must hold for one Drive file.
#[derive(Debug, Clone)]
pub struct Expected {
    pub name: String,
    pub md5: Option<String>,
    pub size: u64,
}

const FOLDER: &str = "application/vnd.google-apps.folder";
const SHORTCUT: &str = "application/vnd.google-apps.shortcut";

fn export_mime_for(doc_mime: &str) -> Option<&'static str> {
    Some(match doc_mime {
        "application/vnd.google-apps.document" => {
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        }
        "application/vnd.google-apps.spreadsheet" => {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        }
        "application/vnd.google-apps.presentation" => {
            "application/vnd.openxmlformats-officedocument.presentationml.presentation"
        }
        "application/vnd.google-apps.drawing" => "application/pdf",
        "application/vnd.google-apps.script" => "application/vnd.google-apps.script+json",
        // Not an export: `files.download` hands a Vid over as MP4.
        "application/vnd.google-apps.vid" => "video/mp4",
        _ => return None,
    })
}

/// The files an exact mirror of `tree` holds (all drives), computed independently of mirrorflow:
/// not trashed, not a folder or shortcut, reachable from a root through live folders, downloadable.
pub fn expected_files(tree: &EmuTree) -> BTreeMap<String, Expected> {
    expected_files_in(tree, false)
}

/// [`expected_files`], with the items shared with the user when `shared_with_me`: those whose
/// chain of parents ends (no parent, or one not in the tree) at an item shared with the user directly,
/// outside any shared drive.
pub fn expected_files_in(tree: &EmuTree, shared_with_me: bool) -> BTreeMap<String, Expected> {
    expected_with(tree, shared_with_me, false)
}

/// [`expected_files`] with `[source] shortcuts = "follow"`: a shortcut to a live file holds that
/// file's bytes; any other shortcut is a link.
pub fn expected_files_following(tree: &EmuTree) -> BTreeMap<String, Expected> {
    expected_with(tree, false, true)
}

/// What Drive will not hand over: flagged abusive, or the owner disabled downloads.
fn refused(item: &drive_emulator::EmuItem) -> bool {
    item.abusive || !item.can_download
}

/// The size of what the mirror holds for a binary or an exported Google file; `None`: nothing (a
/// Google type with no export).
fn content_size(item: &drive_emulator::EmuItem) -> Option<u64> {
    match (&item.export_sizes, export_mime_for(&item.mime_type)) {
        (Some(sizes), Some(mime)) => Some(sizes.get(mime).copied().unwrap_or(0)),
        (Some(_), None) => None,
        _ => Some(item.size.unwrap_or(0)),
    }
}

fn expected_with(tree: &EmuTree, shared_with_me: bool, follow: bool) -> BTreeMap<String, Expected> {
    let by_id: BTreeMap<&str, _> = tree.items.iter().map(|i| (i.id.as_str(), i)).collect();
    let roots: BTreeSet<&str> =
        std::iter::once(tree.root_id.as_str()).chain(tree.drives.iter().map(|d| d.id.as_str())).collect();
    let reachable = |start: &String| {
        let mut id: &String = start;
        for _ in 0..200 {
            let Some(item) = by_id.get(id.as_str()) else {
                return false;
            };
            if item.trashed {
                return false;
            }
            let shared_top = shared_with_me && item.shared_with_me && item.drive_id.is_none();
            let Some(parent) = item.parents.first() else {
                return shared_top;
            };
            if roots.contains(parent.as_str()) {
                return true;
            }
            match by_id.get(parent.as_str()) {
                Some(p) if p.mime_type == FOLDER => id = parent,
                Some(_) => return false,
                None => return shared_top,
            }
        }
        false
    };
    let mut out = BTreeMap::new();
    for item in &tree.items {
        if item.mime_type == FOLDER || refused(item) || !reachable(&item.id) {
            continue;
        }
        if item.mime_type == SHORTCUT {
            let target = item.shortcut_target.clone().unwrap_or_default();
            let live = by_id.get(target.as_str()).filter(|t| !t.trashed);
            if let Some(t) = live.filter(|t| follow && t.mime_type != FOLDER && t.mime_type != SHORTCUT) {
                // `follow`: the target's bytes at the shortcut's place (nothing when Drive refuses them).
                if let Some(size) = content_size(t).filter(|_| !refused(t)) {
                    out.insert(item.id.clone(), Expected { name: item.name.clone(), md5: t.md5.clone(), size });
                }
                continue;
            }
            // A link: an internet-shortcut object opening the target's webViewLink (a dangling
            // shortcut's opens the generic address).
            let url = match by_id.get(target.as_str()) {
                Some(t) => t.web_view_link.clone(),
                None => format!("https://drive.google.com/open?id={target}"),
            };
            let body = format!("[InternetShortcut]\r\nURL={url}\r\n");
            let md5 = Some(hex::encode(<md5::Md5 as md5::Digest>::digest(body.as_bytes())));
            out.insert(item.id.clone(), Expected { name: item.name.clone(), md5, size: body.len() as u64 });
            continue;
        }
        let Some(size) = content_size(item) else { continue };
        out.insert(item.id.clone(), Expected { name: item.name.clone(), md5: item.md5.clone(), size });
    }
    out
}

/// Opens the store and destination of a config (the binary must have exited).
pub fn open(config: &Path) -> (Config, Store, Destination) {
    let cfg = Config::load(config).expect("config loads");
    let store = Store::open(&cfg.state.dir).expect("store opens");
    let dest = Destination::from_config(&cfg.destination, &cfg.retry).expect("destination opens");
    (cfg, store, dest)
}

/// Asserts the destination of `config` is exactly `expected`: each file at its recorded key with the
/// right bytes (md5 for binaries, size for exports), no file missing, no key shared, nothing extra
/// outside `.trash/`, and every key under the prefix.
pub async fn assert_exact_mirror(config: &Path, expected: &BTreeMap<String, Expected>) -> BTreeMap<String, ObjectKey> {
    let (_cfg, store, dest) = open(config);
    let mut keys: BTreeMap<String, ObjectKey> = BTreeMap::new();
    store
        .for_each_file(|r| {
            keys.insert(r.id.0.clone(), r.key.clone());
        })
        .unwrap();
    let missing: Vec<_> =
        expected.keys().filter(|id| !keys.contains_key(*id)).map(|id| (id, &expected[id].name)).collect();
    if !missing.is_empty() {
        let audit: Vec<_> = store
            .audit_since(0)
            .unwrap()
            .into_iter()
            .filter(|(_, e)| missing.iter().any(|(id, _)| **id == e.file_id.0))
            .collect();
        panic!(
            "files missing from the mirror: {missing:?}\ndead letters: {:?}\naudit: {audit:?}",
            store.dead_letters().unwrap()
        );
    }
    let extra: Vec<_> = keys.keys().filter(|id| !expected.contains_key(*id)).collect();
    if !extra.is_empty() {
        let records: Vec<_> = extra.iter().map(|id| store.file(&FileId((*id).clone())).unwrap()).collect();
        let audit: Vec<_> = store
            .audit_since(0)
            .unwrap()
            .into_iter()
            .filter(|(_, e)| extra.iter().any(|id| **id == e.file_id.0))
            .collect();
        let dead = store.dead_letters().unwrap();
        panic!(
            "files in the mirror that should not be: {extra:?}\nrecords: {records:?}\naudit: {audit:?}\ndead letters: {dead:?}"
        );
    }
    let mut by_class: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for (id, k) in &keys {
        by_class.entry(k.0.to_lowercase()).or_default().push(id);
    }
    let shared: Vec<_> = by_class.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(shared.is_empty(), "files share a key (case-insensitively): {shared:?}");
    for (id, e) in expected {
        let key = &keys[id];
        let rec = store.file(&FileId(id.clone())).unwrap().unwrap();
        assert!(key.0.starts_with(dest.prefix()), "{key} escapes the prefix {}", dest.prefix());
        assert!(key.0.split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "bad segment in {key}");
        let bytes = dest.get(key).await.unwrap_or_else(|err| panic!("object {key} for {id} ({:?}): {err}", e.name));
        assert_eq!(bytes.len() as u64, e.size, "size of {key}");
        if let Some(md5) = &e.md5 {
            let got = hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes));
            assert_eq!(&got, md5, "md5 of {key}");
            assert_eq!(rec.md5.as_ref(), Some(md5), "recorded md5 of {key}");
        }
        if let Some(sha256) = &rec.sha256 {
            let got = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            assert_eq!(&got, sha256, "recorded sha256 of {key}");
        }
    }
    let in_store: BTreeSet<String> = keys.values().map(|k| k.0.clone()).collect();
    let reserved =
        |dir: &str| if dest.prefix().is_empty() { format!("{dir}/") } else { format!("{}/{dir}/", dest.prefix()) };
    let (trash, versions) = (reserved(".trash"), reserved(".versions"));
    let listed: BTreeSet<String> = dest
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.0)
        .filter(|k| !k.starts_with(&trash) && !k.starts_with(&versions))
        .collect();
    let stray: Vec<_> = listed.difference(&in_store).collect();
    assert!(stray.is_empty(), "objects in the destination that no file owns: {stray:?}");
    if let Some(dir) = _cfg.destination.url.strip_prefix("file://") {
        assert_no_staging_files(Path::new(dir));
    }
    keys
}

/// object_store's staging name of a local write (`<name>#<digits>`; a real name never ends so,
/// `keys::local_encode`).
fn is_staging_name(rel: &str) -> bool {
    rel.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// No staging file of a killed local write is left anywhere under `dir` (`.trash/` and `.versions/`
/// included): the next start removes them.
pub fn assert_no_staging_files(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                assert!(!is_staging_name(&rel), "a killed write's staging file was left in the mirror: {rel}");
            }
        }
    }
}

/// A small corpus with everything but big files.
pub fn small_corpus(hostile: bool) -> EmulatorConfig {
    EmulatorConfig {
        seed: 7,
        files: 60,
        folders: 10,
        depth: 3,
        gdocs: 4,
        shared_drives: 1,
        hostile,
        big_file_mib: 0,
        // As Google documents it: shared-drive changes only in each drive's own log.
        drive_changes_in_user_log: false,
        ..Default::default()
    }
}

/// A running moto S3 server: the one `.ci/run` started (MIRRORFLOW_TEST_S3_ENDPOINT), or one this
/// test process starts from `moto_server` on PATH or in `.venv-s3`.
pub struct S3Server {
    pub endpoint: String,
    child: Option<std::process::Child>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub async fn s3_server() -> S3Server {
    if let Ok(endpoint) = std::env::var("MIRRORFLOW_TEST_S3_ENDPOINT") {
        return S3Server { endpoint, child: None };
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-s3/bin/moto_server");
    let program = if venv.exists() { venv.display().to_string() } else { "moto_server".to_string() };
    let mut child = std::process::Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} (install moto[server], see .ci/run): {e}"));
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{endpoint}/moto-api/")).await.is_ok() {
            return S3Server { endpoint, child: Some(child) };
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("moto did not start on {endpoint}");
}

/// Creates a bucket on the S3 server.
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    let r = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
}

/// In-progress multipart uploads in a bucket (S3 ListMultipartUploads).
pub async fn open_uploads(endpoint: &str, bucket: &str) -> usize {
    let xml = reqwest::get(format!("{endpoint}/{bucket}?uploads")).await.unwrap().text().await.unwrap();
    xml.matches("<UploadId>").count()
}

/// Asserts every mirrored file sits where Drive has it now: its key's folder is the recorded key of
/// its Drive parent (or the drive's root), every live folder likewise, and names match Drive's.
pub fn assert_paths_follow_drive(config: &Path, tree: &EmuTree) {
    let (_cfg, store, dest) = open(config);
    let join = |rel: &str| if dest.prefix().is_empty() { rel.to_string() } else { format!("{}/{rel}", dest.prefix()) };
    let by_id: BTreeMap<&str, _> = tree.items.iter().map(|i| (i.id.as_str(), i)).collect();
    let dir_of = |key: &str| key.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
    let parent_dir = |parent: &str| -> Option<String> {
        if parent == tree.root_id {
            return Some(join("my-drive"));
        }
        if let Some(drive) = tree.drives.iter().find(|d| d.id == parent) {
            // A shared drive's root is recorded under the drive's current name.
            let root = store.folder(&FileId(drive.id.clone())).unwrap();
            let root = root.unwrap_or_else(|| panic!("root of shared drive {} not recorded", drive.id));
            assert_eq!(root.name, drive.name, "recorded name of shared drive {}", drive.id);
            assert!(root.key.0.starts_with(&join("shared-drives/")), "{}", root.key);
            return Some(root.key.0);
        }
        Some(
            store
                .folder(&FileId(parent.to_string()))
                .unwrap()
                .unwrap_or_else(|| {
                    let audit: Vec<_> =
                        store.audit_since(0).unwrap().into_iter().filter(|(_, e)| e.file_id.0 == parent).collect();
                    panic!("folder {parent} ({:?}) not recorded; audit: {audit:?}", by_id.get(parent))
                })
                .key
                .0,
        )
    };
    let mut checked = 0;
    store
        .for_each_file(|rec| {
            let item = by_id.get(rec.id.0.as_str()).unwrap_or_else(|| panic!("{} not in Drive", rec.id));
            assert_eq!(rec.name, item.name, "recorded name of {}", rec.id);
            let parent = item.parents.first().unwrap();
            match parent_dir(parent) {
                Some(dir) => assert_eq!(
                    dir_of(&rec.key.0),
                    fit_parent(&dir, dest.max_key_bytes),
                    "{} ({:?}) is not in its parent's folder",
                    rec.id,
                    item.name
                ),
                None => assert!(rec.key.0.starts_with(&join("shared-drives/")), "{}", rec.key),
            }
            checked += 1;
        })
        .unwrap();
    for f in store.all_folders().unwrap() {
        if f.is_drive_root() {
            assert!(tree.drives.iter().any(|d| d.id == f.id.0), "shared drive {} recorded but gone from Drive", f.id);
            continue;
        }
        let Some(item) = by_id.get(f.id.0.as_str()) else { panic!("folder {} recorded but gone from Drive", f.id) };
        assert!(!item.trashed, "trashed folder {} still recorded", f.id);
        assert_eq!(f.name, item.name);
        if let Some(dir) = parent_dir(item.parents.first().unwrap()) {
            assert_eq!(
                dir_of(&f.key.0),
                fit_parent(&dir, dest.max_key_bytes),
                "folder {} ({:?}) is not in its parent's folder",
                f.id,
                item.name
            );
        }
    }
    assert!(checked > 0);
}

/// Every key fits S3's 1,024 bytes, and the hostile corpus's deep chain went under a shortened folder.
pub fn assert_keys_fit(keys: &BTreeMap<String, ObjectKey>) {
    for key in keys.values() {
        assert!(key.0.len() <= MAX_KEY_BYTES, "{} bytes: {key}", key.0.len());
    }
    assert!(keys.values().any(|k| k.0.contains("/_deep-") && k.0.ends_with("/bottom.txt")), "no deep path");
}

/// Files below `dir`, recursively.
pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            n += if p.is_dir() { count_files(&p) } else { 1 };
        }
    }
    n
}

/// Polls `cond` for up to a minute (a deadline against hangs, not a timing assertion).
pub async fn poll_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("condition not reached within a minute");
}

/// Asserts `mirrorflow verify` finds the mirror of `config` equal to Drive: verify computes every key
/// from Drive's tree on its own, so this cross-checks the pipeline's layout after any history.
pub async fn assert_verifies_equal(config: &Path) {
    let out = mirrorflow(&["verify", "--json", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "verify after this history: {}", text(&out));
}

/// Every object under a local destination (relative path → bytes), `.trash/` and `.versions/` left
/// out; a staging file of a killed write fails the test.
pub fn local_objects(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            if rel.starts_with(".trash") || rel.starts_with(".mirrorflow") || rel.starts_with(".versions") {
                continue;
            }
            // A killed local write's staging file: the next start removes it.
            assert!(
                !(path.is_file() && is_staging_name(&rel)),
                "a killed write's staging file was left in the mirror: {rel}"
            );
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}
