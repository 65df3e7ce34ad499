//! Planner: turns an event into one action. Resolves the item's path from the folder map (asking Drive
//! for a folder it has not seen yet), sanitizes and disambiguates the key, and picks upload, copy,
//! delete or skip.

use super::dedup::RecordView;
use super::{Emit, Stage, StageError};
use crate::config::StageName;
use crate::drive::DriveError;
use crate::internal_events::InternalEvent;
use crate::mirror::disposition::{Disposition, disposition};
use crate::mirror::keys;
use crate::mirror::placement::{self, Folder, Folders, Found, KeyFor, KeyHolders, KeyRules, NoFreeKey, Roots, Spot};
pub use crate::mirror::{Layout, SHARED_WITH_ME, Scope, last_segment};
use crate::model::*;
use crate::state::{FolderPage, Store, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

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

/// What the selection said of an event before its folder was resolved.
#[derive(Debug, PartialEq)]
enum Selected {
    /// Not held: the file's removal (or nothing, when it was not mirrored).
    Removal(Box<Result<Planned, Outcome>>),
    /// Held, or not a question for the selection (folders, removals, trashed items).
    Held,
    /// A file whose folder is not known yet: asked again once it is.
    Undecided,
}

/// What a shortcut becomes once its target is looked up: with `follow`, a shortcut to a live file is
/// that file at the shortcut's place ([`DriveFile::followed`]); any other shortcut — to a folder (so
/// nothing is followed into a loop), dangling, trashed, or in `link` mode — is a `.url` link opening
/// the target's `webViewLink`. The planner and `verify` both ask this, so they agree. A failed lookup
/// comes back with the target's id.
pub async fn resolve_shortcut(
    lookup: &impl FolderLookup,
    shortcut: DriveFile,
    follow: bool,
) -> Result<DriveFile, (FileId, DriveError)> {
    let target = match &shortcut.shortcut_target {
        Some(id) => {
            let key = shortcut.shortcut_target_key.as_deref();
            lookup.lookup_target(id, key).await.map_err(|e| (id.clone(), e))?
        }
        None => None,
    };
    let followable = |t: &&DriveFile| !t.is_folder() && !t.is_shortcut() && !t.trashed;
    Ok(match target.as_ref().filter(|_| follow).filter(followable) {
        Some(t) => shortcut.followed(t),
        None => DriveFile { target_link: target.and_then(|t| t.web_view_link), ..shortcut },
    })
}

/// The key classes an action touches: where it writes, what it copies from, what it removes.
fn touched_classes(p: &Planned) -> Vec<String> {
    let mut keys: Vec<&ObjectKey> = vec![&p.key];
    keys.extend(p.previous_key.iter());
    if let ActionKind::Copy { from, .. } = &p.kind {
        keys.push(from);
    }
    let mut classes: Vec<String> = keys.into_iter().map(|k| keys::collision_class(&k.0)).collect();
    classes.sort();
    classes.dedup();
    classes
}

/// The content (md5) an action downloads from Drive: Drive's own bytes (an md5 to trust), not empty.
fn downloaded_content(p: &Planned) -> Option<&str> {
    let media = matches!(&p.kind, ActionKind::Upload { source: Source::Media }) && p.file.size.unwrap_or(0) > 0;
    p.file.md5.as_deref().filter(|_| media && !p.file.is_shortcut())
}

fn sorted(mut classes: Vec<String>) -> Vec<String> {
    classes.sort();
    classes.dedup();
    classes
}

/// The committed state the planner reads: records, key claims, noted writes, a folder's files.
/// [`Store`] (fjall) is the real one; unit tests use maps.
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

impl PlanView for Store {
    fn claim_holder(&self, class: &str) -> Result<Option<FileId>, StoreError> {
        Store::claim_holder(self, class)
    }
    fn claimed_under(&self, class: &str) -> Result<bool, StoreError> {
        Store::claimed_under(self, class)
    }
    fn has_intent(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        Store::has_intent(self, key)
    }
    fn all_folders(&self) -> Result<Vec<FolderRecord>, StoreError> {
        Store::all_folders(self)
    }
    fn folder_page(&self, folder: &FileId, after: Option<&FileId>, limit: usize) -> Result<FolderPage, StoreError> {
        self.files_in_folder_page(folder, after, limit)
    }
    fn skip_record(&self, id: &FileId) -> Result<Option<crate::state::SkipRecord>, StoreError> {
        Store::skip_record(self, id)
    }
    fn followers(&self, target: &FileId) -> Result<Vec<FileId>, StoreError> {
        Store::followers(self, target)
    }
    fn content_holder(&self, md5: &str, except: &FileId) -> Result<Option<FileRecord>, StoreError> {
        Store::content_holder(self, md5, except)
    }
}

/// The planner stage.
pub struct Planner<L: FolderLookup, S: PlanView = Store> {
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
    /// Refresh requests of the event being planned, sent to the committer before its action.
    requests: Vec<Refresh>,
    /// Ancestors looked up while planning the event, recorded before its action.
    discovered: Vec<FolderRecord>,
    /// Key classes the event being planned claims (class → claimant) or frees: held in the ledger
    /// for its seq until its outcome commits, when the store's claims show the change.
    holds: HashMap<String, Option<FileId>>,
    /// Folders known to lie outside the scope (gone, trashed, or in nobody's mirrored drive: the
    /// parents of items shared with the user), so their children cost no `files.get` each time.
    /// Bounded (cleared when full); an item's entry goes as soon as any event about it is planned.
    out_of_scope: HashSet<FileId>,
    /// Which target each shortcut planned now points at (`None`: none), sent to the committer before
    /// its action, so a change of the target refreshes the shortcut (a link or `follow`).
    follows: Vec<(FileId, Option<FileId>)>,
    /// Content copies planned (event → key class copied from), so a second copy of the same object
    /// may follow the first instead of downloading (see `only_copies_hold`).
    content_copies: HashMap<ChangeSeq, String>,
    /// The collision class of a mirrored copy of this event's content that another event in flight
    /// holds (it may be rewriting or moving it): the event waits for that event instead of
    /// downloading the bytes again. Set by `same_content_elsewhere`, taken by `waits_for_content`.
    busy_copy_source: Option<String>,
}

/// Content copies remembered before the finished ones are forgotten.
const CONTENT_COPIES_REMEMBERED: usize = 1024;

/// Entries of the out-of-scope cache before it is cleared.
const OUT_OF_SCOPE_CACHE: usize = 10_000;

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
            requests: Vec::new(),
            discovered: Vec::new(),
            holds: HashMap::new(),
            out_of_scope: HashSet::new(),
            follows: Vec::new(),
            content_copies: HashMap::new(),
            busy_copy_source: None,
        };
        for f in p.store.all_folders()? {
            p.folders.insert(f.id.clone(), f);
        }
        p.drive_roots = p.assign_drive_roots()?;
        p.holds.clear();
        Ok(p)
    }

    /// The key of each shared drive's root: the recorded one (a rename while mirrorflow was down is
    /// applied by the drive event the feed sends at start), else claimed from the drive's name. Drives
    /// joined during an earlier run of this process (a planner restart) come from their records.
    fn assign_drive_roots(&mut self) -> Result<BTreeMap<DriveId, String>, StageError> {
        let base = placement::shared_drives_base(&self.rules);
        for root in self.folders.values().filter(|f| f.is_drive_root()) {
            if let Some(d) = &root.drive_id {
                self.scope.shared.entry(d.clone()).or_insert_with(|| root.name.clone());
            }
        }
        let drives: Vec<(DriveId, String)> = self.scope.shared.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        drives
            .into_iter()
            .map(|(id, name)| {
                let root = FileId(id.0.clone());
                let key = match self.folders.get(&root) {
                    Some(r) if r.is_drive_root() => r.key.0.clone(),
                    _ => self.claim_outside_event(&root, &base, &name)?,
                };
                Ok((id, key))
            })
            .collect()
    }

    /// Whether the drive `root` is mirrored under a recorded root of this very name (nothing to do).
    fn drive_named(&self, root: &FileId, name: Option<&str>) -> bool {
        let recorded = self.folders.get(root).filter(|r| r.is_drive_root());
        recorded.is_some_and(|r| Some(r.name.as_str()) == name)
            && self.drive_roots.contains_key(&DriveId(root.0.clone()))
    }

    /// A shared drive is in scope under `name` (joined, renamed, or just confirmed at start), or gone
    /// (`None`). A rename moves the drive's subtree to the new root key, a removal removes it (per
    /// `deletes`), both as one journaled tree action like a folder's; a joined drive's tree is listed.
    async fn plan_drive(
        &mut self,
        event: &ChangeEvent,
        name: Option<&str>,
        joined: bool,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        let root_id = event.file_id.clone();
        let drive = DriveId(root_id.0.clone());
        let Some(name) = name else {
            self.scope.shared.remove(&drive);
            let recorded = self.folders.remove(&root_id).filter(FolderRecord::is_drive_root).map(|r| r.key.0);
            let Some(root_key) = self.drive_roots.remove(&drive).or(recorded) else {
                return Ok(Err(outcome(event, OutcomeKind::Skipped(SkipReason::NotInScope))));
            };
            self.frees(&root_key);
            let mut tree = self.remove_subtree(&root_id, &root_key);
            tree.removed_folders.push(root_id.clone());
            tracing::warn!(drive = %drive, key = %root_key, folders = tree.dirs.len(), "shared drive left the scope: its mirrored files are removed per `deletes`");
            return self.tree_action(event.seq, root_id, "", ObjectKey(root_key), tree);
        };
        let old = self.drive_roots.get(&drive).cloned();
        self.scope.shared.insert(drive.clone(), name.to_string());
        if let Some(old) = &old {
            self.frees(old);
        }
        let base = placement::shared_drives_base(&self.rules);
        let key = self.claim(event.seq, &root_id, &base, (name, None), KeyFor::Folder).await?;
        self.drive_roots.insert(drive.clone(), key.clone());
        let record = FolderRecord {
            id: root_id.clone(),
            name: name.to_string(),
            parent: None,
            drive_id: Some(drive),
            key: ObjectKey(key.clone()),
            trashed: false,
        };
        self.folders.insert(root_id.clone(), record.clone());
        if joined {
            // Drive sends no change for the items already in a drive the account joins.
            self.requests.push(Refresh::Children(root_id.clone()));
        }
        match old.filter(|o| *o != key) {
            Some(_) => {
                let mut tree = self.move_subtree(&root_id, &key);
                tree.folder = Some(record);
                self.tree_action(event.seq, root_id, name, ObjectKey(key), tree)
            }
            None => Ok(Err(outcome(event, OutcomeKind::FolderRecorded(record)))),
        }
    }

    /// Whether `key` is claimed by a file other than `id`.
    fn held_by_other(&self, id: &FileId, key: &ObjectKey) -> Result<bool, StageError> {
        self.class_held_by_other(id, &keys::collision_class(key.as_str()))
    }

    /// Whether a committed record of a file other than `id` holds `class`.
    fn class_held_by_other(&self, id: &FileId, class: &str) -> Result<bool, StageError> {
        let holder = self.store.claim_holder(class)?;
        Ok(holder.is_some_and(|h| h != *id))
    }

    /// Notes that the event being planned frees `key` (a folder renamed, moved or removed): it is held
    /// until that commits, so a new item wanting the name waits for it instead of being disambiguated.
    fn frees(&mut self, key: &str) {
        self.holds.entry(keys::collision_class(key)).or_insert(None);
    }

    /// The key of `name` (plus `ext`) inside `parent` for event `seq` ([`placement::key_in`]). A class
    /// an in-flight event holds is waited for: that event may free it (a rename or delete) or take it
    /// (a new file), and only its commit, which moves the claims in the store with the records,
    /// decides. The claim itself is recorded when this event commits.
    async fn claim(
        &mut self,
        seq: ChangeSeq,
        id: &FileId,
        parent: &str,
        name: (&str, Option<&str>),
        what: KeyFor,
    ) -> Result<String, StageError> {
        let mut holders = Holders { store: &self.store, ledger: &self.ledger, holds: &mut self.holds, seq: Some(seq) };
        placement::key_in(&self.rules, &mut holders, id, parent, name, what, None).await
    }

    /// `claim` outside any event (drive roots at start), which cannot wait: a class an active event
    /// holds counts as taken. The drive's own event claims its key for real.
    fn claim_outside_event(&mut self, id: &FileId, parent: &str, name: &str) -> Result<String, StageError> {
        use futures::FutureExt;
        let mut holders = Holders { store: &self.store, ledger: &self.ledger, holds: &mut self.holds, seq: None };
        placement::key_in(&self.rules, &mut holders, id, parent, (name, None), KeyFor::Folder, None)
            .now_or_never()
            .unwrap_or_else(|| Err(StageError::Failed(format!("the key of {id} waited outside an event"))))
    }

    /// The key prefix of the folder that holds `file`, or `None` when out of scope
    /// ([`placement::parent_key`]). Ancestors it has to look up are recorded (through the committer);
    /// when the event is a change, not a listing, such an ancestor may just have entered the mirror
    /// with files Drive reports no change for, so its children are listed too.
    async fn parent_prefix(
        &mut self,
        seq: ChangeSeq,
        file: &DriveFile,
        origin: Origin,
    ) -> Result<Option<String>, StageError> {
        let mut known = Known {
            lookup: self.lookup.as_ref(),
            scope: &self.scope,
            drive_roots: &self.drive_roots,
            folders: &mut self.folders,
            out_of_scope: &mut self.out_of_scope,
            discovered: &mut self.discovered,
            requests: &mut self.requests,
            origin,
        };
        let mut holders = Holders { store: &self.store, ledger: &self.ledger, holds: &mut self.holds, seq: Some(seq) };
        placement::parent_key(&self.rules, &mut known, &mut holders, Spot::of(file)).await
    }

    /// Whether the selection holds `file`; `None` while its folder is not known yet. Once its folder
    /// was `resolved`, a file whose parent is still unknown is a top item shared with the user: its
    /// path is its name.
    fn admits(&self, file: &DriveFile, resolved: bool) -> Option<bool> {
        let selection = &self.scope.selection;
        if selection.is_everything() {
            return Some(true);
        }
        let parent = file.parents.first().filter(|parent| {
            self.scope.my_drive_root.as_ref() == Some(*parent)
                || self.drive_roots.contains_key(&DriveId(parent.0.clone()))
                || self.folders.contains_key(*parent)
        });
        let known = |id: &FileId| {
            self.folders.get(id).filter(|r| !r.is_drive_root()).map(|r| (r.name.as_str(), r.parent.as_ref()))
        };
        let (path, ancestors) = match parent {
            Some(parent) => super::selection::place_of(parent, &file.name, known),
            None if resolved => (file.name.clone(), Vec::new()),
            None => return None,
        };
        let candidate = super::selection::Candidate { path: &path, mime_type: &file.mime_type, ancestors: &ancestors };
        Some(selection.admits(&candidate))
    }

    /// The selection's part of planning, before the store is asked whether the event is applied: a
    /// file it does not hold is removed (if mirrored); a folder that moved or was renamed, or that a
    /// relisting reached, has its children listed again, so that every file it carries into or out of
    /// the selection is looked at (the files a folder move carries otherwise keep their decision).
    fn deselected(&mut self, event: &ChangeEvent) -> Result<Selected, StageError> {
        let ChangeKind::Upsert(file) = &event.kind else { return Ok(Selected::Held) };
        if file.trashed {
            return Ok(Selected::Held);
        }
        if file.is_shortcut() {
            // Asked once its folder is resolved, after the `shortcuts` mode has had its say.
            return Ok(Selected::Undecided);
        }
        if !file.is_folder() {
            return Ok(match self.admits(file, false) {
                Some(false) => Selected::Removal(Box::new(self.plan_removal(event.seq, &file.id)?)),
                Some(true) => Selected::Held,
                None => Selected::Undecided,
            });
        }
        if self.scope.selection.depends_on_place()
            && let Some(known) = self.folders.get(&file.id)
        {
            let moved = known.parent.as_ref() != file.parents.first() || known.name != file.name;
            if moved || event.origin == Origin::Refresh {
                self.requests.push(Refresh::Children(file.id.clone()));
            }
        }
        Ok(Selected::Held)
    }

    /// Whether the event is applied already, as far as the store alone can tell: a shortcut mirrored
    /// as a link is, when its own version, name and folder are recorded as a link; a followed one
    /// never is (its target decides, once looked up: see [`Self::applied`]).
    fn applied_before_planning(&self, event: &ChangeEvent) -> Result<bool, StageError> {
        if event.origin == Origin::Repair || self.left_shared_with_me(event)? {
            return Ok(false);
        }
        match &event.kind {
            ChangeKind::Upsert(f) if f.is_shortcut() && self.scope.selection.links_shortcuts() => {
                // With `follow`, and when its target changed (a refresh), what the shortcut becomes
                // depends on the target as it is now: looked up, then compared.
                if self.scope.selection.follows_shortcuts() || event.origin == Origin::Refresh {
                    return Ok(false);
                }
                let as_link = self.store.file_record(&f.id)?.is_some_and(|r| r.mime_type == SHORTCUT_MIME);
                Ok(as_link && super::dedup::already_applied(&self.store, event)?)
            }
            _ => super::dedup::already_applied(&self.store, event),
        }
    }

    /// Whether `file`, what the event's shortcut becomes once its target is looked up (a link, or the
    /// target's content), is what the store records already.
    fn applied(&self, event: &ChangeEvent, file: &DriveFile) -> Result<bool, StageError> {
        if event.origin == Origin::Repair {
            return Ok(false);
        }
        let resolved = ChangeEvent { kind: ChangeKind::Upsert(file.clone().with_link_digest()), ..event.clone() };
        super::dedup::already_applied(&self.store, &resolved)
    }

    /// What a shortcut becomes ([`resolve_shortcut`]); with `follow`, which target it now follows is
    /// recorded with its outcome.
    async fn through_shortcut(&mut self, shortcut: DriveFile) -> Result<DriveFile, StageError> {
        let follows = self.scope.selection.follows_shortcuts();
        let target = shortcut.shortcut_target.clone();
        let file = resolve_shortcut(self.lookup.as_ref(), shortcut, follows)
            .await
            .map_err(|(id, e)| super::drive_failure(&format!("cannot look up the target {id} of a shortcut"), e))?;
        // Whether followed or a link, what the shortcut's object holds depends on its target (its
        // bytes, or its webViewLink while it exists): a change of the target refreshes it.
        self.follows.push((file.id.clone(), file.content_of.clone().or(target)));
        Ok(file)
    }

    /// An event about a file some mirrored shortcuts point at has them fetched again (a refresh), so
    /// each mirrors the target as it now is (`follow`), or links to it as it now is: its webViewLink
    /// while it exists, Drive's generic address once it is gone.
    fn refresh_followers(&mut self, id: &FileId) -> Result<(), StageError> {
        if self.scope.selection.links_shortcuts() {
            for follower in self.store.followers(id)? {
                if &follower != id {
                    self.requests.push(Refresh::File(follower));
                }
            }
        }
        Ok(())
    }

    /// True when the event's item is recorded under `shared-with-me/` while `[source] shared_with_me`
    /// is off (it was switched off): unchanged as it is, it leaves the mirror all the same, so it is
    /// planned, not skipped as already applied. Answered from the folder map; the store is read only
    /// for an item whose parent is neither a drive root nor a known folder (rare).
    fn left_shared_with_me(&self, event: &ChangeEvent) -> Result<bool, StageError> {
        let ChangeKind::Upsert(f) = &event.kind else { return Ok(false) };
        if self.scope.shared_with_me {
            return Ok(false);
        }
        let root = format!("{}/", self.rules.join(SHARED_WITH_ME));
        let under_root = |key: &ObjectKey| key.0.starts_with(&root);
        if let Some(folder) = self.folders.get(&f.id) {
            return Ok(under_root(&folder.key));
        }
        match f.parents.first() {
            Some(parent) if self.folders.contains_key(parent) => Ok(under_root(&self.folders[parent].key)),
            Some(parent)
                if self.scope.my_drive_root.as_ref() == Some(parent)
                    || self.drive_roots.contains_key(&DriveId(parent.0.clone())) =>
            {
                Ok(false)
            }
            _ => Ok(self.store.file_record(&f.id)?.is_some_and(|r| under_root(&r.key))),
        }
    }

    /// Plans one event; returns the action, or the outcome when no I/O is needed.
    pub async fn plan(&mut self, event: ChangeEvent) -> Result<Result<Planned, Outcome>, StageError> {
        self.holds.clear();
        // Whatever this item was, its change may bring it into the scope.
        self.out_of_scope.remove(&event.file_id);
        if let ChangeKind::SharedDrive { name, joined } = &event.kind {
            if !joined && name.is_some() && self.drive_named(&event.file_id, name.as_deref()) {
                return Ok(Err(outcome(&event, OutcomeKind::Skipped(SkipReason::Unchanged))));
            }
            // A drive's subtree is computed from the store: every action planned before must be in it.
            self.ledger.drain().await;
            return self.plan_drive(&event, name.as_deref(), *joined).await;
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
        self.refresh_followers(&event.file_id)?;
        let selected = match self.deselected(&event)? {
            Selected::Removal(removal) => return Ok(*removal),
            other => other,
        };
        if self.applied_before_planning(&event)? {
            crate::metrics::event("dedup", "unchanged");
            return Ok(Err(super::dedup::skipped(&event, SkipReason::Unchanged)));
        }
        let file = match &event.kind {
            ChangeKind::Removed => return self.plan_removal(event.seq, &event.file_id),
            ChangeKind::Upsert(f) => f.clone(),
            ChangeKind::SharedDrive { .. } | ChangeKind::Stray(_) => {
                return Ok(Err(outcome(&event, OutcomeKind::Skipped(SkipReason::Unchanged))));
            }
        };
        if file.is_shortcut() && !self.scope.selection.links_shortcuts() {
            return Ok(Err(outcome(&event, OutcomeKind::Skipped(SkipReason::Shortcut))));
        }
        let parent = if file.trashed { None } else { self.parent_prefix(event.seq, &file, event.origin).await? };
        let Some(parent) = parent else {
            return self.plan_removal(event.seq, &file.id);
        };
        let file = if file.is_shortcut() { self.through_shortcut(file).await? } else { file };
        if file.shortcut_target.is_some() && self.applied(&event, &file)? {
            crate::metrics::event("dedup", "unchanged");
            return Ok(Err(super::dedup::skipped(&event, SkipReason::Unchanged)));
        }
        // Decided now that the folder is known (it was looked up above).
        if selected == Selected::Undecided && !file.is_folder() && self.admits(&file, true) == Some(false) {
            return self.plan_removal(event.seq, &file.id);
        }
        if file.is_folder() {
            if event.origin != Origin::Listing && !self.folders.contains_key(&file.id) {
                // The folder enters the mirror (created, moved in from outside the scope, or out of a
                // trashed folder): Drive reports the folder alone, so its subtree is listed.
                self.requests.push(Refresh::Children(file.id.clone()));
            }
            return self.plan_folder(event.seq, file, &parent).await;
        }
        self.plan_file(&event, file, &parent).await
    }

    /// Plans a file whose folder is in the mirror: its key, and whether its bytes are copied from its
    /// recorded object (same md5) or fetched from Drive — decided here, once.
    async fn plan_file(
        &mut self,
        event: &ChangeEvent,
        file: DriveFile,
        parent: &str,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        let file = file.with_link_digest();
        let skip = match !file.is_shortcut() && file.can_download {
            true => self.store.skip_record(&file.id)?,
            false => None,
        };
        let (source, ext) = match disposition(&file, &self.layout, skip.as_ref(), crate::state::unix_ms()) {
            Disposition::Write { source, ext } => (source, ext),
            Disposition::Skip(reason) => {
                note_skip(&file, &reason);
                return Ok(Err(outcome(event, OutcomeKind::Skipped(reason))));
            }
            Disposition::DeadLetter { ext, reason, error } => {
                let key = ObjectKey(
                    self.claim(event.seq, &file.id, parent, (&file.name, ext.as_deref()), KeyFor::File).await?,
                );
                let (name, stage) = (&file.name, StageName::Planner);
                crate::internal_events::DeadLettered { stage, file: &file.id, name, key: &key, reason, error: &error }
                    .emit();
                let dl = dead_letter(&file, Some(key), reason, error);
                return Ok(Err(outcome(event, OutcomeKind::DeadLettered(dl))));
            }
        };
        let key = ObjectKey(self.claim(event.seq, &file.id, parent, (&file.name, ext.as_deref()), KeyFor::File).await?);
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
            _ => match self.same_content_elsewhere(event, &file, &source, &key)? {
                Some(from) => ActionKind::Copy { from, fallback: source },
                None => ActionKind::Upload { source },
            },
        };
        Ok(Ok(Planned { seq: event.seq, file, key, previous_key, kind, attempt: 0 }))
    }

    /// Content dedup: the key of another mirrored file holding exactly this file's bytes (same md5),
    /// to copy server-side instead of downloading. Only for Drive's own bytes (an md5 to trust), not
    /// for a repair (which rewrites from Drive), and only when no event in flight holds that key (it
    /// could be rewriting or removing it); the ledger then holds it for this event until it commits.
    fn same_content_elsewhere(
        &mut self,
        event: &ChangeEvent,
        file: &DriveFile,
        source: &Source,
        key: &ObjectKey,
    ) -> Result<Option<ObjectKey>, StageError> {
        let worth_it = event.origin != Origin::Repair && *source == Source::Media && file.size.unwrap_or(0) > 0;
        let Some(md5) = file.md5.as_deref().filter(|_| worth_it) else { return Ok(None) };
        let Some(holder) = self.store.content_holder(md5, &file.id)? else { return Ok(None) };
        let class = keys::collision_class(&holder.key.0);
        if holder.key == *key {
            return Ok(None);
        }
        if !self.only_copies_hold(&class) {
            self.busy_copy_source = Some(class);
            return Ok(None);
        }
        self.content_copies.insert(event.seq, class);
        crate::metrics::event("planner", "content_copy");
        Ok(Some(holder.key))
    }

    /// Content dedup within a run: a new file whose bytes another event in flight is downloading right
    /// now (same md5; none is mirrored yet, or the copy is busy) waits for that event instead of
    /// downloading them too. The ledger hands `event` back once that event is released, to be planned
    /// again: a copy of its object if it was mirrored, else a download. Nothing of this planning is
    /// kept (its key claims are made again then); while it waits the event stays unfinished, so a
    /// crash replays it.
    ///
    /// Likewise when the content is mirrored but the event holding its object's key is not a copy
    /// from it (a rename or rewrite in flight): the event waits for that one and is planned again.
    fn waits_for_content(&mut self, planned: &Planned, event: &ChangeEvent) -> bool {
        let busy_source = self.busy_copy_source.take();
        let Some(md5) = downloaded_content(planned).filter(|_| event.origin != Origin::Repair) else {
            return false;
        };
        let waits = self.ledger.wait_for_content(md5, event)
            || busy_source.is_some_and(|class| self.ledger.wait_for_key_holder(&class, event));
        if !waits {
            return false;
        }
        crate::metrics::event("planner", "content_wait");
        tracing::debug!(file = %planned.file.id, md5, "waiting for the same content downloaded by another event");
        true
    }

    /// True when no event in flight holds `class`, or only a content copy from it (a reader: this
    /// event waits for it, briefly, and finds the bytes unchanged). Forgets the copies that are done.
    fn only_copies_hold(&mut self, class: &str) -> bool {
        if self.content_copies.len() > CONTENT_COPIES_REMEMBERED {
            let ledger = self.ledger.clone();
            self.content_copies.retain(|seq, c| ledger.key_holder(c) == Some(*seq));
        }
        match self.ledger.key_holder(class) {
            None => true,
            Some(seq) => self.content_copies.get(&seq).is_some_and(|c| c == class),
        }
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

    fn plan_removal(&mut self, seq: ChangeSeq, id: &FileId) -> Result<Result<Planned, Outcome>, StageError> {
        if self.scope.selection.links_shortcuts() {
            // Whatever it pointed at, a removed item follows nothing now.
            self.follows.push((id.clone(), None));
        }
        let ev_outcome = |kind| Outcome { seq, file_id: id.clone(), kind };
        if let Some(rec) = self.store.file_record(id)? {
            if self.held_by_other(id, &rec.key)? {
                // Another file's committed record holds the key (never so while claims move with
                // records; a store from before kept such claims): the object there is not ours to
                // remove. Only the record goes.
                return Ok(Err(ev_outcome(OutcomeKind::Removed { key: None })));
            }
            let mut file = placeholder(id, &rec.name);
            file.mime_type = rec.mime_type.clone();
            return Ok(Ok(Planned {
                seq,
                file,
                key: rec.key,
                previous_key: None,
                kind: ActionKind::Delete,
                attempt: 0,
            }));
        }
        let folder = match self.folders.remove(id) {
            Some(f) => Some(f),
            None => self.store.folder_record(id)?,
        };
        let Some(folder) = folder else {
            return Ok(Err(ev_outcome(OutcomeKind::Skipped(SkipReason::NotInScope))));
        };
        self.frees(&folder.key.0);
        let tree = self.remove_subtree(&folder.id, &folder.key.0);
        self.tree_action(seq, folder.id.clone(), &folder.name, folder.key, tree)
    }

    /// Records a folder; when its key changed (rename or move), its whole subtree follows.
    async fn plan_folder(
        &mut self,
        seq: ChangeSeq,
        file: DriveFile,
        parent: &str,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        let old = self.folders.get(&file.id).cloned();
        if let Some(old) = &old {
            self.frees(&old.key.0);
        }
        let key = self.claim(seq, &file.id, parent, (&file.name, None), KeyFor::Folder).await?;
        let record = folder_record(&file, &key);
        self.folders.insert(file.id.clone(), record.clone());
        match old.filter(|o| o.key.0 != key) {
            Some(_) => {
                let mut tree = self.move_subtree(&file.id, &key);
                tree.folder = Some(record);
                self.tree_action(seq, file.id.clone(), &file.name, ObjectKey(key), tree)
            }
            None => Ok(Err(Outcome { seq, file_id: file.id, kind: OutcomeKind::FolderRecorded(record) })),
        }
    }

    /// A tree change that only touches the store is an outcome; one that moves objects is an action.
    fn tree_action(
        &self,
        seq: ChangeSeq,
        id: FileId,
        name: &str,
        key: ObjectKey,
        tree: TreeChange,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        if !self.tree_has_files(&tree)? {
            return Ok(Err(Outcome { seq, file_id: id, kind: OutcomeKind::TreeChanged(tree) }));
        }
        let mut file = placeholder(&id, name);
        file.mime_type = FOLDER_MIME.into();
        Ok(Ok(Planned { seq, file, key, previous_key: None, kind: ActionKind::Tree(tree), attempt: 0 }))
    }

    /// The folders below `root` (not `root` itself), each after its parent, by the parent links of
    /// the folder map: a subtree is what Drive says is below the folder, whatever keys its records hold
    /// now (a move that was cut short leaves some below the old key and some below the new one).
    fn folders_below(&self, root: &FileId) -> Vec<FileId> {
        let mut children: HashMap<&FileId, Vec<&FileId>> = HashMap::new();
        for f in self.folders.values() {
            if let Some(parent) = &f.parent {
                children.entry(parent).or_default().push(&f.id);
            }
        }
        let mut below = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(id) = queue.pop_front() {
            for child in children.get(id).into_iter().flatten() {
                if *child != root && seen.insert(*child) {
                    below.push((*child).clone());
                    queue.push_back(child);
                }
            }
        }
        below
    }

    /// Whether any folder of `tree` holds a file record (the store's children index).
    fn tree_has_files(&self, tree: &TreeChange) -> Result<bool, StageError> {
        for dir in &tree.dirs {
            let mut after = None;
            loop {
                let page = self.store.folder_page(&dir.folder, after.as_ref(), 64)?;
                if !page.records.is_empty() {
                    return Ok(true);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(false)
    }

    /// Re-keys everything below folder `root`, whose key is now `new`: each folder and file keeps its
    /// own last key segment under its parent's new key (the claims follow as the records commit).
    fn move_subtree(&mut self, root: &FileId, new: &str) -> TreeChange {
        let mut new_keys: HashMap<FileId, String> = HashMap::from([(root.clone(), new.to_string())]);
        let mut dirs = vec![TreeDir { folder: root.clone(), key: ObjectKey(new.to_string()) }];
        let mut folders = Vec::new();
        for id in self.folders_below(root) {
            let Some(f) = self.folders.get(&id) else { continue };
            let Some(parent_key) = f.parent.as_ref().and_then(|p| new_keys.get(p)) else { continue };
            let key = keys::child_key(parent_key, last_segment(&f.key.0), self.layout.max_key_bytes);
            let Some(f) = self.folders.get_mut(&id) else { continue };
            f.key = ObjectKey(key.clone());
            let f = f.clone();
            dirs.push(TreeDir { folder: id.clone(), key: ObjectKey(key.clone()) });
            new_keys.insert(id, key);
            folders.push(f);
        }
        TreeChange { folder: None, dirs, folders, removed_folders: Vec::new(), remove: false, lost: Vec::new() }
    }

    /// Everything below folder `root` (key `root_key`) goes away (the claims go as the removals commit).
    fn remove_subtree(&mut self, root: &FileId, root_key: &str) -> TreeChange {
        let removed_folders = self.folders_below(root);
        let mut dirs = vec![TreeDir { folder: root.clone(), key: ObjectKey(root_key.to_string()) }];
        for id in &removed_folders {
            if let Some(f) = self.folders.remove(id) {
                dirs.push(TreeDir { folder: f.id, key: f.key });
            }
        }
        TreeChange { folder: None, dirs, folders: Vec::new(), removed_folders, remove: true, lost: Vec::new() }
    }
}

/// The planner's key holders ([`placement::KeyHolders`]): the classes the event being planned holds
/// already, then the ledger (waited on during an event; outside one, a class an active event holds is
/// taken), then the committed claims. A file never takes a key committed objects lie under.
struct Holders<'a, S> {
    store: &'a S,
    ledger: &'a super::ledger::Ledger,
    holds: &'a mut HashMap<String, Option<FileId>>,
    /// The event planned; `None` outside any event (drive roots at start).
    seq: Option<ChangeSeq>,
}

impl<S: PlanView> Holders<'_, S> {
    /// Whether a committed record of a file other than `id` holds `class`.
    fn held_by_other(&self, id: &FileId, class: &str) -> Result<bool, StageError> {
        Ok(self.store.claim_holder(class)?.is_some_and(|h| h != *id))
    }
}

impl<S: PlanView> KeyHolders for Holders<'_, S> {
    type Error = StageError;

    async fn may_take(&mut self, class: &str, id: &FileId, what: KeyFor) -> Result<bool, StageError> {
        if self.holds.get(class).is_some_and(|h| h.as_ref().is_some_and(|h| h != id)) {
            return Ok(false);
        }
        let Some(seq) = self.seq else {
            return Ok(!self.ledger.key_held(class) && !self.held_by_other(id, class)?);
        };
        self.ledger.wait_key_free(seq, class).await;
        // A folder move committed in steps moves its files' records first and its own with the last
        // step, so after a crash in between the new folder key holds objects no record claims yet: a
        // file there would be a file over a directory.
        Ok(!self.held_by_other(id, class)? && !(what == KeyFor::File && self.store.claimed_under(class)?))
    }

    fn take(&mut self, class: &str, id: &FileId) -> Result<(), StageError> {
        self.holds.insert(class.to_string(), Some(id.clone()));
        Ok(())
    }
}

