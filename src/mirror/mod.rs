//! What the mirror holds: the rules both the planner (`run`) and `verify` follow, in one place and
//! free of I/O (no tokio, fjall or object_store). Which drives and files are in scope ([`Scope`],
//! [`selection`]), how keys are laid out ([`Layout`], [`keys`]), where an item's key lies
//! ([`placement`]: one resolver over two small traits, each caller bringing its adapters) and what a
//! file becomes ([`disposition`]: written from which source with which extension, skipped, or
//! dead-lettered). A change of placement is therefore one change here, seen by both.

pub mod disposition;
pub mod export;
pub mod keys;
pub mod placement;
pub mod refusal;
pub mod selection;

use crate::model::{DriveId, FileId};
use export::ExportConfig;
pub use keys::KeyMode;
use std::collections::BTreeMap;

/// Drives in scope, discovered at start.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// My Drive's root folder id, when My Drive is mirrored.
    pub my_drive_root: Option<FileId>,
    /// Shared drives mirrored, with their names.
    pub shared: BTreeMap<DriveId, String>,
    /// Which files of those drives are mirrored (`[source] folders`, `include`, `exclude`, `mime_types`).
    pub selection: selection::Selection,
    /// `[source] shared_with_me`: the items other people shared with the user, outside their My
    /// Drive, are mirrored under `shared-with-me/`.
    pub shared_with_me: bool,
    /// A domain's shared-drive unit: the one drive's root key relative to the prefix, fixed (unique
    /// in the domain) instead of claimed from its name. See [`territory`].
    pub drive_root: Option<String>,
}

/// The folders under the prefix that a mirror with this `drive_root` owns: the mirror's namespaces,
/// or a domain's shared-drive unit's own drive folder alone (the prefix holds other units' folders
/// beside it, which it must never adopt, sweep or remove).
pub fn territory(drive_root: Option<&str>) -> Vec<String> {
    match drive_root {
        Some(root) => vec![root.to_string()],
        None => keys::MIRROR_NAMESPACES.iter().map(|s| s.to_string()).collect(),
    }
}

/// The key segment under the prefix that holds the items shared with the user.
pub const SHARED_WITH_ME: &str = "shared-with-me";

/// The key segment under the prefix that holds My Drive.
pub const MY_DRIVE: &str = "my-drive";

/// The key segment under the prefix that holds the shared drives, one folder each.
pub const SHARED_DRIVES: &str = "shared-drives";

/// How keys are laid out, and the limits that decide what a file becomes.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Destination prefix (may be empty).
    pub prefix: String,
    /// Key alphabet.
    pub mode: KeyMode,
    /// Export formats.
    pub export: ExportConfig,
    /// Larger files are dead-lettered (`[source] max_file_size`).
    pub max_file_size: Option<u64>,
    /// Larger files are dead-lettered before their download: the store would refuse them
    /// (`[destination] max_file_size`).
    pub dest_max_file_size: Option<u64>,
    /// Longest whole key (`[destination] max_key_bytes`, or the key mode's default).
    pub max_key_bytes: usize,
}

impl Layout {
    /// The key space this layout writes in.
    pub fn rules(&self) -> placement::KeyRules {
        placement::KeyRules { prefix: self.prefix.clone(), mode: self.mode, max_key_bytes: self.max_key_bytes }
    }
}

/// The last segment of a key (a file's or folder's own name part).
pub fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
