//! The planner's unit tests.

use super::*;
use crate::config::{ExportConfig, KeyMode};
use crate::state::Store;

struct NoLookup;
impl FolderLookup for NoLookup {
    async fn lookup(&self, _id: &FileId) -> Result<Option<DriveFile>, DriveError> {
        Ok(None)
    }
}

fn planner(dir: &std::path::Path) -> Planner<NoLookup, Store> {
    let scope = Scope { my_drive_root: Some(FileId("root".into())), shared: BTreeMap::new(), ..Default::default() };
    let layout = Layout {
        prefix: "pre".into(),
        mode: KeyMode::Utf8,
        export: ExportConfig::default(),
        max_file_size: Some(100),
        dest_max_file_size: Some(80),
        max_key_bytes: keys::MAX_KEY_BYTES,
    };
    Planner::new(Store::open(dir).unwrap(), Arc::new(NoLookup), scope, layout, Arc::default()).unwrap()
}

fn file(id: &str, name: &str, parent: &str) -> DriveFile {
    let mut f = crate::stages::testing::file(id, name, 5, "m");
    f.mime_type = "text/plain".into();
    f.parents = vec![FileId(parent.into())];
    f
}

fn upsert(seq: u64, f: DriveFile) -> ChangeEvent {
    ChangeEvent { seq: ChangeSeq(seq), file_id: f.id.clone(), kind: ChangeKind::Upsert(f), origin: Origin::Change }
}

/// Plans `f` and commits the result, as the pipeline would before the next event wanting its key.
async fn key_of(p: &mut Planner<NoLookup, Store>, seq: u64, f: DriveFile) -> String {
    let outcome = match p.plan(upsert(seq, f)).await.unwrap().action {
        Ok(planned) => committed(&planned),
        Err(o @ Outcome { kind: OutcomeKind::FolderRecorded(_), .. }) => o,
        Err(o) => panic!("unexpected {o:?}"),
    };
    let key = match &outcome.kind {
        OutcomeKind::Committed(r) => r.key.0.clone(),
        OutcomeKind::FolderRecorded(r) => r.key.0.clone(),
        _ => unreachable!(),
    };
    commit(&p.store, vec![outcome]);
    key
}

/// The outcome of `planned` written and verified.
fn committed(planned: &Planned) -> Outcome {
    let f = &planned.file;
    let rec = FileRecord {
        id: f.id.clone(),
        name: f.name.clone(),
        parent: f.parents.first().cloned(),
        mime_type: f.mime_type.clone(),
        version: f.version,
        md5: f.md5.clone(),
        sha256: None,
        size: f.size.unwrap_or(0),
        key: planned.key.clone(),
        modified_time: None,
    };
    Outcome { seq: planned.seq, file_id: f.id.clone(), kind: OutcomeKind::Committed(rec) }
}

/// Drive as the shared-with-me tests see it: the folders `files.get` answers for.
struct MapLookup(HashMap<FileId, DriveFile>);
impl FolderLookup for MapLookup {
    async fn lookup(&self, id: &FileId) -> Result<Option<DriveFile>, DriveError> {
        Ok(self.0.get(id).cloned())
    }
}

