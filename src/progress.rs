//! What `run` tells a person while it works: the progress line on a terminal (files, bytes, rate and
//! ETA) and, in continuous mode, one summary line each time the pipeline settles after a poll's work.
//! Pure: the caller samples the committer's [`Progress`] and the ledger, this module does the sums.

use crate::stages::committer::Progress;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks: long enough to smooth batches, short enough to follow a change of pace.
const WINDOW: Duration = Duration::from_secs(10);

/// Rates over the last [`WINDOW`], from samples of the committer's counters.
#[derive(Debug, Default)]
pub struct Meter {
    samples: VecDeque<(Instant, u64, u64)>,
}

/// Items finished and bytes written per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Events given an outcome per second (files written, skipped, removed, folders…).
    pub items_per_s: f64,
    /// Bytes written per second.
    pub bytes_per_s: f64,
}

impl Meter {
    /// Records the counters at `at` and returns the rates over the window that ends there.
    pub fn sample(&mut self, at: Instant, p: &Progress) -> Rates {
        self.samples.push_back((at, p.outcomes, p.bytes));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|(t, ..)| at.duration_since(*t) > WINDOW) {
            self.samples.pop_front();
        }
        let (Some((t0, items0, bytes0)), Some((t1, items1, bytes1))) = (self.samples.front(), self.samples.back())
        else {
            return Rates::default();
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        Rates {
            items_per_s: items1.saturating_sub(*items0) as f64 / secs,
            bytes_per_s: bytes1.saturating_sub(*bytes0) as f64 / secs,
        }
    }
}

/// Time to finish `pending` items at `items_per_s`; `None` when nothing moves or nothing is left.
pub fn eta(pending: u64, items_per_s: f64) -> Option<Duration> {
    (pending > 0 && items_per_s > 0.0).then(|| Duration::from_secs_f64(pending as f64 / items_per_s))
}

/// `m:ss`, or `h:mm:ss` from an hour on.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", (s / 60) % 60, s % 60),
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1u64 << 20) as f64
}

/// The terminal's progress line. `pending` is what the feed has handed out and the committer has not
/// finished: during a first listing it grows as the listing goes on, and so does the ETA.
pub fn line(p: &Progress, in_flight: usize, pending: u64, rates: Rates) -> String {
    let eta = match eta(pending, rates.items_per_s) {
        Some(d) => format!(", ETA {}", clock(d)),
        None => String::new(),
    };
    format!(
        "{} mirrored ({:.1} MiB), {} skipped, {} removed, {} dead-lettered, {} in flight; {:.0} items/s, {:.1} MiB/s{eta}",
        p.committed,
        mib(p.bytes as f64),
        p.skipped,
        p.removed,
        p.dead_lettered,
        in_flight,
        rates.items_per_s,
        mib(rates.bytes_per_s),
    )
}

/// The continuous-mode line for the work done between `before` and `now`, or `None` when nothing was
/// finished (a poll that found no change says nothing).
pub fn summary(before: &Progress, now: &Progress) -> Option<String> {
    if now.outcomes == before.outcomes {
        return None;
    }
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let mut line = format!(
        "caught up: {} mirrored ({:.1} MiB), {} removed, {} skipped, {} dead-lettered since the last summary",
        d(now.committed, before.committed),
        mib(d(now.bytes, before.bytes) as f64),
        d(now.removed, before.removed),
        d(now.skipped, before.skipped),
        d(now.dead_lettered, before.dead_lettered),
    );
    if let Some(refused) = refused_between(before, now) {
        line.push_str(&format!("; {refused}"));
    }
    Some(line)
}

/// What Drive would not hand over between `before` and `now`, by reason (`None` when nothing was
/// refused): never silent, and told apart from files skipped because they were already mirrored.
pub fn refused_between(before: &Progress, now: &Progress) -> Option<String> {
    let parts: Vec<String> = [
        (now.download_disabled.saturating_sub(before.download_disabled), "download disabled by the owner"),
        (
            now.abusive.saturating_sub(before.abusive),
            "flagged abusive (not acknowledged: acknowledge_abuse is off or the file is not yours)",
        ),
        (now.no_export.saturating_sub(before.no_export), "Google type with no export (Forms, Sites, Maps…)"),
        (now.quota_deferred.saturating_sub(before.quota_deferred), "download quota exceeded (deferred for hours)"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    (!parts.is_empty()).then(|| format!("not mirrored, Drive will not hand them over: {}", parts.join(", ")))
}

/// The run summary's line about files Drive would not hand over this run, if any (`run --once`
/// prints it after its totals).
pub fn refused_line(p: &Progress) -> Option<String> {
    refused_between(&Progress::default(), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(outcomes: u64, bytes: u64) -> Progress {
        Progress { outcomes, committed: outcomes, bytes, ..Default::default() }
    }

    #[test]
    fn the_rate_follows_the_last_ten_seconds() {
        let mut m = Meter::default();
        let t0 = Instant::now();
        assert_eq!(m.sample(t0, &progress(0, 0)), Rates::default());
        let r = m.sample(t0 + Duration::from_secs(2), &progress(200, 2 << 20));
        assert_eq!((r.items_per_s, r.bytes_per_s), (100.0, (1 << 20) as f64));
        // A stall: after the window has passed, the old burst no longer counts.
        m.sample(t0 + Duration::from_secs(8), &progress(200, 2 << 20));
        let r = m.sample(t0 + Duration::from_secs(20), &progress(200, 2 << 20));
        assert_eq!(r.items_per_s, 0.0);
    }

    #[test]
    fn eta_and_clock() {
        assert_eq!(eta(0, 10.0), None);
        assert_eq!(eta(10, 0.0), None);
        assert_eq!(eta(300, 10.0), Some(Duration::from_secs(30)));
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
        assert_eq!(clock(Duration::from_secs(3 * 3600 + 61)), "3:01:01");
        let l = line(&progress(5, 0), 2, 300, Rates { items_per_s: 10.0, bytes_per_s: 0.0 });
        assert!(l.ends_with("10 items/s, 0.0 MiB/s, ETA 0:30"), "{l}");
    }

    #[test]
    fn a_summary_says_what_changed_or_nothing() {
        let before = progress(10, 1 << 20);
        assert_eq!(summary(&before, &before), None);
        let mut now = progress(13, 3 << 20);
        now.removed = 1;
        let s = summary(&before, &now).unwrap();
        assert!(s.contains("3 mirrored (2.0 MiB), 1 removed"), "{s}");
        assert!(!s.contains("not mirrored"), "{s}");
    }

    #[test]
    fn files_drive_refused_are_counted_by_reason() {
        let before = Progress { abusive: 1, ..progress(1, 0) };
        let now = Progress { download_disabled: 2, abusive: 1, no_export: 1, skipped: 3, ..progress(4, 0) };
        let s = summary(&before, &now).unwrap();
        assert!(
            s.ends_with("2 download disabled by the owner, 1 Google type with no export (Forms, Sites, Maps…)"),
            "{s}"
        );
        let whole = refused_line(&now).unwrap();
        assert!(whole.contains("1 flagged abusive"), "{whole}");
        assert_eq!(refused_line(&progress(3, 0)), None);
    }
}