/// The planner's folders ([`placement::Folders`]): the folder map, the folders known to lie outside
/// the scope, and Drive (`files.get`) for the rest. A folder placed is recorded (through the
/// committer) and, for a change rather than a listing, its children are listed.
struct Known<'a, L> {
    lookup: &'a L,
    scope: &'a Scope,
    drive_roots: &'a BTreeMap<DriveId, String>,
    folders: &'a mut HashMap<FileId, FolderRecord>,
    out_of_scope: &'a mut HashSet<FileId>,
    discovered: &'a mut Vec<FolderRecord>,
    requests: &'a mut Vec<Refresh>,
    origin: Origin,
}

impl<L: FolderLookup> Folders for Known<'_, L> {
    type Error = StageError;

    fn roots(&self) -> Roots<'_> {
        Roots {
            my_drive_root: self.scope.my_drive_root.as_ref(),
            drives: &self.scope.shared,
            keys: self.drive_roots,
            shared_with_me: self.scope.shared_with_me,
        }
    }

    async fn folder(&mut self, id: &FileId, _from: &Spot) -> Result<Found, StageError> {
        if let Some(f) = self.folders.get(id) {
            return Ok(Found::Key(f.key.0.clone()));
        }
        if self.out_of_scope.contains(id) {
            return Ok(Found::Hidden);
        }
        match self.lookup.lookup(id).await {
            Ok(Some(folder)) if folder.is_folder() && !folder.trashed => {
                Ok(Found::Folder(Folder { id: folder.id.clone(), name: folder.name.clone(), spot: Spot::of(&folder) }))
            }
            Ok(found) => {
                remember_out_of_scope(self.out_of_scope, std::iter::once(id.clone()));
                Ok(if found.is_none() { Found::Hidden } else { Found::Outside })
            }
            Err(e) => Err(super::drive_failure(&format!("cannot resolve parent {id}"), e)),
        }
    }

    fn recorded(&mut self, _id: &FileId) -> Result<Option<ObjectKey>, StageError> {
        Ok(None)
    }

    fn placed(&mut self, folder: Folder, key: &str) {
        let record = FolderRecord {
            id: folder.id.clone(),
            name: folder.name,
            parent: folder.spot.parent,
            drive_id: folder.spot.drive,
            key: ObjectKey(key.to_string()),
            trashed: false,
        };
        self.folders.insert(folder.id.clone(), record.clone());
        self.discovered.push(record);
        if self.origin != Origin::Listing {
            self.requests.push(Refresh::Children(folder.id));
        }
    }

    fn outside(&mut self, chain: Vec<Folder>, known: bool) {
        if known {
            remember_out_of_scope(self.out_of_scope, chain.into_iter().map(|f| f.id));
        }
    }
}

