//! Planner: turns an event into one action. Resolves the item's path from the folder map (asking Drive
//! for a folder it has not seen yet), sanitizes and disambiguates the key, and picks upload, copy,
//! delete or skip.

use super::dedup::RecordView;
use super::{Emit, Stage, StageError};
use crate::drive::DriveError;
use crate::internal_events::InternalEvent;
use crate::mirror::disposition::{Disposition, disposition};
use crate::mirror::keys;
use crate::mirror::placement::{self, Folder, Folders, Found, KeyFor, KeyHolders, KeyRules, NoFreeKey, Roots, Spot};
pub use crate::mirror::{Layout, SHARED_WITH_ME, Scope, last_segment};
use crate::model::StageName;
use crate::model::*;
use crate::state::{FolderPage, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

mod claims;
mod content;
mod policy;
mod trees;

use content::{downloaded_content, sorted, touched_classes};
pub use policy::resolve_shortcut;
use policy::{Selected, note_skip};

/// The planner's one I/O need: metadata of a folder it has not seen.
pub trait FolderLookup: Send + Sync + 'static {
    /// `files.get` of `id`; `None` when it does not exist or is not visible.
    fn lookup(&self, id: &FileId) -> impl Future<Output = Result<Option<DriveFile>, DriveError>> + Send;
    /// `files.get` of a shortcut's target, with the resource key the shortcut names for it
    /// (`shortcutDetails.targetResourceKey`): Drive shows a link-shared target the user never opened
    /// only to a request that carries it.
    fn lookup_target(
        &self,
        id: &FileId,
        resource_key: Option<&str>,
    ) -> impl Future<Output = Result<Option<DriveFile>, DriveError>> + Send {
        let _ = resource_key;
        self.lookup(id)
    }
}

/// The committed state the planner reads: records, key claims, noted writes, a folder's files.
/// The fjall `Store` is the real one (see `crate::adapters`); unit tests use maps.
pub trait PlanView: RecordView + Send + Sync + 'static {
    /// Who holds a key class (lower-cased key), by its committed record.
    fn claim_holder(&self, class: &str) -> Result<Option<FileId>, StoreError>;
    /// Whether a committed record's key lies under `class` + `/`: that key is a folder of objects, so
    /// no file may take it (a local destination cannot hold a file and a directory at one path).
    fn claimed_under(&self, class: &str) -> Result<bool, StoreError>;
    /// Whether a write to `key` is noted and not yet settled.
    fn has_intent(&self, key: &ObjectKey) -> Result<bool, StoreError>;
    /// Every folder record (loaded once at start).
    fn all_folders(&self) -> Result<Vec<FolderRecord>, StoreError>;
    /// A page of a folder's file records.
    fn folder_page(&self, folder: &FileId, after: Option<&FileId>, limit: usize) -> Result<FolderPage, StoreError>;
    /// Why Drive refused this file last time, if it did (see [`crate::state::SkipRecord`]).
    fn skip_record(&self, _id: &FileId) -> Result<Option<crate::state::SkipRecord>, StoreError> {
        Ok(None)
    }
    /// The shortcuts that follow `target` (`shortcuts = "follow"`).
    fn followers(&self, _target: &FileId) -> Result<Vec<FileId>, StoreError> {
        Ok(Vec::new())
    }
    /// A committed file other than `except` holding content `md5` (content dedup).
    fn content_holder(&self, _md5: &str, _except: &FileId) -> Result<Option<FileRecord>, StoreError> {
        Ok(None)
    }
}

/// One event planned: its action (or the outcome, when no I/O is needed) and what must be committed
/// or held before it. The stage sends `folders`, `refresh` and `follows` to the committer ahead of the
/// action, and holds `holds` in the ledger for the event until its outcome commits.
#[derive(Debug)]
pub struct Plan {
    /// The action, or the outcome.
    pub action: Result<Planned, Outcome>,
    /// Ancestors looked up on the way to the item, recorded before its action.
    pub folders: Vec<FolderRecord>,
    /// Refresh requests (children to list, followers to fetch again), recorded before its action.
    pub refresh: Vec<Refresh>,
    /// Which target each shortcut planned now follows (`None`: none), so a change of the target
    /// refreshes the shortcut (a link or `follow`).
    pub follows: Vec<(FileId, Option<FileId>)>,
    /// Key classes the event claims or frees: held in the ledger for its seq until its outcome
    /// commits, when the store's claims show the change.
    pub holds: Vec<String>,
    /// The collision class of a mirrored copy of this event's content that another event in flight
    /// holds (it may be rewriting or moving it): the event waits for that event instead of
    /// downloading the bytes again.
    pub busy_copy_source: Option<String>,
}

