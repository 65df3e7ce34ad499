//! Content hashing on the chunk path: md5 (what Drive reports, what the verifier checks) and sha256
//! (what the content index and object metadata carry), computed as bytes stream by.
//!
//! Two reasons it is not the pure-Rust `md-5`/`sha2` crates:
//! - **Speed.** aws-lc (already linked for TLS) has assembly MD5 and AVX2 SHA-256; on this CPU, which
//!   has no SHA-NI, that is about twice as fast, and hashing was the limit of a single large file.
//! - **Resumable state.** A multipart upload interrupted by a crash continues from its last recorded
//!   part. The file's digests must then continue from the state they had at that part boundary, so the
//!   state is snapshotted into a plain serializable value ([`HashState`]) and restored from it.

use aws_lc_sys::{MD5_CTX, MD5_Final, MD5_Init, MD5_Update, SHA256_CTX, SHA256_Final, SHA256_Init, SHA256_Update};
use serde::{Deserialize, Serialize};

/// md5 and sha256 of one stream, and its length.
#[derive(Clone)]
pub struct ContentHasher {
    md5: MD5_CTX,
    sha256: SHA256_CTX,
    len: u64,
}

/// The finished digests of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    /// Lower-case hex md5.
    pub md5: String,
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Bytes hashed.
    pub len: u64,
}

/// A [`ContentHasher`]'s state, as plain data: saved with a multipart upload's recorded parts so that a
/// restarted upload's digests cover the bytes sent before the crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashState {
    md5_h: [u32; 4],
    md5_bits: (u32, u32),
    md5_pending: Vec<u8>,
    sha256_h: [u32; 8],
    sha256_bits: (u32, u32),
    sha256_pending: Vec<u8>,
    len: u64,
}

