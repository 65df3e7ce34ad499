//! The key each Drive item must have in the mirror, decided by the planner's rules: the plain name
//! first, then ` (fileId)`, ` (fileId) (2)`, … while another item holds the name's collision class. A
//! file keeps the key its record holds as long as that is still one of its candidates in its folder:
//! a mirror at rest does not move a file until the file changes, and neither does `verify`.

use super::VerifyError;
use crate::config::KeyMode;
use crate::dest::keys;
use crate::model::{DriveFile, DriveId, FileId, ObjectKey};
use std::collections::HashMap;

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

/// Candidates tried before giving up, as the planner does.
const MAX_CANDIDATES: u32 = 1000;
/// A recorded key is accepted when it is one of the first candidates (nobody disambiguates further).
const RECORDED_CANDIDATES: u32 = 32;
/// Folder depth followed when resolving a path (Drive has no cycles; this bounds a broken server).
const MAX_DEPTH: usize = 128;

/// The key layout: prefix and alphabet, as `run` uses them.
#[derive(Clone, Debug)]
pub struct KeyRules {
    /// Destination prefix (may be empty).
    pub prefix: String,
    /// Key alphabet.
    pub mode: KeyMode,
    /// Longest whole key (`[destination] max_key_bytes`).
    pub max_key_bytes: usize,
}

impl KeyRules {
    /// `rel` under the prefix.
    pub fn join(&self, rel: &str) -> String {
        if self.prefix.is_empty() { rel.to_string() } else { format!("{}/{rel}", self.prefix) }
    }

