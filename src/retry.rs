//! The pacer: one idiom for every remote call (exponential backoff with full jitter, honouring
//! `Retry-After`, capped attempts), a token bucket that caps the request rate, and the retry class
//! every boundary error reports.

use crate::internal_events::InternalEvent;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: rate limits, 5xx, resets, timeouts.
    Retryable,
    /// Will fail the same way again: goes to the dead-letter store.
    Permanent,
    /// The state store failed underneath the call (a write-ahead note could not be recorded): no file
    /// is at fault, and going on could lose track of writes, so the pipeline stops.
    Fatal,
}

/// Implemented by each boundary's error enum, so that one place decides what is retried.
pub trait Classified {
    /// Retry class of this error.
    fn class(&self) -> ErrorClass;
    /// Server-requested delay, if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// Short label for the retries metric.
    fn reason(&self) -> String;
    /// The remote did not answer in time. A call is tried at most [`MAX_TIMED_OUT_ATTEMPTS`] times
    /// on time-outs: a remote silent for that many whole time-outs is down, not slow, and the run
    /// must say so within minutes rather than hang.
    fn timed_out(&self) -> bool {
        false
    }
    /// Whether this failure counts toward opening the circuit breaker: by default every retryable
    /// one. A failure the remote answered on purpose (a refused access token: the credential is at
    /// fault, not the remote) returns false, so it never holds other calls back.
    fn trips_breaker(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

/// Attempts of one call that may end in a time-out before it fails (see [`Classified::timed_out`]).
pub const MAX_TIMED_OUT_ATTEMPTS: u32 = 3;

/// The longest server-requested `Retry-After` honoured; a server asking for more gets this (a mirror
/// worker must not sleep for hours on one header).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Backoff parameters, from `[retry]`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts including the first.
    pub max_attempts: u32,
    /// First delay.
    pub base_delay: Duration,
    /// Cap.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Full-jitter delay before attempt `attempt` (1-based count of failures so far).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << failures.min(20).saturating_sub(1));
        exp.min(self.max_delay).mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// How long to wait after `failures` failures ending with `e`: the server's `Retry-After` when it
    /// sent one (honoured even beyond `max_delay`, up to [`MAX_RETRY_AFTER`]), else jittered backoff.
    pub fn wait<E: Classified>(&self, e: &E, failures: u32) -> Duration {
        match e.retry_after() {
            Some(d) => d.min(MAX_RETRY_AFTER),
            None => self.delay(failures, rand::random::<f64>()),
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    pub async fn run<T, E, F, Fut>(&self, remote: &'static str, mut op: F) -> Result<T, E>
    where
        E: Classified,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut failures = 0;
        let mut timeouts = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.timed_out() && timeouts + 1 >= MAX_TIMED_OUT_ATTEMPTS => return Err(e),
                Err(e) if e.class() == ErrorClass::Retryable && failures + 1 < self.max_attempts => {
                    failures += 1;
                    timeouts += u32::from(e.timed_out());
                    let wait = self.wait(&e, failures);
                    let reason = e.reason();
                    crate::internal_events::Retrying { remote, reason: &reason, wait, failures }.emit();
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A token bucket: at most `rate` acquisitions per second on average, bursts up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// The Drive client's bucket for `[rate_limit] drive_rps`: bursts of one second's worth (at least
    /// one request). `validate` keeps `rps` within its range, so every wait it computes is a `Duration`.
    pub fn per_second(rps: f64) -> Self {
        TokenBucket::new(rps, rps.max(1.0))
    }

    /// How long the caller must wait for a token taken at `now` (the token is taken).
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst) - 1.0;
        s.1 = now;
        if s.0 >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-s.0 / self.rate) }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(ErrorClass, Option<Duration>);
    impl Classified for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
        fn reason(&self) -> String {
            "test".into()
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(10, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_until_attempts_run_out() {
        let mut calls = 0;
        let r: Result<(), E> = policy()
            .run("t", || {
                calls += 1;
                async { Err(E(ErrorClass::Retryable, None)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 4);
    }

    #[derive(Debug)]
    struct Silent;
    impl Classified for Silent {
        fn class(&self) -> ErrorClass {
            ErrorClass::Retryable
        }
        fn reason(&self) -> String {
            "timeout".into()
        }
        fn timed_out(&self) -> bool {
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_that_keeps_timing_out_fails_after_three_attempts() {
        let mut calls = 0;
        let many = RetryPolicy { max_attempts: 10, ..policy() };
        let r: Result<(), Silent> = many
            .run("t", || {
                calls += 1;
                async { Err(Silent) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, MAX_TIMED_OUT_ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), E> = policy()
            .run("t", || {
                calls += 1;
                async { Err(E(ErrorClass::Permanent, None)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let _: Result<(), E> =
            policy()
                .run("t", || {
                    calls += 1;
                    let c = calls;
                    async move {
                        if c < 2 { Err(E(ErrorClass::Retryable, Some(Duration::from_millis(700)))) } else { Ok(()) }
                    }
                })
                .await;
        assert_eq!(start.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_max_delay_is_honoured_up_to_the_ceiling() {
        let p = policy();
        let e = |s| E(ErrorClass::Retryable, Some(Duration::from_secs(s)));
        assert_eq!(p.wait(&e(5), 1), Duration::from_secs(5), "max_delay is 1s, the server asked for 5s");
        assert_eq!(p.wait(&e(86_400), 1), MAX_RETRY_AFTER);
        assert!(p.wait(&E(ErrorClass::Retryable, None), 1) <= Duration::from_millis(100));
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<(), E> = p
            .run("t", || {
                calls += 1;
                let c = calls;
                async move { if c < 2 { Err(e(5)) } else { Ok(()) } }
            })
            .await;
        assert!(r.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn token_bucket_spaces_requests_after_the_burst() {
        let b = TokenBucket::new(10.0, 2.0);
        let t = Instant::now();
        assert_eq!(b.reserve(t), Duration::ZERO);
        assert_eq!(b.reserve(t), Duration::ZERO);
        let w = b.reserve(t);
        assert!(w >= Duration::from_millis(99) && w <= Duration::from_millis(101), "{w:?}");
    }
}
