//! Where an item's key lies: its folder's key (a drive root, a folder already placed, or the chain of
//! folders up to one, each placed on the way), then the first free candidate of its own name there —
//! the plain name, then ` (fileId)`, ` (fileId) (2)`, … while another item holds the name's collision
//! class. One resolver over two small traits, [`Folders`] (which folders are known by id) and
//! [`KeyHolders`] (who holds a key class): the planner's adapters look folders up in Drive and wait on
//! the ledger for a key an event in flight holds; `verify`'s read Drive's listing and the store's
//! committed claims and never wait.

use super::{MY_DRIVE, SHARED_DRIVES, SHARED_WITH_ME, keys};
use crate::mirror::keys::KeyMode;
use crate::model::{DriveFile, DriveId, FileId, ObjectKey};
use std::collections::BTreeMap;
use std::future::Future;

/// Candidates tried before giving up (a thousand items of one name in one folder).
pub const MAX_CANDIDATES: u32 = 1000;
/// A recorded key is kept when it is one of the first candidates (nobody disambiguates further).
pub const RECORDED_CANDIDATES: u32 = 32;
/// Folder depth followed when resolving a path (Drive has no parent cycles; this bounds a broken server).
pub const MAX_DEPTH: usize = 128;

/// No candidate key was free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no free key for {id} in {parent:?}")]
pub struct NoFreeKey {
    /// The item.
    pub id: FileId,
    /// The folder key it was to go in.
    pub parent: String,
}

/// The key space: prefix, alphabet and length limit, as the destination takes keys.
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

    /// Candidate `nth` for `name` (plus `ext`) in `parent`: the plain name, then ` (fileId)`, ` (fileId) (2)`, …
    pub fn candidate(&self, id: &FileId, parent: &str, (name, ext): (&str, Option<&str>), nth: u32) -> String {
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
}

/// What a key is claimed for: a file's object or a folder's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFor {
    /// A file's object.
    File,
    /// A folder's prefix.
    Folder,
}

/// Who holds key classes (lower-cased keys).
pub trait KeyHolders {
    /// The caller's error; a key search that runs out of candidates becomes one.
    type Error: From<NoFreeKey>;
    /// Whether `id` may take `class` as `what`: nobody else holds it. The planner's adapter first waits
    /// for an event in flight that holds it (it may free or take it).
    fn may_take(
        &mut self,
        class: &str,
        id: &FileId,
        what: KeyFor,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    /// Notes that `id` takes `class`.
    fn take(&mut self, class: &str, id: &FileId) -> Result<(), Self::Error>;
}

/// The key of item `id` named `name` (plus `ext` for an export or a link) inside `parent`. A
/// `recorded` key stands while it is still one of the item's first candidates there and nobody else
/// holds it (`verify`: a mirror at rest does not move a file until the file changes); otherwise the
/// first candidate it may take. A disambiguated key is claimed like any other, since another file may
/// literally be named `x (<that id>).txt`.
pub async fn key_in<H: KeyHolders>(
    rules: &KeyRules,
    holders: &mut H,
    id: &FileId,
    parent: &str,
    name: (&str, Option<&str>),
    what: KeyFor,
    recorded: Option<&ObjectKey>,
) -> Result<String, H::Error> {
    if let Some(rec) = recorded {
        for nth in 0..=RECORDED_CANDIDATES {
            let kept =
                rules.candidate(id, parent, name, nth) == rec.0 || rules.kept_through_move(id, parent, name, nth, rec);
            let class = keys::collision_class(&rec.0);
            if kept && holders.may_take(&class, id, what).await? {
                holders.take(&class, id)?;
                return Ok(rec.0.clone());
            }
        }
    }
    for nth in 0..=MAX_CANDIDATES {
        let key = rules.candidate(id, parent, name, nth);
        let class = keys::collision_class(&key);
        if holders.may_take(&class, id, what).await? {
            holders.take(&class, id)?;
            return Ok(key);
        }
    }
    Err(NoFreeKey { id: id.clone(), parent: parent.to_string() }.into())
}

/// Where an item sits: its first parent, its shared drive, and whether it was shared with the user
/// directly (`sharedWithMeTime`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spot {
    /// The item's first parent, if Drive reports one.
    pub parent: Option<FileId>,
    /// The shared drive holding it.
    pub drive: Option<DriveId>,
    /// `sharedWithMeTime` is set.
    pub shared_with_me: bool,
}

impl Spot {
    /// Where `f` sits.
    pub fn of(f: &DriveFile) -> Spot {
        Spot { parent: f.parents.first().cloned(), drive: f.drive_id.clone(), shared_with_me: f.shared_with_me }
    }
}

/// A folder on the way up from an item, not placed yet.
#[derive(Clone, Debug)]
pub struct Folder {
    /// Its id.
    pub id: FileId,
    /// Its Drive name.
    pub name: String,
    /// Where it sits.
    pub spot: Spot,
}

/// What a folder id is, to the resolver.
#[derive(Debug)]
pub enum Found {
    /// Placed already, at this key.
    Key(String),
    /// Known, not placed yet: placed once its own folder is.
    Folder(Folder),
    /// Not the user's to see: the item below it is a top item shared with the user, if it is one.
    Hidden,
    /// Outside the scope (trashed, not a folder, or known to be outside).
    Outside,
}

