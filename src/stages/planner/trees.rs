//! Folders and drives: a folder recorded, a renamed or moved one carried with its subtree, a removed
//! one removed with it, a shared drive joined, renamed or left.

use super::*;
use crate::internal_events::InternalEvent;

impl<L: FolderLookup, S: PlanView> Planner<L, S> {
    /// The key of each shared drive's root: the recorded one (a rename while mirrorflow was down is
    /// applied by the drive event the feed sends at start), else claimed from the drive's name. Drives
    /// joined during an earlier run of this process (a planner restart) come from their records.
    pub(super) fn assign_drive_roots(&mut self, n: &mut Notes) -> Result<BTreeMap<DriveId, String>, StageError> {
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
                let key = match (self.folders.get(&root), &self.scope.drive_root) {
                    (_, Some(fixed)) => self.rules.join(fixed),
                    (Some(r), None) if r.is_drive_root() => r.key.0.clone(),
                    _ => self.claim_outside_event(n, &root, &base, &name)?,
                };
                Ok((id, key))
            })
            .collect()
    }

    /// Whether the drive `root` is mirrored under a recorded root of this very name (nothing to do).
    pub(super) fn drive_named(&self, root: &FileId, name: Option<&str>) -> bool {
        let recorded = self.folders.get(root).filter(|r| r.is_drive_root());
        recorded.is_some_and(|r| Some(r.name.as_str()) == name)
            && self.drive_roots.contains_key(&DriveId(root.0.clone()))
    }

    /// A shared drive is in scope under `name` (joined, renamed, or just confirmed at start), or gone
    /// (`None`). A rename moves the drive's subtree to the new root key, a removal removes it (per
    /// `deletes`), both as one journaled tree action like a folder's; a joined drive's tree is listed.
    pub(super) async fn plan_drive(
        &mut self,
        n: &mut Notes,
        event: &ChangeEvent,
        name: Option<&str>,
        joined: bool,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        let root_id = event.file_id.clone();
        let drive = DriveId(root_id.0.clone());
        let Some(name) = name else {
            if self.scope.drive_root.is_some() {
                // A domain's shared-drive unit: the reader left the drive (or it was deleted). Another
                // member reads it from the next round; what it says then decides, not this account.
                tracing::warn!(drive = %drive, "the shared drive's reader lost it: nothing is removed; another member reads it next round");
                return Ok(Err(outcome(event, OutcomeKind::Skipped(SkipReason::NotInScope))));
            }
            self.scope.shared.remove(&drive);
            let recorded = self.folders.remove(&root_id).filter(FolderRecord::is_drive_root).map(|r| r.key.0);
            let Some(root_key) = self.drive_roots.remove(&drive).or(recorded) else {
                return Ok(Err(outcome(event, OutcomeKind::Skipped(SkipReason::NotInScope))));
            };
            n.frees(&root_key);
            let mut tree = self.remove_subtree(&root_id, &root_key);
            tree.removed_folders.push(root_id.clone());
            crate::internal_events::SharedDriveTreeRemoved { drive: &drive, key: &root_key, folders: tree.dirs.len() }
                .emit();
            return self.tree_action(event.seq, root_id, "", ObjectKey(root_key), tree);
        };
        let old = self.drive_roots.get(&drive).cloned();
        self.scope.shared.insert(drive.clone(), name.to_string());
        if let Some(old) = &old {
            n.frees(old);
        }
        let base = placement::shared_drives_base(&self.rules);
        let key = match &self.scope.drive_root {
            Some(fixed) => self.rules.join(fixed),
            None => self.claim(n, event.seq, &root_id, &base, (name, None), KeyFor::Folder).await?,
        };
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
            n.refresh.push(Refresh::Children(root_id.clone()));
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

    pub(super) fn plan_removal(
        &mut self,
        n: &mut Notes,
        seq: ChangeSeq,
        id: &FileId,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        if self.scope.selection.links_shortcuts() {
            // Whatever it pointed at, a removed item follows nothing now.
            n.follows.push((id.clone(), None));
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
        n.frees(&folder.key.0);
        let tree = self.remove_subtree(&folder.id, &folder.key.0);
        self.tree_action(seq, folder.id.clone(), &folder.name, folder.key, tree)
    }

    /// Records a folder; when its key changed (rename or move), its whole subtree follows.
    pub(super) async fn plan_folder(
        &mut self,
        n: &mut Notes,
        seq: ChangeSeq,
        file: DriveFile,
        parent: &str,
    ) -> Result<Result<Planned, Outcome>, StageError> {
        let old = self.folders.get(&file.id).cloned();
        if let Some(old) = &old {
            n.frees(&old.key.0);
        }
        let key = self.claim(n, seq, &file.id, parent, (&file.name, None), KeyFor::Folder).await?;
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
    pub(super) fn tree_action(
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
    pub(super) fn folders_below(&self, root: &FileId) -> Vec<FileId> {
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
    pub(super) fn tree_has_files(&self, tree: &TreeChange) -> Result<bool, StageError> {
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
    pub(super) fn move_subtree(&mut self, root: &FileId, new: &str) -> TreeChange {
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
    pub(super) fn remove_subtree(&mut self, root: &FileId, root_key: &str) -> TreeChange {
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
