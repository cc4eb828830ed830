//! Hedged requests: when a call is slower than most, send a second one and
//! take the first answer.
//!
//! A dependency with a slow tail (a garbage collection, a cold cache, one
//! bad replica) makes the caller's p99 its own. A [`HedgeLayer`] sends a
//! second attempt of a call still unanswered after a delay, to the same
//! service or [another](HedgeLayer::to), and answers with the first
//! success; the other attempt is dropped, which cancels it. The delay is
//! fixed, or a percentile of the latency a breaker measures (p95: one call
//! in twenty is hedged, and those are the slow ones).
//!
//! Hedges add load, so they are bounded three ways:
//!
//! - **a budget**: a [`RetryBudget`] of their own (hedges at most a share
//!   of the requests; not the budget of a retry rule below, which counts
//!   each hedge as a request of its own and would credit it again);
//! - **the bulkhead and the breaker below**: a hedge goes through them like
//!   any call, so a full bulkhead or an open breaker refuses it, and the
//!   first attempt is waited for as if no hedge had been tried;
//! - **idempotent requests only**: the requests [`only`](HedgeLayer::only)
//!   selects (every request by default: hedging a client declares its calls
//!   idempotent; for HTTP, [`idempotent_methods`](crate::retry::idempotent_methods)).
//!
//! Put the layer above a [`Policy`](crate::policy::Policy) (or above the
//! breaker and bulkhead): each attempt is then a call the breaker counts
//! and the bulkhead admits. Requests must be `Clone`.
//!
//! An attempt that fails while the other is still running is not the
//! answer: the other is waited for, and the first success wins (if both
//! fail, the first attempt's error is the answer).
//!
//! ```
//! use std::time::Duration;
//! use seawall::hedge::{Hedge, HedgeLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The first call is stuck for a second; the hedge, sent after 50 ms, is not.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = calls.clone();
//! let replica = service_fn(move |n: u32| {
//!     let slow = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0;
//!     async move {
//!         let delay = if slow { 1000 } else { 10 };
//!         tokio::time::sleep(Duration::from_millis(delay)).await;
//!         Ok::<_, std::io::Error>(n)
//!     }
//! });
//! let hedge = Hedge::builder().delay(Duration::from_millis(50)).build()?;
//! let started = tokio::time::Instant::now();
//! let answer = HedgeLayer::new(hedge.clone()).layer(replica).oneshot(7).await?;
//! assert_eq!(answer, 7);
//! assert_eq!(started.elapsed(), Duration::from_millis(60));
//! assert_eq!((hedge.figures().hedged, hedge.figures().hedge_won), (1, 1));
//! # Ok(())
//! # }
//! ```

mod future;
mod layer;

use std::fmt;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Duration;

pub use future::ResponseFuture;
pub use layer::{HedgeLayer, HedgeService, Other, Same};

use crate::circuit_breaker::CircuitBreaker;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::retry::RetryBudget;

/// A hedging rule: when to send the second attempt, and what pays for it.
/// Cheap to clone; clones share the figures and the budget.
#[derive(Clone)]
pub struct Hedge {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    delay: Delay,
    budget: Option<RetryBudget>,
    clock: Clock,
    /// The percentile delay, refreshed from the breaker's window now and
    /// then: reading the window on every call would cost more than the
    /// call.
    measured_nanos: AtomicU64,
    measured_at: AtomicU64,
    requests: AtomicU64,
    hedged: AtomicU64,
    hedge_won: AtomicU64,
    budget_refused: AtomicU64,
    hedge_refused: AtomicU64,
}

enum Delay {
    Fixed(Duration),
    Percentile {
        breaker: CircuitBreaker,
        quantile: f64,
        min_calls: u64,
        otherwise: Duration,
    },
}

/// How often a percentile delay is read again from the breaker's window.
const REFRESH_NANOS: u64 = 100_000_000;

/// What a [`Hedge`] did, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeFigures {
    /// Requests it saw.
    pub requests: u64,
    /// Second attempts sent.
    pub hedged: u64,
    /// Requests the second attempt answered.
    pub hedge_won: u64,
    /// Second attempts not sent because the budget was spent.
    pub budget_refused: u64,
    /// Second attempts refused below (a full bulkhead, an open breaker):
    /// the first attempt answered.
    pub hedge_refused: u64,
}