/// The drives in scope and their root keys.
#[derive(Clone, Copy, Debug)]
pub struct Roots<'a> {
    /// My Drive's root folder, when My Drive is mirrored.
    pub my_drive_root: Option<&'a FileId>,
    /// Shared drives in scope (with their names).
    pub drives: &'a BTreeMap<DriveId, String>,
    /// The key each shared drive's root was given.
    pub keys: &'a BTreeMap<DriveId, String>,
    /// `[source] shared_with_me`.
    pub shared_with_me: bool,
}

impl Roots<'_> {
    /// The key of a drive's root when `parent` is one: `my-drive`, or the shared drive's own.
    fn root_key(&self, rules: &KeyRules, at: &Spot, parent: &FileId) -> Option<String> {
        match &at.drive {
            Some(d) if d.0 == parent.0 => self.keys.get(d).cloned(),
            Some(_) => None,
            None if self.my_drive_root == Some(parent) => Some(rules.join(MY_DRIVE)),
            None => None,
        }
    }

    /// The key prefix of the items shared with the user, when `top` — an item whose parent is missing
    /// or not the user's to see — is one they shared with the user directly, outside any shared
    /// drive, and `[source] shared_with_me` is on.
    pub fn shared_root(&self, rules: &KeyRules, top: &Spot) -> Option<String> {
        let shared = self.shared_with_me && top.shared_with_me && top.drive.is_none();
        shared.then(|| rules.join(SHARED_WITH_ME))
    }

    /// Whether a shared drive is mirrored.
    fn drive_in_scope(&self, d: &DriveId) -> bool {
        self.drives.contains_key(d)
    }
}

/// The folders a caller knows, by id.
pub trait Folders {
    /// The caller's error.
    type Error;
    /// The drives in scope and their root keys.
    fn roots(&self) -> Roots<'_>;
    /// What `id` is (the parent of an item at `from`). The planner's adapter asks Drive for a folder
    /// it has not seen.
    fn folder(&mut self, id: &FileId, from: &Spot) -> impl Future<Output = Result<Found, Self::Error>> + Send;
    /// The key the store records for folder `id`, kept when still right (see [`key_in`]).
    fn recorded(&mut self, id: &FileId) -> Result<Option<ObjectKey>, Self::Error>;
    /// Folder `folder` was placed at `key`.
    fn placed(&mut self, folder: Folder, key: &str);
    /// The walk found `chain` (innermost first) outside the scope; `known`: for a reason worth
    /// remembering (a parent gone, hidden or outside), not merely a drive or a top item not mirrored.
    fn outside(&mut self, chain: Vec<Folder>, known: bool);
}

/// The key prefix of the folder holding an item at `item`, or `None` when the item lies outside the
/// scope (in a trashed folder, in a drive not mirrored, shared with the user when that is not
/// mirrored…). Folders on the way that were not placed yet are placed, outermost first, so their keys
/// are claimed once.
pub async fn parent_key<F, H>(
    rules: &KeyRules,
    folders: &mut F,
    holders: &mut H,
    item: Spot,
) -> Result<Option<String>, H::Error>
where
    F: Folders<Error = H::Error>,
    H: KeyHolders,
{
    let mut chain: Vec<Folder> = Vec::new();
    let mut at = item;
    let base = loop {
        if chain.len() > MAX_DEPTH {
            return Ok(None);
        }
        let roots = folders.roots();
        let Some(parent) = at.parent.clone() else {
            match roots.shared_root(rules, &at) {
                Some(root) => break root,
                None => return outside(folders, chain, false),
            }
        };
        if let Some(root) = roots.root_key(rules, &at, &parent) {
            break root;
        }
        if at.drive.as_ref().is_some_and(|d| !roots.drive_in_scope(d)) {
            return outside(folders, chain, false);
        }
        match folders.folder(&parent, &at).await? {
            Found::Key(key) => break key,
            Found::Folder(f) => {
                at = f.spot.clone();
                chain.push(f);
            }
            Found::Hidden => match folders.roots().shared_root(rules, &at) {
                Some(root) => break root,
                None => return outside(folders, chain, true),
            },
            Found::Outside => return outside(folders, chain, true),
        }
    };
    let mut key = base;
    for folder in chain.into_iter().rev() {
        let recorded = folders.recorded(&folder.id)?;
        let name = (folder.name.as_str(), None);
        key = key_in(rules, holders, &folder.id, &key, name, KeyFor::Folder, recorded.as_ref()).await?;
        folders.placed(folder, &key);
    }
    Ok(Some(key))
}

fn outside<F: Folders, E>(folders: &mut F, chain: Vec<Folder>, known: bool) -> Result<Option<String>, E> {
    folders.outside(chain, known);
    Ok(None)
}

/// The key prefix the shared drives' roots go under, each claimed from its drive's name.
pub fn shared_drives_base(rules: &KeyRules) -> String {
    rules.join(SHARED_DRIVES)
}
