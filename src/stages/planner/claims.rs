//! The planner's side of [`crate::mirror::placement`]: its adapters (`Known`: the folder map, the
//! out-of-scope cache and Drive; `Holders`: the event's own holds, the ledger and the committed
//! claims) and the claims it makes through them.

use super::*;

/// Entries of the out-of-scope cache before it is cleared.
pub(super) const OUT_OF_SCOPE_CACHE: usize = 10_000;

impl<L: FolderLookup, S: PlanView> Planner<L, S> {
    /// Whether `key` is claimed by a file other than `id`.
    pub(super) fn held_by_other(&self, id: &FileId, key: &ObjectKey) -> Result<bool, StageError> {
        self.class_held_by_other(id, &keys::collision_class(key.as_str()))
    }

    /// Whether a committed record of a file other than `id` holds `class`.
    pub(super) fn class_held_by_other(&self, id: &FileId, class: &str) -> Result<bool, StageError> {
        let holder = self.store.claim_holder(class)?;
        Ok(holder.is_some_and(|h| h != *id))
    }

    /// The key of `name` (plus `ext`) inside `parent` for event `seq` ([`placement::key_in`]). A class
    /// an in-flight event holds is waited for: that event may free it (a rename or delete) or take it
    /// (a new file), and only its commit, which moves the claims in the store with the records,
    /// decides. The claim itself is recorded when this event commits.
    pub(super) async fn claim(
        &mut self,
        n: &mut Notes,
        seq: ChangeSeq,
        id: &FileId,
        parent: &str,
        name: (&str, Option<&str>),
        what: KeyFor,
    ) -> Result<String, StageError> {
        let mut holders = Holders { store: &self.store, ledger: &self.ledger, holds: &mut n.holds, seq: Some(seq) };
        placement::key_in(&self.rules, &mut holders, id, parent, name, what, None).await
    }

    /// `claim` outside any event (drive roots at start), which cannot wait: a class an active event
    /// holds counts as taken. The drive's own event claims its key for real.
    pub(super) fn claim_outside_event(
        &mut self,
        n: &mut Notes,
        id: &FileId,
        parent: &str,
        name: &str,
    ) -> Result<String, StageError> {
        use futures::FutureExt;
        let mut holders = Holders { store: &self.store, ledger: &self.ledger, holds: &mut n.holds, seq: None };
        placement::key_in(&self.rules, &mut holders, id, parent, (name, None), KeyFor::Folder, None)
            .now_or_never()
            .unwrap_or_else(|| Err(StageError::Failed(format!("the key of {id} waited outside an event"))))
    }

    /// The key prefix of the folder that holds `file`, or `None` when out of scope
    /// ([`placement::parent_key`]). Ancestors it has to look up are recorded (through the committer);
    /// when the event is a change, not a listing, such an ancestor may just have entered the mirror
    /// with files Drive reports no change for, so its children are listed too.
    pub(super) async fn parent_prefix(
        &mut self,
        n: &mut Notes,
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
            discovered: &mut n.folders,
            requests: &mut n.refresh,
            origin,
        };
        let mut holders = Holders { store: &self.store, ledger: &self.ledger, holds: &mut n.holds, seq: Some(seq) };
        placement::parent_key(&self.rules, &mut known, &mut holders, Spot::of(file)).await
    }
}

/// The planner's key holders ([`placement::KeyHolders`]): the classes the event being planned holds
/// already, then the ledger (waited on during an event; outside one, a class an active event holds is
/// taken), then the committed claims. A file never takes a key committed objects lie under.
pub(super) struct Holders<'a, S> {
    store: &'a S,
    ledger: &'a crate::stages::ledger::Ledger,
    holds: &'a mut HashMap<String, Option<FileId>>,
    /// The event planned; `None` outside any event (drive roots at start).
    seq: Option<ChangeSeq>,
}

impl<S: PlanView> Holders<'_, S> {
    /// Whether a committed record of a file other than `id` holds `class`.
    pub(super) fn held_by_other(&self, id: &FileId, class: &str) -> Result<bool, StageError> {
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
        if self.held_by_other(id, class)? {
            return Ok(false);
        }
        Ok(what != KeyFor::File || !self.store.claimed_under(class)?)
    }

    fn take(&mut self, class: &str, id: &FileId) -> Result<(), StageError> {
        self.holds.insert(class.to_string(), Some(id.clone()));
        Ok(())
    }
}

/// The planner's folders ([`placement::Folders`]): the folder map, the folders known to lie outside
/// the scope, and Drive (`files.get`) for the rest. A folder placed is recorded (through the
/// committer) and, for a change rather than a listing, its children are listed.
pub(super) struct Known<'a, L> {
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
            Err(e) => Err(crate::stages::drive_failure(&format!("cannot resolve parent {id}"), e)),
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
pub(super) fn remember_out_of_scope(set: &mut HashSet<FileId>, ids: impl Iterator<Item = FileId>) {
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
