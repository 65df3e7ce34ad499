//! Deterministic corpus generation: the same seed and knobs give the same ids, names and bytes.

use super::EmulatorConfig;
use super::content::{Blob, DocKind};
use super::model::{Corpus, FOLDER_MIME, Item, Kind, SHORTCUT_MIME, SharedDrive};

/// 2023-01-01T00:00:00Z: corpus timestamps start here.
const EPOCH_MS: i64 = 1_672_531_200_000;

const ADJECTIVES: &[&str] = &[
    "Annual",
    "Shared",
    "Old",
    "New",
    "Draft",
    "Final",
    "Team",
    "Personal",
    "Quarterly",
    "Legacy",
    "Client",
    "Scanned",
    "Project",
    "Weekly",
    "Archived",
    "Misc",
];
const NOUNS: &[&str] = &[
    "Reports",
    "Photos",
    "Invoices",
    "Notes",
    "Designs",
    "Contracts",
    "Backups",
    "Music",
    "Slides",
    "Budgets",
    "Research",
    "Recipes",
    "Travel",
    "Taxes",
    "Videos",
    "Manuals",
];
const FILE_STEMS: &[&str] = &[
    "report", "photo", "invoice", "notes", "design", "contract", "backup", "track", "summary", "budget", "paper",
    "recipe", "ticket", "receipt", "clip", "manual", "scan", "data",
];
const EXTENSIONS: &[(&str, &str)] = &[
    ("txt", "text/plain"),
    ("pdf", "application/pdf"),
    ("jpg", "image/jpeg"),
    ("png", "image/png"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    ("zip", "application/zip"),
    ("bin", "application/octet-stream"),
    ("mp3", "audio/mpeg"),
    ("mp4", "video/mp4"),
];

/// Mime type Drive would infer from a file name's extension.
pub(crate) fn mime_for_name(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    EXTENSIONS.iter().find(|(e, _)| *e == ext).map(|(_, m)| *m).unwrap_or("application/octet-stream")
}

/// Where a new item goes and when it is created.
pub(crate) struct Placement {
    pub parents: Vec<String>,
    pub drive_id: Option<String>,
    pub at_ms: i64,
}

impl Corpus {
    fn base_item(&mut self, name: &str, mime: &str, place: Placement, kind: Kind) -> Item {
        let id = self.rng.file_id();
        let version = self.rng.range(1, 40);
        Item {
            id,
            seq: 0,
            name: name.to_string(),
            mime: mime.to_string(),
            parents: place.parents,
            drive_id: place.drive_id,
            kind,
            created_ms: place.at_ms,
            modified_ms: place.at_ms,
            version,
            explicitly_trashed: false,
            abusive: false,
            can_download: true,
            resource_key: None,
            is_root: false,
            foreign: false,
            shared_with_me_ms: None,
            owner: None,
        }
    }

    /// Create a folder.
    pub fn add_folder(&mut self, name: &str, place: Placement) -> String {
        let item = self.base_item(name, FOLDER_MIME, place, Kind::Folder);
        self.insert(item)
    }

    /// Create a binary file of `size` bytes (content revision 0).
    pub fn add_binary(&mut self, name: &str, size: u64, mime: &str, place: Placement) -> String {
        let mut item = self.base_item(name, mime, place, Kind::Folder);
        item.kind = Kind::Binary { blob: Blob::new(&item.id, 0, size), rev: 0 };
        self.insert(item)
    }

    /// Create a Google Docs Editors file.
    pub fn add_doc(&mut self, name: &str, kind: DocKind, export_base: u64, place: Placement) -> String {
        let item = self.base_item(name, kind.mime(), place, Kind::Doc { kind, rev: 0, export_base });
        self.insert(item)
    }

    /// Create a shortcut to `target_id` (which may not exist).
    pub fn add_shortcut(&mut self, name: &str, target_id: &str, target_mime: &str, place: Placement) -> String {
        let target_key = self.items.get(target_id).and_then(|t| t.resource_key.clone());
        let kind = Kind::Shortcut { target_id: target_id.into(), target_mime: target_mime.into(), target_key };
        let item = self.base_item(name, SHORTCUT_MIME, place, kind);
        self.insert(item)
    }

    /// Advance the corpus clock by a random gap (corpus generation only).
    fn later(&mut self) -> i64 {
        self.clock_ms += self.rng.range(1_000, 6 * 3_600_000) as i64;
        self.clock_ms
    }

    /// A placement under one parent, at the next corpus time.
    fn under(&mut self, parent: &str) -> Placement {
        let drive_id = self.items.get(parent).and_then(|p| p.drive_id.clone());
        let at_ms = self.later();
        Placement { parents: vec![parent.to_string()], drive_id, at_ms }
    }

    fn folder_name(&mut self) -> String {
        let adj = self.rng.pick(ADJECTIVES).copied().unwrap_or("Misc");
        let noun = self.rng.pick(NOUNS).copied().unwrap_or("Notes");
        format!("{adj} {noun} {}", self.rng.range(1, 99))
    }

    fn file_name(&mut self) -> (String, &'static str) {
        let stem = self.rng.pick(FILE_STEMS).copied().unwrap_or("data");
        let (ext, mime) = self.rng.pick(EXTENSIONS).copied().unwrap_or(("bin", "application/octet-stream"));
        (format!("{stem}-{}.{ext}", self.rng.range(1, 9999)), mime)
    }

    /// Mostly a few KiB, some empty, a few up to 8 MiB.
    fn file_size(&mut self) -> u64 {
        let r = self.rng.below(100);
        match r {
            0..=2 => 0,
            3..=79 => self.rng.range(1, 16 * 1024),
            80..=96 => self.rng.range(16 * 1024, 1024 * 1024),
            _ => self.rng.range(1024 * 1024, 8 * 1024 * 1024),
        }
    }
}

/// Build the corpus for a configuration.
pub(crate) fn generate(cfg: &EmulatorConfig) -> Corpus {
    if !cfg.domain_users.is_empty() {
        return super::domain::generate(cfg, EPOCH_MS);
    }
    let mut c = Corpus::empty(cfg.seed, EPOCH_MS);
    let root = c.root_id.clone();
    let folders = add_folder_tree(&mut c, &root, cfg.folders, cfg.depth);
    add_files(&mut c, &folders, cfg.files);
    add_docs(&mut c, &folders, cfg.gdocs, 0);
    for n in 0..cfg.shared_drives {
        add_shared_drive(&mut c, n, cfg.files);
    }
    if cfg.big_file_mib > 0 {
        let place = c.under(&root);
        let name = format!("big-{}MiB.bin", cfg.big_file_mib);
        c.add_binary(&name, cfg.big_file_mib * 1024 * 1024, "application/octet-stream", place);
    }
    if cfg.hostile {
        add_hostile(&mut c);
    }
    c
}

/// `count` folders nested at most `depth` levels under `top`; returns `top` plus the new folders.
pub(crate) fn add_folder_tree(c: &mut Corpus, top: &str, count: usize, depth: usize) -> Vec<String> {
    let mut levels: Vec<(String, usize)> = vec![(top.to_string(), 0)];
    for _ in 0..count {
        let open: Vec<(String, usize)> = levels.iter().filter(|(_, l)| *l < depth.max(1)).cloned().collect();
        let Some((parent, level)) = c.rng.pick(&open).cloned() else {
            break;
        };
        let name = c.folder_name();
        let place = c.under(&parent);
        let id = c.add_folder(&name, place);
        levels.push((id, level + 1));
    }
    levels.into_iter().map(|(id, _)| id).collect()
}

pub(crate) fn add_files(c: &mut Corpus, folders: &[String], count: usize) {
    for _ in 0..count {
        let parent = c.rng.pick(folders).cloned().unwrap_or_else(|| c.root_id.clone());
        let (name, mime) = c.file_name();
        let size = c.file_size();
        let place = c.under(&parent);
        c.add_binary(&name, size, mime, place);
    }
}

fn add_docs(c: &mut Corpus, folders: &[String], count: usize, offset: usize) {
    const KINDS: [DocKind; 4] = [DocKind::Document, DocKind::Spreadsheet, DocKind::Presentation, DocKind::Drawing];
    for i in 0..count {
        let kind = KINDS[(i + offset) % KINDS.len()];
        let parent = c.rng.pick(folders).cloned().unwrap_or_else(|| c.root_id.clone());
        let noun = c.rng.pick(NOUNS).copied().unwrap_or("Notes");
        let name = format!("{noun} {:?} {}", kind, i + 1);
        let base = c.rng.range(2 * 1024, 256 * 1024);
        let place = c.under(&parent);
        c.add_doc(&name, kind, base, place);
    }
}

/// One shared drive with two nested folders, a few files and a document.
pub(crate) fn add_shared_drive(c: &mut Corpus, n: usize, files: usize) {
    let id = c.rng.drive_id();
    let at = c.later();
    let name = format!("Shared drive {}", n + 1);
    c.drives.push(SharedDrive { id: id.clone(), name: name.clone(), created_ms: at });
    c.insert_root(id.clone(), name, Some(id.clone()), at);
    let folders = add_folder_tree(c, &id, 2, 2);
    add_files(c, &folders, (files / 10).clamp(3, 200));
    add_docs(c, &folders, 1, n);
}

/// Names and structures that break naive mirrors.
fn add_hostile(c: &mut Corpus) {
    let root = c.root_id.clone();
    let place = c.under(&root);
    let hostile = c.add_folder("Hostile", place);
    let place = c.under(&hostile);
    let inner = c.add_folder("inner", place);
    let long_name = format!("long-{}.txt", "\u{fc}".repeat(150));
    let names: Vec<String> = vec![
        "a/b slash.txt".into(),
        "back\\slash.txt".into(),
        ".".into(),
        " leading space.txt".into(),
        "trailing space.txt ".into(),
        "ctrl\u{1}\u{1f}char.txt".into(),
        "tab\tand\nnewline.txt".into(),
        "caf\u{e9}.txt".into(),
        "cafe\u{301}.txt".into(),
        "emoji \u{1f389}\u{1f4c1}.txt".into(),
        long_name,
        "README.md".into(),
        "readme.md".into(),
        "ReadMe.MD".into(),
        "dup.txt".into(),
        "dup.txt".into(),
        "dup.txt".into(),
        "report".into(),
        // A local folder refuses these as they are (object_store's temporary-file form).
        "Chapter #2".into(),
        "scan#0001".into(),
        // 560 bytes of `é`: capped, and under Supabase keys every byte is escaped.
        "\u{e9}".repeat(280),
        // Read right to left from the override on, this shows as `invoiceexe.pdf`.
        "invoice\u{202E}fdp.exe".into(),
        "zero\u{200B}width.txt".into(),
    ];
    let mut first_dup = None;
    for name in &names {
        let size = c.rng.range(1, 4096);
        let place = c.under(&hostile);
        let id = c.add_binary(name, size, mime_for_name(name), place);
        if name == "dup.txt" && first_dup.is_none() {
            first_dup = Some(id);
        }
    }
    let place = c.under(&hostile);
    let dotdot = c.add_folder("..", place);
    let place = c.under(&dotdot);
    c.add_binary("inside-dotdot.txt", 100, "text/plain", place);
    let place = c.under(&hostile);
    let report_folder = c.add_folder("report", place);
    let mut place = c.under(&hostile);
    place.parents.push(inner.clone());
    c.add_binary("two-parents.txt", 777, "text/plain", place);
    for name in ["empty.bin", "empty.txt"] {
        let place = c.under(&hostile);
        c.add_binary(name, 0, mime_for_name(name), place);
    }
    let place = c.under(&hostile);
    let abusive = c.add_binary("suspicious.exe", 4321, "application/x-msdownload", place);
    if let Some(item) = c.items.get_mut(&abusive) {
        item.abusive = true;
    }
    let place = c.under(&hostile);
    c.add_doc("Huge export doc", DocKind::Document, 13_000_000, place);
    add_deep_chain(c, &hostile);
    add_hostile_shortcuts(c, &hostile, &inner, first_dup.as_deref(), &report_folder);
    add_refused(c, &hostile);
    add_shared_with_me(c);
}

/// Name of the folder another user shared with the emulator's user (hostile corpus).
pub const SHARED_FOLDER_NAME: &str = "Shared by Ana";
/// Name of the file another user shared directly, whose folder the user cannot see.
pub const SHARED_FILE_NAME: &str = "Budget (shared).pdf";

/// Items another user owns and shared with this one, outside the user's My Drive: a folder (no
/// parent the user can see, so Drive reports none) holding a file and a subfolder with a file, and a
/// file whose parent is a folder of the owner's the user cannot open (`files.get` answers 404). Added
/// last, so the ids drawn before stay what they were.
fn add_shared_with_me(c: &mut Corpus) {
    let at_ms = c.later();
    let folder = c.add_folder(SHARED_FOLDER_NAME, Placement { parents: Vec::new(), drive_id: None, at_ms });
    if let Some(item) = c.items.get_mut(&folder) {
        item.foreign = true;
    }
    let place = c.under(&folder);
    c.add_binary("plan.txt", 1_234, "text/plain", place);
    let place = c.under(&folder);
    let drafts = c.add_folder("drafts", place);
    let place = c.under(&drafts);
    c.add_binary("draft 1.md", 777, "text/markdown", place);
    let hidden_parent = c.rng.file_id();
    let at_ms = c.later();
    let budget = c.add_binary(
        SHARED_FILE_NAME,
        2_048,
        "application/pdf",
        Placement { parents: vec![hidden_parent], drive_id: None, at_ms },
    );
    for id in [&folder, &budget] {
        if let Some(item) = c.items.get_mut(id) {
            item.foreign = true;
            item.shared_with_me_ms = Some(item.created_ms);
        }
    }
}

/// Name of the hostile corpus's file whose owner disabled downloads.
pub const DOWNLOAD_DISABLED_NAME: &str = "no-download.pdf";
/// Name of the hostile corpus's Google Form (listed, never exportable).
pub const FORM_NAME: &str = "Feedback form";

/// Files Drive lists but will not hand over: a PDF whose owner disabled downloads, and a Form. Added
/// last, so the ids and versions drawn before them stay what they were.
fn add_refused(c: &mut Corpus, hostile: &str) {
    let place = c.under(hostile);
    let disabled = c.add_binary(DOWNLOAD_DISABLED_NAME, 2345, "application/pdf", place);
    if let Some(item) = c.items.get_mut(&disabled) {
        item.can_download = false;
    }
    let place = c.under(hostile);
    c.add_doc(FORM_NAME, DocKind::Form, 1_000, place);
    let place = c.under(hostile);
    let linked = c.add_binary(LINK_SHARED_NAME, 3456, "application/pdf", place);
    if let Some(item) = c.items.get_mut(&linked) {
        item.resource_key = Some(format!("0-{}", &item.id[..12.min(item.id.len())]));
    }
}

/// Name of the hostile corpus's link-shared file: alt=media needs its resource key.
pub const LINK_SHARED_NAME: &str = "link-shared.pdf";

/// Seven folders of 180-byte names, a long-named file in the sixth and a file at the bottom: a path
/// of about 1,400 bytes, over S3's 1,024-byte key limit.
fn add_deep_chain(c: &mut Corpus, hostile: &str) {
    let mut parent = hostile.to_string();
    for level in 1..=7 {
        let place = c.under(&parent);
        parent = c.add_folder(&format!("deep{level}-{}", "d".repeat(174)), place);
        if level == 6 {
            let place = c.under(&parent);
            c.add_binary(&format!("{}.txt", "long".repeat(55)), 300, "text/plain", place);
        }
    }
    let place = c.under(&parent);
    c.add_binary("bottom.txt", 200, "text/plain", place);
}

fn add_hostile_shortcuts(c: &mut Corpus, hostile: &str, inner: &str, file: Option<&str>, folder: &str) {
    if let Some(file) = file {
        let place = c.under(hostile);
        c.add_shortcut("Shortcut to dup.txt", file, "text/plain", place);
    }
    let place = c.under(hostile);
    c.add_shortcut("Shortcut to report folder", folder, FOLDER_MIME, place);
    let place = c.under(inner);
    c.add_shortcut("Shortcut to Hostile (cycle)", hostile, FOLDER_MIME, place);
    let missing = c.rng.file_id();
    let place = c.under(hostile);
    c.add_shortcut("Dangling shortcut", &missing, "application/pdf", place);
}
