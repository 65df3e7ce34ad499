//! The ledger: the one record of which events are in flight and which have finished. The feed takes a
//! permit per event (at most `limit` events are unfinished, so everything sized by work in flight is
//! bounded); dedup admits one event per file; the planner orders its actions against it; the committer
//! alone finishes events. It replaces three structures that each kept their own idea of "finished"
//! (the watermark, the in-flight table and the plan barrier).
//!
//! An event is *active* from dedup's admission until the committer releases it, after its outcome is
//! written; an action the planner waits for is an active event's. Every map here holds active events
//! only, so its size follows the work in flight, never the drive's size.

use crate::model::{ChangeEvent, ChangeSeq, FileId};
use crate::state::watermark::Watermark;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{Notify, Semaphore};

/// What admission decided.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead: the event is now the file's active one.
    Proceed,
    /// Waits behind the active event; `superseded` is an older waiting event that it replaces.
    Parked {
        /// The event no longer needed, to be skipped.
        superseded: Option<ChangeEvent>,
    },
}

/// The ledger, shared by the stages and kept outside the actors so that it survives their restarts.
#[derive(Debug)]
pub struct Ledger {
    book: Mutex<Book>,
    /// Woken whenever the committer releases events, for the planner waiting on earlier actions.
    released: Notify,
    /// One permit per unfinished event.
    permits: Semaphore,
    limit: usize,
    /// Events the feed has handed out this run (progress: what is left is this less what finished).
    issued: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Book {
    /// Finished seqs (terminal outcome recorded in the batch being written or earlier).
    watermark: Watermark,
    /// File → its active event and the newest event waiting behind it.
    files: HashMap<FileId, Slot>,
    /// Active events whose action the planner sent on (a subtree change waits for all of them).
    planned: BTreeSet<u64>,
    /// Key class → the active event whose action touches it.
    key_holders: HashMap<String, u64>,
    /// Active event → the key classes it holds.
    held: HashMap<u64, Vec<String>>,
    /// Content (md5) → the active event downloading it: a new file of the same content waits for it
    /// and then copies its object instead of downloading the bytes again.
    producers: HashMap<String, u64>,
    /// Active event → the content it downloads (the reverse of `producers`).
    producing: HashMap<u64, String>,
    /// Active event → the events waiting for its content, planned again once it is released.
    content_waiters: HashMap<u64, Vec<ChangeEvent>>,
}

#[derive(Debug)]
struct Slot {
    active: u64,
    parked: Option<ChangeEvent>,
}

impl Book {
    fn is_active(&self, file: &FileId, seq: u64) -> bool {
        self.files.get(file).is_some_and(|s| s.active == seq)
    }
}

impl Default for Ledger {
    /// A ledger whose first seq is 1, with room for 1024 unfinished events (tests and benches).
    fn default() -> Self {
        Ledger::new(1, 1024)
    }
}

impl Ledger {
    /// A ledger for a run whose first seq is `first_seq`, with at most `limit` unfinished events.
    pub fn new(first_seq: u64, limit: usize) -> Self {
        let limit = limit.max(1);
        Ledger {
            book: Mutex::new(Book {
                watermark: Watermark::new(first_seq),
                files: HashMap::new(),
                planned: BTreeSet::new(),
                key_holders: HashMap::new(),
                held: HashMap::new(),
                producers: HashMap::new(),
                producing: HashMap::new(),
                content_waiters: HashMap::new(),
            }),
            released: Notify::new(),
            permits: Semaphore::new(limit),
            limit,
            issued: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most events unfinished at once: every lane that carries work already admitted (retries,
    /// releases, replays) is sized from it, so putting work back never waits.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Called by the feed before it emits an event: waits while `limit` events are unfinished. The
    /// permit comes back when the event's outcome is settled.
    pub async fn reserve(&self) {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
        self.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Events the feed has handed out this run.
    pub fn issued(&self) -> u64 {
        self.issued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Dedup: admits `event`, or parks it behind the file's active event.
    pub fn admit(&self, event: &ChangeEvent) -> Admission {
        let mut book = self.book();
        match book.files.get_mut(&event.file_id) {
            None => {
                book.files.insert(event.file_id.clone(), Slot { active: event.seq.0, parked: None });
                Admission::Proceed
            }
            Some(slot) if slot.active == event.seq.0 => Admission::Proceed,
            Some(slot) => Admission::Parked { superseded: slot.parked.replace(event.clone()) },
        }
    }

    /// Planner: remembers that the action of `seq` was sent on, until the committer releases it.
    pub fn planned(&self, seq: ChangeSeq, file: &FileId) {
        let mut book = self.book();
        if book.is_active(file, seq.0) {
            book.planned.insert(seq.0);
        }
    }

    /// Planner: waits until every action sent on so far is committed (a subtree is computed from the
    /// store, so it must hold all of them).
    pub async fn drain(&self) {
        self.wait_until(|book| book.planned.is_empty()).await
    }

    /// Planner: waits until no other active event touches one of `classes` (writes, copies from or
    /// removes that key), then holds them for `seq`. So actions on one key run in change order, never at
    /// once: a new `r.txt` is written only after the move or delete of the old `r.txt` is committed.
    pub async fn take_keys(&self, seq: ChangeSeq, file: &FileId, classes: &[String]) {
        if classes.is_empty() {
            return;
        }
        self.wait_until(|book| classes.iter().all(|c| book.key_holders.get(c).is_none_or(|s| *s == seq.0))).await;
        let mut book = self.book();
        if !book.is_active(file, seq.0) {
            return;
        }
        for c in classes {
            book.key_holders.insert(c.clone(), seq.0);
        }
        book.held.entry(seq.0).or_default().extend(classes.iter().cloned());
    }

    /// Planner: waits until no active event other than `seq` holds `class`. Such an event may free
    /// the key (a rename or delete) or take it (a new file): its commit decides, and the claims the
    /// planner reads next show it.
    pub async fn wait_key_free(&self, seq: ChangeSeq, class: &str) {
        self.wait_until(|book| book.key_holders.get(class).is_none_or(|s| *s == seq.0)).await;
    }

    /// Planner: the action of `seq` downloads content `md5` from Drive. Until it is released, a new
    /// file of that content may wait for it (`wait_for_content`) instead of downloading it too.
    pub fn producing(&self, seq: ChangeSeq, file: &FileId, md5: &str) {
        let mut book = self.book();
        if !book.is_active(file, seq.0) || book.producers.contains_key(md5) {
            return;
        }
        book.producers.insert(md5.to_string(), seq.0);
        book.producing.insert(seq.0, md5.to_string());
    }

    /// Planner: when an active event other than `event` is downloading content `md5`, `event` waits
    /// for it (true): it is handed back by `release` once that event's outcome is written, to be
    /// planned again against the committed records (a copy of the object, or a download if that
    /// event failed). Checked and recorded under one lock, so the release cannot slip in between.
    /// Asking again for the same event (a planner restart replays its batch) records it once.
    pub fn wait_for_content(&self, md5: &str, event: &ChangeEvent) -> bool {
        let mut book = self.book();
        let Some(&producer) = book.producers.get(md5) else { return false };
        if producer == event.seq.0 || !book.is_active(&event.file_id, event.seq.0) {
            return false;
        }
        let waiting = book.content_waiters.entry(producer).or_default();
        if !waiting.iter().any(|w| w.seq == event.seq) {
            waiting.push(event.clone());
        }
        true
    }

    /// Planner: a mirrored copy of `event`'s content lies under `class`, which another active event
    /// holds (not as a copy from it). `event` waits for that event (true) and is handed back by
    /// `release`, like a wait for a content in flight, to be planned again once the key is settled.
    /// Checked and recorded under one lock, so the release cannot slip in between.
    pub fn wait_for_key_holder(&self, class: &str, event: &ChangeEvent) -> bool {
        let mut book = self.book();
        let Some(&holder) = book.key_holders.get(class) else { return false };
        if holder == event.seq.0 || !book.is_active(&event.file_id, event.seq.0) {
            return false;
        }
        let waiting = book.content_waiters.entry(holder).or_default();
        if !waiting.iter().any(|w| w.seq == event.seq) {
            waiting.push(event.clone());
        }
        true
    }

    /// The active event that holds `class`, if one does.
    pub fn key_holder(&self, class: &str) -> Option<ChangeSeq> {
        self.book().key_holders.get(class).map(|s| ChangeSeq(*s))
    }

    /// Whether an active event holds `class` (for a claim made outside any event, which cannot wait).
    pub fn key_held(&self, class: &str) -> bool {
        self.book().key_holders.contains_key(class)
    }

    /// Committer, while it builds a batch: `seq` has its terminal outcome in that batch. Advances the
    /// watermark and returns the event's permit (once, however often an outcome is replayed).
    pub fn settle(&self, seq: ChangeSeq) {
        if self.book().watermark.finish(seq.0) {
            self.permits.add_permits(1);
        }
    }

    /// Every seq strictly below this is finished.
    pub fn next_unfinished(&self) -> u64 {
        self.book().watermark.next_unfinished()
    }

    /// True when every seq ≤ `seq` is finished.
    pub fn covers(&self, seq: u64) -> bool {
        self.book().watermark.covers(seq)
    }

    /// Committer, once the batch holding `seq`'s outcome is written: the event stops being active, its
    /// keys and barrier entry are freed, and the events that may go on now are returned: the file's
    /// parked event (now active) and those that waited for its content (active all along).
    pub fn release(&self, file: &FileId, seq: ChangeSeq) -> Vec<ChangeEvent> {
        let next = {
            let mut book = self.book();
            book.planned.remove(&seq.0);
            for class in book.held.remove(&seq.0).unwrap_or_default() {
                if book.key_holders.get(&class) == Some(&seq.0) {
                    book.key_holders.remove(&class);
                }
            }
            if let Some(md5) = book.producing.remove(&seq.0)
                && book.producers.get(&md5) == Some(&seq.0)
            {
                book.producers.remove(&md5);
            }
            let mut next = book.content_waiters.remove(&seq.0).unwrap_or_default();
            next.extend(hand_over(&mut book.files, file, seq.0));
            next
        };
        self.released.notify_waiters();
        next
    }

    /// Files with an active event.
    pub fn files_in_flight(&self) -> usize {
        self.book().files.len()
    }

    /// Entries held for the planner (for tests and benches: they follow the work in flight).
    pub fn remembered(&self) -> usize {
        let book = self.book();
        let waiting: usize = book.content_waiters.values().map(Vec::len).sum();
        book.planned.len() + book.key_holders.len() + book.held.len() + book.producing.len() + waiting
    }

    /// True when no event is active.
    pub fn is_idle(&self) -> bool {
        self.book().files.is_empty()
    }

    /// Waits until `done` holds, re-checking whenever events are released (and at least every 50 ms).
    async fn wait_until(&self, mut done: impl FnMut(&Book) -> bool) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if done(&self.book()) {
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), released).await;
        }
    }
}

/// Ends `file`'s active event `seq`; its parked event, if any, becomes active and is returned.
fn hand_over(files: &mut HashMap<FileId, Slot>, file: &FileId, seq: u64) -> Option<ChangeEvent> {
    let slot = files.get_mut(file)?;
    if slot.active != seq {
        return None;
    }
    match slot.parked.take() {
        Some(next) => {
            slot.active = next.seq.0;
            Some(next)
        }
        None => {
            files.remove(file);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeKind;
    use std::sync::Arc;

    fn ev(id: &str, seq: u64) -> ChangeEvent {
        ChangeEvent {
            seq: ChangeSeq(seq),
            file_id: FileId(id.into()),
            kind: ChangeKind::Removed,
            origin: Default::default(),
        }
    }

    fn finish(l: &Ledger, id: &str, seq: u64) -> Option<ChangeEvent> {
        l.settle(ChangeSeq(seq));
        let mut next = l.release(&FileId(id.into()), ChangeSeq(seq));
        assert!(next.len() <= 1, "{next:?}");
        next.pop()
    }

    #[test]
    fn newer_event_waits_and_supersedes_older_waiting_one() {
        let l = Ledger::new(1, 10);
        assert_eq!(l.admit(&ev("a", 1)), Admission::Proceed);
        assert_eq!(l.admit(&ev("b", 2)), Admission::Proceed);
        assert_eq!(l.admit(&ev("a", 3)), Admission::Parked { superseded: None });
        assert_eq!(l.admit(&ev("a", 4)), Admission::Parked { superseded: Some(ev("a", 3)) });
        assert_eq!(finish(&l, "a", 1), Some(ev("a", 4)));
        // The released event is already active: re-admitting it proceeds (also after a replay).
        assert_eq!(l.admit(&ev("a", 4)), Admission::Proceed);
        assert_eq!(finish(&l, "a", 4), None);
        assert_eq!(l.files_in_flight(), 1);
    }

    #[test]
    fn releasing_a_stale_seq_changes_nothing() {
        let l = Ledger::new(1, 10);
        l.admit(&ev("a", 5));
        assert!(l.release(&FileId("a".into()), ChangeSeq(4)).is_empty());
        assert_eq!(l.files_in_flight(), 1);
    }

    #[tokio::test]
    async fn the_feed_waits_while_limit_events_are_unfinished() {
        let l = Arc::new(Ledger::new(1, 2));
        l.reserve().await;
        l.reserve().await;
        let third = tokio::spawn({
            let l = l.clone();
            async move { l.reserve().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!third.is_finished(), "a third event went in while two were unfinished");
        // An outcome replayed after a crash returns no second permit.
        l.settle(ChangeSeq(1));
        l.settle(ChangeSeq(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), third).await.unwrap().unwrap();
        assert_eq!(l.permits.available_permits(), 0, "a replayed outcome returned a second permit");
    }

    #[tokio::test]
    async fn a_key_waits_for_the_active_event_holding_it() {
        let l = Arc::new(Ledger::new(1, 10));
        let class = vec!["r.txt".to_string()];
        l.admit(&ev("old", 1));
        l.take_keys(ChangeSeq(1), &FileId("old".into()), &class).await;
        l.admit(&ev("new", 2));
        let new = tokio::spawn({
            let (l, class) = (l.clone(), class.clone());
            async move { l.take_keys(ChangeSeq(2), &FileId("new".into()), &class).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        assert!(!new.is_finished(), "the new r.txt did not wait for the move of the old one");
        finish(&l, "old", 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), new).await.unwrap().unwrap();
        // Replaying the finished event's planning holds nothing (it is no longer active).
        l.take_keys(ChangeSeq(1), &FileId("old".into()), &["other".to_string()]).await;
        finish(&l, "new", 2);
        assert_eq!(l.remembered(), 0);
    }

    #[test]
    fn a_file_waits_for_the_event_downloading_its_content_and_comes_back_once() {
        let l = Ledger::new(1, 10);
        for (id, seq) in [("a", 1), ("b", 2), ("c", 3)] {
            l.admit(&ev(id, seq));
        }
        assert!(!l.wait_for_content("m", &ev("b", 2)), "nobody downloads m yet");
        l.producing(ChangeSeq(1), &FileId("a".into()), "m");
        assert!(!l.wait_for_content("m", &ev("a", 1)), "the producer never waits for itself");
        assert!(l.wait_for_content("m", &ev("b", 2)));
        // A planner restart asks again for the same event: it is handed back once.
        assert!(l.wait_for_content("m", &ev("b", 2)));
        assert!(l.wait_for_content("m", &ev("c", 3)));
        assert!(!l.wait_for_content("other", &ev("c", 3)));
        l.settle(ChangeSeq(1));
        let back: Vec<u64> = l.release(&FileId("a".into()), ChangeSeq(1)).iter().map(|e| e.seq.0).collect();
        assert_eq!(back, vec![2, 3]);
        // Released: the next file of that content is planned for real (and may produce it itself).
        assert!(!l.wait_for_content("m", &ev("b", 2)));
        for (id, seq) in [("b", 2), ("c", 3)] {
            finish(&l, id, seq);
        }
        assert_eq!(l.remembered(), 0);
        assert!(l.is_idle());
    }

    #[tokio::test]
    async fn a_file_waits_for_the_event_holding_its_mirrored_copys_key_and_comes_back_once() {
        let l = Ledger::new(1, 10);
        for (id, seq) in [("a", 1), ("b", 2)] {
            l.admit(&ev(id, seq));
        }
        assert!(!l.wait_for_key_holder("k", &ev("b", 2)), "nobody holds k");
        l.take_keys(ChangeSeq(1), &FileId("a".into()), &["k".to_string()]).await;
        assert!(!l.wait_for_key_holder("k", &ev("a", 1)), "the holder never waits for itself");
        assert!(l.wait_for_key_holder("k", &ev("b", 2)));
        assert!(l.wait_for_key_holder("k", &ev("b", 2)), "asked again: recorded once");
        l.settle(ChangeSeq(1));
        let back: Vec<u64> = l.release(&FileId("a".into()), ChangeSeq(1)).iter().map(|e| e.seq.0).collect();
        assert_eq!(back, vec![2]);
        assert!(!l.wait_for_key_holder("k", &ev("b", 2)), "released: k is free");
        finish(&l, "b", 2);
        assert!(l.is_idle());
    }

    #[test]
    fn a_finished_event_produces_nothing() {
        let l = Ledger::new(1, 10);
        l.admit(&ev("a", 1));
        l.admit(&ev("b", 2));
        finish(&l, "a", 1);
        // A replayed planning of a finished event registers nothing for others to wait on.
        l.producing(ChangeSeq(1), &FileId("a".into()), "m");
        assert!(!l.wait_for_content("m", &ev("b", 2)));
        assert_eq!(l.remembered(), 0);
    }

    #[tokio::test]
    async fn drain_waits_for_every_action_sent_on() {
        let l = Arc::new(Ledger::new(1, 10));
        l.admit(&ev("a", 1));
        l.planned(ChangeSeq(1), &FileId("a".into()));
        let drained = tokio::spawn({
            let l = l.clone();
            async move { l.drain().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        assert!(!drained.is_finished());
        finish(&l, "a", 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), drained).await.unwrap().unwrap();
    }

    #[test]
    fn what_it_holds_follows_the_work_in_flight() {
        let l = Ledger::new(1, 10);
        for seq in 1..=100_000u64 {
            let id = format!("f{seq}");
            l.admit(&ev(&id, seq));
            l.planned(ChangeSeq(seq), &FileId(id.clone()));
            if seq > 8 {
                finish(&l, &format!("f{}", seq - 8), seq - 8);
            }
        }
        assert!(l.remembered() <= 8 && l.files_in_flight() <= 8, "{} entries kept", l.remembered());
        assert_eq!(l.next_unfinished(), 100_000 - 7);
    }
}
