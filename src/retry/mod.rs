//! Retries that cannot make an outage worse.
//!
//! A retry storm is how resilience middleware most often turns a partial
//! failure into a full one: every caller that failed calls again, and the
//! dependency that was struggling gets twice the load. A [`Retry`] sends a
//! call again only when all of these hold:
//!
//! - **the outcome is worth another try**: the [classifier](crate::classify)
//!   judged it a [failure](Verdict::Failure) or a [timeout](Verdict::Timeout).
//!   A refusal ([`Verdict::Rejected`]: this process's breaker or bulkhead,
//!   or an overloaded dependency), the caller's own deadline, an ignored
//!   outcome and a success are answered as they are;
//! - **the request may be sent twice**: it is `Clone`, and the rule
//!   [selects](Retry::only) it (every request by default: putting a retry
//!   on a client declares its calls idempotent; for HTTP,
//!   [`idempotent_methods`] retries only the methods RFC 9110 calls
//!   idempotent);
//! - **attempts are left**: at most [`max_attempts`](RetryBuilder::max_attempts)
//!   calls in all, the first included;
//! - **the breaker is not open** (a Policy's own, or the one given with
//!   [`RetryBuilder::breaker`]): waiting out the backoff to be refused
//!   would only delay the answer;
//! - **the deadline can fit another attempt**: the [budget](crate::budget)
//!   of the request, or the rule's [`total_timeout`](RetryBuilder::total_timeout),
//!   must outlast the backoff plus another attempt (as long as the last
//!   one took, or [`attempt_time`](RetryBuilder::attempt_time));
//! - **the [`RetryBudget`] pays for it**: retries are at most a share of
//!   the requests (and a small reserve), however many callers fail at once.
//!
//! Between attempts it waits an exponential [`Backoff`] with jitter.
//!
//! # Where retries go, and why
//!
//! ```text
//! request ─► fallback ─► retry ─► circuit breaker ─► bulkhead ─► timeout ─► service
//!                        └───── total timeout (the request's budget) ─────┘
//! ```
//!
//! - **Under the fallback**: the fallback answers once the retries have
//!   given up, not after the first failure.
//! - **Above the breaker**: each attempt is a call the breaker counts, so a
//!   storm of failing retries trips it sooner instead of hiding behind
//!   it; an open breaker refuses a retry at once, and the retry stops.
//! - **Above the bulkhead**: each attempt takes a slot, and gives it back
//!   while it waits out its backoff: a waiting retry holds no capacity.
//! - **Above the per-attempt timeout**: a slow attempt is cut and retried;
//!   the [total timeout](RetryBuilder::total_timeout), a budget every
//!   attempt runs in, bounds them all.
//!
//! A [`Policy`](crate::policy::Policy) given a retry
//! ([`PolicyBuilder::retry`](crate::policy::PolicyBuilder::retry)) runs in
//! this order. As a layer, put a [`RetryLayer`] above the breaker (or
//! above a Policy without a fallback) and below the fallback.
//!
//! # Requests that are not `Clone`
//!
//! Retrying sends the request again, so it keeps a copy. For an HTTP
//! request whose body streams, buffer the body first (tower-http's
//! `RequestBodyLimitLayer` bounds it, then collect it into `Bytes` and
//! rebuild the request with a `Full` body, which clones cheaply), as
//! tower-http's own retry examples do; a body too large to buffer should
//! not be retried.
//!
//! # What it counts
//!
//! [`Retry::figures`] counts requests, attempts, retries, and each reason
//! retries stopped; the [`RetryBudget`] counts tokens granted and refused.
//! Both are in the [catalogue](crate::observe)'s report (and so in its
//! metrics), and every retry and every refusal is a `tracing` event
//! (target `seawall::retry`).
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use seawall::retry::{Backoff, Jitter, Retry, RetryLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = Arc::clone(&calls);
//! let flaky = service_fn(move |n: u32| {
//!     let call = seen.fetch_add(1, Ordering::Relaxed);
//!     async move {
//!         if call < 2 { Err(std::io::Error::other("reset")) } else { Ok(n) }
//!     }
//! });
//! let retry = Retry::builder()
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(10)).jitter(Jitter::None))
//!     .build()?;
//! let service = RetryLayer::new(retry.clone()).layer(flaky);
//! assert_eq!(service.oneshot(7).await?, 7, "the third attempt succeeded");
//! let figures = retry.figures();
//! assert_eq!((figures.attempts, figures.retries), (3, 2));
//! # Ok(())
//! # }
//! ```

