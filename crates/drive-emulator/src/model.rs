//! The in-memory Drive: items, shared drives and the structural queries over them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::content::{Blob, DocKind};
use super::rng::Rng64;

/// Mime type of folders.
pub(crate) const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
/// Mime type of shortcuts.
pub(crate) const SHORTCUT_MIME: &str = "application/vnd.google-apps.shortcut";

/// What an item is, with the data that depends on it.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A folder (also My Drive's root and shared drive roots).
    Folder,
    /// A file with binary content; `rev` counts content changes.
    Binary { blob: Arc<Blob>, rev: u64 },
    /// A Google Docs Editors file; `export_base` scales its export sizes.
    Doc { kind: DocKind, rev: u64, export_base: u64 },
    /// A shortcut to another item (which may not exist); `target_key` is the target's resource key
    /// (`shortcutDetails.targetResourceKey`), when it has one.
    Shortcut { target_id: String, target_mime: String, target_key: Option<String> },
}

/// One Drive item.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub id: String,
    /// Creation order: the stable listing order.
    pub seq: u64,
    pub name: String,
    pub mime: String,
    pub parents: Vec<String>,
    pub drive_id: Option<String>,
    pub kind: Kind,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub version: u64,
    pub explicitly_trashed: bool,
    pub abusive: bool,
    /// `capabilities.canDownload`: false when the owner disabled downloads (alt=media and export
    /// then answer 403 `cannotDownloadFile`).
    pub can_download: bool,
    /// `resourceKey` of a link-shared file: alt=media needs it in `X-Goog-Drive-Resource-Keys`
    /// (this emulator's user has never opened the file, the case Google documents as needing it).
    pub resource_key: Option<String>,
    /// My Drive's root or a shared drive's root folder: never listed, never in the tree.
    pub is_root: bool,
    /// Owned by someone else (another user's item the emulator's user can see): random mutations,
    /// which play the user, leave it alone.
    pub foreign: bool,
    /// `sharedWithMeTime` (ms) of an item another user shared with this one directly.
    pub shared_with_me_ms: Option<i64>,
    /// The domain user owning a My Drive item (domain mode only; `None` in single-user mode and
    /// for shared-drive items, which the drive owns).
    pub owner: Option<String>,
}

impl Item {
    /// True for folders (including roots).
    pub fn is_folder(&self) -> bool {
        matches!(self.kind, Kind::Folder)
    }

    /// Another user's link-shared file this user never opened: Drive lists it nowhere and shows it
    /// (metadata or bytes) only to a request carrying its resource key (`X-Goog-Drive-Resource-Keys`).
    pub fn unopened_link_share(&self) -> bool {
        self.foreign && self.resource_key.is_some() && self.shared_with_me_ms.is_none()
    }

    /// Size in bytes for binary files.
    pub fn size(&self) -> Option<u64> {
        match &self.kind {
            Kind::Binary { blob, .. } => Some(blob.size),
            _ => None,
        }
    }
}

/// A shared drive.
#[derive(Debug, Clone)]
pub(crate) struct SharedDrive {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

/// Every item and drive, plus the generators for new ids.
#[derive(Debug, Clone)]
pub(crate) struct Corpus {
    pub root_id: String,
    pub drives: Vec<SharedDrive>,
    pub items: HashMap<String, Item>,
    /// seq → id, the listing order of non-root items.
    pub order: BTreeMap<u64, String>,
    pub next_seq: u64,
    pub rng: Rng64,
    /// Last timestamp handed out (ms), so times never go backwards.
    pub clock_ms: i64,
    /// The domain's accounts (empty in single-user mode), the service account first.
    pub users: Vec<super::domain::UserRec>,
    /// The domain user a mutation acts as (owner of what it creates, whose `root` the alias names).
    pub acting: Option<String>,
}

impl Corpus {
    /// An empty My Drive with a root folder.
    pub fn empty(seed: u64, start_ms: i64) -> Corpus {
        let mut rng = Rng64::new(seed, 1);
        let root_id = rng.drive_id();
        let mut c = Corpus {
            root_id: root_id.clone(),
            drives: Vec::new(),
            items: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 1,
            rng,
            clock_ms: start_ms,
            users: Vec::new(),
            acting: None,
        };
        c.insert_root(root_id, "My Drive".into(), None, start_ms);
        c
    }

