//! Partial responses: the `fields` parameter parsed, validated against Drive's schemas and applied.

use std::collections::BTreeMap;

use serde_json::Value;

use super::errors::ApiError;

/// A field selection: everything below a node, or a set of named sub-selections.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mask {
    All,
    Some(BTreeMap<String, Mask>),
}

impl Mask {
    /// Parse Google's syntax: `a,b/c,d(e,f/g),*`.
    pub fn parse(text: &str) -> Result<Mask, ApiError> {
        let mut p = Parser { s: text.as_bytes(), i: 0, text };
        let mask = p.list()?;
        if p.i != p.s.len() {
            return Err(ApiError::invalid_fields(text));
        }
        Ok(mask)
    }

    fn merge(self, other: Mask) -> Mask {
        match (self, other) {
            (Mask::All, _) | (_, Mask::All) => Mask::All,
            (Mask::Some(mut a), Mask::Some(b)) => {
                for (k, v) in b {
                    let merged = match a.remove(&k) {
                        Some(old) => old.merge(v),
                        None => v,
                    };
                    a.insert(k, merged);
                }
                Mask::Some(a)
            }
        }
    }

    /// True if the selection includes the field at `path`.
    pub fn selects(&self, path: &[&str]) -> bool {
        match (self, path.split_first()) {
            (Mask::All, _) | (_, None) => true,
            (Mask::Some(map), Some((head, rest))) => map.get(*head).is_some_and(|m| m.selects(rest)),
        }
    }

    /// True if the selection names the field at `path` itself (not through `*` or a parent).
    pub fn names(&self, path: &[&str]) -> bool {
        match (self, path.split_first()) {
            (_, None) => true,
            (Mask::All, Some(_)) => false,
            (Mask::Some(map), Some((head, rest))) => map.get(*head).is_some_and(|m| m.names(rest)),
        }
    }

    /// Check every named field exists in `schema`.
    pub fn validate(&self, schema: &Node) -> Result<(), String> {
        let Mask::Some(map) = self else { return Ok(()) };
        match schema {
            Node::Open => Ok(()),
            Node::Leaf => Err(map.keys().next().cloned().unwrap_or_default()),
            Node::Obj(fields) => {
                for (name, sub) in map {
                    let Some((_, node)) = fields.iter().find(|(n, _)| n == name) else {
                        return Err(name.clone());
                    };
                    sub.validate(node).map_err(|bad| format!("{name}/{bad}"))?;
                }
                Ok(())
            }
        }
    }

    /// Keep only selected fields of `value` (arrays are filtered element-wise).
    pub fn apply(&self, value: Value) -> Value {
        match (self, value) {
            (Mask::All, v) => v,
            (m, Value::Array(items)) => Value::Array(items.into_iter().map(|v| m.apply(v)).collect()),
            (Mask::Some(map), Value::Object(obj)) => {
                let mut out = serde_json::Map::new();
                for (k, v) in obj {
                    if let Some(sub) = map.get(&k) {
                        out.insert(k, sub.apply(v));
                    }
                }
                Value::Object(out)
            }
            (_, v) => v,
        }
    }
}

/// Parse `fields` (or use `default`), and validate it against `schema`.
pub(crate) fn mask_for(fields: Option<&str>, default: &str, schema: &Node) -> Result<Mask, ApiError> {
    let text = fields.unwrap_or(default);
    let mask = Mask::parse(text)?;
    mask.validate(schema).map_err(|bad| ApiError::invalid_fields(&bad))?;
    Ok(mask)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn err(&self) -> ApiError {
        ApiError::invalid_fields(self.text)
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn list(&mut self) -> Result<Mask, ApiError> {
        let mut acc = Mask::Some(BTreeMap::new());
        loop {
            let item = self.item()?;
            acc = acc.merge(item);
            self.skip_ws();
            if self.i < self.s.len() && self.s[self.i] == b',' {
                self.i += 1;
                continue;
            }
            return Ok(acc);
        }
    }

    fn name(&mut self) -> Result<String, ApiError> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || b"_*-.".contains(&self.s[self.i])) {
            self.i += 1;
        }
        if start == self.i {
            return Err(self.err());
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// `name(/name)*` optionally followed by `(list)`.
    fn item(&mut self) -> Result<Mask, ApiError> {
        let mut path = vec![self.name()?];
        while self.i < self.s.len() && self.s[self.i] == b'/' {
            self.i += 1;
            path.push(self.name()?);
        }
        self.skip_ws();
        let mut leaf = Mask::All;
        if self.i < self.s.len() && self.s[self.i] == b'(' {
            self.i += 1;
            leaf = self.list()?;
            self.skip_ws();
            if self.i >= self.s.len() || self.s[self.i] != b')' {
                return Err(self.err());
            }
            self.i += 1;
        }
        Ok(wrap(&path, leaf))
    }
}

/// Build the mask for a `a/b/c` path ending in `leaf`; `*` selects everything at its level.
fn wrap(path: &[String], leaf: Mask) -> Mask {
    match path.split_first() {
        None => leaf,
        Some((head, _)) if head == "*" => Mask::All,
        Some((head, rest)) => Mask::Some(BTreeMap::from([(head.clone(), wrap(rest, leaf))])),
    }
}

/// A resource schema node used to reject unknown field names.
#[derive(Debug)]
pub(crate) enum Node {
    /// A scalar (or array of scalars).
    Leaf,
    /// An object (or array of objects) with known field names.
    Obj(&'static [(&'static str, Node)]),
    /// A map or object whose keys are free (exportLinks, properties, ...).
    Open,
}