#[tokio::test]
async fn items_shared_with_the_user_go_under_shared_with_me_only_when_asked() {
    let shared_folder = DriveFile {
        mime_type: FOLDER_MIME.into(),
        parents: Vec::new(),
        shared_with_me: true,
        ..file("S", "From Ana", "-")
    };
    let lookup = MapLookup(HashMap::from([(FileId("S".into()), shared_folder)]));
    let in_folder = file("p", "plan.txt", "S");
    let behind_hidden = DriveFile { shared_with_me: true, ..file("b", "budget.pdf", "hidden") };
    let not_shared = file("n", "stray.pdf", "hidden");
    for on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope { my_drive_root: Some(FileId("root".into())), shared_with_me: on, ..Default::default() };
        let layout = Layout {
            prefix: "pre".into(),
            mode: KeyMode::Utf8,
            export: ExportConfig::default(),
            max_file_size: None,
            dest_max_file_size: None,
            max_key_bytes: keys::MAX_KEY_BYTES,
        };
        let store = Store::open(dir.path()).unwrap();
        let mut p = Planner::new(store, Arc::new(MapLookup(lookup.0.clone())), scope, layout, Arc::default()).unwrap();
        let mut plan_key = async |seq: u64, f: &DriveFile| match p.plan(upsert(seq, f.clone())).await.unwrap().action {
            Ok(planned) => Some(planned.key.0),
            Err(_) => None,
        };
        let keys = [plan_key(1, &in_folder).await, plan_key(2, &behind_hidden).await, plan_key(3, &not_shared).await];
        if on {
            assert_eq!(keys[0].as_deref(), Some("pre/shared-with-me/From Ana/plan.txt"));
            assert_eq!(keys[1].as_deref(), Some("pre/shared-with-me/budget.pdf"), "a parent the user cannot see");
            assert_eq!(keys[2], None, "not shared with the user directly, and in no drive in scope");
        } else {
            assert_eq!(keys, [None, None, None], "shared_with_me off: none of them is mirrored");
        }
    }
}

#[tokio::test]
async fn a_stray_object_is_removed_unless_a_record_claims_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    let taken = ObjectKey(key_of(&mut p, 1, file("f1", "a.txt", "root")).await);
    let stray = |seq: u64, key: &ObjectKey| ChangeEvent {
        seq: ChangeSeq(seq),
        file_id: stray_event_id(key),
        kind: ChangeKind::Stray(key.clone()),
        origin: Origin::Repair,
    };
    let free = ObjectKey("pre/my-drive/nobody.txt".into());
    let planned = p.plan(stray(2, &free)).await.unwrap().action.expect("an unclaimed stray is removed");
    assert_eq!((planned.key.clone(), planned.kind.clone()), (free, ActionKind::Delete));
    // A key a committed record claims (in any letter case) is a file's, whatever verify saw.
    let upper = ObjectKey(taken.0.to_uppercase().replace("PRE/MY-DRIVE", "pre/my-drive"));
    for key in [&taken, &upper] {
        let o = p.plan(stray(3, key)).await.unwrap().action.expect_err("a claimed key is left alone");
        assert_eq!(o.kind, OutcomeKind::Skipped(SkipReason::Unchanged));
    }
}

#[tokio::test]
async fn a_name_freed_by_a_rename_passes_to_a_new_file_only_when_the_rename_commits() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(super::super::ledger::Ledger::new(1, 16));
    let scope = Scope { my_drive_root: Some(FileId("root".into())), shared: BTreeMap::new(), ..Default::default() };
    let layout = Layout {
        prefix: "pre".into(),
        mode: KeyMode::Utf8,
        export: ExportConfig::default(),
        max_file_size: None,
        dest_max_file_size: None,
        max_key_bytes: keys::MAX_KEY_BYTES,
    };
    let store = Store::open(dir.path()).unwrap();
    let mut p = Planner::new(store.clone(), Arc::new(NoLookup), scope, layout, ledger.clone()).unwrap();
    assert_eq!(key_of(&mut p, 1, file("A", "r.txt", "root")).await, "pre/my-drive/r.txt");
    // A is renamed to s.txt: planned and holding both keys, not yet committed.
    let rename = upsert(2, file("A", "s.txt", "root"));
    ledger.admit(&rename);
    let planned = p.plan(rename).await.unwrap().action.unwrap();
    assert_eq!(planned.previous_key.as_ref().map(|k| k.0.as_str()), Some("pre/my-drive/r.txt"));
    ledger.take_keys(planned.seq, &planned.file.id, &touched_classes(&planned)).await;
    // A new r.txt waits: the old object is still at r.txt until the rename commits.
    let create = upsert(3, file("B", "r.txt", "root"));
    ledger.admit(&create);
    let mut waiting = Box::pin(p.plan(create));
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), waiting.as_mut()).await;
    assert!(early.is_err(), "the new file was planned before the rename committed: {early:?}");
    // The rename commits (its claim moves with its record), then is released.
    commit(&store, vec![committed(&planned)]);
    ledger.settle(ChangeSeq(2));
    ledger.release(&FileId("A".into()), ChangeSeq(2));
    let b = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap().action.unwrap();
    assert_eq!(b.key.0, "pre/my-drive/r.txt", "the freed name goes to the new file, not a suffixed one");
}

