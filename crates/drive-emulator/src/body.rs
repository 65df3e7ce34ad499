//! Streaming response bodies generated chunk by chunk (never materialized), with optional
//! mid-body connection aborts for fault injection.

use axum::body::Body;
use bytes::{Bytes, BytesMut};

use super::content::{CHUNK, fill};
use super::stats::ByteCounter;

/// Generator state of one body: bytes `[pos, end)` of the stream keyed by `key`.
pub(crate) struct GenBody {
    pub key: u64,
    pub pos: u64,
    pub end: u64,
    /// Absolute offset at which the connection is dropped instead of continuing.
    pub abort_at: Option<u64>,
    /// Absolute offset of a byte served inverted (fault injection: corruption, length intact).
    pub flip_at: Option<u64>,
    pub counter: ByteCounter,
}

impl GenBody {
    fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.pos >= self.end {
            return None;
        }
        let limit = self.abort_at.unwrap_or(self.end).min(self.end);
        if self.pos >= limit {
            self.pos = self.end;
            return Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected connection reset")));
        }
        let n = (limit - self.pos).min(CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        fill(self.key, self.pos, &mut buf);
        if let Some(at) = self.flip_at.filter(|at| (self.pos..self.pos + n as u64).contains(at)) {
            buf[(at - self.pos) as usize] ^= 0xff;
        }
        self.pos += n as u64;
        self.counter.add(n as u64);
        if self.pos >= self.end {
            self.counter.flush();
        }
        Some(Ok(buf.freeze()))
    }

    /// Turn into an HTTP body that is produced as the connection drains it.
    pub fn into_body(self) -> Body {
        let stream = futures::stream::unfold(self, |mut state| async move {
            let chunk = state.next_chunk()?;
            Some((chunk, state))
        });
        Body::from_stream(stream)
    }
}

/// A parsed single `Range: bytes=...` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// Serve everything (no header, or one we ignore like multi-range).
    Full,
    /// Inclusive byte range within the file.
    Part(u64, u64),
    /// Starts past the end: 416.
    Unsatisfiable,
}

/// Interpret a Range header for a body of `size` bytes.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(0) => RangeSpec::Unsatisfiable,
            Ok(_) if size == 0 => RangeSpec::Unsatisfiable,
            Ok(n) => RangeSpec::Part(size.saturating_sub(n), size - 1),
            Err(_) => RangeSpec::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeSpec::Full,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Part(start, end.min(size - 1))
}
