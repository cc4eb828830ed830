//! A hook that sees every call a breaker books.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::window::Outcome;

/// Sees each call's outcome as a breaker books it, for logging, sampling or
/// exporting as the user likes (resilience4j's event publishers, Polly's
/// telemetry listeners). Set one with
/// [`CircuitBreakerBuilder::listener`](crate::circuit_breaker::CircuitBreakerBuilder::listener);
/// every breaker of a registry built from that builder shares it, and a
/// [`Policy`](crate::policy::Policy) reports through its breaker.
///
/// It runs on the caller's thread, inside the call's completion: keep it
/// short and never block (hand work to a channel if it is slow). A breaker
/// without a listener pays one predictable branch per call.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use seawall::circuit_breaker::CircuitBreaker;
/// use seawall::classify::Verdict;
/// use seawall::circuit_breaker::{CallEvent, Listener};
/// use seawall::window::Outcome;
///
/// #[derive(Default)]
/// struct Failures(AtomicU64);
///
/// impl Listener for Failures {
///     fn on_call(&self, event: &CallEvent<'_>) {
///         if event.outcome == Outcome::Failure {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let failures = Arc::new(Failures::default());
/// let breaker = CircuitBreaker::builder().listener(failures.clone()).build()?;
/// breaker.try_acquire().unwrap().record(Verdict::Failure);
/// assert_eq!(failures.0.load(Ordering::Relaxed), 1);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
pub trait Listener: Send + Sync + 'static {
    /// One call's outcome, or what a breaker or fallback did about it.
    fn on_call(&self, event: &CallEvent<'_>);
}

/// What a [`Listener`] is told about one call.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CallEvent<'a> {
    /// The breaker's name (for a registry's breaker, its key).
    pub part: &'a str,
    /// How it went: a call's own outcome, a refusal
    /// ([`ShortCircuited`](Outcome::ShortCircuited),
    /// [`Rejected`](Outcome::Rejected)), or what a fallback or cache did.
    pub outcome: Outcome,
    /// How long the call took, for outcomes that are a call's own (a
    /// listener makes the breaker time every call).
    pub latency: Option<Duration>,
    /// Whether it was slower than the breaker's slow-call limit.
    pub slow: bool,
    /// Whether the verdict came after the breaker changed state: it is in
    /// the lifetime totals only, not in the window.
    pub late: bool,
}

/// A shared listener, as settings hold it.
#[derive(Clone)]
pub(crate) struct SharedListener(pub(crate) Arc<dyn Listener>);

impl fmt::Debug for SharedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Listener")
    }
}