impl Hedge {
    /// A builder: hedge after 100 ms, with no budget (give one:
    /// [`HedgeBuilder::budget`]).
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder {
            name: Arc::from("hedge"),
            delay: Delay::Fixed(Duration::from_millis(100)),
            budget: None,
            clock: None,
        }
    }

    /// The rule's name, in events and figures.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The budget hedges are paid from, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }

    /// What the rule did since it was made.
    pub fn figures(&self) -> HedgeFigures {
        let shared = &*self.shared;
        HedgeFigures {
            requests: shared.requests.load(Relaxed),
            hedged: shared.hedged.load(Relaxed),
            hedge_won: shared.hedge_won.load(Relaxed),
            budget_refused: shared.budget_refused.load(Relaxed),
            hedge_refused: shared.hedge_refused.load(Relaxed),
        }
    }

    /// The delay after which an unanswered call is hedged, now.
    pub fn delay(&self) -> Duration {
        let shared = &*self.shared;
        match &shared.delay {
            Delay::Fixed(delay) => *delay,
            Delay::Percentile {
                breaker,
                quantile,
                min_calls,
                otherwise,
            } => {
                let now = shared.clock.now();
                let at = shared.measured_at.load(Acquire);
                let stale = at == 0 || now.saturating_sub(at) >= REFRESH_NANOS;
                if stale
                    && shared
                        .measured_at
                        .compare_exchange(at, now.max(1), AcqRel, Relaxed)
                        .is_ok()
                {
                    let measured = breaker
                        .snapshot()
                        .latency
                        .filter(|latency| latency.count() >= *min_calls)
                        .map_or(*otherwise, |latency| latency.quantile(*quantile));
                    shared
                        .measured_nanos
                        .store(measured.as_nanos() as u64, Release);
                    return measured;
                }
                // The last measure (`otherwise` until the first), also
                // while another caller takes the next.
                Duration::from_nanos(shared.measured_nanos.load(Acquire))
            }
        }
    }

    /// A request arrived: counted, and credited to the budget.
    #[inline]
    pub(crate) fn request(&self) {
        self.shared.requests.fetch_add(1, Relaxed);
        if let Some(budget) = &self.shared.budget {
            budget.deposit();
        }
    }

    /// Whether the budget pays for a hedge now.
    pub(crate) fn pay(&self) -> bool {
        let shared = &*self.shared;
        if shared
            .budget
            .as_ref()
            .is_some_and(|budget| !budget.withdraw())
        {
            shared.budget_refused.fetch_add(1, Relaxed);
            tracing::debug!(target: "seawall::hedge", hedge = %shared.name, "not hedged: budget spent");
            return false;
        }
        true
    }

    pub(crate) fn sent(&self) {
        self.shared.hedged.fetch_add(1, Relaxed);
        tracing::debug!(target: "seawall::hedge", hedge = %self.shared.name, "hedged");
    }

    pub(crate) fn won(&self) {
        self.shared.hedge_won.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.shared.hedge_refused.fetch_add(1, Relaxed);
        tracing::debug!(target: "seawall::hedge", hedge = %self.shared.name, "hedge refused below");
    }
}

impl fmt::Debug for Hedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("name", &self.shared.name)
            .field("delay", &self.delay())
            .field("budget", &self.shared.budget)
            .field("figures", &self.figures())
            .finish()
    }
}

/// Builds a [`Hedge`]; [`build`](Self::build) checks the values.
#[must_use = "a builder does nothing until `build` is called"]
pub struct HedgeBuilder {
    name: Arc<str>,
    delay: Delay,
    budget: Option<RetryBudget>,
    clock: Option<Clock>,
}

impl HedgeBuilder {
    /// The rule's name, in events and figures. Default `"hedge"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Hedges calls unanswered after `delay`. Default 100 ms.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Delay::Fixed(delay);
        self
    }

    /// Hedges calls slower than the `quantile` (0.95 for p95) of the
    /// latency `breaker` measures over its window (build it with
    /// [`track_latency`](crate::circuit_breaker::CircuitBreakerBuilder::track_latency)),
    /// read again every 100 ms. Until the window holds `min_calls` calls,
    /// hedges after `otherwise`.
    ///
    /// The loser of a hedged call is dropped, and a dropped call records no
    /// latency: the slowest calls leave the window, so the measured
    /// percentile drifts below the dependency's own. Use a `quantile`
    /// above the share you want hedged, and a budget to bound it.
    pub fn percentile(
        mut self,
        breaker: &CircuitBreaker,
        quantile: f64,
        min_calls: u64,
        otherwise: Duration,
    ) -> Self {
        self.delay = Delay::Percentile {
            breaker: breaker.clone(),
            quantile,
            min_calls,
            otherwise,
        };
        self
    }

    /// Pays for hedges from `budget`: at most its share of the requests.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The clock that paces reading a percentile. Default [`Clock::default`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the values and builds the rule.
    pub fn build(self) -> Result<Hedge, ConfigError> {
        if let Delay::Percentile { quantile, .. } = &self.delay {
            if !(0.0..1.0).contains(quantile) || *quantile <= 0.0 {
                return Err(ConfigError::new(
                    "percentile",
                    quantile,
                    "the quantile must be between 0 and 1 (0.95 for p95)",
                ));
            }
        }
        let first_delay = match &self.delay {
            Delay::Fixed(delay) => *delay,
            Delay::Percentile { otherwise, .. } => *otherwise,
        };
        Ok(Hedge {
            shared: Arc::new(Shared {
                name: self.name,
                delay: self.delay,
                budget: self.budget,
                clock: self.clock.unwrap_or_default(),
                measured_nanos: AtomicU64::new(first_delay.as_nanos() as u64),
                measured_at: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                hedged: AtomicU64::new(0),
                hedge_won: AtomicU64::new(0),
                budget_refused: AtomicU64::new(0),
                hedge_refused: AtomicU64::new(0),
            }),
        })
    }
}

impl fmt::Debug for HedgeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