/// Answers every lookup with "not there", counting the calls.
#[derive(Default)]
struct CountingLookup(std::sync::atomic::AtomicUsize);
impl FolderLookup for CountingLookup {
    async fn lookup(&self, _id: &FileId) -> Result<Option<DriveFile>, DriveError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(None)
    }
}

#[tokio::test]
async fn an_out_of_scope_parent_is_looked_up_once_until_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let scope = Scope { my_drive_root: Some(FileId("root".into())), shared: BTreeMap::new(), ..Default::default() };
    let layout = Layout {
        prefix: "pre".into(),
        mode: KeyMode::Utf8,
        export: ExportConfig::default(),
        max_file_size: None,
        dest_max_file_size: None,
        max_key_bytes: keys::MAX_KEY_BYTES,
    };
    let lookup = Arc::new(CountingLookup::default());
    let mut p = Planner::new(Store::open(dir.path()).unwrap(), lookup.clone(), scope, layout, Arc::default()).unwrap();
    let calls = || lookup.0.load(std::sync::atomic::Ordering::SeqCst);
    for (seq, id) in [(1, "shared1"), (2, "shared2"), (3, "shared3")] {
        let outcome = p.plan(upsert(seq, file(id, "s.txt", "elsewhere"))).await.unwrap().action;
        assert!(matches!(outcome, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::NotInScope), .. })));
    }
    assert_eq!(calls(), 1, "the parent outside the scope is asked about once");
    // A change of that folder (it may have moved into the scope) forgets what was known of it.
    let _ = p.plan(upsert(4, file("elsewhere", "f", "further"))).await.unwrap().action;
    let before = calls();
    let _ = p.plan(upsert(5, file("shared4", "s.txt", "elsewhere"))).await.unwrap().action;
    assert_eq!(calls(), before + 1);
}

#[tokio::test]
async fn duplicate_and_case_twin_names_get_distinct_stable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    let a = key_of(&mut p, 1, file("A", "x.txt", "root")).await;
    let b = key_of(&mut p, 2, file("B", "x.txt", "root")).await;
    let c = key_of(&mut p, 3, file("C", "X.TXT", "root")).await;
    assert_eq!(a, "pre/my-drive/x.txt");
    assert_eq!(b, "pre/my-drive/x (B).txt");
    assert_eq!(c, "pre/my-drive/X (C).TXT");
    // B changed (new content): planned again, it keeps its key.
    let mut changed = file("B", "x.txt", "root");
    changed.md5 = Some("other".into());
    assert_eq!(key_of(&mut p, 4, changed).await, b);
}

#[tokio::test]
async fn a_file_and_a_folder_with_one_name_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    let mut folder = file("F", "same", "root");
    folder.mime_type = FOLDER_MIME.into();
    let fk = key_of(&mut p, 1, folder).await;
    let k = key_of(&mut p, 2, file("G", "same", "root")).await;
    assert_ne!(fk, k);
    let child = key_of(&mut p, 3, file("H", "c", "F")).await;
    assert_eq!(child, format!("{fk}/c"));
}

#[tokio::test]
async fn hostile_names_stay_under_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    for (i, name) in ["..", "../../etc/passwd", "/abs", "a\\b", "\u{0}", " "].iter().enumerate() {
        let k = key_of(&mut p, i as u64 + 1, file(&format!("id{i}"), name, "root")).await;
        assert!(k.starts_with("pre/my-drive/"), "{k}");
        assert!(k.split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "{k}");
    }
}

