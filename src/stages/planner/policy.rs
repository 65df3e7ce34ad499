//! Scope, selection and shortcut policy: which events the selection keeps, which are applied already,
//! what a shortcut becomes.

use super::*;
use crate::internal_events::InternalEvent;

/// What the selection said of an event before its folder was resolved.
#[derive(Debug, PartialEq)]
pub(super) enum Selected {
    /// Not held: the file's removal (or nothing, when it was not mirrored).
    Removal(Box<Result<Planned, Outcome>>),
    /// Held, or not a question for the selection (folders, removals, trashed items).
    Held,
    /// A file whose folder is not known yet: asked again once it is.
    Undecided,
}

/// What a shortcut becomes once its target is looked up: with `follow`, a shortcut to a live file is
/// that file at the shortcut's place ([`DriveFile::followed`]); any other shortcut — to a folder (so
/// nothing is followed into a loop), dangling, trashed, or in `link` mode — is a `.url` link opening
/// the target's `webViewLink`. The planner and `verify` both ask this, so they agree. A failed lookup
/// comes back with the target's id.
pub async fn resolve_shortcut(
    lookup: &impl FolderLookup,
    shortcut: DriveFile,
    follow: bool,
) -> Result<DriveFile, (FileId, DriveError)> {
    let target = match &shortcut.shortcut_target {
        Some(id) => {
            let key = shortcut.shortcut_target_key.as_deref();
            lookup.lookup_target(id, key).await.map_err(|e| (id.clone(), e))?
        }
        None => None,
    };
    let followable = |t: &&DriveFile| !t.is_folder() && !t.is_shortcut() && !t.trashed;
    Ok(match target.as_ref().filter(|_| follow).filter(followable) {
        Some(t) => shortcut.followed(t),
        None => DriveFile { target_link: target.and_then(|t| t.web_view_link), ..shortcut },
    })
}

impl<L: FolderLookup, S: PlanView> Planner<L, S> {
    /// Whether the selection holds `file`; `None` while its folder is not known yet. Once its folder
    /// was `resolved`, a file whose parent is still unknown is a top item shared with the user: its
    /// path is its name.
    pub(super) fn admits(&self, file: &DriveFile, resolved: bool) -> Option<bool> {
        let selection = &self.scope.selection;
        if selection.is_everything() {
            return Some(true);
        }
        let parent = file.parents.first().filter(|parent| {
            self.scope.my_drive_root.as_ref() == Some(*parent)
                || self.drive_roots.contains_key(&DriveId(parent.0.clone()))
                || self.folders.contains_key(*parent)
        });
        let known = |id: &FileId| {
            self.folders.get(id).filter(|r| !r.is_drive_root()).map(|r| (r.name.as_str(), r.parent.as_ref()))
        };
        let (path, ancestors) = match parent {
            Some(parent) => crate::stages::selection::place_of(parent, &file.name, known),
            None if resolved => (file.name.clone(), Vec::new()),
            None => return None,
        };
        let candidate =
            crate::stages::selection::Candidate { path: &path, mime_type: &file.mime_type, ancestors: &ancestors };
        Some(selection.admits(&candidate))
    }

    /// The selection's part of planning, before the store is asked whether the event is applied: a
    /// file it does not hold is removed (if mirrored); a folder that moved or was renamed, or that a
    /// relisting reached, has its children listed again, so that every file it carries into or out of
    /// the selection is looked at (the files a folder move carries otherwise keep their decision).
    pub(super) fn deselected(&mut self, n: &mut Notes, event: &ChangeEvent) -> Result<Selected, StageError> {
        let ChangeKind::Upsert(file) = &event.kind else { return Ok(Selected::Held) };
        if file.trashed {
            return Ok(Selected::Held);
        }
        if file.is_shortcut() {
            // Asked once its folder is resolved, after the `shortcuts` mode has had its say.
            return Ok(Selected::Undecided);
        }
        if !file.is_folder() {
            return Ok(match self.admits(file, false) {
                Some(false) => Selected::Removal(Box::new(self.plan_removal(n, event.seq, &file.id)?)),
                Some(true) => Selected::Held,
                None => Selected::Undecided,
            });
        }
        if self.scope.selection.depends_on_place()
            && let Some(known) = self.folders.get(&file.id)
        {
            let moved = known.parent.as_ref() != file.parents.first() || known.name != file.name;
            if moved || event.origin == Origin::Refresh {
                n.refresh.push(Refresh::Children(file.id.clone()));
            }
        }
        Ok(Selected::Held)
    }