    /// `key` relative to the prefix (how `verify` reports keys).
    pub fn relative<'k>(&self, key: &'k str) -> &'k str {
        if self.prefix.is_empty() {
            return key;
        }
        key.strip_prefix(&self.prefix).and_then(|k| k.strip_prefix('/')).unwrap_or(key)
    }

    fn candidate(&self, id: &FileId, parent: &str, name: &str, ext: Option<&str>, nth: u32) -> String {
        let suffix = (nth > 0).then_some((id, nth));
        keys::child_key(parent, &keys::candidate_segment(name, ext, suffix, self.mode), self.max_key_bytes)
    }

    /// Whether `recorded` is candidate `nth` as a subtree move leaves it: directly in `parent`, with a
    /// last segment the candidate's own or a shortening of it (made under a longer folder key before
    /// the folder moved; see `keys::derives_from`).
    fn kept_through_move(
        &self,
        id: &FileId,
        parent: &str,
        (name, ext): (&str, Option<&str>),
        nth: u32,
        recorded: &ObjectKey,
    ) -> bool {
        let segment = recorded.0.rsplit('/').next().unwrap_or_default();
        let suffix = (nth > 0).then_some((id, nth));
        let full = keys::candidate_segment(name, ext, suffix, self.mode);
        keys::child_key(parent, segment, self.max_key_bytes) == recorded.0 && keys::derives_from(segment, &full)
    }

    /// The key of item `id` named `name` (plus `ext` for an export) inside `parent`.
    pub fn key_in(
        &self,
        claims: &mut impl Claims,
        id: &FileId,
        parent: &str,
        (name, ext): (&str, Option<&str>),
        recorded: Option<&ObjectKey>,
    ) -> Result<String, VerifyError> {
        let mine = |h: &Option<FileId>| h.as_ref().is_none_or(|h| h == id);
        if let Some(rec) = recorded {
            for nth in 0..=RECORDED_CANDIDATES {
                let key = self.candidate(id, parent, name, ext, nth);
                let kept = key == rec.0 || self.kept_through_move(id, parent, (name, ext), nth, rec);
                if kept && mine(&claims.holder(&keys::collision_class(&rec.0))?) {
                    claims.take(&keys::collision_class(&rec.0), id)?;
                    return Ok(rec.0.clone());
                }
            }
        }
        for nth in 0..=MAX_CANDIDATES {
            let key = self.candidate(id, parent, name, ext, nth);
            let class = keys::collision_class(&key);
            if mine(&claims.holder(&class)?) {
                claims.take(&class, id)?;
                return Ok(key);
            }
        }
        Err(VerifyError::NoKey(format!("no free key for {id} in {parent:?}")))
    }
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
    shared: HashMap<DriveId, String>,
    /// `[source] shared_with_me`: items shared with the user, outside My Drive, go under `shared-with-me/`.
    shared_with_me: bool,
    folders: HashMap<FileId, ListedFolder>,
    /// Resolved keys (`None`: outside the scope).
    keys: HashMap<FileId, Option<String>>,
    /// Resolved shared-drive root keys.
    roots: HashMap<DriveId, String>,
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

    /// The prefix of the items shared with the user when `top` — whose parent is missing or not
    /// listed — is one shared with them directly, outside any shared drive (the planner's rule).
    fn shared_root(&self, rules: &KeyRules, top: Placement<'_>) -> Option<String> {
        let shared = self.shared_with_me && top.shared_with_me && top.drive.is_none();
        shared.then(|| rules.join(crate::stages::planner::SHARED_WITH_ME))
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
        let mut chain: Vec<FileId> = Vec::new();
        let (mut child_parent, mut child_drive, mut child_shared) =
            (item.parent.cloned(), item.drive.cloned(), item.shared_with_me);
        let base = loop {
            if chain.len() > MAX_DEPTH {
                return Ok(None);
            }
            let top = Placement { parent: None, drive: child_drive.as_ref(), shared_with_me: child_shared };
            let Some(at) = child_parent.clone() else { break self.shared_root(rules, top) };
            if let Some(root) = self.root_key(rules, claims, records, &at, child_drive.as_ref())? {
                break Some(root);
            }
            if child_drive.as_ref().is_some_and(|d| !self.shared.contains_key(d)) {
                break None;
            }
            if let Some(known) = self.keys.get(&at) {
                break known.clone();
            }
            let Some(folder) = self.folders.get(&at) else { break self.shared_root(rules, top) };
            child_parent = folder.parent.clone();
            child_drive = folder.drive_id.clone();
            child_shared = folder.shared_with_me;
            chain.push(at);
        };
        let mut key = base;
        for id in chain.into_iter().rev() {
            key = match key {
                Some(parent_key) => {
                    let name = self.folders[&id].name.clone();
                    let recorded = records.recorded_key(&id)?;
                    Some(rules.key_in(claims, &id, &parent_key, (&name, None), recorded.as_ref())?)
                }
                None => None,
            };
            self.keys.insert(id, key.clone());
        }
        Ok(key)
    }

    /// The key of a drive's root when `parent` is one: `my-drive`, or `shared-drives/<name>`.
    fn root_key(
        &mut self,
        rules: &KeyRules,
        claims: &mut impl Claims,
        records: &mut impl Records,
        parent: &FileId,
        drive: Option<&DriveId>,
    ) -> Result<Option<String>, VerifyError> {
        match drive {
            Some(d) if d.0 == parent.0 => {
                if let Some(key) = self.roots.get(d) {
                    return Ok(Some(key.clone()));
                }
                let Some(name) = self.shared.get(d).cloned() else { return Ok(None) };
                let root = FileId(d.0.clone());
                let recorded = records.recorded_key(&root)?;
                let key =
                    rules.key_in(claims, &root, &rules.join("shared-drives"), (&name, None), recorded.as_ref())?;
                self.roots.insert(d.clone(), key.clone());
                Ok(Some(key))
            }
            None if self.my_drive_root.as_ref() == Some(parent) => Ok(Some(rules.join("my-drive"))),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let k2 = r.key_in(&mut claims, &id("f2"), "pre/my-drive", ("a.txt", None), None).unwrap();
        assert_eq!(k2, "pre/my-drive/a (f2).txt");
        let k1 = r.key_in(&mut claims, &id("f1"), "pre/my-drive", ("a.txt", None), None).unwrap();
        assert_eq!(k1, "pre/my-drive/a.txt");
        // Case twins collide too.
        let k3 = r.key_in(&mut claims, &id("f3"), "pre/my-drive", ("A.TXT", None), None).unwrap();
        assert_eq!(k3, "pre/my-drive/A (f3).TXT");
    }

    #[test]
    fn a_recorded_disambiguated_key_stands_while_the_file_is_unchanged() {
        let (mut claims, r) = (MapClaims::default(), rules());
        let recorded = ObjectKey("pre/my-drive/a (f2).txt".into());
        claims.0.insert(keys::collision_class(&recorded.0), id("f2"));
        let k = r.key_in(&mut claims, &id("f2"), "pre/my-drive", ("a.txt", None), Some(&recorded)).unwrap();
        assert_eq!(k, recorded.0, "the plain name is free, but the file has not changed since");
        // A record from another name or folder is not a candidate: the file's key is computed afresh.
        let k = r.key_in(&mut claims, &id("f2"), "pre/my-drive", ("b.txt", None), Some(&recorded)).unwrap();
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
        let k = r.key_in(&mut claims, &id("f1"), "pre/my-drive/moved", (&name, None), Some(&kept)).unwrap();
        assert_eq!(k, kept.0);
        // Not when it lies in another folder, nor when it is some other name's shortening.
        let elsewhere = ObjectKey(kept.0.replace("/moved/", "/other/"));
        let k = r.key_in(&mut claims, &id("f1"), "pre/my-drive/moved", (&name, None), Some(&elsewhere)).unwrap();
        assert_eq!(k, format!("pre/my-drive/moved/{full}"));
    }
}
