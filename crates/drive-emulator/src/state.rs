//! Emulator state (corpus + change log) and the read queries behind files.list and changes.list.

use std::sync::Arc;

use serde_json::{Value, json};

use super::EmulatorConfig;
use super::changes::{ChangeLog, ChangeRecord};
use super::content::{Blob, Digests};
use super::corpus;
use super::model::{Corpus, Item, Kind, rfc3339};
use super::query::Query;
use super::resources::file_json;

/// Everything that a reset regenerates.
#[derive(Debug)]
pub(crate) struct State {
    pub config: EmulatorConfig,
    pub corpus: Corpus,
    pub log: ChangeLog,
    /// Bumped by `/_emu/expire_page_tokens`: every `files.list` page token issued before is rejected
    /// (400), as Drive does with a page token that expired. Change tokens stay valid.
    pub list_epoch: u32,
    /// `files.download` operations by name (`operations.get` polls them).
    pub operations: std::collections::HashMap<String, super::download_op::DownloadOp>,
}

/// Which items a listing covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// My Drive only.
    MyDrive,
    /// My Drive and every shared drive.
    All,
    /// One shared drive.
    Drive(String),
}

/// A rendered resource plus the blob whose checksums still have to be filled in.
pub(crate) type Pending = (Value, Option<Arc<Blob>>);

/// Parameters of one changes.list page.
#[derive(Debug, Clone)]
pub(crate) struct ChangesRequest {
    pub pos: usize,
    pub page_size: usize,
    pub include_removed: bool,
    pub all_drives: bool,
    pub restrict_to_my_drive: bool,
    pub drive: Option<String>,
    pub with_digests: bool,
    /// Whose change log (domain mode); `None` in single-user mode.
    pub viewer: Option<String>,
}

/// One changes.list page: the changes and where the client continues.
pub(crate) struct ChangesPage {
    pub changes: Vec<Pending>,
    pub next_pos: Option<usize>,
    pub new_start_pos: Option<usize>,
}

impl State {
    /// Fresh state for `config`; `epoch` makes older tokens invalid.
    pub fn new(config: EmulatorConfig, epoch: u32) -> State {
        let corpus = corpus::generate(&config);
        State { config, corpus, log: ChangeLog::new(epoch), list_epoch: 0, operations: Default::default() }
    }

    /// Record that `id` reached a new state (bumping nothing: callers bump version).
    pub fn record(&mut self, id: &str) {
        let viewers = self.corpus.viewers_of(id);
        self.record_for(id, false, viewers);
    }

    /// Record a change of `id` in the logs of `viewers` only (`None`: of every reader).
    pub fn record_for(&mut self, id: &str, removed: bool, viewers: Option<std::collections::BTreeSet<String>>) {
        let drive_id = self.corpus.items.get(id).and_then(|i| i.drive_id.clone());
        let time_ms = self.corpus.tick();
        let file_id = id.to_string();
        self.log.push(ChangeRecord { file_id, time_ms, removed, drive_id, drive_change: false, viewers });
    }

    /// Record a permanent removal, in the logs of those who saw the item (`viewers`).
    pub fn record_removed(
        &mut self,
        id: &str,
        drive_id: Option<String>,
        viewers: Option<std::collections::BTreeSet<String>>,
    ) {
        let time_ms = self.corpus.tick();
        let file_id = id.to_string();
        self.log.push(ChangeRecord { file_id, time_ms, removed: true, drive_id, drive_change: false, viewers });
    }

    /// Whether a `changes.list` with `req`'s parameters would report anything written since record
    /// `before`: Drive notifies a `changes.watch` channel of exactly the changes its parameters select.
    pub fn changed_since(&self, before: usize, req: &ChangesRequest) -> bool {
        (before..self.log.records.len()).any(|i| self.change_at(i, req).is_some())
    }

    /// Record a drive-level change: a shared drive created (or joined), renamed, or removed.
    pub fn record_drive(&mut self, drive_id: &str, removed: bool) {
        let viewers = self.corpus.is_domain().then(|| self.corpus.members_of(drive_id));
        self.record_drive_for(drive_id, removed, viewers);
    }

    /// Record a drive-level change in the logs of `viewers` only (`None`: every member's).
    pub fn record_drive_for(
        &mut self,
        drive_id: &str,
        removed: bool,
        viewers: Option<std::collections::BTreeSet<String>>,
    ) {
        let time_ms = self.corpus.tick();
        let file_id = drive_id.to_string();
        let drive = Some(drive_id.to_string());
        self.log.push(ChangeRecord { file_id, time_ms, removed, drive_id: drive, drive_change: true, viewers });
    }

    /// True if `viewer` may read shared drive `drive_id` (a member; anyone in single-user mode).
    pub fn member(&self, viewer: Option<&str>, drive_id: &str) -> bool {
        match viewer {
            None => true,
            Some(v) => self.corpus.user(v).is_some_and(|u| u.drives.contains(drive_id)),
        }
    }

    /// Is `item` visible in `scope`?
    pub fn in_scope(item: &Item, scope: &Scope) -> bool {
        match (scope, &item.drive_id) {
            (Scope::All, _) => true,
            (Scope::MyDrive, d) => d.is_none(),
            (Scope::Drive(id), Some(d)) => d == id,
            (Scope::Drive(_), None) => false,
        }
    }