#[tokio::test]
async fn unknown_parents_shortcuts_and_big_files_are_not_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    p.scope.selection =
        crate::mirror::selection::Selection::default().with_shortcuts(crate::config::ShortcutMode::Skip);
    let r = p.plan(upsert(1, file("A", "a", "elsewhere"))).await.unwrap().action;
    assert!(matches!(r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::NotInScope), .. })));
    let mut s = file("S", "s", "root");
    s.mime_type = SHORTCUT_MIME.into();
    let r = p.plan(upsert(2, s)).await.unwrap().action;
    assert!(matches!(r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Shortcut), .. })));
    let mut big = file("B", "b", "root");
    big.size = Some(1000);
    let r = p.plan(upsert(3, big)).await.unwrap().action;
    assert!(matches!(r, Err(Outcome { kind: OutcomeKind::DeadLettered(_), .. })));
}

#[tokio::test]
async fn a_file_over_the_destinations_max_file_size_is_dead_lettered_before_its_download() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    let mut over = file("B", "b", "root");
    over.size = Some(90);
    let r = p.plan(upsert(1, over)).await.unwrap().action;
    let Err(Outcome { kind: OutcomeKind::DeadLettered(dl), .. }) = r else { panic!("{r:?}") };
    assert_eq!(dl.reason, "destination_too_large");
    assert!(dl.last_error.contains("over destination.max_file_size (80 bytes)"), "{}", dl.last_error);
    let mut within = file("C", "c", "root");
    within.size = Some(80);
    assert!(p.plan(upsert(2, within)).await.unwrap().action.is_ok());
}

#[tokio::test]
async fn files_whose_owner_disabled_downloads_are_skipped_without_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    let mut bin = file("B", "b.pdf", "root");
    bin.can_download = false;
    let mut doc = file("D", "Notes", "root");
    (doc.mime_type, doc.md5, doc.size, doc.can_download) =
        ("application/vnd.google-apps.document".into(), None, None, false);
    for (seq, f) in [(1, bin), (2, doc)] {
        let r = p.plan(upsert(seq, f)).await.unwrap().action;
        assert!(
            matches!(
                &r,
                Err(Outcome {
                    kind: OutcomeKind::Skipped(SkipReason::DownloadDisabled(Refused { version: 1, .. })),
                    ..
                })
            ),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_version_drive_refused_is_skipped_again_and_a_new_version_is_tried() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let kind = OutcomeKind::Skipped(SkipReason::Abusive(Refused { version: 1, name: "x.exe".into() }));
    let skipped = Outcome { seq: ChangeSeq(1), file_id: FileId("X".into()), kind };
    store.apply(&crate::state::CommitBatch { outcomes: vec![skipped], next_seq: 2, ..Default::default() }).unwrap();
    let scope = Scope { my_drive_root: Some(FileId("root".into())), shared: BTreeMap::new(), ..Default::default() };
    let layout = Layout {
        prefix: "pre".into(),
        mode: KeyMode::Utf8,
        export: ExportConfig::default(),
        max_file_size: None,
        dest_max_file_size: None,
        max_key_bytes: keys::MAX_KEY_BYTES,
    };
    let mut p = Planner::new(store, Arc::new(NoLookup), scope, layout, Arc::default()).unwrap();
    let r = p.plan(upsert(2, file("X", "x.exe", "root"))).await.unwrap().action;
    assert!(matches!(&r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Abusive(_)), .. })), "{r:?}");
    let mut changed = file("X", "x.exe", "root");
    changed.version = 2;
    let planned = p.plan(upsert(3, changed)).await.unwrap().action.expect("a new version is planned");
    assert!(matches!(planned.kind, ActionKind::Upload { source: Source::Media }));
}

#[tokio::test]
async fn google_docs_are_exported_with_an_extension() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    let mut d = file("D", "Notes", "root");
    d.mime_type = "application/vnd.google-apps.document".into();
    d.md5 = None;
    d.size = None;
    let planned = p.plan(upsert(1, d)).await.unwrap().action.unwrap();
    assert_eq!(planned.key.0, "pre/my-drive/Notes.docx");
    assert!(matches!(planned.kind, ActionKind::Upload { source: Source::Export { .. } }));
}

fn drive_event(seq: u64, name: Option<&str>, joined: bool) -> ChangeEvent {
    let kind = ChangeKind::SharedDrive { name: name.map(Into::into), joined };
    ChangeEvent { seq: ChangeSeq(seq), file_id: FileId("d1".into()), kind, origin: Origin::Change }
}