/// What planning one event notes on the way; becomes its [`Plan`].
#[derive(Debug, Default)]
struct Notes {
    folders: Vec<FolderRecord>,
    refresh: Vec<Refresh>,
    follows: Vec<(FileId, Option<FileId>)>,
    /// Class → claimant (`None`: freed).
    holds: HashMap<String, Option<FileId>>,
    busy_copy_source: Option<String>,
}

impl Notes {
    /// Notes that the event being planned frees `key` (a folder renamed, moved or removed): it is held
    /// until that commits, so a new item wanting the name waits for it instead of being disambiguated.
    fn frees(&mut self, key: &str) {
        self.holds.entry(keys::collision_class(key)).or_insert(None);
    }

    fn into_plan(self, action: Result<Planned, Outcome>) -> Plan {
        let holds = self.holds.into_keys().collect();
        Plan {
            action,
            folders: self.folders,
            refresh: self.refresh,
            follows: self.follows,
            holds,
            busy_copy_source: self.busy_copy_source,
        }
    }
}

/// The planner stage.
pub struct Planner<L: FolderLookup, S: PlanView> {
    store: S,
    lookup: Arc<L>,
    scope: Scope,
    layout: Layout,
    /// The key space (`layout`'s prefix, alphabet and length limit).
    rules: KeyRules,
    folders: HashMap<FileId, FolderRecord>,
    drive_roots: BTreeMap<DriveId, String>,
    /// Orders actions: a subtree change waits for every action sent before it, a key for the event holding it.
    ledger: Arc<super::ledger::Ledger>,
    /// Folders known to lie outside the scope (gone, trashed, or in nobody's mirrored drive: the
    /// parents of items shared with the user), so their children cost no `files.get` each time.
    /// Bounded (cleared when full); an item's entry goes as soon as any event about it is planned.
    out_of_scope: HashSet<FileId>,
    /// Content copies planned (event → key class copied from), so a second copy of the same object
    /// may follow the first instead of downloading (see `only_copies_hold`).
    content_copies: HashMap<ChangeSeq, String>,
}

impl<L: FolderLookup, S: PlanView> Planner<L, S> {
    /// Loads the folder map from the store and assigns the shared drives' root keys.
    pub fn new(
        store: S,
        lookup: Arc<L>,
        scope: Scope,
        layout: Layout,
        ledger: Arc<super::ledger::Ledger>,
    ) -> Result<Self, StageError> {
        let rules = layout.rules();
        let mut p = Planner {
            store,
            lookup,
            scope,
            layout,
            rules,
            folders: HashMap::new(),
            drive_roots: BTreeMap::new(),
            ledger,
            out_of_scope: HashSet::new(),
            content_copies: HashMap::new(),
        };
        for f in p.store.all_folders()? {
            p.folders.insert(f.id.clone(), f);
        }
        // The claims made here are the drives' own events' to hold: nothing is held now.
        p.drive_roots = p.assign_drive_roots(&mut Notes::default())?;
        Ok(p)
    }

    /// Plans one event: its action, or the outcome when no I/O is needed, and what goes with it.
    pub async fn plan(&mut self, event: ChangeEvent) -> Result<Plan, StageError> {
        let mut notes = Notes::default();
        let action = self.plan_event(&mut notes, event).await?;
        Ok(notes.into_plan(action))
    }

