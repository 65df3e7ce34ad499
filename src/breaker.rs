//! A circuit breaker per remote (Drive, destination), so that a service that is down is not hammered
//! by every worker's retries.
//!
//! Closed: calls pass; `threshold` consecutive *retryable* failures (rate limits, 5xx, resets,
//! timeouts) open it. A permanent error (404, refusal) proves the remote answers, so it counts as a
//! success for the breaker; so does a refused access token (Drive's 401: the token is at fault, see
//! [`Classified::trips_breaker`]). Open: calls are **held**, not failed, until the cool-down ends (a mirror
//! must not dead-letter files because the remote had a bad minute). Half-open: exactly one held call
//! goes through as a probe while the others keep waiting; its success closes the breaker, its
//! retryable failure re-opens it for another cool-down. Time is `tokio::time`, so a paused test clock
//! drives it.

use crate::internal_events::{CircuitChanged, InternalEvent};
use crate::retry::Classified;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Breaker parameters, from `[retry] breaker_threshold` and `breaker_cooldown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive retryable failures that open the breaker.
    pub threshold: u32,
    /// How long it stays open before a probe is let through.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { threshold: 5, cooldown: Duration::from_secs(30) }
    }
}

/// Where the breaker stands; the gauge value is the discriminant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed = 0,
    /// One probe call is (or may be) in flight; the rest wait for its outcome.
    HalfOpen = 1,
    /// Calls wait for the cool-down to end.
    Open = 2,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One remote's breaker; share it (`Arc`) between every caller of that remote.
#[derive(Debug)]
pub struct Breaker {
    remote: &'static str,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    changed: Notify,
}

/// What `admit` granted: a normal call, or the half-open probe (which must report back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permit {
    Normal,
    Probe,
}

/// Releases the probe slot if the probing call is dropped before it reports (cancellation), so the
/// breaker never stays half-open with nobody probing.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.set(Inner::HalfOpen { probing: false });
        }
    }
}

impl Breaker {
    /// A closed breaker for `remote` (the metric label).
    pub fn new(remote: &'static str, settings: BreakerSettings) -> Breaker {
        let b = Breaker {
            remote,
            settings: BreakerSettings { threshold: settings.threshold.max(1), ..settings },
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            changed: Notify::new(),
        };
        CircuitChanged::Started { remote, state: BreakerState::Closed as u8 }.emit();
        b
    }

    /// Current state (for tests and logs).
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
        }
    }

    /// Runs `op` once the breaker admits it, and records its outcome.
    pub async fn call<T, E, Fut>(&self, op: impl FnOnce() -> Fut) -> Result<T, E>
    where
        E: Classified,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.admit().await;
        let mut guard = ProbeGuard { breaker: self, armed: permit == Permit::Probe };
        let result = op().await;
        guard.armed = false;
        self.record(permit, result.as_ref().err().is_some_and(Classified::trips_breaker));
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a call may go out: at once when closed, after the cool-down when open, after the
    /// probe's outcome when another call is probing.
    async fn admit(&self) -> Permit {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut inner = self.lock();
                match *inner {
                    Inner::Closed { .. } => return Permit::Normal,
                    Inner::HalfOpen { probing: false } => {
                        *inner = Inner::HalfOpen { probing: true };
                        return Permit::Probe;
                    }
                    Inner::Open { until } if Instant::now() >= until => {
                        *inner = Inner::HalfOpen { probing: true };
                        drop(inner);
                        self.publish(BreakerState::HalfOpen);
                        CircuitChanged::HalfOpen { remote: self.remote }.emit();
                        return Permit::Probe;
                    }
                    Inner::Open { until } => Some(until),
                    Inner::HalfOpen { probing: true } => None,
                }
            };
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Updates the state from one call's outcome (`retryable`: a failure that trips the breaker).
    fn record(&self, permit: Permit, retryable: bool) {
        let mut inner = self.lock();
        let next = match (&*inner, permit, retryable) {
            (_, Permit::Probe, false) => Some(Inner::Closed { failures: 0 }),
            (_, Permit::Probe, true) => Some(self.opened()),
            (Inner::Closed { .. }, Permit::Normal, false) => Some(Inner::Closed { failures: 0 }),
            (Inner::Closed { failures }, Permit::Normal, true) if failures + 1 >= self.settings.threshold => {
                Some(self.opened())
            }
            (Inner::Closed { failures }, Permit::Normal, true) => Some(Inner::Closed { failures: failures + 1 }),
            // A call admitted before the breaker opened: the probe alone decides now.
            (Inner::Open { .. } | Inner::HalfOpen { .. }, Permit::Normal, _) => None,
        };
        let Some(next) = next else { return };
        let before = state_of(&inner);
        *inner = next;
        let after = state_of(&inner);
        drop(inner);
        if before != after {
            self.publish(after);
            if after == BreakerState::Open {
                CircuitChanged::Opened { remote: self.remote, cooldown: self.settings.cooldown }.emit();
            } else if after == BreakerState::Closed {
                CircuitChanged::Closed { remote: self.remote }.emit();
            }
            self.changed.notify_waiters();
        }
    }

    fn opened(&self) -> Inner {
        Inner::Open { until: Instant::now() + self.settings.cooldown }
    }

    fn set(&self, next: Inner) {
        let state = state_of(&next);
        *self.lock() = next;
        self.publish(state);
        self.changed.notify_waiters();
    }

    fn publish(&self, state: BreakerState) {
        CircuitChanged::Published { remote: self.remote, state: state as u8 }.emit();
    }
}

fn state_of(inner: &Inner) -> BreakerState {
    match inner {
        Inner::Closed { .. } => BreakerState::Closed,
        Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        Inner::Open { .. } => BreakerState::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::ErrorClass;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    struct E(ErrorClass);
    impl Classified for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn reason(&self) -> String {
            "test".into()
        }
    }

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn breaker() -> Arc<Breaker> {
        Arc::new(Breaker::new("test", BreakerSettings { threshold: 3, cooldown: COOLDOWN }))
    }

    async fn fail(b: &Breaker, class: ErrorClass) {
        let r: Result<(), E> = b.call(|| async { Err(E(class)) }).await;
        assert_eq!(r, Err(E(class)));
    }

    async fn succeed(b: &Breaker) {
        let r: Result<(), E> = b.call(|| async { Ok(()) }).await;
        assert_eq!(r, Ok(()));
    }

    async fn trip(b: &Breaker) {
        for _ in 0..3 {
            fail(b, ErrorClass::Retryable).await;
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_of_consecutive_retryable_failures() {
        let b = breaker();
        fail(&b, ErrorClass::Retryable).await;
        fail(&b, ErrorClass::Retryable).await;
        assert_eq!(b.state(), BreakerState::Closed);
        succeed(&b).await; // a success resets the count
        fail(&b, ErrorClass::Retryable).await;
        fail(&b, ErrorClass::Retryable).await;
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, ErrorClass::Retryable).await;
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_do_not_trip_it() {
        let b = breaker();
        for _ in 0..10 {
            fail(&b, ErrorClass::Permanent).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, ErrorClass::Retryable).await;
        fail(&b, ErrorClass::Retryable).await;
        fail(&b, ErrorClass::Permanent).await; // the remote answered: the streak is broken
        fail(&b, ErrorClass::Retryable).await;
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// A retryable failure that the remote answered on purpose (Drive's 401 to a revoked token).
    #[derive(Debug, PartialEq)]
    struct RefusedToken;
    impl Classified for RefusedToken {
        fn class(&self) -> ErrorClass {
            ErrorClass::Retryable
        }
        fn reason(&self) -> String {
            "authError".into()
        }
        fn trips_breaker(&self) -> bool {
            false
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_do_not_trip_it_never_open_it() {
        let b = breaker();
        for _ in 0..10 {
            let r: Result<(), RefusedToken> = b.call(|| async { Err(RefusedToken) }).await;
            assert_eq!(r, Err(RefusedToken));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_held_while_open_and_the_probe_goes_after_the_cooldown() {
        let b = breaker();
        trip(&b).await;
        let opened = Instant::now();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let b2 = b.clone();
        let held = tokio::spawn(async move {
            b2.call(|| async {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, E>(Instant::now())
            })
            .await
        });
        tokio::time::sleep(COOLDOWN - Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a call went out while the breaker was open");
        assert_eq!(b.state(), BreakerState::Open);
        let ran_at = held.await.unwrap().unwrap();
        assert_eq!(ran_at - opened, COOLDOWN, "the held call ran as the probe right after the cool-down");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(b.state(), BreakerState::Closed, "a successful probe closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_through_and_holds_the_rest() {
        let b = breaker();
        trip(&b).await;
        tokio::time::sleep(COOLDOWN).await;
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let b2 = b.clone();
        let probe = tokio::spawn(async move {
            b2.call(|| async {
                release_rx.await.ok();
                Ok::<_, E>(())
            })
            .await
        });
        tokio::task::yield_now().await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let others = Arc::new(AtomicU32::new(0));
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let (b, others) = (b.clone(), others.clone());
            waiting.push(tokio::spawn(async move {
                b.call(|| async {
                    others.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, E>(())
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(others.load(Ordering::SeqCst), 0, "calls went out beside the probe");
        release_tx.send(()).unwrap();
        probe.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(others.load(Ordering::SeqCst), 3);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_it_for_another_cooldown() {
        let b = breaker();
        trip(&b).await;
        tokio::time::sleep(COOLDOWN).await;
        fail(&b, ErrorClass::Retryable).await; // the probe
        assert_eq!(b.state(), BreakerState::Open);
        let reopened = Instant::now();
        succeed(&b).await; // held for a whole cool-down, then probes and closes
        assert_eq!(reopened.elapsed(), COOLDOWN);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_with_a_permanent_error_closes_it() {
        let b = breaker();
        trip(&b).await;
        tokio::time::sleep(COOLDOWN).await;
        fail(&b, ErrorClass::Permanent).await;
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_frees_the_slot_for_the_next_caller() {
        let b = breaker();
        trip(&b).await;
        tokio::time::sleep(COOLDOWN).await;
        let b2 = b.clone();
        let probe = tokio::spawn(async move { b2.call(futures::future::pending::<Result<(), E>>).await });
        tokio::task::yield_now().await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.abort();
        let _ = probe.await;
        succeed(&b).await;
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
