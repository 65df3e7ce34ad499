//! A tiny seeded PRNG (splitmix64) whose output never changes across crate versions,
//! so corpora and fault sequences stay reproducible from their seed.

use super::content::mix;

/// Deterministic pseudo-random source.
#[derive(Debug, Clone)]
pub(crate) struct Rng64 {
    state: u64,
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Rng64 {
    /// A generator for `seed`, decorrelated by `stream`.
    pub fn new(seed: u64, stream: u64) -> Self {
        Rng64 { state: mix(seed ^ mix(stream)) }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// Uniform float in `[0, 100)`.
    pub fn percent(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 100.0
    }

    /// A random element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(self.below(items.len() as u64) as usize) }
    }

    /// A file/folder id shaped like Drive's: 33 chars of `[A-Za-z0-9_-]` starting with `1`.
    pub fn file_id(&mut self) -> String {
        let mut s = String::with_capacity(33);
        s.push('1');
        for _ in 0..32 {
            s.push(ID_ALPHABET[self.below(64) as usize] as char);
        }
        s
    }

    /// A root-folder / shared-drive id shaped like Drive's: `0A` + 11 chars + `Uk9PVA`.
    pub fn drive_id(&mut self) -> String {
        let mut s = String::from("0A");
        for _ in 0..11 {
            s.push(ID_ALPHABET[self.below(62) as usize] as char);
        }
        s.push_str("Uk9PVA");
        s
    }
}