    async fn plan_event(&mut self, n: &mut Notes, event: ChangeEvent) -> Result<Result<Planned, Outcome>, StageError> {
        // Whatever this item was, its change may bring it into the scope.
        self.out_of_scope.remove(&event.file_id);
        if let ChangeKind::SharedDrive { name, joined } = &event.kind {
            if !joined && name.is_some() && self.drive_named(&event.file_id, name.as_deref()) {
                return Ok(Err(outcome(&event, OutcomeKind::Skipped(SkipReason::Unchanged))));
            }
            // A drive's subtree is computed from the store: every action planned before must be in it.
            self.ledger.drain().await;
            return self.plan_drive(n, &event, name.as_deref(), *joined).await;
        }
        if let ChangeKind::Stray(key) = &event.kind {
            return self.plan_stray(&event, key).await;
        }
        if self.folders.contains_key(&event.file_id) {
            self.ledger.drain().await;
        }
        if self.drive_roots.contains_key(&DriveId(event.file_id.0.clone())) {
            // A file-level change of a shared drive's root folder: the drive-level change decides.
            return Ok(Err(outcome(&event, OutcomeKind::Skipped(SkipReason::Unchanged))));
        }
        self.refresh_followers(n, &event.file_id)?;
        let selected = match self.deselected(n, &event)? {
            Selected::Removal(removal) => return Ok(*removal),
            other => other,
        };
        if self.applied_before_planning(&event)? {
            crate::internal_events::ItemCounted { stage: "dedup", outcome: "unchanged" }.emit();
            return Ok(Err(super::dedup::skipped(&event, SkipReason::Unchanged)));
        }
        let file = match &event.kind {
            ChangeKind::Removed => return self.plan_removal(n, event.seq, &event.file_id),
            ChangeKind::Upsert(f) => f.clone(),
            ChangeKind::SharedDrive { .. } | ChangeKind::Stray(_) => {
                return Ok(Err(outcome(&event, OutcomeKind::Skipped(SkipReason::Unchanged))));
            }
        };
        if file.is_shortcut() && !self.scope.selection.links_shortcuts() {
            return Ok(Err(outcome(&event, OutcomeKind::Skipped(SkipReason::Shortcut))));
        }
        let parent = if file.trashed { None } else { self.parent_prefix(n, event.seq, &file, event.origin).await? };
        let Some(parent) = parent else {
            return self.plan_removal(n, event.seq, &file.id);
        };
        let file = if file.is_shortcut() { self.through_shortcut(n, file).await? } else { file };
        if file.shortcut_target.is_some() && self.applied(&event, &file)? {
            crate::internal_events::ItemCounted { stage: "dedup", outcome: "unchanged" }.emit();
            return Ok(Err(super::dedup::skipped(&event, SkipReason::Unchanged)));
        }
        // Decided now that the folder is known (it was looked up above).
        if selected == Selected::Undecided && !file.is_folder() && self.admits(&file, true) == Some(false) {
            return self.plan_removal(n, event.seq, &file.id);
        }
        if file.is_folder() {
            if event.origin != Origin::Listing && !self.folders.contains_key(&file.id) {
                // The folder enters the mirror (created, moved in from outside the scope, or out of a
                // trashed folder): Drive reports the folder alone, so its subtree is listed.
                n.refresh.push(Refresh::Children(file.id.clone()));
            }
            return self.plan_folder(n, event.seq, file, &parent).await;
        }
        self.plan_file(n, &event, file, &parent).await
    }

    /// Plans a file whose folder is in the mirror: its key, and whether its bytes are copied from its
    /// recorded object (same md5) or fetched from Drive — decided here, once.
    async fn plan_file(
        &mut self,
        n: &mut Notes,
        event: &ChangeEvent,
        file: DriveFile,
        parent: &str,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        let file = file.with_link_digest();
        let skip = match !file.is_shortcut() && file.can_download {
            true => self.store.skip_record(&file.id)?,
            false => None,
        };
        let (source, ext) = match disposition(&file, &self.layout, skip.as_ref(), crate::model::unix_ms()) {
            Disposition::Write { source, ext } => (source, ext),
            Disposition::Skip(reason) => {
                note_skip(&file, &reason);
                return Ok(Err(outcome(event, OutcomeKind::Skipped(reason))));
            }
            Disposition::DeadLetter { ext, reason, error } => {
                let key = ObjectKey(
                    self.claim(n, event.seq, &file.id, parent, (&file.name, ext.as_deref()), KeyFor::File).await?,
                );
                let (name, stage) = (&file.name, StageName::Planner);
                crate::internal_events::DeadLettered { stage, file: &file.id, name, key: &key, reason, error: &error }
                    .emit();
                let dl = dead_letter(&file, Some(key), reason, error);
                return Ok(Err(outcome(event, OutcomeKind::DeadLettered(dl))));
            }
        };
        let key =
            ObjectKey(self.claim(n, event.seq, &file.id, parent, (&file.name, ext.as_deref()), KeyFor::File).await?);
        let existing = self.store.file_record(&file.id)?;
        // A recorded key another file has claimed since (its earlier move was dead-lettered) holds that
        // file's bytes now: never copy from it or remove it as ours.
        let existing = match existing {
            Some(r) if r.key != key && self.held_by_other(&file.id, &r.key)? => None,
            other => other,
        };
        let previous_key = existing.as_ref().map(|r| r.key.clone()).filter(|k| *k != key);
        // Binary content is the same when the md5 is. A Google Doc has no md5 and Drive bumps its version
        // and modifiedTime on renames too, so nothing proves an export unchanged: docs are exported again.
        // A repair rewrites the bytes: the recorded object is what `verify` found missing or wrong.
        let same_content =
            event.origin != Origin::Repair && existing.as_ref().is_some_and(|r| r.md5.is_some() && r.md5 == file.md5);
        let kind = match (&existing, same_content) {
            (Some(r), true) => ActionKind::Copy { from: r.key.clone(), fallback: source },
            _ => match self.same_content_elsewhere(n, event, &file, &source, &key)? {
                Some(from) => ActionKind::Copy { from, fallback: source },
                None => ActionKind::Upload { source },
            },
        };
        Ok(Ok(Planned { seq: event.seq, file, key, previous_key, kind, attempt: 0 }))
    }

