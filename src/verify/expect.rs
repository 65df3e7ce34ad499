//! The key each Drive item must have in the mirror, by the rules `run` follows
//! ([`crate::mirror::placement`]): the plain name first, then ` (fileId)`, ` (fileId) (2)`, … while
//! another item holds the name's collision class. A file keeps the key its record holds as long as that
//! is still one of its candidates in its folder: a mirror at rest does not move a file until the file
//! changes, and neither does `verify`. This module is `verify`'s adapter to that resolver: Drive's
//! listing for the folders, the store's committed claims and this pass's own for the holders; it
//! never waits.

use super::VerifyError;
pub use crate::mirror::placement::KeyRules;
use crate::mirror::placement::{self, Folder, Folders, Found, KeyFor, KeyHolders, NoFreeKey, Roots, Spot};
use crate::model::{DriveFile, DriveId, FileId, ObjectKey};
use futures::FutureExt;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;

/// Who holds key classes: the store's committed claims, then the keys assigned earlier in this pass.
pub trait Claims {
    /// The item holding `class`, if any.
    fn holder(&mut self, class: &str) -> Result<Option<FileId>, VerifyError>;
    /// Notes that `id` takes `class` (an item with no committed claim).
    fn take(&mut self, class: &str, id: &FileId) -> Result<(), VerifyError>;
}

/// Where recorded keys come from: the store's file and folder records.
pub trait Records {
    /// The key recorded for item `id`, if any.
    fn recorded_key(&mut self, id: &FileId) -> Result<Option<ObjectKey>, VerifyError>;
}

impl From<NoFreeKey> for VerifyError {
    fn from(e: NoFreeKey) -> Self {
        VerifyError::NoKey(e.to_string())
    }
}

/// [`Claims`] as the resolver's key holders: a class is free for `id` when nobody or `id` holds it.
struct Holding<'c, C>(&'c mut C);

impl<C: Claims> KeyHolders for Holding<'_, C> {
    type Error = VerifyError;

    fn may_take(
        &mut self,
        class: &str,
        id: &FileId,
        _what: KeyFor,
    ) -> impl Future<Output = Result<bool, VerifyError>> + Send {
        std::future::ready(self.0.holder(class).map(|h| h.is_none_or(|h| h == *id)))
    }

    fn take(&mut self, class: &str, id: &FileId) -> Result<(), VerifyError> {
        self.0.take(class, id)
    }
}

/// The resolver's answer: `verify`'s adapters never wait, so it is ready at once.
fn settle<T>(f: impl Future<Output = Result<T, VerifyError>>) -> Result<T, VerifyError> {
    f.now_or_never().unwrap_or_else(|| Err(VerifyError::NoKey("verify's key resolution waited".into())))
}

/// The key of item `id` named `name` (plus `ext` for an export or a link) inside `parent`, keeping
/// its `recorded` key while that is still right.
pub fn key_in(
    rules: &KeyRules,
    claims: &mut impl Claims,
    id: &FileId,
    parent: &str,
    name: (&str, Option<&str>),
    recorded: Option<&ObjectKey>,
) -> Result<String, VerifyError> {
    settle(placement::key_in(rules, &mut Holding(claims), id, parent, name, KeyFor::File, recorded))
}

/// A folder as listed by Drive.
#[derive(Clone, Debug)]
struct ListedFolder {
    name: String,
    parent: Option<FileId>,
    drive_id: Option<DriveId>,
    /// Shared with the user directly (`sharedWithMeTime`).
    shared_with_me: bool,
}

/// The folders of every drive in scope, as Drive lists them, and the keys they resolve to.
#[derive(Default)]
pub struct FolderTree {
    my_drive_root: Option<FileId>,
    /// Shared drives in scope with their names.
    shared: BTreeMap<DriveId, String>,
    /// `[source] shared_with_me`: items shared with the user, outside My Drive, go under `shared-with-me/`.
    shared_with_me: bool,
    folders: HashMap<FileId, ListedFolder>,
    /// Resolved keys (`None`: outside the scope).
    keys: HashMap<FileId, Option<String>>,
    /// Shared-drive root keys, claimed in drive id order before the first item is placed.
    roots: Option<BTreeMap<DriveId, String>>,
}

/// Where an item sits, as the tree resolves it: its first parent, its shared drive, and whether it
/// was shared with the user directly.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    /// The item's first parent, if Drive reports one.
    pub parent: Option<&'a FileId>,
    /// The shared drive holding it.
    pub drive: Option<&'a DriveId>,
    /// `sharedWithMeTime` is set.
    pub shared_with_me: bool,
}

