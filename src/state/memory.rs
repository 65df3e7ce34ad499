//! How much memory the state store may use, and how it is shared (`[state] memory`).
//!
//! fjall keeps each keyspace's recent writes in an in-memory memtable until it is flushed to a table
//! on disk, and caches table blocks it reads. Both grow with the store unless bounded: with fjall's
//! defaults (64 MiB per memtable, sixteen keyspaces) a first sync of a large drive held hundreds of
//! MiB. One budget bounds them together:
//!
//! - a quarter is fjall's block cache (shared by every keyspace);
//! - the rest is the write buffer: each keyspace is created with a share of it as its memtable limit
//!   (weighted by how much it is written per file), and after each commit the store rotates its
//!   memtables once all of them together exceed the write buffer ([`StoreMemory::over_budget`]) —
//!   which also bounds stores whose keyspaces were created with fjall's 64 MiB (fjall keeps a
//!   keyspace's memtable limit from its creation).
//!
//! Flushing memtables is also what lets fjall seal its journal (fjall 3 rotates the active journal at
//! a flush once it passes 64 MB, and drops a sealed journal once every keyspace has flushed past it),
//! so a bounded write buffer keeps the journal, and what a start replays from it, bounded too.

/// The store's memory budget in bytes (memtables and block cache together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMemory(pub u64);

/// `[state] memory`'s default: the store's share of a run that should fit in 256 MiB.
pub const DEFAULT_STORE_MEMORY: u64 = 64 << 20;
/// The least a budget may be: one MiB of memtable per keyspace, and a cache.
pub const MIN_STORE_MEMORY: u64 = 16 << 20;
/// The most a budget may be (a bound, not a recommendation).
pub const MAX_STORE_MEMORY: u64 = 64 << 30;
/// The smallest memtable a keyspace gets, whatever its weight.
const MIN_MEMTABLE: u64 = 1 << 20;

/// How much each keyspace is written per mirrored file, relative to the others: its share of the
/// write buffer. Keyspaces not listed (checkpoints, dead letters, uploads…) are written rarely and
/// get the minimum.
const WEIGHTS: &[(&str, u64)] = &[
    ("files", 6),
    ("claims", 2),
    ("claimed", 2),
    ("seen", 2),
    ("children", 2),
    ("content_refs", 2),
    ("intents", 2),
    ("folders", 1),
    ("audit", 1),
    ("versions", 1),
];

impl Default for StoreMemory {
    fn default() -> Self {
        StoreMemory(DEFAULT_STORE_MEMORY)
    }
}

impl StoreMemory {
    /// fjall's block cache: a quarter of the budget.
    pub fn cache_bytes(self) -> u64 {
        self.0 / 4
    }

    /// All memtables together (active and sealed ones waiting to be flushed).
    pub fn write_buffer_bytes(self) -> u64 {
        self.0 - self.cache_bytes()
    }

    /// The memtable limit a new keyspace `name` is created with: its weighted share of the write
    /// buffer, at least [`MIN_MEMTABLE`].
    pub fn memtable_bytes(self, name: &str) -> u64 {
        let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let weight = WEIGHTS.iter().find(|(n, _)| *n == name).map_or(0, |(_, w)| *w);
        (self.write_buffer_bytes() * weight / total).max(MIN_MEMTABLE)
    }

    /// Whether memtables holding `write_buffer` bytes in all should be flushed now.
    pub fn over_budget(self, write_buffer: u64) -> bool {
        write_buffer > self.write_buffer_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weighted_shares_split_the_write_buffer() {
        for budget in [DEFAULT_STORE_MEMORY, 1 << 30, MAX_STORE_MEMORY] {
            let m = StoreMemory(budget);
            let weighted: u64 = WEIGHTS.iter().map(|(n, _)| m.memtable_bytes(n)).sum();
            assert!(m.cache_bytes() + weighted <= budget, "{budget}: {weighted}");
        }
        for budget in [MIN_STORE_MEMORY, DEFAULT_STORE_MEMORY, MAX_STORE_MEMORY] {
            let m = StoreMemory(budget);
            assert!(m.memtable_bytes("checkpoints") == MIN_MEMTABLE);
            assert!(m.memtable_bytes("files") > m.memtable_bytes("claims"));
        }
    }

    #[test]
    fn only_a_write_buffer_past_its_share_is_flushed() {
        let m = StoreMemory::default();
        assert!(!m.over_budget(m.write_buffer_bytes()));
        assert!(m.over_budget(m.write_buffer_bytes() + 1));
    }
}
