//! Mark and sweep of a full listing, in bounded write batches. A listing over a populated store arms
//! at its start (the marks of any earlier listing cleared first), marks the ids it sees, and at its
//! committed end asks for a refresh of every file and folder record it did not see (Drive then says
//! whether each is gone, out of scope, or there after all). The end is recorded in the listing's own
//! batch ([`SWEEP_DUE`]); the sweep itself then runs in batches of [`SWEEP_CHUNK`] records with its
//! position saved in each, right after that batch and before any other commit, and a crash in the
//! middle is finished when the store is next opened. Memory holds one chunk, whatever the drive's size.

use super::{Store, StoreError, codec};
use crate::internal_events::InternalEvent;
use crate::model::{FileId, FolderRecord, Refresh};
use std::ops::Bound;

/// Key in `seen` present while a listing marks what it sees (ids never start with a NUL byte).
pub(super) const SWEEP_ARMED: &[u8] = b"\0armed";
/// Key in `seen` present from a listing's committed end until its sweep is done.
const SWEEP_DUE: &[u8] = b"\0due";
/// Key in `seen`: the last record (keyspace byte, then id) the sweep has dealt with.
const SWEEP_CURSOR: &[u8] = b"\0cursor";
/// Records read, or marks cleared, per write batch (a few in unit tests, so they cross chunks).
pub(super) const SWEEP_CHUNK: usize = if cfg!(test) { 3 } else { 10_000 };

impl Store {
    /// In a listing's batch: arms at its start (after [`Store::clear_marks`]), marks what it saw, and
    /// at its end records that the sweep is due ([`Store::finish_sweep`] runs it once this commits).
    pub(super) fn stage_mark_and_sweep(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        batch: &super::CommitBatch,
    ) -> Result<(), StoreError> {
        let armed = batch.listing_started || self.seen.contains_key(SWEEP_ARMED)?;
        if !armed {
            return Ok(());
        }
        if batch.listing_started {
            b.insert(&self.seen, SWEEP_ARMED, []);
        }
        for id in &batch.listed {
            b.insert(&self.seen, id.as_str(), []);
        }
        if batch.sweep {
            b.insert(&self.seen, SWEEP_DUE, []);
        }
        Ok(())
    }

    /// Removes every mark of an earlier listing, a chunk per batch, before a new listing arms. The
    /// armed key stays until the new listing's batch writes it again: a crash in between leaves fewer
    /// marks (more refreshes, each harmless), never an earlier listing's marks in a later sweep.
    pub(super) fn clear_marks(&self) -> Result<(), StoreError> {
        loop {
            let mut b = self.db.batch();
            let mut n = 0;
            for g in self.seen.iter() {
                let k = g.key()?;
                if *k == *SWEEP_ARMED {
                    continue;
                }
                b.remove(&self.seen, k);
                n += 1;
                if n == SWEEP_CHUNK {
                    break;
                }
            }
            self.commit(b)?;
            if n < SWEEP_CHUNK {
                return Ok(());
            }
        }
    }

    /// Runs a sweep that is due: every file and folder record no mark names gets a refresh request,
    /// [`SWEEP_CHUNK`] records per synced batch that also saves how far it got; then the marks are
    /// cleared. Idempotent, and resumable from its saved position after a crash.
    pub(super) fn finish_sweep(&self) -> Result<(), StoreError> {
        if !self.seen.contains_key(SWEEP_DUE)? {
            return Ok(());
        }
        let mut swept = 0usize;
        loop {
            let cursor = self.seen.get(SWEEP_CURSOR)?.map(|v| v.to_vec());
            let (requests, next) = self.sweep_chunk(cursor.as_deref())?;
            swept += requests.len();
            let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
            for id in requests {
                b.insert(&self.refresh, codec::encode(&Refresh::File(id))?, codec::encode(&rand::random::<u64>())?);
            }
            let done = next.is_none();
            match next {
                Some(at) => b.insert(&self.seen, SWEEP_CURSOR, at),
                None => b.remove(&self.seen, SWEEP_CURSOR),
            }
            self.commit(b)?;
            if done {
                break;
            }
        }
        // Every mark goes (the due key last: a crash before it clears the rest again).
        self.clear_marks()?;
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
        b.remove(&self.seen, SWEEP_ARMED);
        b.remove(&self.seen, SWEEP_DUE);
        self.commit(b)?;
        crate::internal_events::ListingSwept { swept }.emit();
        Ok(())
    }

