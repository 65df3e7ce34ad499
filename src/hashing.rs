//! Content hashing on the chunk path: md5 (what Drive always reports, what the verifier checks) and
//! sha256 (checked against Drive's `sha256Checksum` when given, and kept in the file record), computed
//! as bytes stream by. `[pipeline] sha256 = false` leaves sha256 out ([`Digests`]).
//!
//! Two reasons it is not the pure-Rust `md-5`/`sha2` crates:
//! - **Speed.** aws-lc (already linked for TLS) has assembly MD5 and AVX2 SHA-256; on this CPU, which
//!   has no SHA-NI, that is about twice as fast, and hashing was the limit of a single large file.
//! - **Resumable state.** A multipart upload interrupted by a crash continues from its last recorded
//!   part. The file's digests must then continue from the state they had at that part boundary, so the
//!   state is snapshotted into a plain serializable value ([`HashState`]) and restored from it.

use aws_lc_sys::{MD5_CTX, MD5_Final, MD5_Init, MD5_Update, SHA256_CTX, SHA256_Final, SHA256_Init, SHA256_Update};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Which digests the chunk path computes. md5 is always computed: it is what Drive reports and what
/// the verifier checks. sha256 is the stronger second check and the slower one: on a CPU without
/// SHA extensions it is about 240 MB/s per core, which bounds how fast one large file can stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Digests {
    /// md5 only (`[pipeline] sha256 = false`).
    Md5,
    /// md5 and sha256 (the default).
    #[default]
    Md5AndSha256,
}

/// md5 and (unless [`Digests::Md5`]) sha256 of one stream, and its length.
pub struct ContentHasher {
    md5: MD5_CTX,
    sha256: Sha256Lane,
    len: u64,
}

/// Where the sha256 of a stream is computed.
enum Sha256Lane {
    /// Not computed.
    Off,
    /// On the caller's thread (small pieces, and between large runs).
    Here(Box<SHA256_CTX>),
    /// On a thread of its own, fed the stream's pieces in order, so that sha256 (the slowest step of a
    /// large transfer) runs all the time beside md5 and the I/O instead of once per piece.
    Worker(Sha256Worker),
}

/// A thread hashing the pieces it is sent into one sha256 context, returned when the sender is dropped.
struct Sha256Worker {
    pieces: SyncSender<Bytes>,
    done: JoinHandle<Box<SHA256_CTX>>,
}

/// The finished digests of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    /// Lower-case hex md5.
    pub md5: String,
    /// Lower-case hex sha256; `None` when only md5 was computed.
    pub sha256: Option<String>,
    /// Bytes hashed.
    pub len: u64,
}

/// A [`ContentHasher`]'s state, as plain data: saved with a multipart upload's recorded parts so that a
/// restarted upload's digests cover the bytes sent before the crash. Without sha256 its sha256 fields
/// hold the empty state.
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
        Self::new(Digests::default())
    }
}

impl ContentHasher {
    /// A hasher over the empty stream.
    pub fn new(digests: Digests) -> Self {
        let sha256 = match digests {
            Digests::Md5 => Sha256Lane::Off,
            Digests::Md5AndSha256 => Sha256Lane::Here(new_sha256()),
        };
        // SAFETY: MD5_CTX is a plain C struct; MD5_Init fully initialises it and cannot fail.
        let md5 = unsafe {
            let mut md5: MD5_CTX = std::mem::zeroed();
            MD5_Init(&mut md5);
            md5
        };
        ContentHasher { md5, sha256, len: 0 }
    }

    /// Which digests this hasher computes.
    pub fn digests(&self) -> Digests {
        match self.sha256 {
            Sha256Lane::Off => Digests::Md5,
            _ => Digests::Md5AndSha256,
        }
    }

    /// Feeds the next bytes of the stream. From the first large piece on, sha256 runs on a thread of
    /// its own (see [`Sha256Lane::Worker`]). Its queue holds at most [`WORKER_QUEUE`] pieces: when it
    /// is full this call waits for the thread, which bounds both the memory held and how far sha256
    /// lags behind md5.
    pub fn update(&mut self, bytes: &Bytes) {
        if bytes.len() >= PARALLEL_MIN
            && let Sha256Lane::Here(_) = self.sha256
        {
            self.start_worker();
        }
        match &mut self.sha256 {
            Sha256Lane::Off => {}
            Sha256Lane::Here(ctx) => sha256_update(ctx, bytes),
            Sha256Lane::Worker(w) => {
                if w.pieces.send(bytes.clone()).is_err() {
                    // The thread is gone (it cannot panic on its own; only if the process is dying).
                    // Take its context back and go on here.
                    self.join_worker();
                    if let Sha256Lane::Here(ctx) = &mut self.sha256 {
                        sha256_update(ctx, bytes);
                    }
                }
            }
        }
        md5_update(&mut self.md5, bytes);
        self.len += bytes.len() as u64;
    }