/// A saved [`HashState`] that cannot be a real hasher state (corrupt or from another format).
#[derive(Debug, thiserror::Error)]
#[error("invalid saved hash state: {0}")]
pub struct InvalidHashState(&'static str);

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentHasher {
    /// A hasher over the empty stream.
    pub fn new() -> Self {
        // SAFETY: both contexts are plain C structs; the Init functions fully initialise them and
        // cannot fail (they always return 1).
        unsafe {
            let mut md5: MD5_CTX = std::mem::zeroed();
            let mut sha256: SHA256_CTX = std::mem::zeroed();
            MD5_Init(&mut md5);
            SHA256_Init(&mut sha256);
            ContentHasher { md5, sha256, len: 0 }
        }
    }

    /// Feeds the next bytes of the stream. A large piece is hashed on two cores at once (sha256 on a
    /// scoped thread, md5 on this one): sha256 alone is half the CPU of a large transfer here, and a
    /// thread per MiB costs far less than the hashing it overlaps.
    pub fn update(&mut self, bytes: &[u8]) {
        let (md5, sha256) = (&mut self.md5, &mut self.sha256);
        if bytes.len() >= PARALLEL_MIN {
            std::thread::scope(|s| {
                s.spawn(|| sha256_update(sha256, bytes));
                md5_update(md5, bytes);
            });
        } else {
            md5_update(md5, bytes);
            sha256_update(sha256, bytes);
        }
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digests of everything fed so far.
    pub fn finish(mut self) -> ContentDigest {
        let mut md5 = [0u8; 16];
        let mut sha256 = [0u8; 32];
        // SAFETY: the output buffers have the digest sizes (16 and 32 bytes).
        unsafe {
            MD5_Final(md5.as_mut_ptr(), &mut self.md5);
            SHA256_Final(sha256.as_mut_ptr(), &mut self.sha256);
        }
        ContentDigest { md5: hex::encode(md5), sha256: hex::encode(sha256), len: self.len }
    }

    /// The state, to save beside a recorded upload part.
    pub fn snapshot(&self) -> HashState {
        HashState {
            md5_h: self.md5.h,
            md5_bits: (self.md5.Nl, self.md5.Nh),
            md5_pending: self.md5.data[..self.md5.num as usize].to_vec(),
            sha256_h: self.sha256.h,
            sha256_bits: (self.sha256.Nl, self.sha256.Nh),
            sha256_pending: self.sha256.data[..self.sha256.num as usize].to_vec(),
            len: self.len,
        }
    }

    /// A hasher that continues from a saved state.
    pub fn restore(state: &HashState) -> Result<ContentHasher, InvalidHashState> {
        let bits = |(lo, hi): (u32, u32)| (u64::from(hi) << 32 | u64::from(lo)) / 8;
        if state.md5_pending.len() >= 64 || state.sha256_pending.len() >= 64 {
            return Err(InvalidHashState("pending block too long"));
        }
        if bits(state.md5_bits) != state.len || bits(state.sha256_bits) != state.len {
            return Err(InvalidHashState("lengths disagree"));
        }
        if state.md5_pending.len() as u64 != state.len % 64 || state.sha256_pending.len() as u64 != state.len % 64 {
            return Err(InvalidHashState("pending bytes disagree with the length"));
        }
        let mut h = ContentHasher::new();
        h.md5.h = state.md5_h;
        (h.md5.Nl, h.md5.Nh) = state.md5_bits;
        h.md5.data[..state.md5_pending.len()].copy_from_slice(&state.md5_pending);
        h.md5.num = state.md5_pending.len() as u32;
        h.sha256.h = state.sha256_h;
        (h.sha256.Nl, h.sha256.Nh) = state.sha256_bits;
        h.sha256.data[..state.sha256_pending.len()].copy_from_slice(&state.sha256_pending);
        h.sha256.num = state.sha256_pending.len() as u32;
        h.len = state.len;
        Ok(h)
    }
}

/// Pieces at least this large are hashed with md5 and sha256 in parallel.
const PARALLEL_MIN: usize = 256 << 10;

fn md5_update(ctx: &mut MD5_CTX, bytes: &[u8]) {
    // SAFETY: `ctx` was initialised by `ContentHasher::new` or validated by `restore`; the pointer and
    // length describe a live slice.
    unsafe { MD5_Update(ctx, bytes.as_ptr().cast(), bytes.len()) };
}

fn sha256_update(ctx: &mut SHA256_CTX, bytes: &[u8]) {
    // SAFETY: as for `md5_update`.
    unsafe { SHA256_Update(ctx, bytes.as_ptr().cast(), bytes.len()) };
}

impl HashState {
    /// Bytes the saved state covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it covers nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest_of(parts: &[&[u8]]) -> ContentDigest {
        let mut h = ContentHasher::new();
        for p in parts {
            h.update(p);
        }
        h.finish()
    }

    #[test]
    fn matches_known_digests() {
        let d = digest_of(&[b"hello ", b"world"]);
        assert_eq!(d.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(d.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(d.len, 11);
        let empty = digest_of(&[]);
        assert_eq!(empty.md5, "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(empty.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn large_pieces_hashed_in_parallel_give_the_same_digests() {
        let data: Vec<u8> = (0..(3 * PARALLEL_MIN + 77)).map(|i| (i * 31 % 251) as u8).collect();
        let whole = digest_of(&[&data]);
        let small: Vec<&[u8]> = data.chunks(4096).collect();
        assert_eq!(whole, digest_of(&small));
        use md5::Digest;
        assert_eq!(whole.md5, hex::encode(md5::Md5::digest(&data)));
        assert_eq!(whole.sha256, hex::encode(sha2::Sha256::digest(&data)));
    }

    #[test]
    fn rejects_a_state_whose_fields_disagree() {
        let mut h = ContentHasher::new();
        h.update(&[7u8; 100]);
        let mut s = h.snapshot();
        s.len += 1;
        assert!(ContentHasher::restore(&s).is_err());
        let mut s = h.snapshot();
        s.md5_pending.push(0);
        assert!(ContentHasher::restore(&s).is_err());
    }

    proptest! {
        /// Snapshot at any point, serialize, restore, continue: the same digests as one pass, and the
        /// same as the pure-Rust reference implementations.
        #[test]
        fn a_restored_state_continues_the_same_stream(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cut in 0usize..3000,
        ) {
            let cut = cut.min(data.len());
            let mut first = ContentHasher::new();
            first.update(&data[..cut]);
            let saved = crate::state::codec::encode(&first.snapshot()).unwrap();
            let state: HashState = crate::state::codec::decode(&saved).unwrap();
            let mut resumed = ContentHasher::restore(&state).unwrap();
            resumed.update(&data[cut..]);
            let got = resumed.finish();
            use md5::Digest;
            prop_assert_eq!(got.md5, hex::encode(md5::Md5::digest(&data)));
            prop_assert_eq!(got.sha256, hex::encode(sha2::Sha256::digest(&data)));
            prop_assert_eq!(got.len, data.len() as u64);
        }
    }
}
