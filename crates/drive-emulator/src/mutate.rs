//! Mutations applied through `/_emu/mutate`, each producing change records the way Drive does:
//! `version` bumps on every change, checksums and size only on content changes, trashing or deleting
//! a folder reaches its descendants.

use serde::{Deserialize, Serialize};

use super::content::{Blob, DocKind};
use super::corpus::{Placement, mime_for_name};
use super::model::{Item, Kind};
use super::rng::Rng64;
use super::state::State;

/// One mutation, tagged by `"op"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MutateOp {
    /// New binary file of `size` bytes.
    Create {
        /// Folder (or drive root) id the file is created in.
        parent: String,
        /// File name (any bytes Drive accepts).
        name: String,
        /// Content length in bytes.
        size: u64,
        /// MIME type; `application/octet-stream` when absent.
        mime: Option<String>,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// A copy of a binary file (Drive's `files.copy`): a new file with the same bytes, so the same md5.
    Copy {
        /// The file copied.
        id: String,
        /// Folder (or drive root) id the copy is created in.
        parent: String,
        /// The copy's name.
        name: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// A shortcut to `target` (which may not exist); it carries the target's resource key, if any.
    CreateShortcut {
        /// Folder (or drive root) id it is created in.
        parent: String,
        /// Shortcut name.
        name: String,
        /// The item it points at.
        target: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// A binary file another user owns in a folder of theirs, shared by link with a resource key,
    /// which this user never opened: listed nowhere, in no change log, and shown only to a request
    /// carrying its key (what a shortcut's `targetResourceKey` gives).
    CreateLinkShared {
        /// File name.
        name: String,
        /// Content length in bytes.
        size: u64,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// New folder.
    CreateFolder {
        /// Folder (or drive root) id it is created in.
        parent: String,
        /// Folder name.
        name: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// New content revision (optionally with a new size).
    UpdateContent {
        /// File id.
        id: String,
        /// New length; the old one when absent.
        size: Option<u64>,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// Rename any item.
    Rename {
        /// Item id.
        id: String,
        /// New name.
        name: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// Replace the parents of an item with `new_parent` (same drive only).
    Move {
        /// Item id.
        id: String,
        /// The folder it moves into.
        new_parent: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// Trash an item (and, for folders, everything below it).
    Trash {
        /// Item id.
        id: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// Untrash an item.
    Untrash {
        /// Item id.
        id: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// Delete permanently (folders take their descendants with them).
    Delete {
        /// Item id.
        id: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// New Google Docs Editors file.
    CreateGdoc {
        /// Folder (or drive root) id it is created in.
        parent: String,
        /// Document name.
        name: String,
        /// Docs, Sheets, Slides or Drawings.
        kind: DocKind,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// New revision of a Google Docs Editors file.
    EditGdoc {
        /// Document id.
        id: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// `count` random operations from the other kinds, reproducible from `seed`.
    Random {
        /// How many operations.
        count: usize,
        /// Seed of the choice.
        seed: u64,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// A shared drive the account joins (or creates): empty, with a drive-level change.
    CreateDrive {
        /// Shared drive name.
        name: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// Rename a shared drive (a drive-level change; its items' own records do not change).
    RenameDrive {
        /// Shared drive id.
        id: String,
        /// New name.
        name: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// The account loses a shared drive (deleted, or membership removed): it and its items vanish,
    /// reported by one drive-level change with `removed: true` and no file-level ones.
    RemoveDrive {
        /// Shared drive id.
        id: String,
        /// Domain mode: the user acting (owner of what it creates; `root` is their root); the
        /// first domain user when absent. Ignored in single-user mode.
        #[serde(default)]
        user: Option<String>,
    },
    /// Domain mode: a new account with an empty My Drive.
    AddUser {
        /// Primary email.
        email: String,
        /// A Workspace administrator.
        #[serde(default)]
        admin: bool,
        /// Suspended from the start.
        #[serde(default)]
        suspended: bool,
    },
    /// Domain mode: suspend an account (delegation to it then fails with `invalid_grant`).
    SuspendUser {
        /// The account's email.
        email: String,
    },
    /// Domain mode: give `email` reader access to item `id`: it appears in their `sharedWithMe`
    /// (with what lies below it, for a folder) and in their change log.
    Share {
        /// Item id.
        id: String,
        /// The user it is shared with.
        email: String,
    },
    /// Domain mode: take back what [`MutateOp::Share`] gave; the item leaves the user's view with a
    /// `removed` change in their log.
    Unshare {
        /// Item id.
        id: String,
        /// The user it was shared with.
        email: String,
    },
    /// Domain mode: make `email` a member of a shared drive (a drive-level change in their log).
    AddMember {
        /// Shared drive id.
        drive_id: String,
        /// The new member.
        email: String,
    },
    /// Domain mode: remove `email` from a shared drive: the drive and its items answer 404 to them
    /// from now on, after one drive-level `removed` change in their log.
    RemoveMember {
        /// Shared drive id.
        drive_id: String,
        /// The former member.
        email: String,
    },
}

/// Why a mutation was refused.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    /// The id does not exist.
    #[error("item not found: {0}")]
    NotFound(String),
    /// The operation does not apply to this item.
    #[error("invalid operation: {0}")]
    Invalid(String),
}

type MResult<T> = Result<T, MutateError>;

impl MutateOp {
    /// The acting user an op names (`None`: the default one, or an op that names no actor).
    pub fn user(&self) -> Option<&str> {
        match self {
            MutateOp::Create { user, .. }
            | MutateOp::Copy { user, .. }
            | MutateOp::CreateShortcut { user, .. }
            | MutateOp::CreateLinkShared { user, .. }
            | MutateOp::CreateFolder { user, .. }
            | MutateOp::UpdateContent { user, .. }
            | MutateOp::Rename { user, .. }
            | MutateOp::Move { user, .. }
            | MutateOp::Trash { user, .. }
            | MutateOp::Untrash { user, .. }
            | MutateOp::Delete { user, .. }
            | MutateOp::CreateGdoc { user, .. }
            | MutateOp::EditGdoc { user, .. }
            | MutateOp::Random { user, .. }
            | MutateOp::CreateDrive { user, .. }
            | MutateOp::RenameDrive { user, .. }
            | MutateOp::RemoveDrive { user, .. } => user.as_deref(),
            MutateOp::AddUser { .. }
            | MutateOp::SuspendUser { .. }
            | MutateOp::Share { .. }
            | MutateOp::Unshare { .. }
            | MutateOp::AddMember { .. }
            | MutateOp::RemoveMember { .. } => None,
        }
    }
}

impl State {
    /// Apply one op as its acting user; returns ids of created items.
    pub fn apply(&mut self, op: &MutateOp) -> MResult<Vec<String>> {
        let acting = self.acting_for(op.user())?;
        let before = std::mem::replace(&mut self.corpus.acting, acting);
        let result = self.apply_as(op);
        self.corpus.acting = before;
        result
    }

    /// The account an op acts as: the named user, or the first domain user (none in single-user mode).
    fn acting_for(&self, user: Option<&str>) -> MResult<Option<String>> {
        if !self.corpus.is_domain() {
            return Ok(None);
        }
        match user {
            Some(u) => {
                let rec = self.corpus.user(u).ok_or_else(|| MutateError::NotFound(format!("user {u}")))?;
                Ok(Some(rec.email.clone()))
            }
            None => Ok(self.corpus.first_user().map(|u| u.email.clone())),
        }
    }

    /// Apply one op as the current acting user.
    fn apply_as(&mut self, op: &MutateOp) -> MResult<Vec<String>> {
        match op {
            MutateOp::Create { parent, name, size, mime, .. } => {
                let mime = mime.clone().unwrap_or_else(|| mime_for_name(name).to_string());
                Ok(vec![self.create_file(parent, name, *size, &mime)?])
            }
            MutateOp::Copy { id, parent, name, .. } => Ok(vec![self.copy_file(id, parent, name)?]),
            MutateOp::CreateShortcut { parent, name, target, .. } => {
                Ok(vec![self.create_shortcut(parent, name, target)?])
            }
            MutateOp::CreateLinkShared { name, size, .. } => Ok(vec![self.create_link_shared(name, *size)]),
            MutateOp::CreateFolder { parent, name, .. } => {
                let place = self.placement(parent)?;
                let id = self.corpus.add_folder(name, place);
                self.record(&id);
                Ok(vec![id])
            }
            MutateOp::UpdateContent { id, size, .. } => self.update_content(id, *size).map(|_| vec![]),
            MutateOp::Rename { id, name, .. } => self.rename(id, name).map(|_| vec![]),
            MutateOp::Move { id, new_parent, .. } => self.move_item(id, new_parent).map(|_| vec![]),
            MutateOp::Trash { id, .. } => self.set_trashed(id, true).map(|_| vec![]),
            MutateOp::Untrash { id, .. } => self.set_trashed(id, false).map(|_| vec![]),
            MutateOp::Delete { id, .. } => self.delete(id).map(|_| vec![]),
            MutateOp::CreateGdoc { parent, name, kind, .. } => Ok(vec![self.create_doc(parent, name, *kind)?]),
            MutateOp::EditGdoc { id, .. } => self.edit_doc(id).map(|_| vec![]),
            MutateOp::Random { count, seed, .. } => Ok(self.random(*count, *seed)),
            MutateOp::CreateDrive { name, .. } => Ok(vec![self.create_drive(name)]),
            MutateOp::RenameDrive { id, name, .. } => self.rename_drive(id, name).map(|_| vec![]),
            MutateOp::RemoveDrive { id, .. } => self.remove_drive(id).map(|_| vec![]),
            MutateOp::AddUser { email, admin, suspended } => Ok(vec![self.add_user(email, *admin, *suspended)?]),
            MutateOp::SuspendUser { email } => self.suspend_user(email).map(|_| vec![]),
            MutateOp::Share { id, email } => self.share(id, email).map(|_| vec![]),
            MutateOp::Unshare { id, email } => self.unshare(id, email).map(|_| vec![]),
            MutateOp::AddMember { drive_id, email } => self.set_member(drive_id, email, true).map(|_| vec![]),
            MutateOp::RemoveMember { drive_id, email } => self.set_member(drive_id, email, false).map(|_| vec![]),
        }
    }

    fn create_drive(&mut self, name: &str) -> String {
        let id = self.corpus.rng.drive_id();
        let at = self.corpus.tick();
        self.corpus.drives.push(super::model::SharedDrive { id: id.clone(), name: name.into(), created_ms: at });
        self.corpus.insert_root(id.clone(), name.into(), Some(id.clone()), at);
        if let Some(acting) = self.corpus.acting.clone()
            && let Some(user) = self.corpus.user_mut(&acting)
        {
            user.drives.insert(id.clone());
        }
        self.record_drive(&id, false);
        id
    }

    fn rename_drive(&mut self, id: &str, name: &str) -> MResult<()> {
        let drive =
            self.corpus.drives.iter_mut().find(|d| d.id == id).ok_or_else(|| MutateError::NotFound(id.into()))?;
        drive.name = name.into();
        if let Some(root) = self.corpus.items.get_mut(id) {
            root.name = name.into();
        }
        self.record_drive(id, false);
        Ok(())
    }

    fn remove_drive(&mut self, id: &str) -> MResult<()> {
        if self.corpus.drive(id).is_none() {
            return Err(MutateError::NotFound(id.into()));
        }
        self.corpus.drives.retain(|d| d.id != id);
        let items: Vec<String> =
            self.corpus.items.values().filter(|i| i.drive_id.as_deref() == Some(id)).map(|i| i.id.clone()).collect();
        for item in items {
            self.corpus.remove(&item);
        }
        self.record_drive(id, true);
        for user in &mut self.corpus.users {
            user.drives.remove(id);
        }
        Ok(())
    }

    fn item_mut(&mut self, id: &str) -> MResult<&mut Item> {
        let id = self.corpus.resolve(id).to_string();
        let hidden = self.corpus.items.get(&id).is_some_and(|i| !self.corpus.sees(self.corpus.acting.as_deref(), i));
        if hidden {
            return Err(MutateError::NotFound(id));
        }
        match self.corpus.items.get_mut(&id) {
            Some(item) if !item.is_root => Ok(item),
            Some(_) => Err(MutateError::Invalid(format!("{id} is a root folder"))),
            None => Err(MutateError::NotFound(id)),
        }
    }

    /// Bump version (and modifiedTime when `modified`), then log a change.
    fn touch(&mut self, id: &str, modified: bool) {
        let now = self.corpus.tick();
        if let Some(item) = self.corpus.items.get_mut(id) {
            item.version += 1;
            if modified {
                item.modified_ms = now;
            }
        }
        self.record(id);
    }

    fn placement(&mut self, parent: &str) -> MResult<Placement> {
        let parent = self.corpus.resolve(parent).to_string();
        let p = self.corpus.items.get(&parent).filter(|p| self.corpus.sees(self.corpus.acting.as_deref(), p));
        let p = p.ok_or_else(|| MutateError::NotFound(parent.clone()))?;
        if !p.is_folder() {
            return Err(MutateError::Invalid(format!("parent {parent} is not a folder")));
        }
        let drive_id = p.drive_id.clone();
        let at_ms = self.corpus.tick();
        Ok(Placement { parents: vec![parent], drive_id, at_ms })
    }

    fn create_file(&mut self, parent: &str, name: &str, size: u64, mime: &str) -> MResult<String> {
        let place = self.placement(parent)?;
        let id = self.corpus.add_binary(name, size, mime, place);
        self.record(&id);
        Ok(id)
    }

    fn create_shortcut(&mut self, parent: &str, name: &str, target: &str) -> MResult<String> {
        let place = self.placement(parent)?;
        let target_mime = self.corpus.items.get(target).map_or("application/octet-stream".into(), |t| t.mime.clone());
        let id = self.corpus.add_shortcut(name, target, &target_mime, place);
        self.record(&id);
        Ok(id)
    }

    fn create_link_shared(&mut self, name: &str, size: u64) -> String {
        let owners_folder = self.corpus.rng.file_id();
        let at_ms = self.corpus.tick();
        let place = Placement { parents: vec![owners_folder], drive_id: None, at_ms };
        let id = self.corpus.add_binary(name, size, mime_for_name(name), place);
        if let Some(item) = self.corpus.items.get_mut(&id) {
            item.foreign = true;
            item.resource_key = Some(format!("0-{}", &id[..12.min(id.len())]));
        }
        id
    }

    fn copy_file(&mut self, id: &str, parent: &str, name: &str) -> MResult<String> {
        let original = self.corpus.items.get(id).ok_or_else(|| MutateError::NotFound(id.to_string()))?;
        let Kind::Binary { blob, .. } = &original.kind else {
            return Err(MutateError::Invalid(format!("{id} has no binary content to copy")));
        };
        let (blob, mime) = (blob.clone(), original.mime.clone());
        let place = self.placement(parent)?;
        let copy = self.corpus.add_binary(name, blob.size, &mime, place);
        if let Some(item) = self.corpus.items.get_mut(&copy) {
            item.kind = Kind::Binary { blob, rev: 0 };
        }
        self.record(&copy);
        Ok(copy)
    }

    fn create_doc(&mut self, parent: &str, name: &str, kind: DocKind) -> MResult<String> {
        let place = self.placement(parent)?;
        let base = self.corpus.rng.range(2 * 1024, 256 * 1024);
        let id = self.corpus.add_doc(name, kind, base, place);
        self.record(&id);
        Ok(id)
    }

    fn update_content(&mut self, id: &str, size: Option<u64>) -> MResult<()> {
        let item = self.item_mut(id)?;
        let Kind::Binary { blob, rev } = &item.kind else {
            return Err(MutateError::Invalid(format!("{id} has no binary content")));
        };
        let (rev, size) = (rev + 1, size.unwrap_or(blob.size));
        item.kind = Kind::Binary { blob: Blob::new(&item.id, rev, size), rev };
        let id = item.id.clone();
        self.touch(&id, true);
        Ok(())
    }

    fn edit_doc(&mut self, id: &str) -> MResult<()> {
        let item = self.item_mut(id)?;
        let Kind::Doc { kind, rev, export_base } = item.kind.clone() else {
            return Err(MutateError::Invalid(format!("{id} is not a Google Docs Editors file")));
        };
        item.kind = Kind::Doc { kind, rev: rev + 1, export_base };
        let id = item.id.clone();
        self.touch(&id, true);
        Ok(())
    }

    fn rename(&mut self, id: &str, name: &str) -> MResult<()> {
        let item = self.item_mut(id)?;
        item.name = name.to_string();
        let id = item.id.clone();
        self.touch(&id, true);
        Ok(())
    }

    fn move_item(&mut self, id: &str, new_parent: &str) -> MResult<()> {
        let id = self.item_mut(id)?.id.clone();
        let drive = self.corpus.items.get(&id).and_then(|i| i.drive_id.clone());
        let place = self.placement(new_parent)?;
        let target = place.parents[0].clone();
        if place.drive_id != drive {
            return Err(MutateError::Invalid("moving between drives is not supported".into()));
        }
        if self.corpus.is_self_or_descendant(&id, &target) {
            return Err(MutateError::Invalid(format!("cannot move {id} into itself or a descendant")));
        }
        if let Some(item) = self.corpus.items.get_mut(&id) {
            item.parents = vec![target];
        }
        // Like Drive: only the moved item changes. Its descendants' own records stay as they are,
        // also when the move takes them out of (or into) a trashed folder, so no change is logged
        // for them: a mirror must bring a folder's subtree along by itself.
        self.touch(&id, false);
        Ok(())
    }

    fn set_trashed(&mut self, id: &str, trashed: bool) -> MResult<()> {
        let item = self.item_mut(id)?;
        item.explicitly_trashed = trashed;
        let id = item.id.clone();
        self.touch(&id, false);
        for d in self.corpus.descendants(&id) {
            self.touch(&d, false);
        }
        Ok(())
    }

    fn delete(&mut self, id: &str) -> MResult<()> {
        let id = self.item_mut(id)?.id.clone();
        let below = self.corpus.descendants(&id);
        let mut doomed = std::collections::HashSet::from([id.clone()]);
        loop {
            let before = doomed.len();
            for d in &below {
                let orphan = self.corpus.items.get(d).is_some_and(|i| i.parents.iter().all(|p| doomed.contains(p)));
                if orphan {
                    doomed.insert(d.clone());
                }
            }
            if doomed.len() == before {
                break;
            }
        }
        for d in below.iter().filter(|d| !doomed.contains(*d)) {
            if let Some(item) = self.corpus.items.get_mut(d) {
                let kept: Vec<String> = item.parents.iter().filter(|p| !doomed.contains(*p)).cloned().collect();
                if kept.len() != item.parents.len() {
                    item.parents = kept;
                    self.touch(d, false);
                }
            }
        }
        // Who saw each doomed item, asked before any is gone (sharing reaches down from ancestors).
        let viewers: std::collections::HashMap<String, _> =
            doomed.iter().map(|d| (d.clone(), self.corpus.viewers_of(d))).collect();
        for d in std::iter::once(&id).chain(below.iter().filter(|d| doomed.contains(*d))) {
            if let Some(item) = self.corpus.remove(d) {
                self.record_removed(d, item.drive_id, viewers.get(d).cloned().flatten());
            }
        }
        Ok(())
    }

    /// `count` random valid operations; returns created ids.
    fn random(&mut self, count: usize, seed: u64) -> Vec<String> {
        let mut rng = Rng64::new(seed, 0x6d75_7461_7465);
        let mut created = Vec::new();
        for n in 0..count {
            let ops = match rng.below(100) {
                0..=79 => self.random_op(&mut rng, n).into_iter().collect(),
                _ => self.everyday_pattern(&mut rng, n),
            };
            for op in ops {
                if let Ok(ids) = self.apply_as(&op) {
                    created.extend(ids);
                }
            }
        }
        created
    }

    /// The compound changes people make every day that stress key ownership and subtrees: a name
    /// freed by a rename or delete taken at once by a new file, a name of the form `x (<id of another
    /// file>).ext`, a folder moved into a folder created just before, a folder moved out of a trashed
    /// folder, a folder renamed to `.` or `..`.
    fn everyday_pattern(&mut self, rng: &mut Rng64, n: usize) -> Vec<MutateOp> {
        let files = self.ids_where(|i| matches!(i.kind, Kind::Binary { .. }));
        let folders = self.ids_where(|i| i.is_folder() && i.drive_id.is_none());
        let new_file = |parent: String, name: String| MutateOp::Create {
            parent,
            name,
            size: 100 + n as u64,
            mime: None,
            user: None,
        };
        match rng.below(6) {
            5 => {
                // A copy (same bytes, so the same md5) next to the original or elsewhere, then often
                // a change to the original: copies must keep their own bytes.
                let Some(id) = rng.pick(&files).cloned() else { return vec![] };
                let parent = self.random_folder(rng, None);
                let copy = MutateOp::Copy { id: id.clone(), parent, name: format!("copy-{n}.bin"), user: None };
                match rng.below(2) {
                    0 => vec![copy, MutateOp::UpdateContent { id, size: None, user: None }],
                    _ => vec![copy, MutateOp::Delete { id, user: None }],
                }
            }
            0 | 1 => {
                let Some(id) = rng.pick(&files).cloned() else { return vec![] };
                let Some(item) = self.corpus.items.get(&id) else { return vec![] };
                let (name, parent) = (item.name.clone(), item.parents.first().cloned().unwrap_or_default());
                let free = if rng.below(2) == 0 {
                    MutateOp::Rename { id, name: format!("freed-{n}.bin"), user: None }
                } else {
                    MutateOp::Delete { id, user: None }
                };
                vec![free, new_file(parent, name)]
            }
            2 => {
                let Some(other) = rng.pick(&files).cloned() else { return vec![] };
                let Some(item) = self.corpus.items.get(&other) else { return vec![] };
                let parent = item.parents.first().cloned().unwrap_or_default();
                vec![new_file(parent, format!("x ({other}).txt"))]
            }
            3 => {
                let Some(moved) = rng.pick(&folders).cloned() else { return vec![] };
                let root = self.corpus.root_for(self.corpus.acting.as_deref()).to_string();
                let home = MutateOp::CreateFolder { parent: root, name: format!("new-home-{n}"), user: None };
                match self.apply_as(&home).ok().and_then(|ids| ids.into_iter().next()) {
                    Some(new_parent) => vec![MutateOp::Move { id: moved, new_parent, user: None }],
                    None => vec![],
                }
            }
            _ => {
                let Some(folder) = rng.pick(&folders).cloned() else { return vec![] };
                let parent =
                    self.corpus.items.get(&folder).and_then(|i| i.parents.first().cloned()).unwrap_or_default();
                let dots = if rng.below(2) == 0 { "." } else { ".." };
                let Some(inner) = self.ids_where(|i| i.is_folder() && i.parents.contains(&folder)).first().cloned()
                else {
                    return vec![MutateOp::Rename { id: folder, name: dots.into(), user: None }];
                };
                vec![
                    MutateOp::Trash { id: folder.clone(), user: None },
                    MutateOp::Move { id: inner.clone(), new_parent: parent, user: None },
                    MutateOp::Rename { id: inner, name: dots.into(), user: None },
                ]
            }
        }
    }

    /// The user's own non-root items in listing order (for deterministic picks): random changes play
    /// the user, who does not rearrange what other people shared with them.
    fn ids_where(&self, pred: impl Fn(&Item) -> bool) -> Vec<String> {
        let acting = self.corpus.acting.as_deref();
        let own = |i: &Item| i.drive_id.is_some() || i.owner.as_deref() == acting;
        let mine = |i: &Item| !i.foreign && own(i) && self.corpus.sees(acting, i) && pred(i);
        self.corpus.order.values().filter(|id| self.corpus.items.get(*id).is_some_and(mine)).cloned().collect()
    }

    fn random_folder(&self, rng: &mut Rng64, drive: Option<&String>) -> String {
        let mut folders = self.ids_where(|i| i.is_folder() && i.drive_id.as_ref() == drive);
        let root = drive.cloned().unwrap_or_else(|| self.corpus.root_for(self.corpus.acting.as_deref()).to_string());
        folders.push(root.clone());
        rng.pick(&folders).cloned().unwrap_or(root)
    }

    fn random_op(&mut self, rng: &mut Rng64, n: usize) -> Option<MutateOp> {
        let any = self.ids_where(|_| true);
        let roll = rng.below(100);
        let op = match roll {
            0..=17 => {
                let parent = self.random_folder(rng, None);
                let size = if rng.below(10) == 0 { 0 } else { rng.range(1, 64 * 1024) };
                MutateOp::Create {
                    parent,
                    name: format!("new-{seed}-{n}.txt", seed = rng.below(1000)),
                    size,
                    mime: None,
                    user: None,
                }
            }
            18..=37 => {
                let files = self.ids_where(|i| matches!(i.kind, Kind::Binary { .. }));
                let id = rng.pick(&files)?.clone();
                let size = if rng.below(2) == 0 { None } else { Some(rng.range(0, 128 * 1024)) };
                MutateOp::UpdateContent { id, size, user: None }
            }
            38..=52 => MutateOp::Rename { id: rng.pick(&any)?.clone(), name: random_new_name(rng, n), user: None },
            53..=62 => {
                let id = rng.pick(&any)?.clone();
                let drive = self.corpus.items.get(&id)?.drive_id.clone();
                MutateOp::Move { new_parent: self.random_folder(rng, drive.as_ref()), id, user: None }
            }
            63..=72 => MutateOp::Trash { id: rng.pick(&any)?.clone(), user: None },
            73..=79 => {
                let trashed = self.ids_where(|i| i.explicitly_trashed);
                MutateOp::Untrash { id: rng.pick(&trashed).or(rng.pick(&any))?.clone(), user: None }
            }
            80..=86 => {
                let leaves = self.ids_where(|i| !i.is_folder());
                let pool = if rng.below(4) == 0 { &any } else { &leaves };
                MutateOp::Delete { id: rng.pick(pool)?.clone(), user: None }
            }
            87..=91 => {
                const KINDS: [DocKind; 3] = [DocKind::Document, DocKind::Spreadsheet, DocKind::Presentation];
                let kind = KINDS[rng.below(3) as usize];
                MutateOp::CreateGdoc {
                    parent: self.random_folder(rng, None),
                    name: format!("Doc {n}"),
                    kind,
                    user: None,
                }
            }
            _ => {
                let docs = self.ids_where(|i| matches!(i.kind, Kind::Doc { .. }));
                MutateOp::EditGdoc { id: rng.pick(&docs)?.clone(), user: None }
            }
        };
        Some(op)
    }
}

/// Names a random rename picks: usually plain, one time in three hostile (separators, dot segments,
/// padding, control characters, NFC/NFD twins, emoji, case twins, over-long), exact or suffixed.
fn random_new_name(rng: &mut Rng64, n: usize) -> String {
    const HOSTILE: [&str; 12] = [
        "..",
        ".",
        "a/b",
        "back\\slash",
        "  padded  ",
        "bell\u{7}ctl",
        "caf\u{e9}",
        "cafe\u{301}",
        "\u{1f600} emoji",
        "README",
        "readme",
        "x",
    ];
    match rng.below(6) {
        0 => HOSTILE[rng.below(HOSTILE.len() as u64) as usize].to_string(),
        1 => format!("{} {n}", HOSTILE[rng.below(HOSTILE.len() as u64) as usize]),
        2 => "\u{e9}".repeat(140),
        _ => format!("renamed-{n}-{}", rng.below(1000)),
    }
}

/// Domain mode: accounts, sharing and shared-drive membership.
impl State {
    fn require_domain(&self, what: &str) -> MResult<()> {
        if self.corpus.is_domain() {
            Ok(())
        } else {
            Err(MutateError::Invalid(format!("{what} needs a domain (EmulatorConfig.domain_users)")))
        }
    }

    fn known_user(&self, email: &str) -> MResult<String> {
        self.corpus.user(email).map(|u| u.email.clone()).ok_or_else(|| MutateError::NotFound(format!("user {email}")))
    }

    fn add_user(&mut self, email: &str, admin: bool, suspended: bool) -> MResult<String> {
        self.require_domain("add_user")?;
        if self.corpus.user(email).is_some() {
            return Err(MutateError::Invalid(format!("user {email} already exists")));
        }
        Ok(self.corpus.add_user(email, admin, suspended))
    }

    fn suspend_user(&mut self, email: &str) -> MResult<()> {
        self.require_domain("suspend_user")?;
        let user = self.corpus.user_mut(email).ok_or_else(|| MutateError::NotFound(format!("user {email}")))?;
        user.suspended = true;
        Ok(())
    }

    /// `id` and everything below it, in listing order.
    fn with_descendants(&self, id: &str) -> Vec<String> {
        std::iter::once(id.to_string()).chain(self.corpus.descendants(id)).collect()
    }

    fn share(&mut self, id: &str, email: &str) -> MResult<()> {
        self.require_domain("share")?;
        let email = self.known_user(email)?;
        let item = self.corpus.items.get(id).ok_or_else(|| MutateError::NotFound(id.to_string()))?;
        if item.drive_id.is_some() || item.is_root {
            return Err(MutateError::Invalid(format!("{id} is a root or in a shared drive (members see it)")));
        }
        let at = self.corpus.tick();
        if let Some(user) = self.corpus.user_mut(&email) {
            user.shared.insert(id.to_string(), at);
        }
        let only = std::collections::BTreeSet::from([email]);
        for d in self.with_descendants(id) {
            self.record_for(&d, false, Some(only.clone()));
        }
        Ok(())
    }

    fn unshare(&mut self, id: &str, email: &str) -> MResult<()> {
        self.require_domain("unshare")?;
        let email = self.known_user(email)?;
        let was_shared = self.corpus.user_mut(&email).and_then(|u| u.shared.remove(id)).is_some();
        if !was_shared {
            return Err(MutateError::Invalid(format!("{id} is not shared with {email}")));
        }
        let only = std::collections::BTreeSet::from([email.clone()]);
        for d in self.with_descendants(id) {
            let still_seen = self.corpus.items.get(&d).is_some_and(|i| self.corpus.sees(Some(&email), i));
            if !still_seen {
                self.record_for(&d, true, Some(only.clone()));
            }
        }
        Ok(())
    }

    fn set_member(&mut self, drive_id: &str, email: &str, member: bool) -> MResult<()> {
        self.require_domain(if member { "add_member" } else { "remove_member" })?;
        let email = self.known_user(email)?;
        if self.corpus.drive(drive_id).is_none() {
            return Err(MutateError::NotFound(drive_id.to_string()));
        }
        let changed = match self.corpus.user_mut(&email) {
            Some(u) if member => u.drives.insert(drive_id.to_string()),
            Some(u) => u.drives.remove(drive_id),
            None => false,
        };
        if !changed {
            let state = if member { "already" } else { "not" };
            return Err(MutateError::Invalid(format!("{email} is {state} a member of {drive_id}")));
        }
        self.record_drive_for(drive_id, !member, Some(std::collections::BTreeSet::from([email])));
        Ok(())
    }
}