impl<'a> Placement<'a> {
    /// Where `f` sits.
    pub fn of(f: &'a DriveFile) -> Self {
        Placement { parent: f.parents.first(), drive: f.drive_id.as_ref(), shared_with_me: f.shared_with_me }
    }

    fn spot(&self) -> Spot {
        Spot { parent: self.parent.cloned(), drive: self.drive.cloned(), shared_with_me: self.shared_with_me }
    }
}

impl FolderTree {
    /// A tree for the drives in scope.
    pub fn new(my_drive_root: Option<FileId>, shared: impl IntoIterator<Item = (DriveId, String)>) -> Self {
        FolderTree { my_drive_root, shared: shared.into_iter().collect(), ..Default::default() }
    }

    /// The same tree, with the items shared with the user mirrored (`[source] shared_with_me`).
    pub fn with_shared_with_me(self, on: bool) -> Self {
        FolderTree { shared_with_me: on, ..self }
    }

    /// Adds a listed, non-trashed folder.
    pub fn add(&mut self, f: &DriveFile) {
        if f.is_folder() && !f.trashed {
            let folder = ListedFolder {
                name: f.name.clone(),
                parent: f.parents.first().cloned(),
                drive_id: f.drive_id.clone(),
                shared_with_me: f.shared_with_me,
            };
            self.folders.insert(f.id.clone(), folder);
        }
    }

    /// Folders listed.
    pub fn len(&self) -> usize {
        self.folders.len()
    }

    /// True when no folder was listed.
    pub fn is_empty(&self) -> bool {
        self.folders.is_empty()
    }

    /// The Drive path and ancestor ids of an item named `name` in folder `parent` (none for a top item
    /// shared with the user), for the selection.
    pub fn place(&self, parent: Option<&FileId>, name: &str) -> (String, Vec<FileId>) {
        match parent.filter(|p| self.folders.contains_key(*p) || self.is_root(p)) {
            Some(parent) => crate::stages::selection::place_of(parent, name, |id| {
                self.folders.get(id).map(|f| (f.name.as_str(), f.parent.as_ref()))
            }),
            None => (name.to_string(), Vec::new()),
        }
    }

    fn is_root(&self, id: &FileId) -> bool {
        self.my_drive_root.as_ref() == Some(id) || self.shared.contains_key(&DriveId(id.0.clone()))
    }

    /// The key prefix of the folder holding an item placed at `item`, or `None` when the item lies
    /// outside the scope (in a trashed folder, in a drive not mirrored, shared with the user when
    /// that is not mirrored…).
    pub fn parent_key(
        &mut self,
        rules: &KeyRules,
        claims: &mut impl Claims,
        records: &mut impl Records,
        item: Placement<'_>,
    ) -> Result<Option<String>, VerifyError> {
        let roots = match self.roots.take() {
            Some(roots) => roots,
            None => self.root_keys(rules, claims, records)?,
        };
        let mut listed = Listed { tree: self, roots, records };
        let key = settle(placement::parent_key(rules, &mut listed, &mut Holding(claims), item.spot()));
        self.roots = Some(listed.roots);
        key
    }

    /// The key of each shared drive's root in scope, in drive id order (as the planner assigns them).
    fn root_keys(
        &self,
        rules: &KeyRules,
        claims: &mut impl Claims,
        records: &mut impl Records,
    ) -> Result<BTreeMap<DriveId, String>, VerifyError> {
        let base = placement::shared_drives_base(rules);
        let mut roots = BTreeMap::new();
        for (d, name) in &self.shared {
            let root = FileId(d.0.clone());
            let recorded = records.recorded_key(&root)?;
            let mut holders = Holding(&mut *claims);
            let name = (name.as_str(), None);
            let key = placement::key_in(rules, &mut holders, &root, &base, name, KeyFor::Folder, recorded.as_ref());
            roots.insert(d.clone(), settle(key)?);
        }
        Ok(roots)
    }
}

/// The tree as the resolver's [`Folders`]: Drive's listing, the keys resolved in this pass, and the
/// store's records (a recorded folder key stands while still right).
struct Listed<'t, R> {
    tree: &'t mut FolderTree,
    roots: BTreeMap<DriveId, String>,
    records: &'t mut R,
}