use Node::{Leaf, Obj, Open};

const CAPABILITIES: &[(&str, Node)] = &[
    ("canAcceptOwnership", Leaf),
    ("canAddChildren", Leaf),
    ("canAddFolderFromAnotherDrive", Leaf),
    ("canAddMyDriveParent", Leaf),
    ("canChangeCopyRequiresWriterPermission", Leaf),
    ("canChangeSecurityUpdateEnabled", Leaf),
    ("canChangeViewersCanCopyContent", Leaf),
    ("canComment", Leaf),
    ("canCopy", Leaf),
    ("canDelete", Leaf),
    ("canDeleteChildren", Leaf),
    ("canDisableInheritedPermissions", Leaf),
    ("canDownload", Leaf),
    ("canEdit", Leaf),
    ("canEnableInheritedPermissions", Leaf),
    ("canListChildren", Leaf),
    ("canModifyContent", Leaf),
    ("canModifyContentRestriction", Leaf),
    ("canModifyEditorContentRestriction", Leaf),
    ("canModifyLabels", Leaf),
    ("canModifyOwnerContentRestriction", Leaf),
    ("canMoveChildrenOutOfDrive", Leaf),
    ("canMoveChildrenOutOfTeamDrive", Leaf),
    ("canMoveChildrenWithinDrive", Leaf),
    ("canMoveChildrenWithinTeamDrive", Leaf),
    ("canMoveItemIntoTeamDrive", Leaf),
    ("canMoveItemOutOfDrive", Leaf),
    ("canMoveItemOutOfTeamDrive", Leaf),
    ("canMoveItemWithinDrive", Leaf),
    ("canMoveItemWithinTeamDrive", Leaf),
    ("canMoveTeamDriveItem", Leaf),
    ("canReadDrive", Leaf),
    ("canReadLabels", Leaf),
    ("canReadRevisions", Leaf),
    ("canReadTeamDrive", Leaf),
    ("canRemoveChildren", Leaf),
    ("canRemoveContentRestriction", Leaf),
    ("canRemoveMyDriveParent", Leaf),
    ("canRename", Leaf),
    ("canShare", Leaf),
    ("canTrash", Leaf),
    ("canTrashChildren", Leaf),
    ("canUntrash", Leaf),
];

const USER: &[(&str, Node)] = &[
    ("kind", Leaf),
    ("displayName", Leaf),
    ("photoLink", Leaf),
    ("me", Leaf),
    ("permissionId", Leaf),
    ("emailAddress", Leaf),
];

const SHORTCUT_DETAILS: &[(&str, Node)] = &[("targetId", Leaf), ("targetMimeType", Leaf), ("targetResourceKey", Leaf)];