fn commit(store: &Store, outcomes: Vec<Outcome>) {
    store.apply(&crate::state::CommitBatch { outcomes, ..Default::default() }).unwrap();
}

#[tokio::test]
async fn a_renamed_shared_drive_moves_its_subtree_and_a_lost_one_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = planner(dir.path());
    // Joined: the root is recorded under the drive's name and its tree is listed.
    let plan = p.plan(drive_event(1, Some("Team"), true)).await.unwrap();
    let Err(joined) = plan.action else { panic!("no I/O to join") };
    assert!(
        matches!(&joined.kind, OutcomeKind::FolderRecorded(f) if f.key.0 == "pre/shared-drives/Team" && f.is_drive_root()),
        "{joined:?}"
    );
    assert_eq!(plan.refresh, vec![Refresh::Children(FileId("d1".into()))]);
    commit(&p.store, vec![joined]);
    let mut f = file("F", "a.txt", "d1");
    f.drive_id = Some(DriveId("d1".into()));
    let key = key_of(&mut p, 2, f.clone()).await;
    assert_eq!(key, "pre/shared-drives/Team/a.txt");
    let rec = FileRecord {
        id: f.id.clone(),
        name: f.name.clone(),
        parent: f.parents.first().cloned(),
        mime_type: f.mime_type.clone(),
        version: 1,
        md5: f.md5.clone(),
        sha256: None,
        size: 5,
        key: ObjectKey(key),
        modified_time: None,
    };
    commit(&p.store, vec![Outcome { seq: ChangeSeq(2), file_id: f.id.clone(), kind: OutcomeKind::Committed(rec) }]);

    // The same name again (the feed confirms every drive at start): nothing to do.
    let same = p.plan(drive_event(3, Some("Team"), false)).await.unwrap().action;
    assert!(matches!(same, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Unchanged), .. })), "{same:?}");

    // Renamed: one tree action moves the file to the new root, which is recorded with it.
    let Ok(rename) = p.plan(drive_event(4, Some("Team 2"), false)).await.unwrap().action else { panic!("a move") };
    let ActionKind::Tree(tree) = &rename.kind else { panic!("{rename:?}") };
    let root_dir = TreeDir { folder: FileId("d1".into()), key: ObjectKey("pre/shared-drives/Team 2".into()) };
    assert_eq!(tree.dirs, vec![root_dir], "the root's files go under the new root key");
    assert_eq!(tree.folder.as_ref().map(|r| r.key.0.as_str()), Some("pre/shared-drives/Team 2"));
    let moved = OutcomeKind::TreeChanged(tree.clone());
    commit(&p.store, vec![Outcome { seq: ChangeSeq(4), file_id: FileId("d1".into()), kind: moved }]);

    // A file-level change about the root folder itself (no parents) never removes the drive.
    let mut root = file("d1", "Team 2", "nowhere");
    root.parents.clear();
    root.mime_type = FOLDER_MIME.into();
    let r = p.plan(upsert(5, root)).await.unwrap().action;
    assert!(matches!(r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Unchanged), .. })), "{r:?}");

    // Lost: the subtree goes, and the root record with it.
    let Ok(lost) = p.plan(drive_event(6, None, false)).await.unwrap().action else { panic!("a removal") };
    let ActionKind::Tree(tree) = &lost.kind else { panic!("{lost:?}") };
    assert!(tree.remove && tree.dirs.len() == 1 && tree.removed_folders.contains(&FileId("d1".into())));
}

/// The committed state in maps: the planner's decisions without fjall.
#[derive(Default)]
struct Memory {
    files: HashMap<FileId, FileRecord>,
    claims: HashMap<String, FileId>,
}

