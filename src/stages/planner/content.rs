//! Content-dedup ordering: a file whose bytes are mirrored elsewhere is copied, not downloaded, and
//! one whose bytes another event is downloading waits for that event.

use super::*;
use crate::internal_events::InternalEvent;

/// Content copies remembered before the finished ones are forgotten.
pub(super) const CONTENT_COPIES_REMEMBERED: usize = 1024;

/// The key classes an action touches: where it writes, what it copies from, what it removes.
pub(super) fn touched_classes(p: &Planned) -> Vec<String> {
    let mut keys: Vec<&ObjectKey> = vec![&p.key];
    keys.extend(p.previous_key.iter());
    if let ActionKind::Copy { from, .. } = &p.kind {
        keys.push(from);
    }
    let mut classes: Vec<String> = keys.into_iter().map(|k| keys::collision_class(&k.0)).collect();
    classes.sort();
    classes.dedup();
    classes
}
/// The content (md5) an action downloads from Drive: Drive's own bytes (an md5 to trust), not empty.
pub(super) fn downloaded_content(p: &Planned) -> Option<&str> {
    let media = matches!(&p.kind, ActionKind::Upload { source: Source::Media }) && p.file.size.unwrap_or(0) > 0;
    p.file.md5.as_deref().filter(|_| media && !p.file.is_shortcut())
}
pub(super) fn sorted(mut classes: Vec<String>) -> Vec<String> {
    classes.sort();
    classes.dedup();
    classes
}
impl<L: FolderLookup, S: PlanView> Planner<L, S> {
    /// Content dedup: the key of another mirrored file holding exactly this file's bytes (same md5),
    /// to copy server-side instead of downloading. Only for Drive's own bytes (an md5 to trust), not
    /// for a repair (which rewrites from Drive), and only when no event in flight holds that key (it
    /// could be rewriting or removing it); the ledger then holds it for this event until it commits.
    pub(super) fn same_content_elsewhere(
        &mut self,
        n: &mut Notes,
        event: &ChangeEvent,
        file: &DriveFile,
        source: &Source,
        key: &ObjectKey,
    ) -> Result<Option<ObjectKey>, StageError> {
        let worth_it = event.origin != Origin::Repair && *source == Source::Media && file.size.unwrap_or(0) > 0;
        let Some(md5) = file.md5.as_deref().filter(|_| worth_it) else { return Ok(None) };
        let Some(holder) = self.store.content_holder(md5, &file.id)? else { return Ok(None) };
        let class = keys::collision_class(&holder.key.0);
        if holder.key == *key {
            return Ok(None);
        }
        if !self.only_copies_hold(&class) {
            n.busy_copy_source = Some(class);
            return Ok(None);
        }
        self.content_copies.insert(event.seq, class);
        crate::internal_events::ItemCounted { stage: "planner", outcome: "content_copy" }.emit();
        Ok(Some(holder.key))
    }

    /// Content dedup within a run: a new file whose bytes another event in flight is downloading right
    /// now (same md5; none is mirrored yet, or the copy is busy) waits for that event instead of
    /// downloading them too. The ledger hands `event` back once that event is released, to be planned
    /// again: a copy of its object if it was mirrored, else a download. Nothing of this planning is
    /// kept (its key claims are made again then); while it waits the event stays unfinished, so a
    /// crash replays it.
    ///
    /// Likewise when the content is mirrored but the event holding its object's key is not a copy
    /// from it (a rename or rewrite in flight): the event waits for that one and is planned again.
    pub(super) fn waits_for_content(
        &mut self,
        planned: &Planned,
        event: &ChangeEvent,
        busy_source: Option<String>,
    ) -> bool {
        let Some(md5) = downloaded_content(planned).filter(|_| event.origin != Origin::Repair) else {
            return false;
        };
        let waits = self.ledger.wait_for_content(md5, event)
            || busy_source.is_some_and(|class| self.ledger.wait_for_key_holder(&class, event));
        if !waits {
            return false;
        }
        crate::internal_events::ItemCounted { stage: "planner", outcome: "content_wait" }.emit();
        tracing::debug!(file = %planned.file.id, md5, "waiting for the same content downloaded by another event");
        true
    }

    /// True when no event in flight holds `class`, or only a content copy from it (a reader: this
    /// event waits for it, briefly, and finds the bytes unchanged). Forgets the copies that are done.
    pub(super) fn only_copies_hold(&mut self, class: &str) -> bool {
        if self.content_copies.len() > CONTENT_COPIES_REMEMBERED {
            let ledger = self.ledger.clone();
            self.content_copies.retain(|seq, c| ledger.key_holder(c) == Some(*seq));
        }
        match self.ledger.key_holder(class) {
            None => true,
            Some(seq) => self.content_copies.get(&seq).is_some_and(|c| c == class),
        }
    }
}