mod backoff;
mod budget;
mod future;
mod layer;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use backoff::{Backoff, Jitter};
pub use budget::{BudgetFigures, RetryBudget, RetryBudgetBuilder};
pub use future::ResponseFuture;
pub use layer::{RetryLayer, RetryService};

use crate::circuit_breaker::{CircuitBreaker, State};
use crate::classify::Verdict;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::select::Every;

/// A retry rule: which outcomes to retry, how often, how long to wait, and
/// what pays for it. Cheap to clone; clones share the figures, the budget
/// and the draws of the jitter. Use it as a [`RetryLayer`] or as a
/// [Policy's stage](crate::policy::PolicyBuilder::retry).
///
/// `P` picks the requests that may be sent again ([`Every`] by default;
/// see [`only`](Self::only)).
pub struct Retry<P = Every> {
    shared: Arc<Shared>,
    only: P,
}

impl<P: Clone> Clone for Retry<P> {
    fn clone(&self) -> Self {
        Retry {
            shared: Arc::clone(&self.shared),
            only: self.only.clone(),
        }
    }
}

struct Shared {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<RetryBudget>,
    breaker: Option<CircuitBreaker>,
    attempt_time: Option<Duration>,
    total_timeout: Option<Duration>,
    seed: u64,
    clock: Clock,
    draws: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    stopped_budget: AtomicU64,
    stopped_open: AtomicU64,
    stopped_deadline: AtomicU64,
    stopped_attempts: AtomicU64,
}

/// What a [`Retry`] rule did, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryFigures {
    /// Requests it saw.
    pub requests: u64,
    /// Attempts started: every request's first, and every retry (the
    /// breaker or bulkhead below may still refuse one).
    pub attempts: u64,
    /// Retries made.
    pub retries: u64,
    /// Retries not made because the [`RetryBudget`] was spent.
    pub budget_refused: u64,
    /// Retries not made because the breaker was open.
    pub circuit_open: u64,
    /// Retries not made because the deadline could not fit another attempt.
    pub deadline: u64,
    /// Retries not made because every attempt had been made.
    pub attempts_exhausted: u64,
}

/// Why a call was not retried, in events and figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Budget,
    Open,
    Deadline,
    Attempts,
}

impl Stop {
    fn as_str(self) -> &'static str {
        match self {
            Stop::Budget => "budget",
            Stop::Open => "circuit_open",
            Stop::Deadline => "deadline",
            Stop::Attempts => "attempts_exhausted",
        }
    }
}

/// Where one request's attempts stand.
#[derive(Debug)]
pub(crate) struct Attempts {
    made: u32,
    previous_delay: Duration,
    /// When the first attempt started (by the rule's clock), to shorten
    /// the request's own deadline for the next.
    began: u64,
    /// When the current attempt started, to know how long another takes.
    started: u64,
    /// When the rule's total timeout ends.
    total: Option<Instant>,
    /// The deadline of all attempts: the request's budget, or the total
    /// timeout, whichever ends first.
    deadline: Option<Instant>,
}

impl Retry {
    /// A builder: 3 attempts, exponential backoff from 50 ms with full
    /// jitter, no budget (give one: [`RetryBuilder::budget`]).
    pub fn builder() -> RetryBuilder {
        RetryBuilder {
            name: Arc::from("retry"),
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_millis(50)),
            budget: None,
            breaker: None,
            attempt_time: None,
            total_timeout: None,
            seed: 0,
            clock: None,
        }
    }
}

impl<P> Retry<P> {
    /// Retries only the requests `only` selects (an `Fn(&Req) -> bool`, or
    /// [`idempotent_methods`] for HTTP); the others get one attempt.
    pub fn only<P2>(self, only: P2) -> Retry<P2> {
        Retry {
            shared: self.shared,
            only,
        }
    }

    /// The rule's name, in events and figures.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The budget retries are paid from, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }

    /// What the rule did since it was made.
    pub fn figures(&self) -> RetryFigures {
        let shared = &*self.shared;
        let requests = shared.requests.load(Relaxed);
        let retries = shared.retries.load(Relaxed);
        RetryFigures {
            requests,
            attempts: requests + retries,
            retries,
            budget_refused: shared.stopped_budget.load(Relaxed),
            circuit_open: shared.stopped_open.load(Relaxed),
            deadline: shared.stopped_deadline.load(Relaxed),
            attempts_exhausted: shared.stopped_attempts.load(Relaxed),
        }
    }

    pub(crate) fn selects<Req>(&self, request: &Req) -> bool
    where
        P: crate::Selects<Req>,
    {
        self.shared.max_attempts > 1 && self.only.selects(request)
    }

    /// A request's first attempt: counted, and credited to the budget.
    #[inline]
    pub(crate) fn first(&self) -> Attempts {
        let shared = &*self.shared;
        shared.requests.fetch_add(1, Relaxed);
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        let budget = crate::budget::Budget::current().map(|budget| budget.deadline());
        let total = shared.total_timeout.map(|total| Instant::now() + total);
        let deadline = match (budget, total) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = shared.clock.now();
        Attempts {
            made: 1,
            previous_delay: Duration::ZERO,
            began: now,
            started: now,
            total,
            deadline,
        }
    }

    /// The budget each attempt runs in, when the rule sets a total timeout.
    pub(crate) fn scope(&self, attempts: &Attempts) -> Option<crate::budget::Budget> {
        self.shared
            .total_timeout
            .and(attempts.deadline)
            .map(crate::budget::Budget::until)
    }

    /// After an attempt judged `verdict`: the delay before the next one, or
    /// `None` to answer with this one. `breaker` is the breaker the next
    /// attempt would go through, if the caller knows it.
    pub(crate) fn again(
        &self,
        attempts: &mut Attempts,
        verdict: Verdict,
        breaker: Option<&CircuitBreaker>,
    ) -> Option<Duration> {
        if !matches!(verdict, Verdict::Failure | Verdict::Timeout) {
            return None;
        }
        let shared = &*self.shared;
        let stop = |stop: Stop| {
            let counter = match stop {
                Stop::Budget => &shared.stopped_budget,
                Stop::Open => &shared.stopped_open,
                Stop::Deadline => &shared.stopped_deadline,
                Stop::Attempts => &shared.stopped_attempts,
            };
            counter.fetch_add(1, Relaxed);
            tracing::debug!(
                target: "seawall::retry",
                retry = %shared.name,
                attempts = attempts.made,
                reason = stop.as_str(),
                "not retried"
            );
            None
        };
        if attempts.made >= shared.max_attempts {
            return stop(Stop::Attempts);
        }
        let open =
            |breaker: &CircuitBreaker| matches!(breaker.state(), State::Open | State::ForcedOpen);
        if breaker.or(shared.breaker.as_ref()).is_some_and(open) {
            return stop(Stop::Open);
        }
        let draw = crate::draw::mix(shared.seed ^ shared.draws.fetch_add(1, Relaxed));
        let delay = shared
            .backoff
            .delay(attempts.made, attempts.previous_delay, draw);
        if let Some(deadline) = attempts.deadline {
            let now = Instant::now();
            let attempt = shared.attempt_time.unwrap_or_else(|| {
                Duration::from_nanos(shared.clock.now().saturating_sub(attempts.started))
            });
            if now + delay + attempt > deadline {
                return stop(Stop::Deadline);
            }
        }
        if shared
            .budget
            .as_ref()
            .is_some_and(|budget| !budget.withdraw())
        {
            return stop(Stop::Budget);
        }
        shared.retries.fetch_add(1, Relaxed);
        attempts.made += 1;
        attempts.previous_delay = delay;
        tracing::debug!(
            target: "seawall::retry",
            retry = %shared.name,
            attempt = attempts.made,
            delay_ms = delay.as_millis() as u64,
            "retrying"
        );
        Some(delay)
    }
}