    /// Moves the sha256 context to a worker thread; stays on this thread if none can be started.
    fn start_worker(&mut self) {
        let Sha256Lane::Here(ctx) = &self.sha256 else { return };
        // The context is plain data: the thread gets a copy, and ours stays valid if it cannot start.
        let mut theirs: SHA256_CTX = **ctx;
        let (tx, rx) = sync_channel::<Bytes>(WORKER_QUEUE);
        let spawned = std::thread::Builder::new().name("sha256".into()).spawn(move || {
            for piece in rx {
                sha256_update(&mut theirs, &piece);
            }
            Box::new(theirs)
        });
        match spawned {
            Ok(done) => self.sha256 = Sha256Lane::Worker(Sha256Worker { pieces: tx, done }),
            Err(e) => tracing::debug!(error = %e, "no sha256 thread; hashing on this one"),
        }
    }

    /// Waits for the worker to hash everything it was sent and takes its context back.
    fn join_worker(&mut self) {
        if !matches!(self.sha256, Sha256Lane::Worker(_)) {
            return;
        }
        if let Sha256Lane::Worker(w) = std::mem::replace(&mut self.sha256, Sha256Lane::Off) {
            drop(w.pieces);
            self.sha256 = Sha256Lane::Here(w.done.join().expect("the sha256 thread does not panic"));
        }
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
        self.join_worker();
        let mut md5 = [0u8; 16];
        // SAFETY: the output buffer has the digest size (16 bytes).
        unsafe { MD5_Final(md5.as_mut_ptr(), &mut self.md5) };
        let sha256 = match &mut self.sha256 {
            Sha256Lane::Here(ctx) => {
                let mut out = [0u8; 32];
                // SAFETY: the output buffer has the digest size (32 bytes).
                unsafe { SHA256_Final(out.as_mut_ptr(), &mut **ctx) };
                Some(hex::encode(out))
            }
            _ => None,
        };
        ContentDigest { md5: hex::encode(md5), sha256, len: self.len }
    }

    /// The state, to save beside a recorded upload part. Waits for the sha256 thread to catch up
    /// (it starts again with the next large piece).
    pub fn snapshot(&mut self) -> HashState {
        self.join_worker();
        let empty;
        let sha = match &self.sha256 {
            Sha256Lane::Here(ctx) => &**ctx,
            _ => {
                empty = new_sha256();
                &*empty
            }
        };
        HashState {
            md5_h: self.md5.h,
            md5_bits: (self.md5.Nl, self.md5.Nh),
            md5_pending: self.md5.data[..self.md5.num as usize].to_vec(),
            sha256_h: sha.h,
            sha256_bits: (sha.Nl, sha.Nh),
            sha256_pending: sha.data[..sha.num as usize].to_vec(),
            len: self.len,
        }
    }

    /// A hasher that continues from a saved state and computes `digests`. A state saved without
    /// sha256 cannot continue with sha256 (the bytes before it were never hashed so): that is an error,
    /// and the caller starts the stream over.
    pub fn restore(state: &HashState, digests: Digests) -> Result<ContentHasher, InvalidHashState> {
        let bits = |(lo, hi): (u32, u32)| (u64::from(hi) << 32 | u64::from(lo)) / 8;
        let with_sha256 = digests == Digests::Md5AndSha256;
        if state.md5_pending.len() >= 64 || state.sha256_pending.len() >= 64 {
            return Err(InvalidHashState("pending block too long"));
        }
        if bits(state.md5_bits) != state.len || (with_sha256 && bits(state.sha256_bits) != state.len) {
            return Err(InvalidHashState("lengths disagree (or sha256 was not computed)"));
        }
        let pending_ok = |p: &[u8]| p.len() as u64 == state.len % 64;
        if !pending_ok(&state.md5_pending) || (with_sha256 && !pending_ok(&state.sha256_pending)) {
            return Err(InvalidHashState("pending bytes disagree with the length"));
        }
        let mut h = ContentHasher::new(digests);
        h.md5.h = state.md5_h;
        (h.md5.Nl, h.md5.Nh) = state.md5_bits;
        h.md5.data[..state.md5_pending.len()].copy_from_slice(&state.md5_pending);
        h.md5.num = state.md5_pending.len() as u32;
        if let Sha256Lane::Here(sha) = &mut h.sha256 {
            sha.h = state.sha256_h;
            (sha.Nl, sha.Nh) = state.sha256_bits;
            sha.data[..state.sha256_pending.len()].copy_from_slice(&state.sha256_pending);
            sha.num = state.sha256_pending.len() as u32;
        }
        h.len = state.len;
        Ok(h)
    }
}

/// Pieces at least this large move sha256 to its own thread.
const PARALLEL_MIN: usize = 256 << 10;

/// Pieces queued for the sha256 thread at most (beside the one it is hashing).
pub const WORKER_QUEUE: usize = 2;