impl RecordView for Memory {
    fn file_record(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError> {
        Ok(self.files.get(id).cloned())
    }
    fn folder_record(&self, _: &FileId) -> Result<Option<FolderRecord>, StoreError> {
        Ok(None)
    }
}

impl PlanView for Memory {
    fn claim_holder(&self, class: &str) -> Result<Option<FileId>, StoreError> {
        Ok(self.claims.get(class).cloned())
    }
    fn claimed_under(&self, class: &str) -> Result<bool, StoreError> {
        Ok(self.claims.keys().any(|k| k.starts_with(&format!("{class}/"))))
    }
    fn has_intent(&self, _: &ObjectKey) -> Result<bool, StoreError> {
        Ok(false)
    }
    fn all_folders(&self) -> Result<Vec<FolderRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn folder_page(&self, _: &FileId, _: Option<&FileId>, _: usize) -> Result<FolderPage, StoreError> {
        Ok(FolderPage { records: Vec::new(), next: None })
    }
}

fn in_memory(memory: Memory) -> Planner<NoLookup, Memory> {
    let scope = Scope { my_drive_root: Some(FileId("root".into())), shared: BTreeMap::new(), ..Default::default() };
    let layout = Layout {
        prefix: "pre".into(),
        mode: KeyMode::Utf8,
        export: ExportConfig::default(),
        max_file_size: None,
        dest_max_file_size: None,
        max_key_bytes: keys::MAX_KEY_BYTES,
    };
    Planner::new(memory, Arc::new(NoLookup), scope, layout, Arc::default()).unwrap()
}

fn record(f: &DriveFile, key: &str) -> FileRecord {
    let planned = Planned {
        seq: ChangeSeq(0),
        file: f.clone(),
        key: ObjectKey(key.into()),
        previous_key: None,
        kind: ActionKind::Delete,
        attempt: 0,
    };
    let OutcomeKind::Committed(rec) = committed(&planned).kind else { unreachable!() };
    rec
}

#[tokio::test]
async fn decisions_from_the_committed_state_alone() {
    let mut memory = Memory::default();
    let moved = file("M", "moved.txt", "root");
    memory.files.insert(FileId("M".into()), record(&file("M", "old.txt", "root"), "pre/my-drive/old.txt"));
    memory.claims.insert("pre/my-drive/old.txt".into(), FileId("M".into()));
    let same = file("S", "same.txt", "root");
    memory.files.insert(FileId("S".into()), record(&same, "pre/my-drive/same.txt"));
    memory.claims.insert("pre/my-drive/taken.txt".into(), FileId("OTHER".into()));
    let mut p = in_memory(memory);

    // A name another file's record holds (in any case) is disambiguated with the file's id.
    let planned = p.plan(upsert(1, file("N", "TAKEN.txt", "root"))).await.unwrap().action.unwrap();
    assert_eq!(planned.key.0, "pre/my-drive/TAKEN (N).txt");
    assert!(matches!(planned.kind, ActionKind::Upload { source: Source::Media }));
    // A renamed file with the same content is copied from its recorded key, which it leaves.
    let planned = p.plan(upsert(2, moved)).await.unwrap().action.unwrap();
    assert_eq!(
        planned.kind,
        ActionKind::Copy { from: ObjectKey("pre/my-drive/old.txt".into()), fallback: Source::Media }
    );
    assert_eq!(planned.previous_key, Some(ObjectKey("pre/my-drive/old.txt".into())));
    // The version the store holds is a replay: nothing to do.
    let o = p.plan(upsert(3, same)).await.unwrap().action.expect_err("unchanged");
    assert_eq!(o.kind, OutcomeKind::Skipped(SkipReason::Unchanged));
}

#[tokio::test]
async fn a_file_never_takes_a_key_that_committed_objects_lie_under() {
    // A folder move committed in steps, crashed before its last: the files' records are under the
    // new folder key, which no record claims yet.
    let mut memory = Memory::default();
    memory.claims.insert("pre/my-drive/_./x.txt".into(), FileId("X".into()));
    let mut p = in_memory(memory);
    let planned = p.plan(upsert(1, file("N", ".", "root"))).await.unwrap().action.unwrap();
    assert_eq!(planned.key.0, "pre/my-drive/_ (N).");
    // Only the keys under it count, not a name they end with.
    let planned = p.plan(upsert(2, file("Y", "x.txt", "root"))).await.unwrap().action.unwrap();
    assert_eq!(planned.key.0, "pre/my-drive/x.txt", "a sibling prefix is not a folder of objects");
}