    /// Up to [`SWEEP_CHUNK`] records after `cursor` (files first, then folders, each in id order): the
    /// unseen ones, and the cursor of the last record read (`None` when none is left).
    fn sweep_chunk(&self, cursor: Option<&[u8]>) -> Result<(Vec<FileId>, Option<Vec<u8>>), StoreError> {
        let (mut unseen, mut read) = (Vec::new(), 0usize);
        let start_in = cursor.and_then(|c| c.first().copied()).unwrap_or(0);
        for (tag, keyspace) in [(0u8, &self.files), (1u8, &self.folders)] {
            if tag < start_in {
                continue;
            }
            let from = match cursor {
                Some(c) if c.first() == Some(&tag) => Bound::Excluded(c[1..].to_vec()),
                _ => Bound::Unbounded,
            };
            for g in keyspace.range::<Vec<u8>, _>((from, Bound::Unbounded)) {
                let (k, v) = g.into_inner()?;
                // A shared drive's root is never listed as an item: drive-level changes decide its fate.
                let drive_root = tag == 1 && codec::decode::<FolderRecord>(&v).is_ok_and(|f| f.is_drive_root());
                if !drive_root && !self.seen.contains_key(&k)? {
                    unseen.push(FileId(String::from_utf8_lossy(&k).into_owned()));
                }
                read += 1;
                if read == SWEEP_CHUNK {
                    return Ok((unseen, Some([&[tag][..], &k].concat())));
                }
            }
        }
        Ok((unseen, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, Outcome, OutcomeKind};
    use crate::state::CommitBatch;

    fn committed(ids: &[&str]) -> CommitBatch {
        let outcomes = ids
            .iter()
            .enumerate()
            .map(|(n, id)| Outcome {
                seq: ChangeSeq(n as u64 + 1),
                file_id: FileId((*id).into()),
                kind: OutcomeKind::Committed(crate::state::tests::rec(id)),
            })
            .collect();
        CommitBatch { outcomes, ..Default::default() }
    }

    fn refreshed(s: &Store) -> Vec<String> {
        let mut ids: Vec<String> = s
            .pending_refreshes(usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(r, _)| match r {
                Refresh::File(id) => Some(id.0),
                _ => None,
            })
            .collect();
        ids.sort();
        ids
    }

    fn ids(v: &[&str]) -> Vec<FileId> {
        v.iter().map(|id| FileId((*id).into())).collect()
    }

    #[test]
    fn a_sweep_over_many_chunks_refreshes_exactly_the_unseen_records_and_clears_its_marks() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let all = ["a", "b", "c", "d", "e", "f", "g", "h"];
        s.apply(&committed(&all)).unwrap();
        // A listing over two batches sees all but c, f and h.
        s.apply(&CommitBatch { listing_started: true, listed: ids(&["a", "b"]), ..Default::default() }).unwrap();
        s.apply(&CommitBatch { listed: ids(&["d", "e", "g"]), sweep: true, ..Default::default() }).unwrap();
        assert_eq!(refreshed(&s), ["c", "f", "h"]);
        assert_eq!(s.seen.iter().count(), 0, "every mark is cleared, the armed key too");
    }

    #[test]
    fn a_new_listing_forgets_the_marks_of_an_earlier_unfinished_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.apply(&committed(&["a", "b", "c", "d", "e"])).unwrap();
        let all = ids(&["a", "b", "c", "d", "e"]);
        s.apply(&CommitBatch { listing_started: true, listed: all, ..Default::default() }).unwrap();
        // Relisted from the start: only b is seen this time.
        s.apply(&CommitBatch { listing_started: true, listed: ids(&["b"]), sweep: true, ..Default::default() })
            .unwrap();
        assert_eq!(refreshed(&s), ["a", "c", "d", "e"]);
    }

    #[test]
    fn a_sweep_a_crash_interrupted_is_finished_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.apply(&committed(&["a", "b", "c", "d", "e", "f", "g"])).unwrap();
            s.apply(&CommitBatch { listing_started: true, listed: ids(&["a", "g"]), ..Default::default() }).unwrap();
            // The listing's end is committed, and the sweep got through its first chunk (a, b, c).
            let mut b = s.db.batch();
            b.insert(&s.seen, SWEEP_DUE, []);
            b.insert(&s.seen, SWEEP_CURSOR, [&[0u8][..], b"c"].concat());
            b.insert(
                &s.refresh,
                codec::encode(&Refresh::File(FileId("b".into()))).unwrap(),
                codec::encode(&1u64).unwrap(),
            );
            b.insert(
                &s.refresh,
                codec::encode(&Refresh::File(FileId("c".into()))).unwrap(),
                codec::encode(&1u64).unwrap(),
            );
            b.commit().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(refreshed(&s), ["b", "c", "d", "e", "f"]);
        assert_eq!(s.seen.iter().count(), 0);
    }
}