    /// Whether the event is applied already, as far as the store alone can tell: a shortcut mirrored
    /// as a link is, when its own version, name and folder are recorded as a link; a followed one
    /// never is (its target decides, once looked up: see [`Self::applied`]).
    pub(super) fn applied_before_planning(&self, event: &ChangeEvent) -> Result<bool, StageError> {
        if event.origin == Origin::Repair || self.left_shared_with_me(event)? {
            return Ok(false);
        }
        match &event.kind {
            ChangeKind::Upsert(f) if f.is_shortcut() && self.scope.selection.links_shortcuts() => {
                // With `follow`, and when its target changed (a refresh), what the shortcut becomes
                // depends on the target as it is now: looked up, then compared.
                if self.scope.selection.follows_shortcuts() || event.origin == Origin::Refresh {
                    return Ok(false);
                }
                let as_link = self.store.file_record(&f.id)?.is_some_and(|r| r.mime_type == SHORTCUT_MIME);
                Ok(as_link && crate::stages::dedup::already_applied(&self.store, event)?)
            }
            _ => crate::stages::dedup::already_applied(&self.store, event),
        }
    }

    /// Whether `file`, what the event's shortcut becomes once its target is looked up (a link, or the
    /// target's content), is what the store records already.
    pub(super) fn applied(&self, event: &ChangeEvent, file: &DriveFile) -> Result<bool, StageError> {
        if event.origin == Origin::Repair {
            return Ok(false);
        }
        let resolved = ChangeEvent { kind: ChangeKind::Upsert(file.clone().with_link_digest()), ..event.clone() };
        crate::stages::dedup::already_applied(&self.store, &resolved)
    }

    /// What a shortcut becomes ([`resolve_shortcut`]); with `follow`, which target it now follows is
    /// recorded with its outcome.
    pub(super) async fn through_shortcut(
        &mut self,
        n: &mut Notes,
        shortcut: DriveFile,
    ) -> Result<DriveFile, StageError> {
        let follows = self.scope.selection.follows_shortcuts();
        let target = shortcut.shortcut_target.clone();
        let file = resolve_shortcut(self.lookup.as_ref(), shortcut, follows).await.map_err(|(id, e)| {
            crate::stages::drive_failure(&format!("cannot look up the target {id} of a shortcut"), e)
        })?;
        // Whether followed or a link, what the shortcut's object holds depends on its target (its
        // bytes, or its webViewLink while it exists): a change of the target refreshes it.
        n.follows.push((file.id.clone(), file.content_of.clone().or(target)));
        Ok(file)
    }

    /// An event about a file some mirrored shortcuts point at has them fetched again (a refresh), so
    /// each mirrors the target as it now is (`follow`), or links to it as it now is: its webViewLink
    /// while it exists, Drive's generic address once it is gone.
    pub(super) fn refresh_followers(&mut self, n: &mut Notes, id: &FileId) -> Result<(), StageError> {
        if self.scope.selection.links_shortcuts() {
            for follower in self.store.followers(id)? {
                if &follower != id {
                    n.refresh.push(Refresh::File(follower));
                }
            }
        }
        Ok(())
    }

    /// True when the event's item is recorded under `shared-with-me/` while `[source] shared_with_me`
    /// is off (it was switched off): unchanged as it is, it leaves the mirror all the same, so it is
    /// planned, not skipped as already applied. Answered from the folder map; the store is read only
    /// for an item whose parent is neither a drive root nor a known folder (rare).
    pub(super) fn left_shared_with_me(&self, event: &ChangeEvent) -> Result<bool, StageError> {
        let ChangeKind::Upsert(f) = &event.kind else { return Ok(false) };
        if self.scope.shared_with_me {
            return Ok(false);
        }
        let root = format!("{}/", self.rules.join(SHARED_WITH_ME));
        let under_root = |key: &ObjectKey| key.0.starts_with(&root);
        if let Some(folder) = self.folders.get(&f.id) {
            return Ok(under_root(&folder.key));
        }
        match f.parents.first() {
            Some(parent) if self.folders.contains_key(parent) => Ok(under_root(&self.folders[parent].key)),
            Some(parent)
                if self.scope.my_drive_root.as_ref() == Some(parent)
                    || self.drive_roots.contains_key(&DriveId(parent.0.clone())) =>
            {
                Ok(false)
            }
            _ => Ok(self.store.file_record(&f.id)?.is_some_and(|r| under_root(&r.key))),
        }
    }
}

/// The log line and metric of a file Drive will not hand over (or has no bytes for).
pub(super) fn note_skip(file: &DriveFile, reason: &SkipReason) {
    crate::internal_events::PlannerSkipped { file, reason }.emit();
}