impl Attempts {
    /// The next attempt starts now: what is left of the total timeout, and
    /// of the request's `own` deadline, for it.
    pub(crate) fn start<P>(
        &mut self,
        retry: &Retry<P>,
        own: Option<Duration>,
    ) -> (Option<Duration>, Option<Duration>) {
        self.started = retry.shared.clock.now();
        let spent = Duration::from_nanos(self.started.saturating_sub(self.began));
        let own = own.map(|own| own.saturating_sub(spent));
        (own, self.total_left())
    }

    /// What is left of the rule's total timeout, if it has one.
    pub(crate) fn total_left(&self) -> Option<Duration> {
        self.total
            .map(|total| total.saturating_duration_since(Instant::now()))
    }
}

impl<P> fmt::Debug for Retry<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &*self.shared;
        f.debug_struct("Retry")
            .field("name", &shared.name)
            .field("max_attempts", &shared.max_attempts)
            .field("backoff", &shared.backoff)
            .field("budget", &shared.budget)
            .field("total_timeout", &shared.total_timeout)
            .field("figures", &self.figures())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Retry`]; [`build`](Self::build) checks the values.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryBuilder {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<RetryBudget>,
    breaker: Option<CircuitBreaker>,
    attempt_time: Option<Duration>,
    total_timeout: Option<Duration>,
    seed: u64,
    clock: Option<Clock>,
}

impl RetryBuilder {
    /// The rule's name, in events and figures. Default `"retry"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Calls in all, the first included: 1 never retries. Default 3; at
    /// most 100.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The wait before each retry. Default exponential from 50 ms, with
    /// full jitter, capped at 30 s.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Pays for retries from `budget` (shared with whatever else holds
    /// it). Without one, only the attempts, the breaker and the deadline
    /// bound retries: give one to every rule a fleet of callers runs.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// A breaker to consult before retrying, for a [`RetryLayer`] above
    /// it: while it is open, nothing is retried. (A Policy consults its
    /// own.)
    pub fn breaker(mut self, breaker: &CircuitBreaker) -> Self {
        self.breaker = Some(breaker.clone());
        self
    }

    /// How long an attempt takes, for deciding whether the deadline can
    /// fit another. Default: as long as the last one took.
    pub fn attempt_time(mut self, attempt_time: Duration) -> Self {
        self.attempt_time = Some(attempt_time);
        self
    }

    /// A bound on all attempts and the waits between them: each attempt
    /// runs in a [budget](crate::budget) ending then (or at the caller's
    /// own, if sooner), so a seawall timeout or Policy below it is cut at
    /// that point, and no retry starts that could not end before it.
    pub fn total_timeout(mut self, total_timeout: Duration) -> Self {
        self.total_timeout = Some(total_timeout);
        self
    }

    /// The seed of the jitter's draws: the same seed gives the same delays
    /// to the same sequence of retries. Default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The clock that times attempts. Default [`Clock::default`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the values and builds the rule.
    pub fn build(self) -> Result<Retry, ConfigError> {
        if !(1..=100).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                self.max_attempts,
                "must be from 1 to 100",
            ));
        }
        self.backoff.validate()?;
        if let Some(zero) = self.total_timeout.filter(Duration::is_zero) {
            return Err(ConfigError::new(
                "total_timeout",
                zero,
                "must be longer than zero",
            ));
        }
        Ok(Retry {
            shared: Arc::new(Shared {
                name: self.name,
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                budget: self.budget,
                breaker: self.breaker,
                attempt_time: self.attempt_time,
                total_timeout: self.total_timeout,
                seed: self.seed,
                clock: self.clock.unwrap_or_default(),
                draws: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                stopped_budget: AtomicU64::new(0),
                stopped_open: AtomicU64::new(0),
                stopped_deadline: AtomicU64::new(0),
                stopped_attempts: AtomicU64::new(0),
            }),
            only: Every,
        })
    }
}

/// Selects the HTTP requests whose method RFC 9110 calls idempotent (GET,
/// HEAD, OPTIONS, TRACE, PUT, DELETE): give it to [`Retry::only`] or
/// [`HedgeLayer::only`](crate::hedge::HedgeLayer::only) so that a POST is
/// never sent twice.
#[cfg(any(feature = "axum", feature = "tonic", feature = "tower-http"))]
pub fn idempotent_methods<B>(request: &http::Request<B>) -> bool {
    use http::Method;
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
