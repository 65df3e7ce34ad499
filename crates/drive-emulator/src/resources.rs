//! Rendering of Drive resources (File, Drive, About, Change) as Drive's JSON.

use serde_json::{Map, Value, json};

use super::content::{Digests, DocKind};
use super::model::{Corpus, Item, Kind, SharedDrive, rfc3339};

/// Identity the emulator reports as the authenticated user.
pub(crate) const USER_EMAIL: &str = "mirrorflow-emulator@mirrorflow-emulator.iam.gserviceaccount.com";
const USER_NAME: &str = "Mirrorflow Emulator";
const PERMISSION_ID: &str = "09876543210987654321";

fn user() -> Value {
    json!({"kind": "drive#user", "displayName": USER_NAME, "me": true, "permissionId": PERMISSION_ID, "emailAddress": USER_EMAIL})
}

/// The owner of the items other people shared with the emulator's user.
fn other_user() -> Value {
    json!({"kind": "drive#user", "displayName": "Ana Sharer", "me": false, "permissionId": "12345678901234567890", "emailAddress": "ana@example.com"})
}

/// Full File resource for `item` (checksums only when `digests` is given).
pub(crate) fn file_json(c: &Corpus, item: &Item, digests: Option<&Digests>) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!("drive#file"));
    m.insert("id".into(), json!(item.id));
    m.insert("name".into(), json!(item.name));
    m.insert("mimeType".into(), json!(item.mime));
    if !item.parents.is_empty() {
        m.insert("parents".into(), json!(item.parents));
    }
    let trashed = c.is_trashed(&item.id);
    m.insert("trashed".into(), json!(trashed));
    m.insert("explicitlyTrashed".into(), json!(item.explicitly_trashed));
    m.insert("starred".into(), json!(false));
    m.insert("spaces".into(), json!(["drive"]));
    m.insert("createdTime".into(), json!(rfc3339(item.created_ms)));
    m.insert("modifiedTime".into(), json!(rfc3339(item.modified_ms)));
    m.insert("version".into(), json!(item.version.to_string()));
    m.insert("webViewLink".into(), json!(web_view_link(item)));
    m.insert("capabilities".into(), capabilities(item, trashed));
    if let Some(key) = &item.resource_key {
        m.insert("resourceKey".into(), json!(key));
    }
    ownership(&mut m, item);
    kind_fields(&mut m, item, digests);
    Value::Object(m)
}

fn ownership(m: &mut Map<String, Value>, item: &Item) {
    match &item.drive_id {
        Some(drive) => {
            m.insert("driveId".into(), json!(drive));
            m.insert("teamDriveId".into(), json!(drive));
            m.insert("ownedByMe".into(), json!(false));
        }
        None if item.foreign => {
            m.insert("owners".into(), json!([other_user()]));
            m.insert("ownedByMe".into(), json!(false));
            if let Some(at) = item.shared_with_me_ms {
                m.insert("sharedWithMeTime".into(), json!(rfc3339(at)));
                m.insert("sharingUser".into(), other_user());
            }
        }
        None => {
            m.insert("owners".into(), json!([user()]));
            m.insert("ownedByMe".into(), json!(true));
        }
    }
    m.insert("lastModifyingUser".into(), user());
}

fn kind_fields(m: &mut Map<String, Value>, item: &Item, digests: Option<&Digests>) {
    match &item.kind {
        Kind::Binary { blob, rev } => {
            m.insert("size".into(), json!(blob.size.to_string()));
            m.insert("quotaBytesUsed".into(), json!(blob.size.to_string()));
            m.insert("headRevisionId".into(), json!(head_revision(&item.id, *rev)));
            m.insert("originalFilename".into(), json!(item.name));
            if let Some((_, ext)) = item.name.rsplit_once('.') {
                m.insert("fileExtension".into(), json!(ext));
                m.insert("fullFileExtension".into(), json!(ext));
            }
            if let Some(d) = digests {
                m.insert("md5Checksum".into(), json!(d.md5));
                m.insert("sha1Checksum".into(), json!(d.sha1));
                m.insert("sha256Checksum".into(), json!(d.sha256));
            }
        }
        Kind::Doc { kind, .. } => {
            if !kind.formats().is_empty() {
                m.insert("exportLinks".into(), Value::Object(kind.export_links(&item.id)));
            }
            m.insert("quotaBytesUsed".into(), json!("0"));
        }
        Kind::Shortcut { target_id, target_mime, target_key } => {
            let mut details = json!({"targetId": target_id, "targetMimeType": target_mime});
            if let Some(key) = target_key {
                details["targetResourceKey"] = json!(key);
            }
            m.insert("shortcutDetails".into(), details);
            m.insert("quotaBytesUsed".into(), json!("0"));
        }
        Kind::Folder => {
            m.insert("quotaBytesUsed".into(), json!("0"));
        }
    }
}