    /// An object `verify` found that no Drive file maps to: removed per `deletes`, unless, once every
    /// earlier action holding its key is committed, a record claims the key or a write to it is noted
    /// (a file took the key since). The removal holds the key until it commits, so a later write to
    /// it waits.
    async fn plan_stray(
        &mut self,
        event: &ChangeEvent,
        key: &ObjectKey,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        let class = keys::collision_class(&key.0);
        self.ledger.wait_key_free(event.seq, &class).await;
        let claimed = self.store.claim_holder(&class)?.is_some();
        if claimed || self.store.has_intent(key)? {
            return Ok(Err(outcome(event, OutcomeKind::Skipped(SkipReason::Unchanged))));
        }
        let file = placeholder(&event.file_id, last_segment(&key.0));
        let kind = ActionKind::Delete;
        Ok(Ok(Planned { seq: event.seq, file, key: key.clone(), previous_key: None, kind, attempt: 0 }))
    }
}

/// A stand-in `DriveFile` for actions on items Drive no longer describes (removals, trees).
fn placeholder(id: &FileId, name: &str) -> DriveFile {
    DriveFile {
        id: id.clone(),
        name: name.to_string(),
        mime_type: String::new(),
        parents: Vec::new(),
        size: None,
        md5: None,
        sha256: None,
        version: 0,
        modified_time: None,
        trashed: true,
        drive_id: None,
        shortcut_target: None,
        export_links: BTreeMap::new(),
        can_download: true,
        resource_key: None,
        shared_with_me: false,
        web_view_link: None,
        target_link: None,
        content_of: None,
        shortcut_target_key: None,
        owned_by_me: false,
    }
}

fn outcome(event: &ChangeEvent, kind: OutcomeKind) -> Outcome {
    Outcome { seq: event.seq, file_id: event.file_id.clone(), kind }
}

fn folder_record(f: &DriveFile, key: &str) -> FolderRecord {
    FolderRecord {
        id: f.id.clone(),
        name: f.name.clone(),
        parent: f.parents.first().cloned(),
        drive_id: f.drive_id.clone(),
        key: ObjectKey(key.to_string()),
        trashed: f.trashed,
    }
}

/// A dead-letter entry for `file`.
pub fn dead_letter(file: &DriveFile, key: Option<ObjectKey>, reason: &str, last_error: String) -> DeadLetter {
    DeadLetter {
        id: file.id.clone(),
        name: file.name.clone(),
        key,
        reason: reason.to_string(),
        last_error,
        attempts: 1,
        at_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    }
}

impl<L: FolderLookup, S: PlanView> Stage for Planner<L, S> {
    type In = ChangeEvent;
    type Out = Planned;
    const NAME: StageName = StageName::Planner;
    type Replay = ChangeEvent;

    async fn process(&mut self, items: Vec<ChangeEvent>, emit: &Emit<Planned>) -> Result<(), StageError> {
        for event in items {
            let (seq, file_id) = (event.seq, event.file_id.clone());
            // Kept to wait for a content in flight (a file event that turns out to need a download).
            let original = matches!(&event.kind, ChangeKind::Upsert(f) if !f.is_folder()).then(|| event.clone());
            let Plan { action, folders, refresh, follows, mut holds, busy_copy_source } = self.plan(event).await?;
            let notes = [
                (!folders.is_empty()).then_some(super::CommitMsg::Folders(folders)),
                (!refresh.is_empty()).then_some(super::CommitMsg::Refresh(refresh)),
                (!follows.is_empty()).then_some(super::CommitMsg::Follows(follows)),
            ];
            for msg in notes.into_iter().flatten() {
                emit.commit.send(msg).await.map_err(|_| StageError::Closed)?;
            }
            match action {
                Ok(planned) => {
                    if let Some(event) = original
                        && self.waits_for_content(&planned, &event, busy_copy_source)
                    {
                        continue;
                    }
                    crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: "planned" }.emit();
                    let tree = matches!(planned.kind, ActionKind::Tree(_));
                    if !tree {
                        holds.extend(touched_classes(&planned));
                    }
                    self.ledger.take_keys(seq, &file_id, &sorted(holds)).await;
                    self.ledger.planned(planned.seq, &planned.file.id);
                    if let Some(md5) = downloaded_content(&planned) {
                        self.ledger.producing(planned.seq, &planned.file.id, md5);
                    }
                    emit.forward(planned).await?;
                    if tree {
                        self.ledger.drain().await;
                    }
                }
                Err(o) => {
                    crate::metrics::event(Self::NAME.as_str(), "resolved");
                    self.ledger.take_keys(seq, &file_id, &sorted(holds)).await;
                    emit.outcome(o).await?
                }
            }
        }
        Ok(())
    }

    fn replay(item: &ChangeEvent) -> ChangeEvent {
        item.clone()
    }
}

#[cfg(test)]
mod tests;