    /// Register a root folder (My Drive's or a shared drive's).
    pub fn insert_root(&mut self, id: String, name: String, drive_id: Option<String>, at_ms: i64) {
        let drive_id_is_none = drive_id.is_none();
        let item = Item {
            id: id.clone(),
            seq: 0,
            name,
            mime: FOLDER_MIME.into(),
            parents: Vec::new(),
            drive_id,
            kind: Kind::Folder,
            created_ms: at_ms,
            modified_ms: at_ms,
            version: 1,
            explicitly_trashed: false,
            abusive: false,
            can_download: true,
            resource_key: None,
            is_root: true,
            foreign: false,
            shared_with_me_ms: None,
            owner: if drive_id_is_none { self.acting.clone() } else { None },
        };
        self.items.insert(id, item);
    }

    /// Insert a new non-root item, assigning its listing position. An item created in another user's
    /// folder is that user's too.
    pub fn insert(&mut self, mut item: Item) -> String {
        item.foreign |= item.parents.iter().any(|p| self.items.get(p).is_some_and(|p| p.foreign));
        if item.drive_id.is_none() && item.owner.is_none() {
            item.owner = self.acting.clone();
        }
        item.seq = self.next_seq;
        self.next_seq += 1;
        let id = item.id.clone();
        self.order.insert(item.seq, id.clone());
        self.items.insert(id.clone(), item);
        id
    }

    /// Remove an item for good.
    pub fn remove(&mut self, id: &str) -> Option<Item> {
        let item = self.items.remove(id)?;
        self.order.remove(&item.seq);
        Some(item)
    }

    /// Resolve the `root` alias (for a mutation: the acting user's root).
    pub fn resolve<'a>(&'a self, id: &'a str) -> &'a str {
        self.resolve_for(id, self.acting.as_deref())
    }

    /// Look up an item (root alias allowed).
    pub fn get(&self, id: &str) -> Option<&Item> {
        self.items.get(self.resolve(id))
    }

    /// Shared drive by id.
    pub fn drive(&self, id: &str) -> Option<&SharedDrive> {
        self.drives.iter().find(|d| d.id == id)
    }

    /// Next timestamp for a mutation: wall clock, but strictly increasing.
    pub fn tick(&mut self) -> i64 {
        let now = now_ms();
        self.clock_ms = now.max(self.clock_ms + 1);
        self.clock_ms
    }

    /// Effective trashed state: explicitly trashed, or inside a trashed folder.
    pub fn is_trashed(&self, id: &str) -> bool {
        let mut seen = HashSet::new();
        self.trashed_walk(id, &mut seen)
    }

    fn trashed_walk(&self, id: &str, seen: &mut HashSet<String>) -> bool {
        if !seen.insert(id.to_string()) {
            return false;
        }
        let Some(item) = self.items.get(id) else {
            return false;
        };
        item.explicitly_trashed || item.parents.iter().any(|p| self.trashed_walk(p, seen))
    }

    /// parent id → child ids, in listing order.
    pub fn children_index(&self) -> HashMap<String, Vec<String>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for id in self.order.values() {
            if let Some(item) = self.items.get(id) {
                for p in &item.parents {
                    map.entry(p.clone()).or_default().push(id.clone());
                }
            }
        }
        map
    }

    /// All descendants of `id` (not including it), breadth first, each once.
    pub fn descendants(&self, id: &str) -> Vec<String> {
        let index = self.children_index();
        let mut seen: HashSet<String> = HashSet::from([id.to_string()]);
        let mut out = Vec::new();
        let mut queue = VecDeque::from([id.to_string()]);
        while let Some(cur) = queue.pop_front() {
            for child in index.get(&cur).into_iter().flatten() {
                if seen.insert(child.clone()) {
                    out.push(child.clone());
                    queue.push_back(child.clone());
                }
            }
        }
        out
    }

    /// True if `id` lies in My Drive: its first parents lead to My Drive's root. An item shared with
    /// the user (its parent missing or not theirs to see) does not; `restrictToMyDrive` leaves it out.
    pub fn in_my_drive(&self, id: &str, root: &str) -> bool {
        let mut cur = id;
        for _ in 0..256 {
            if cur == root {
                return true;
            }
            match self.items.get(cur).and_then(|i| i.parents.first()) {
                Some(parent) => cur = parent,
                None => return false,
            }
        }
        false
    }

    /// True if `candidate` is `id` or lies below it.
    pub fn is_self_or_descendant(&self, id: &str, candidate: &str) -> bool {
        candidate == id || self.descendants(id).iter().any(|d| d == candidate)
    }
}

/// Wall clock in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 with milliseconds and `Z`, as Drive formats times.
pub(crate) fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return "1970-01-01T00:00:00.000Z".into();
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}