/// Drive-like opaque head revision id for a binary content revision.
fn head_revision(id: &str, rev: u64) -> String {
    format!("0B{}", &hex::encode(super::content::content_key(id, rev, "rev").to_be_bytes())[..14])
}

/// The address that opens `item` in a browser (Drive's `webViewLink`).
pub(crate) fn web_view_link(item: &Item) -> String {
    match &item.kind {
        Kind::Folder => format!("https://drive.google.com/drive/folders/{}", item.id),
        Kind::Doc { kind, .. } => {
            let path = match kind {
                DocKind::Document => "document",
                DocKind::Spreadsheet => "spreadsheets",
                DocKind::Presentation => "presentation",
                DocKind::Drawing => "drawings",
                DocKind::Script => return format!("https://script.google.com/d/{}/edit?usp=drivesdk", item.id),
                DocKind::Form => "forms",
                DocKind::Vid => "vids",
            };
            format!("https://docs.google.com/{path}/d/{}/edit?usp=drivesdk", item.id)
        }
        _ => format!("https://drive.google.com/file/d/{}/view?usp=drivesdk", item.id),
    }
}

fn capabilities(item: &Item, trashed: bool) -> Value {
    let folder = item.is_folder();
    let binary = matches!(item.kind, Kind::Binary { .. });
    json!({
        "canAddChildren": folder && !trashed,
        "canComment": !folder,
        "canCopy": !folder,
        "canDelete": !item.is_root,
        "canDownload": item.can_download,
        "canEdit": !trashed,
        "canListChildren": folder,
        "canModifyContent": !trashed,
        "canMoveItemWithinDrive": !item.is_root,
        "canReadRevisions": binary,
        "canRemoveChildren": folder,
        "canRename": !item.is_root,
        "canShare": true,
        "canTrash": !item.is_root,
        "canUntrash": !item.is_root,
    })
}

/// Drive resource for a shared drive.
pub(crate) fn drive_json(d: &SharedDrive) -> Value {
    json!({
        "kind": "drive#drive",
        "id": d.id,
        "name": d.name,
        "createdTime": rfc3339(d.created_ms),
        "hidden": false,
        "capabilities": {"canListChildren": true, "canDownload": true, "canEdit": true, "canAddChildren": true, "canManageMembers": true},
        "restrictions": {"adminManagedRestrictions": false, "copyRequiresWriterPermission": false, "domainUsersOnly": false, "driveMembersOnly": false},
    })
}

/// About resource for the emulated account.
pub(crate) fn about_json(c: &Corpus, viewer: Option<&str>) -> Value {
    let owned = |i: &&Item| viewer.is_none_or(|v| i.owner.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(v)));
    let usage: u64 = c.items.values().filter(owned).filter_map(Item::size).sum();
    let mut export_formats = Map::new();
    for kind in DocKind::ALL.into_iter().filter(|k| !k.formats().is_empty()) {
        let mut mimes: Vec<&str> = kind.formats().iter().map(|(m, _)| *m).collect();
        mimes.dedup();
        export_formats.insert(kind.mime().into(), json!(mimes));
    }
    json!({
        "kind": "drive#about",
        "user": viewer.map_or_else(user, |v| super::domain::user_json(v, true)),
        "storageQuota": {
            "limit": "16106127360000",
            "usage": usage.to_string(),
            "usageInDrive": usage.to_string(),
            "usageInDriveTrash": "0",
        },
        "exportFormats": export_formats,
        "maxUploadSize": "5242880000000",
        "appInstalled": false,
        "canCreateDrives": true,
    })
}