impl<R: Records> Folders for Listed<'_, R> {
    type Error = VerifyError;

    fn roots(&self) -> Roots<'_> {
        Roots {
            my_drive_root: self.tree.my_drive_root.as_ref(),
            drives: &self.tree.shared,
            keys: &self.roots,
            shared_with_me: self.tree.shared_with_me,
        }
    }

    fn folder(&mut self, id: &FileId, _from: &Spot) -> impl Future<Output = Result<Found, VerifyError>> + Send {
        let found = match (self.tree.keys.get(id), self.tree.folders.get(id)) {
            (Some(Some(key)), _) => Found::Key(key.clone()),
            (Some(None), _) => Found::Outside,
            (None, Some(f)) => Found::Folder(Folder {
                id: id.clone(),
                name: f.name.clone(),
                spot: Spot { parent: f.parent.clone(), drive: f.drive_id.clone(), shared_with_me: f.shared_with_me },
            }),
            (None, None) => Found::Hidden,
        };
        std::future::ready(Ok(found))
    }

    fn recorded(&mut self, id: &FileId) -> Result<Option<ObjectKey>, VerifyError> {
        self.records.recorded_key(id)
    }

    fn placed(&mut self, folder: Folder, key: &str) {
        self.tree.keys.insert(folder.id, Some(key.to_string()));
    }

    fn outside(&mut self, chain: Vec<Folder>, _known: bool) {
        for folder in chain {
            self.tree.keys.insert(folder.id, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyMode;
    use crate::mirror::keys;
    use std::collections::HashMap;

    #[derive(Default)]
    struct MapClaims(HashMap<String, FileId>);
    impl Claims for MapClaims {
        fn holder(&mut self, class: &str) -> Result<Option<FileId>, VerifyError> {
            Ok(self.0.get(class).cloned())
        }
        fn take(&mut self, class: &str, id: &FileId) -> Result<(), VerifyError> {
            self.0.entry(class.to_string()).or_insert_with(|| id.clone());
            Ok(())
        }
    }

    #[derive(Default)]
    struct MapRecords(HashMap<FileId, ObjectKey>);
    impl Records for MapRecords {
        fn recorded_key(&mut self, id: &FileId) -> Result<Option<ObjectKey>, VerifyError> {
            Ok(self.0.get(id).cloned())
        }
    }

    fn id(s: &str) -> FileId {
        FileId(s.into())
    }

    fn rules() -> KeyRules {
        KeyRules { prefix: "pre".into(), mode: KeyMode::Local, max_key_bytes: keys::MAX_KEY_BYTES }
    }

    fn folder(i: &str, name: &str, parent: &str, drive: Option<&str>) -> DriveFile {
        DriveFile {
            id: id(i),
            name: name.into(),
            mime_type: crate::model::FOLDER_MIME.into(),
            parents: vec![id(parent)],
            size: None,
            md5: None,
            sha256: None,
            version: 1,
            modified_time: None,
            trashed: false,
            drive_id: drive.map(|d| DriveId(d.into())),
            shortcut_target: None,
            export_links: Default::default(),
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

    #[test]
    fn duplicate_names_take_the_claimed_key_or_the_next_free_candidate() {
        let (mut claims, r) = (MapClaims::default(), rules());
        claims.0.insert(keys::collision_class("pre/my-drive/a.txt"), id("f1"));
        let k2 = key_in(&r, &mut claims, &id("f2"), "pre/my-drive", ("a.txt", None), None).unwrap();
        assert_eq!(k2, "pre/my-drive/a (f2).txt");
        let k1 = key_in(&r, &mut claims, &id("f1"), "pre/my-drive", ("a.txt", None), None).unwrap();
        assert_eq!(k1, "pre/my-drive/a.txt");
        // Case twins collide too.
        let k3 = key_in(&r, &mut claims, &id("f3"), "pre/my-drive", ("A.TXT", None), None).unwrap();
        assert_eq!(k3, "pre/my-drive/A (f3).TXT");
    }

    #[test]
    fn a_recorded_disambiguated_key_stands_while_the_file_is_unchanged() {
        let (mut claims, r) = (MapClaims::default(), rules());
        let recorded = ObjectKey("pre/my-drive/a (f2).txt".into());
        claims.0.insert(keys::collision_class(&recorded.0), id("f2"));
        let k = key_in(&r, &mut claims, &id("f2"), "pre/my-drive", ("a.txt", None), Some(&recorded)).unwrap();
        assert_eq!(k, recorded.0, "the plain name is free, but the file has not changed since");
        // A record from another name or folder is not a candidate: the file's key is computed afresh.
        let k = key_in(&r, &mut claims, &id("f2"), "pre/my-drive", ("b.txt", None), Some(&recorded)).unwrap();
        assert_eq!(k, "pre/my-drive/b.txt");
    }

    #[test]
    fn folders_resolve_through_their_parents_to_the_drive_roots() {
        let (mut claims, mut records, r) = (MapClaims::default(), MapRecords::default(), rules());
        let mut tree = FolderTree::new(Some(id("root")), [(DriveId("sd".into()), "Team".into())]);
        tree.add(&folder("a", "A", "root", None));
        tree.add(&folder("b", "B/../x", "a", None));
        tree.add(&folder("t", "Docs", "sd", Some("sd")));
        tree.add(&folder("o", "Other", "nowhere", None));
        let key = tree.parent_key(&r, &mut claims, &mut records, at(&id("b"), None)).unwrap();
        assert_eq!(key.as_deref(), Some("pre/my-drive/A/B_.._x"));
        let sd = DriveId("sd".into());
        let key = tree.parent_key(&r, &mut claims, &mut records, at(&id("t"), Some(&sd))).unwrap();
        assert_eq!(key.as_deref(), Some("pre/shared-drives/Team/Docs"));
        let key = tree.parent_key(&r, &mut claims, &mut records, at(&id("root"), None)).unwrap();
        assert_eq!(key.as_deref(), Some("pre/my-drive"));
        let key = tree.parent_key(&r, &mut claims, &mut records, at(&id("o"), None)).unwrap();
        assert_eq!(key, None, "a folder whose chain reaches no drive in scope is outside it");
        let other = DriveId("other".into());
        let key = tree.parent_key(&r, &mut claims, &mut records, at(&id("x"), Some(&other))).unwrap();
        assert_eq!(key, None, "a drive not in scope");
    }

    fn at<'a>(parent: &'a FileId, drive: Option<&'a DriveId>) -> Placement<'a> {
        Placement { parent: Some(parent), drive, shared_with_me: false }
    }

    #[test]
    fn items_shared_with_the_user_resolve_under_shared_with_me_only_when_mirrored() {
        let (mut claims, mut records, r) = (MapClaims::default(), MapRecords::default(), rules());
        let shared = |i: &str, name: &str, parent: Option<&str>| DriveFile {
            parents: parent.map(|p| vec![id(p)]).unwrap_or_default(),
            shared_with_me: true,
            ..folder(i, name, "-", None)
        };
        let mut tree = FolderTree::new(Some(id("root")), []).with_shared_with_me(true);
        tree.add(&shared("s", "From Ana", None));
        tree.add(&folder("d", "drafts", "s", None));
        tree.add(&folder("mine", "Mine", "hidden", None));
        let key = tree.parent_key(&r, &mut claims, &mut records, at(&id("d"), None)).unwrap();
        assert_eq!(key.as_deref(), Some("pre/shared-with-me/From Ana/drafts"));
        let top_file = Placement { parent: Some(&id("hidden")), drive: None, shared_with_me: true };
        let key = tree.parent_key(&r, &mut claims, &mut records, top_file).unwrap();
        assert_eq!(key.as_deref(), Some("pre/shared-with-me"), "a parent the user cannot see");
        let key = tree.parent_key(&r, &mut claims, &mut records, at(&id("mine"), None)).unwrap();
        assert_eq!(key, None, "not shared with the user directly: outside");
        assert_eq!(tree.place(Some(&id("d")), "x.md").0, "From Ana/drafts/x.md");
        assert_eq!(tree.place(Some(&id("hidden")), "budget.pdf").0, "budget.pdf");
        let mut off = FolderTree::new(Some(id("root")), []);
        off.add(&shared("s", "From Ana", None));
        off.add(&folder("d", "drafts", "s", None));
        assert_eq!(off.parent_key(&r, &mut claims, &mut records, at(&id("d"), None)).unwrap(), None);
    }

    #[test]
    fn a_segment_shortened_before_its_folder_moved_is_kept_where_it_now_lies() {
        let r = rules();
        let mut claims = MapClaims::default();
        let name = format!("{}.txt", "long".repeat(80));
        let full = keys::candidate_segment(&name, None, None, r.mode);
        let kept = ObjectKey(format!("pre/my-drive/moved/{}", keys::shorten_segment(&full, 100)));
        claims.0.insert(keys::collision_class(&kept.0), id("f1"));
        let k = key_in(&r, &mut claims, &id("f1"), "pre/my-drive/moved", (&name, None), Some(&kept)).unwrap();
        assert_eq!(k, kept.0);
        // Not when it lies in another folder, nor when it is some other name's shortening.
        let elsewhere = ObjectKey(kept.0.replace("/moved/", "/other/"));
        let k = key_in(&r, &mut claims, &id("f1"), "pre/my-drive/moved", (&name, None), Some(&elsewhere)).unwrap();
        assert_eq!(k, format!("pre/my-drive/moved/{full}"));
    }
}