/// Every field of Drive v3's File resource.
pub(crate) const FILE: &[(&str, Node)] = &[
    ("kind", Leaf),
    ("driveId", Leaf),
    ("fileExtension", Leaf),
    ("copyRequiresWriterPermission", Leaf),
    ("md5Checksum", Leaf),
    ("contentHints", Open),
    ("writersCanShare", Leaf),
    ("viewedByMe", Leaf),
    ("mimeType", Leaf),
    ("exportLinks", Open),
    ("parents", Leaf),
    ("thumbnailLink", Leaf),
    ("iconLink", Leaf),
    ("shared", Leaf),
    ("lastModifyingUser", Obj(USER)),
    ("owners", Obj(USER)),
    ("headRevisionId", Leaf),
    ("sharingUser", Obj(USER)),
    ("webViewLink", Leaf),
    ("webContentLink", Leaf),
    ("size", Leaf),
    ("viewersCanCopyContent", Leaf),
    ("permissions", Open),
    ("hasThumbnail", Leaf),
    ("spaces", Leaf),
    ("folderColorRgb", Leaf),
    ("id", Leaf),
    ("name", Leaf),
    ("description", Leaf),
    ("starred", Leaf),
    ("trashed", Leaf),
    ("explicitlyTrashed", Leaf),
    ("createdTime", Leaf),
    ("modifiedTime", Leaf),
    ("modifiedByMeTime", Leaf),
    ("viewedByMeTime", Leaf),
    ("sharedWithMeTime", Leaf),
    ("quotaBytesUsed", Leaf),
    ("version", Leaf),
    ("originalFilename", Leaf),
    ("ownedByMe", Leaf),
    ("fullFileExtension", Leaf),
    ("properties", Open),
    ("appProperties", Open),
    ("isAppAuthorized", Leaf),
    ("teamDriveId", Leaf),
    ("capabilities", Obj(CAPABILITIES)),
    ("hasAugmentedPermissions", Leaf),
    ("trashingUser", Obj(USER)),
    ("thumbnailVersion", Leaf),
    ("trashedTime", Leaf),
    ("modifiedByMe", Leaf),
    ("permissionIds", Leaf),
    ("imageMediaMetadata", Open),
    ("videoMediaMetadata", Open),
    ("shortcutDetails", Obj(SHORTCUT_DETAILS)),
    ("contentRestrictions", Open),
    ("resourceKey", Leaf),
    ("linkShareMetadata", Open),
    ("labelInfo", Open),
    ("sha1Checksum", Leaf),
    ("sha256Checksum", Leaf),
    ("inheritedPermissionsDisabled", Leaf),
    ("downloadRestrictions", Open),
];

/// Drive v3's Drive (shared drive) resource.
pub(crate) const DRIVE: &[(&str, Node)] = &[
    ("kind", Leaf),
    ("id", Leaf),
    ("name", Leaf),
    ("themeId", Leaf),
    ("colorRgb", Leaf),
    ("backgroundImageFile", Open),
    ("backgroundImageLink", Leaf),
    ("capabilities", Open),
    ("createdTime", Leaf),
    ("hidden", Leaf),
    ("restrictions", Open),
    ("orgUnitId", Leaf),
];

const CHANGE: &[(&str, Node)] = &[
    ("kind", Leaf),
    ("removed", Leaf),
    ("file", Obj(FILE)),
    ("fileId", Leaf),
    ("time", Leaf),
    ("driveId", Leaf),
    ("teamDriveId", Leaf),
    ("teamDrive", Open),
    ("changeType", Leaf),
    ("type", Leaf),
    ("drive", Obj(DRIVE)),
];

/// files.get / a single File.
pub(crate) const FILE_NODE: Node = Obj(FILE);
/// files.list response.
pub(crate) const FILE_LIST: Node =
    Obj(&[("kind", Leaf), ("nextPageToken", Leaf), ("incompleteSearch", Leaf), ("files", Obj(FILE))]);
/// changes.list response.
pub(crate) const CHANGE_LIST: Node =
    Obj(&[("kind", Leaf), ("nextPageToken", Leaf), ("newStartPageToken", Leaf), ("changes", Obj(CHANGE))]);
/// changes.getStartPageToken response.
pub(crate) const START_TOKEN: Node = Obj(&[("kind", Leaf), ("startPageToken", Leaf)]);
/// drives.list response.
pub(crate) const DRIVE_LIST: Node = Obj(&[("kind", Leaf), ("nextPageToken", Leaf), ("drives", Obj(DRIVE))]);
/// drives.get response.
pub(crate) const DRIVE_NODE: Node = Obj(DRIVE);
/// about.get response.
pub(crate) const ABOUT: Node = Obj(&[
    ("kind", Leaf),
    ("user", Obj(USER)),
    ("storageQuota", Open),
    ("importFormats", Open),
    ("exportFormats", Open),
    ("maxImportSizes", Open),
    ("maxUploadSize", Leaf),
    ("appInstalled", Leaf),
    ("folderColorPalette", Leaf),
    ("driveThemes", Open),
    ("canCreateDrives", Leaf),
    ("canCreateTeamDrives", Leaf),
    ("teamDriveThemes", Open),
]);

/// Default selection of files.get.
pub(crate) const DEFAULT_FILE: &str = "kind,id,name,mimeType";
/// Default selection of files.list.
pub(crate) const DEFAULT_FILE_LIST: &str = "kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)";
/// Default selection of changes.list.
pub(crate) const DEFAULT_CHANGE_LIST: &str = "kind,nextPageToken,newStartPageToken,changes(kind,changeType,time,removed,fileId,driveId,file(kind,id,name,mimeType))";
/// Default selection of drives.list.
pub(crate) const DEFAULT_DRIVE_LIST: &str = "kind,nextPageToken,drives(kind,id,name)";
/// Default selection of drives.get.
pub(crate) const DEFAULT_DRIVE: &str = "kind,id,name";