    fn matches(&self, item: &Item, q: &Query, viewer: Option<&str>) -> bool {
        let c = &self.corpus;
        let shared_with_me = match viewer {
            Some(v) => c.shared_with(v, item).is_some(),
            None => item.shared_with_me_ms.is_some(),
        };
        !item.unopened_link_share()
            && c.sees(viewer, item)
            && q.parents.iter().all(|p| item.parents.iter().any(|ip| ip == c.resolve_for(p, viewer)))
            && q.trashed.is_none_or(|t| c.is_trashed(&item.id) == t)
            && q.mime_eq.iter().all(|m| &item.mime == m)
            && q.mime_ne.iter().all(|m| &item.mime != m)
            && q.shared_with_me.is_none_or(|s| shared_with_me == s)
    }

    /// Items after `after_seq` matching `q` in `scope`: at most `page_size`, plus whether more exist.
    pub fn list(
        &self,
        scope: &Scope,
        q: &Query,
        after_seq: u64,
        page_size: usize,
        viewer: Option<&str>,
    ) -> (Vec<&Item>, bool) {
        let mut out = Vec::new();
        for id in self.corpus.order.range(after_seq + 1..).map(|(_, id)| id) {
            let Some(item) = self.corpus.items.get(id) else {
                continue;
            };
            if !Self::in_scope(item, scope) || !self.matches(item, q, viewer) {
                continue;
            }
            if out.len() == page_size {
                return (out, true);
            }
            out.push(item);
        }
        (out, false)
    }

    /// Render a file, deferring checksums to the caller when wanted.
    pub fn render(&self, item: &Item, with_digests: bool, viewer: Option<&str>) -> Pending {
        let blob = match &item.kind {
            Kind::Binary { blob, .. } if with_digests => Some(blob.clone()),
            _ => None,
        };
        let mut value = file_json(&self.corpus, item, None);
        self.corpus.personalize(&mut value, item, viewer);
        (value, blob)
    }

    /// One page of changes.
    pub fn changes(&self, req: &ChangesRequest) -> ChangesPage {
        let mut changes = Vec::new();
        let mut i = req.pos;
        while i < self.log.records.len() {
            if changes.len() == req.page_size {
                return ChangesPage { changes, next_pos: Some(i), new_start_pos: None };
            }
            if let Some(change) = self.change_at(i, req) {
                changes.push(change);
            }
            i += 1;
        }
        ChangesPage { changes, next_pos: None, new_start_pos: Some(self.log.records.len()) }
    }

    fn change_at(&self, index: usize, req: &ChangesRequest) -> Option<Pending> {
        let viewer = req.viewer.as_deref();
        if !self.log.is_latest_for(index, viewer) {
            return None;
        }
        let rec = &self.log.records[index];
        if rec.viewers.is_none()
            && let Some(d) = &rec.drive_id
            && !self.member(viewer, d)
        {
            return None;
        }
        if rec.removed && !req.include_removed {
            return None;
        }
        if rec.drive_change {
            return self.drive_change_at(rec, req);
        }
        if rec.drive_id.is_some() && (!req.all_drives || req.restrict_to_my_drive) {
            return None;
        }
        if req.drive.is_some() && rec.drive_id != req.drive {
            return None;
        }
        if req.drive.is_none() && rec.drive_id.is_some() && !self.config.drive_changes_in_user_log {
            return None;
        }
        let mut change = json!({
            "kind": "drive#change",
            "changeType": "file",
            "type": "file",
            "time": rfc3339(rec.time_ms),
            "removed": rec.removed,
            "fileId": rec.file_id,
        });
        if let Some(d) = &rec.drive_id {
            change["driveId"] = json!(d);
            change["teamDriveId"] = json!(d);
        }
        let mut blob = None;
        let item = self.corpus.items.get(&rec.file_id).filter(|_| !rec.removed);
        match item {
            Some(item) if self.corpus.sees(viewer, item) => {
                let root = self.corpus.root_for(viewer);
                if req.restrict_to_my_drive && item.drive_id.is_none() && !self.corpus.in_my_drive(&item.id, root) {
                    // Google: `restrictToMyDrive` omits "shared files which have not been added to My Drive".
                    return None;
                }
                let (file, b) = self.render(item, req.with_digests, viewer);
                change["file"] = file;
                blob = b;
            }
            Some(_) => {
                // The viewer lost access since (moved out of what was shared with them): Drive
                // reports the file as removed for them.
                if !req.include_removed {
                    return None;
                }
                change["removed"] = json!(true);
            }
            None if rec.removed => {}
            None => return None,
        }
        Some((change, blob))
    }
}

impl State {
    /// A drive-level change, in the user's log only (a shared drive's own log holds its items).
    fn drive_change_at(&self, rec: &super::changes::ChangeRecord, req: &ChangesRequest) -> Option<Pending> {
        if req.drive.is_some() {
            return None;
        }
        let mut change = json!({
            "kind": "drive#change",
            "changeType": "drive",
            "type": "drive",
            "time": rfc3339(rec.time_ms),
            "removed": rec.removed,
            "driveId": rec.file_id,
            "teamDriveId": rec.file_id,
        });
        if !rec.removed {
            let drive = self.corpus.drive(&rec.file_id)?;
            change["drive"] = json!({"kind": "drive#drive", "id": drive.id, "name": drive.name});
        }
        Some((change, None))
    }
}

/// Fill the checksum fields of rendered files (the blob digests must already be cached).
pub(crate) fn attach_digests(value: &mut Value, blob: &Blob) {
    let d: &Digests = blob.digests();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("md5Checksum".into(), json!(d.md5));
        obj.insert("sha1Checksum".into(), json!(d.sha1));
        obj.insert("sha256Checksum".into(), json!(d.sha256));
    }
}