/// Notes folders found outside the scope; the set is cleared when full.
fn remember_out_of_scope(set: &mut HashSet<FileId>, ids: impl Iterator<Item = FileId>) {
    for id in ids {
        if set.len() >= OUT_OF_SCOPE_CACHE {
            set.clear();
        }
        set.insert(id);
    }
}

impl From<NoFreeKey> for StageError {
    fn from(e: NoFreeKey) -> Self {
        StageError::Failed(e.to_string())
    }
}

/// The log line and metric of a file Drive will not hand over (or has no bytes for).
fn note_skip(file: &DriveFile, reason: &SkipReason) {
    match reason {
        SkipReason::DownloadDisabled(_) => {
            crate::metrics::event("planner", "download_disabled");
            tracing::info!(file = %file.id, name = %file.name, "skipped: the owner disabled downloads of this file");
        }
        SkipReason::NoExport(_) => {
            crate::metrics::event("planner", "no_export");
            tracing::info!(file = %file.id, name = %file.name, mime = %file.mime_type, "skipped: Drive has no export for this Google type");
        }
        r => tracing::debug!(file = %file.id, reason = r.label(), "skipped again: Drive refused this version"),
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
            self.busy_copy_source = None;
            // Kept to wait for a content in flight (a file event that turns out to need a download).
            let original = matches!(&event.kind, ChangeKind::Upsert(f) if !f.is_folder()).then(|| event.clone());
            let planned = self.plan(event).await?;
            let mut holds: Vec<String> = self.holds.drain().map(|(class, _)| class).collect();
            if !self.discovered.is_empty() {
                let folders = std::mem::take(&mut self.discovered);
                emit.commit.send(super::CommitMsg::Folders(folders)).await.map_err(|_| StageError::Closed)?;
            }
            if !self.requests.is_empty() {
                let requests = std::mem::take(&mut self.requests);
                emit.commit.send(super::CommitMsg::Refresh(requests)).await.map_err(|_| StageError::Closed)?;
            }
            if !self.follows.is_empty() {
                let follows = std::mem::take(&mut self.follows);
                emit.commit.send(super::CommitMsg::Follows(follows)).await.map_err(|_| StageError::Closed)?;
            }
            match planned {
                Ok(planned) => {
                    if let Some(event) = original
                        && self.waits_for_content(&planned, &event)
                    {
                        continue;
                    }
                    crate::metrics::event(Self::NAME.as_str(), "planned");
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
mod tests {
    use super::*;
    use crate::config::{ExportConfig, KeyMode};

    struct NoLookup;
    impl FolderLookup for NoLookup {
        async fn lookup(&self, _id: &FileId) -> Result<Option<DriveFile>, DriveError> {
            Ok(None)
        }
    }

    fn planner(dir: &std::path::Path) -> Planner<NoLookup> {
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
    async fn key_of(p: &mut Planner<NoLookup>, seq: u64, f: DriveFile) -> String {
        let outcome = match p.plan(upsert(seq, f)).await.unwrap() {
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
            let mut p =
                Planner::new(store, Arc::new(MapLookup(lookup.0.clone())), scope, layout, Arc::default()).unwrap();
            let mut plan_key = async |seq: u64, f: &DriveFile| match p.plan(upsert(seq, f.clone())).await.unwrap() {
                Ok(planned) => Some(planned.key.0),
                Err(_) => None,
            };
            let keys =
                [plan_key(1, &in_folder).await, plan_key(2, &behind_hidden).await, plan_key(3, &not_shared).await];
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
        let planned = p.plan(stray(2, &free)).await.unwrap().expect("an unclaimed stray is removed");
        assert_eq!((planned.key.clone(), planned.kind.clone()), (free, ActionKind::Delete));
        // A key a committed record claims (in any letter case) is a file's, whatever verify saw.
        let upper = ObjectKey(taken.0.to_uppercase().replace("PRE/MY-DRIVE", "pre/my-drive"));
        for key in [&taken, &upper] {
            let o = p.plan(stray(3, key)).await.unwrap().expect_err("a claimed key is left alone");
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
        let planned = p.plan(rename).await.unwrap().unwrap();
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
        let b = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
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
        let mut p =
            Planner::new(Store::open(dir.path()).unwrap(), lookup.clone(), scope, layout, Arc::default()).unwrap();
        let calls = || lookup.0.load(std::sync::atomic::Ordering::SeqCst);
        for (seq, id) in [(1, "shared1"), (2, "shared2"), (3, "shared3")] {
            let outcome = p.plan(upsert(seq, file(id, "s.txt", "elsewhere"))).await.unwrap();
            assert!(matches!(outcome, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::NotInScope), .. })));
        }
        assert_eq!(calls(), 1, "the parent outside the scope is asked about once");
        // A change of that folder (it may have moved into the scope) forgets what was known of it.
        let _ = p.plan(upsert(4, file("elsewhere", "f", "further"))).await.unwrap();
        let before = calls();
        let _ = p.plan(upsert(5, file("shared4", "s.txt", "elsewhere"))).await.unwrap();
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
            super::super::selection::Selection::default().with_shortcuts(crate::config::ShortcutMode::Skip);
        let r = p.plan(upsert(1, file("A", "a", "elsewhere"))).await.unwrap();
        assert!(matches!(r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::NotInScope), .. })));
        let mut s = file("S", "s", "root");
        s.mime_type = SHORTCUT_MIME.into();
        let r = p.plan(upsert(2, s)).await.unwrap();
        assert!(matches!(r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Shortcut), .. })));
        let mut big = file("B", "b", "root");
        big.size = Some(1000);
        let r = p.plan(upsert(3, big)).await.unwrap();
        assert!(matches!(r, Err(Outcome { kind: OutcomeKind::DeadLettered(_), .. })));
    }

    #[tokio::test]
    async fn a_file_over_the_destinations_max_file_size_is_dead_lettered_before_its_download() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = planner(dir.path());
        let mut over = file("B", "b", "root");
        over.size = Some(90);
        let r = p.plan(upsert(1, over)).await.unwrap();
        let Err(Outcome { kind: OutcomeKind::DeadLettered(dl), .. }) = r else { panic!("{r:?}") };
        assert_eq!(dl.reason, "destination_too_large");
        assert!(dl.last_error.contains("over destination.max_file_size (80 bytes)"), "{}", dl.last_error);
        let mut within = file("C", "c", "root");
        within.size = Some(80);
        assert!(p.plan(upsert(2, within)).await.unwrap().is_ok());
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
            let r = p.plan(upsert(seq, f)).await.unwrap();
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
        let r = p.plan(upsert(2, file("X", "x.exe", "root"))).await.unwrap();
        assert!(matches!(&r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Abusive(_)), .. })), "{r:?}");
        let mut changed = file("X", "x.exe", "root");
        changed.version = 2;
        let planned = p.plan(upsert(3, changed)).await.unwrap().expect("a new version is planned");
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
        let planned = p.plan(upsert(1, d)).await.unwrap().unwrap();
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
        let Err(joined) = p.plan(drive_event(1, Some("Team"), true)).await.unwrap() else { panic!("no I/O to join") };
        assert!(
            matches!(&joined.kind, OutcomeKind::FolderRecorded(f) if f.key.0 == "pre/shared-drives/Team" && f.is_drive_root()),
            "{joined:?}"
        );
        assert_eq!(std::mem::take(&mut p.requests), vec![Refresh::Children(FileId("d1".into()))]);
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
        let same = p.plan(drive_event(3, Some("Team"), false)).await.unwrap();
        assert!(matches!(same, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Unchanged), .. })), "{same:?}");

        // Renamed: one tree action moves the file to the new root, which is recorded with it.
        let Ok(rename) = p.plan(drive_event(4, Some("Team 2"), false)).await.unwrap() else { panic!("a move") };
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
        let r = p.plan(upsert(5, root)).await.unwrap();
        assert!(matches!(r, Err(Outcome { kind: OutcomeKind::Skipped(SkipReason::Unchanged), .. })), "{r:?}");

        // Lost: the subtree goes, and the root record with it.
        let Ok(lost) = p.plan(drive_event(6, None, false)).await.unwrap() else { panic!("a removal") };
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
        let planned = p.plan(upsert(1, file("N", "TAKEN.txt", "root"))).await.unwrap().unwrap();
        assert_eq!(planned.key.0, "pre/my-drive/TAKEN (N).txt");
        assert!(matches!(planned.kind, ActionKind::Upload { source: Source::Media }));
        // A renamed file with the same content is copied from its recorded key, which it leaves.
        let planned = p.plan(upsert(2, moved)).await.unwrap().unwrap();
        assert_eq!(
            planned.kind,
            ActionKind::Copy { from: ObjectKey("pre/my-drive/old.txt".into()), fallback: Source::Media }
        );
        assert_eq!(planned.previous_key, Some(ObjectKey("pre/my-drive/old.txt".into())));
        // The version the store holds is a replay: nothing to do.
        let o = p.plan(upsert(3, same)).await.unwrap().expect_err("unchanged");
        assert_eq!(o.kind, OutcomeKind::Skipped(SkipReason::Unchanged));
    }

    #[tokio::test]
    async fn a_file_never_takes_a_key_that_committed_objects_lie_under() {
        // A folder move committed in steps, crashed before its last: the files' records are under the
        // new folder key, which no record claims yet.
        let mut memory = Memory::default();
        memory.claims.insert("pre/my-drive/_./x.txt".into(), FileId("X".into()));
        let mut p = in_memory(memory);
        let planned = p.plan(upsert(1, file("N", ".", "root"))).await.unwrap().unwrap();
        assert_eq!(planned.key.0, "pre/my-drive/_ (N).");
        // Only the keys under it count, not a name they end with.
        let planned = p.plan(upsert(2, file("Y", "x.txt", "root"))).await.unwrap().unwrap();
        assert_eq!(planned.key.0, "pre/my-drive/x.txt", "a sibling prefix is not a folder of objects");
    }
}