fn new_sha256() -> Box<SHA256_CTX> {
    // SAFETY: SHA256_CTX is a plain C struct; SHA256_Init fully initialises it and cannot fail.
    unsafe {
        let mut ctx: Box<SHA256_CTX> = Box::new(std::mem::zeroed());
        SHA256_Init(&mut *ctx);
        ctx
    }
}

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

    fn digest_of(digests: Digests, parts: &[&[u8]]) -> ContentDigest {
        let mut h = ContentHasher::new(digests);
        for p in parts {
            h.update(&Bytes::copy_from_slice(p));
        }
        h.finish()
    }

    fn reference(data: &[u8]) -> (String, String) {
        use md5::Digest;
        (hex::encode(md5::Md5::digest(data)), hex::encode(sha2::Sha256::digest(data)))
    }

    #[test]
    fn matches_known_digests() {
        let d = digest_of(Digests::Md5AndSha256, &[b"hello ", b"world"]);
        assert_eq!(d.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(d.sha256.as_deref(), Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"));
        assert_eq!(d.len, 11);
        let empty = digest_of(Digests::Md5AndSha256, &[]);
        assert_eq!(empty.md5, "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(empty.sha256.as_deref(), Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    }

    #[test]
    fn md5_only_computes_no_sha256() {
        let d = digest_of(Digests::Md5, &[b"hello ", b"world"]);
        assert_eq!(d.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(d.sha256, None);
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn large_pieces_hashed_on_the_worker_give_the_same_digests() {
        let data = sample(5 * PARALLEL_MIN + 77);
        // Small, large, small, large: the context moves to the worker and the small pieces after it
        // must still be hashed in order.
        let (a, rest) = data.split_at(1000);
        let (b, rest) = rest.split_at(2 * PARALLEL_MIN);
        let (c, d) = rest.split_at(33);
        let mixed = digest_of(Digests::Md5AndSha256, &[a, b, c, d]);
        let (md5, sha256) = reference(&data);
        assert_eq!(mixed.md5, md5);
        assert_eq!(mixed.sha256, Some(sha256));
        let small: Vec<&[u8]> = data.chunks(4096).collect();
        assert_eq!(mixed, digest_of(Digests::Md5AndSha256, &small));
    }

    #[test]
    fn a_snapshot_between_large_pieces_waits_for_the_worker() {
        let data = sample(6 * PARALLEL_MIN + 5);
        let mut h = ContentHasher::new(Digests::Md5AndSha256);
        let mut states = Vec::new();
        for piece in data.chunks(PARALLEL_MIN + 3) {
            h.update(&Bytes::copy_from_slice(piece));
            states.push(h.snapshot());
        }
        let (md5, sha256) = reference(&data);
        let whole = h.finish();
        assert_eq!((whole.md5, whole.sha256), (md5.clone(), Some(sha256.clone())));
        // Every snapshot continues to the same digests.
        for s in states {
            let mut resumed = ContentHasher::restore(&s, Digests::Md5AndSha256).unwrap();
            resumed.update(&Bytes::copy_from_slice(&data[s.len() as usize..]));
            let got = resumed.finish();
            assert_eq!((got.md5, got.sha256), (md5.clone(), Some(sha256.clone())));
        }
    }

    #[test]
    fn rejects_a_state_whose_fields_disagree() {
        let mut h = ContentHasher::new(Digests::Md5AndSha256);
        h.update(&Bytes::from_static(&[7u8; 100]));
        let mut s = h.snapshot();
        s.len += 1;
        assert!(ContentHasher::restore(&s, Digests::Md5AndSha256).is_err());
        let mut s = h.snapshot();
        s.md5_pending.push(0);
        assert!(ContentHasher::restore(&s, Digests::Md5AndSha256).is_err());
    }

    #[test]
    fn an_md5_only_state_cannot_continue_with_sha256() {
        let mut h = ContentHasher::new(Digests::Md5);
        h.update(&Bytes::from_static(&[7u8; 100]));
        let s = h.snapshot();
        assert!(ContentHasher::restore(&s, Digests::Md5AndSha256).is_err());
        let mut resumed = ContentHasher::restore(&s, Digests::Md5).unwrap();
        resumed.update(&Bytes::from_static(&[7u8; 28]));
        assert_eq!(resumed.finish().md5, reference(&[7u8; 128]).0);
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
            let mut first = ContentHasher::new(Digests::Md5AndSha256);
            first.update(&Bytes::copy_from_slice(&data[..cut]));
            let saved = crate::state::codec::encode(&first.snapshot()).unwrap();
            let state: HashState = crate::state::codec::decode(&saved).unwrap();
            let mut resumed = ContentHasher::restore(&state, Digests::Md5AndSha256).unwrap();
            resumed.update(&Bytes::copy_from_slice(&data[cut..]));
            let got = resumed.finish();
            let (md5, sha256) = reference(&data);
            prop_assert_eq!(got.md5, md5);
            prop_assert_eq!(got.sha256, Some(sha256));
            prop_assert_eq!(got.len, data.len() as u64);
        }
    }
}
