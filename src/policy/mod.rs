//! The one-stop layer: fallback, circuit breaker, bulkhead and timeout, in
//! Hystrix's order, in one future, with one error and one set of statistics.
//!
//! Use a Policy when a dependency needs more than one of these stages, which
//! is most of the time: one layer runs them in the order that works (see
//! [the crate's guide](crate#ordering-and-why)) and counts every outcome in
//! one window. Stack the stages as separate layers instead when you need
//! another order, a [`Backpressure`](crate::bulkhead::Backpressure)
//! bulkhead, or a single stage.
//!
//! ```text
//! request ─► fallback ─► circuit breaker ─► bulkhead ─► timeout ─► inner service
//! ```
//!
//! A [`Policy`] is a `Layer` built from optional stages, each given as a
//! built handle (a [`CircuitBreaker`], a per-key
//! [`Registry`](crate::circuit_breaker::Registry) selection, a
//! [`Bulkhead`](crate::bulkhead::Bulkhead), a
//! [`Fallback`](crate::fallback::Fallback)) or as its builder, all checked
//! by [`PolicyBuilder::build`]. Its service runs every stage in a single
//! hand-written future (no future per stage, no boxing, no allocation while
//! the call is healthy), built from the same pieces as the stages' own
//! layers (the breaker's tickets, the bulkhead's slots, the timeout's
//! deadline, the fallback's rule, the classifier), and returns the one
//! level of [`Error<E>`](crate::Error) every seawall layer returns.
//!
//! - **Order.** An open breaker refuses before the bulkhead is asked, so a
//!   refused call never takes a permit or reaches the service. A call the
//!   bulkhead refuses never starts its timeout.
//! - **One window, Hystrix-style.** Every outcome goes into the breaker's
//!   rolling window, judged by one [classifier](crate::classify) ([`ByKind`]
//!   by default): successes and failures, timeouts and bulkhead refusals
//!   (failures by default; classify them as ignored to leave them out),
//!   short-circuits, and the fallback's outcomes. Without a breaker
//!   configured, the policy keeps its statistics in a breaker that is forced
//!   closed: it records, never trips.
//! - **Paying only for what is configured.** Statistics are a stage too:
//!   [`without_statistics`](PolicyBuilder::without_statistics) keeps none
//!   (no window, events or span), and a policy left with nothing but a
//!   timeout then runs each call as the [`Timeout`](crate::timeout::Timeout)
//!   layer does, in the timeout layer's own future.
//! - **A name.** The Hystrix command key: the name of the breaker and
//!   bulkhead it builds, in events, in `tracing` (target `seawall::policy`)
//!   and in figures. Handles given built keep their own names and clocks.
//! - **Fallback.** By the fallback's one rule (see [`fallback`](crate::fallback)):
//!   for errors that count against the dependency, of the causes it was
//!   given. A response classified as a failure is counted and passed on,
//!   not cached; make it an error in the service (`error_for_status()`,
//!   say) to fall back on it.
//!
//! The bulkhead either refuses at once or queues in the response future
//! ([`Reject`](crate::bulkhead::Reject) or [`Queue`](crate::bulkhead::Queue),
//! built or as a builder; a queueing bulkhead needs the service to be
//! `Clone`, as every policy's does); one that waits in `poll_ready` would be
//! asked before the breaker, and does not compile here.
//!
//! A synchronous client goes under a Policy as a
//! [`BlockingService`](crate::blocking::BlockingService) on a
//! [`BlockingPool`](crate::blocking::BlockingPool): the pool's refusals
//! reach the breaker as rejections and the fallback answers for them
//! (the repository's `policy_blocking` example). One breaker per tenant or
//! host: give [`circuit_breaker`](PolicyBuilder::circuit_breaker) a
//! [`Registry::keyed`](crate::circuit_breaker::Registry::keyed) selection
//! (the `policy_per_tenant` example).
//!
//! # Any async client
//!
//! A client that is not a tower `Service` (a struct with an
//! `async fn send(&self, ...)`: a database pool, a cache client, an SDK)
//! becomes one with `tower::service_fn` and an `Arc`: each call clones the
//! `Arc` into its future, so the future owns what it borrows and the service
//! stays `Clone`, as a Policy's bulkhead queue and axum need.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use seawall::policy::Policy;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! struct KvClient { /* a connection pool, say */ }
//!
//! impl KvClient {
//!     async fn get(&self, key: &str) -> Result<Option<String>, std::io::Error> {
//!         Ok(Some(format!("value of {key}")))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kv = Arc::new(KvClient {});
//! let get = service_fn(move |key: String| {
//!     let kv = Arc::clone(&kv);
//!     async move { kv.get(&key).await }
//! });
//! let policy = Policy::builder().name("kv").timeout(Duration::from_millis(50)).build()?;
//! let kv_get = ServiceBuilder::new().layer(policy).service(get);
//! assert_eq!(kv_get.oneshot("user:1".to_owned()).await?, Some("value of user:1".to_owned()));
//! # Ok(())
//! # }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use seawall::policy::Policy;
//! use seawall::bulkhead::Bulkhead;
//! use seawall::circuit_breaker::CircuitBreaker;
//! use seawall::fallback::Fallback;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Policy::builder()
//!     .name("inventory")
//!     .circuit_breaker(CircuitBreaker::builder().minimum_calls(20))
//!     .bulkhead(Bulkhead::builder().max_concurrent(32))
//!     .timeout(Duration::from_millis(250))
//!     .fallback(Fallback::builder().value(0u32))
//!     .build()?;
//! let stock = ServiceBuilder::new().layer(policy.clone()).service(service_fn(|_sku: u32| async {
//!     tokio::time::sleep(Duration::from_secs(5)).await; // stuck
//!     Ok::<u32, std::io::Error>(7)
//! }));
//! assert_eq!(stock.oneshot(42).await?, 0, "timed out after 250 ms: the fallback answered");
//! let counts = policy.breaker().counts();
//! assert_eq!((counts.timeout, counts.fallback_success), (1, 1));
//! # Ok(())
//! # }
//! ```

mod future;
mod stage;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

pub use future::ResponseFuture;
pub use stage::{
    Admits, AnswersFor, BreakerStage, BulkheadStage, FallbackStage, FaultStage, NoFallback,
    NoFaults, NoRetry, NoStatistics, RetryStage, StatisticsOnly,
};

use crate::circuit_breaker::CircuitBreaker;
use crate::classify::{ByKind, Classify};
use crate::clock::Clock;
use crate::error::{ConfigError, Error, IntoError};
use crate::stripe::Laned;
use crate::timeout::future::{Due, Limit};
use crate::timeout::{DeadlineOf, NoDeadline};
use future::{CallSpan, Inner};
use stage::{Limits, PolicyBulkhead};

/// The one-stop layer. Cheap to clone; every service it makes, and every
/// clone of them, shares its breaker, bulkhead, fallback and statistics.
/// Build one with [`Policy::builder`].
///
/// Its type names what varies: the breaker selection `B` (one
/// [`CircuitBreaker`], or a registry's per-key selection), the classifier
/// `C`, the fallback `F` and what reads a request's own deadline `D`. It is
/// not tied to one request type: any request its breaker selection,
/// fallback and deadline reader accept will do.
pub struct Policy<
    B = CircuitBreaker,
    C = ByKind,
    F = NoFallback,
    D = NoDeadline,
    R = NoRetry,
    X = NoFaults,
> {
    shared: Laned<Shared<B, C, F, D, R>>,
    /// Wraps the inner service as the policy's layer makes its service.
    faults: X,
}

impl<B, C, F, D, R, X: Clone> Clone for Policy<B, C, F, D, R, X> {
    fn clone(&self) -> Self {
        Policy {
            shared: self.shared.clone(),
            faults: self.faults.clone(),
        }
    }
}

/// Calls count their references on the policy's lanes ([`Laned`]), each
/// on lines of its own, not on this value's `Arc`. Aligned to 128 bytes
/// (two cache lines, which x86 fetches in pairs): the read-only settings
/// every call reads then share no line with what the allocator puts beside
/// them, so calls on two cores do not pull them back and forth.
#[repr(align(128))]
pub(crate) struct Shared<B, C, F, D, R> {
    name: Arc<str>,
    breakers: B,
    bulkhead: Option<PolicyBulkhead>,
    timeout: Option<Limit>,
    budget_margin: Duration,
    deadline_of: D,
    clock: Clock,
    fallback: F,
    classifier: C,
    retry: R,
}

impl<B, C, F, D, R> Shared<B, C, F, D, R> {
    /// An attempt's deadline, made when the attempt is: the policy's
    /// timeout, capped by the request's own deadline and the current budget
    /// (the caller's), and by the retry rule's total timeout. The total
    /// stands in for the timeout when the policy has none; shorter than
    /// the timeout, it cuts the attempt short, which, like the caller's
    /// deadline, is not blamed on the dependency.
    #[inline(always)]
    pub(crate) fn due(&self, limits: Limits) -> Due {
        let own = match (limits.own, limits.total) {
            (Some(own), Some(total)) => Some(own.min(total)),
            (own, total) => own.or(total),
        };
        Due::for_call(
            self.timeout
                .or_else(|| limits.total.map(|total| Limit::new(total, false))),
            own,
            self.budget_margin,
            self.clock,
        )
    }
}

impl Policy {
    /// A builder with no stage configured yet: name it, then give it the
    /// stages it needs.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            name: Arc::from("policy"),
            breakers: StatisticsOnly,
            bulkhead: None,
            timeout: None,
            budget_margin: Duration::ZERO,
            deadline_of: NoDeadline,
            fallback: NoFallback,
            classifier: ByKind,
            retry: NoRetry,
            faults: NoFaults,
            clock: None,
        }
    }
}

impl<B, C, F, D, R, X> Policy<B, C, F, D, R, X> {
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The breaker selection: a [`CircuitBreaker`] (its state, its window,
    /// which holds the whole policy's statistics, forcing and resetting), or
    /// a registry's per-key selection.
    pub fn breakers(&self) -> &B {
        &self.shared.breakers
    }

    /// The retry stage: [`NoRetry`], or the [`Retry`](crate::retry::Retry)
    /// rule given to [`PolicyBuilder::retry`] (its figures).
    pub fn retry(&self) -> &R {
        &self.shared.retry
    }

    /// The bulkhead's live figures, if the policy has one.
    pub fn bulkhead(&self) -> Option<crate::bulkhead::BulkheadFigures> {
        self.shared.bulkhead.as_ref().map(PolicyBulkhead::figures)
    }
}

/// A policy's breaker (or registry) and bulkhead, named in the report as
/// the policy's.
impl<B, C, F, D, R, X> crate::observe::Catalogued for Policy<B, C, F, D, R, X>
where
    B: crate::observe::Catalogued,
    C: Send + Sync + 'static,
    F: Send + Sync + 'static,
    D: Send + Sync + 'static,
    R: crate::observe::Catalogued,
    X: Send + Sync + 'static,
{
    fn report_into(&self, report: &mut crate::observe::Report, top_keys: usize) {
        let firsts = (
            report.breakers.len(),
            report.registries.len(),
            report.bulkheads.len(),
            report.retries.len(),
        );
        self.shared.breakers.report_into(report, top_keys);
        if let Some(bulkhead) = &self.shared.bulkhead {
            bulkhead.report_into(report, top_keys);
        }
        self.shared.retry.report_into(report, top_keys);
        let policy = || Some(self.name().to_owned());
        report.breakers[firsts.0..]
            .iter_mut()
            .for_each(|part| part.policy = policy());
        report.registries[firsts.1..]
            .iter_mut()
            .for_each(|part| part.policy = policy());
        report.bulkheads[firsts.2..]
            .iter_mut()
            .for_each(|part| part.policy = policy());
        report.retries[firsts.3..]
            .iter_mut()
            .for_each(|part| part.policy = policy());
    }
}

impl<C, F, D, R, X> Policy<CircuitBreaker, C, F, D, R, X> {
    /// The breaker: its state, its window (the whole policy's statistics),
    /// forcing and resetting.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.shared.breakers
    }
}

impl<B: fmt::Debug, C, F, D, R, X> fmt::Debug for Policy<B, C, F, D, R, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.shared.name)
            .field("breakers", &self.shared.breakers)
            .field("bulkhead", &self.shared.bulkhead)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// Makes the bulkhead stage once the policy's name (its default name) is
/// known.
type MakeBulkhead = Box<dyn FnOnce(&Arc<str>) -> Result<PolicyBulkhead, ConfigError>>;

/// Builds a [`Policy`]; [`build`](Self::build) checks every stage.
#[must_use = "a builder does nothing until `build` is called"]
pub struct PolicyBuilder<
    Br = StatisticsOnly,
    C = ByKind,
    Fs = NoFallback,
    D = NoDeadline,
    R = NoRetry,
    X = NoFaults,
> {
    name: Arc<str>,
    breakers: Br,
    bulkhead: Option<MakeBulkhead>,
    timeout: Option<Duration>,
    budget_margin: Duration,
    deadline_of: D,
    fallback: Fs,
    classifier: C,
    retry: R,
    faults: X,
    clock: Option<Clock>,
}

impl<Br, C, Fs, D, R, X> PolicyBuilder<Br, C, Fs, D, R, X> {
    /// The name (Hystrix's command key) of the policy, and of the breaker
    /// and bulkhead it builds. Default `"policy"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The circuit breaker: a builder, a built breaker (shared, keeping its
    /// name and clock), or a registry's [`keyed`](crate::circuit_breaker::Registry::keyed)
    /// selection for one breaker per key (see [`BreakerStage`]). Without
    /// one, the policy keeps statistics but never trips (unless it keeps
    /// [none](Self::without_statistics)).
    pub fn circuit_breaker<Br2: BreakerStage>(
        self,
        breakers: Br2,
    ) -> PolicyBuilder<Br2, C, Fs, D, R, X> {
        PolicyBuilder {
            name: self.name,
            breakers,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            budget_margin: self.budget_margin,
            deadline_of: self.deadline_of,
            fallback: self.fallback,
            classifier: self.classifier,
            retry: self.retry,
            faults: self.faults,
            clock: self.clock,
        }
    }

    /// Keeps no statistics: every call is admitted and none is counted (no
    /// window, no events, no `tracing` span, no breaker in the
    /// [catalogue](crate::observe)), and what is left costs only what was
    /// configured. With nothing else but a timeout or a per-request
    /// deadline, a call is exactly the [`Timeout`](crate::timeout::Timeout)
    /// layer's. A [`circuit_breaker`](Self::circuit_breaker) given after
    /// this brings statistics back.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall::policy::Policy;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = Policy::builder()
    ///     .name("lookup")
    ///     .timeout(Duration::from_millis(100))
    ///     .without_statistics()
    ///     .build()?;
    /// let lookup = policy.layer(service_fn(|_: u32| async {
    ///     tokio::time::sleep(Duration::from_secs(1)).await;
    ///     Ok::<_, std::io::Error>("found")
    /// }));
    /// assert!(lookup.oneshot(7).await.unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn without_statistics(self) -> PolicyBuilder<NoStatistics, C, Fs, D, R, X> {
        self.circuit_breaker(NoStatistics)
    }

    /// A bulkhead that refuses or queues when full, built or as a builder
    /// (see [`BulkheadStage`]).
    pub fn bulkhead(mut self, bulkhead: impl BulkheadStage + 'static) -> Self {
        self.bulkhead = Some(Box::new(move |name: &Arc<str>| {
            bulkhead.into_bulkhead(name)
        }));
        self
    }

    /// A deadline on each call to the inner service (queueing for the
    /// bulkhead is not part of it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Keeps `margin` of the current [budget](crate::budget) for the caller
    /// to answer with (a fallback, the network's time back): calls get what
    /// is left of the budget less `margin`, when that is shorter than the
    /// [`timeout`](Self::timeout). Default zero: a dependency gets all the
    /// time the request has left.
    pub fn budget_margin(mut self, margin: Duration) -> Self {
        self.budget_margin = margin;
        self
    }

    /// Reads a request's own deadline (a gRPC `grpc-timeout` header, a field
    /// of a message): the shorter of it and the [`timeout`](Self::timeout)
    /// applies, and a call that ends on its own shorter deadline is the
    /// caller's, not the dependency's (see [`DeadlineOf`]).
    pub fn per_request_deadline<D2>(self, deadline_of: D2) -> PolicyBuilder<Br, C, Fs, D2, R, X> {
        PolicyBuilder {
            name: self.name,
            breakers: self.breakers,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            budget_margin: self.budget_margin,
            deadline_of,
            fallback: self.fallback,
            classifier: self.classifier,
            retry: self.retry,
            faults: self.faults,
            clock: self.clock,
        }
    }

    /// A fallback, built or as a builder. Its outcomes are counted in the
    /// policy's window.
    pub fn fallback<Fs2: FallbackStage>(self, fallback: Fs2) -> PolicyBuilder<Br, C, Fs2, D, R, X> {
        PolicyBuilder {
            name: self.name,
            breakers: self.breakers,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            budget_margin: self.budget_margin,
            deadline_of: self.deadline_of,
            fallback,
            classifier: self.classifier,
            retry: self.retry,
            faults: self.faults,
            clock: self.clock,
        }
    }

    /// Decides how each result counts (see [`classify`](crate::classify)),
    /// for the breaker and the fallback alike. Default [`ByKind`].
    pub fn classify<C2>(self, classifier: C2) -> PolicyBuilder<Br, C2, Fs, D, R, X> {
        PolicyBuilder {
            name: self.name,
            breakers: self.breakers,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            budget_margin: self.budget_margin,
            deadline_of: self.deadline_of,
            fallback: self.fallback,
            classifier,
            retry: self.retry,
            faults: self.faults,
            clock: self.clock,
        }
    }

    /// Retries by `retry`, between the fallback and the breaker: each
    /// attempt is admitted by the breaker (and counted in its window), takes
    /// a bulkhead slot and runs under the timeout; the fallback answers once
    /// the retries have given up. See [`retry`](crate::retry) for when a
    /// call is retried. The requests must be `Clone`.
    pub fn retry<P>(
        self,
        retry: crate::retry::Retry<P>,
    ) -> PolicyBuilder<Br, C, Fs, D, crate::retry::Retry<P>, X> {
        PolicyBuilder {
            name: self.name,
            breakers: self.breakers,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            budget_margin: self.budget_margin,
            deadline_of: self.deadline_of,
            fallback: self.fallback,
            classifier: self.classifier,
            retry,
            faults: self.faults,
            clock: self.clock,
        }
    }

    /// Injects faults into the calls (see [`fault`](crate::fault)), under
    /// every other stage: the timeout cuts an injected latency or hang, the
    /// breaker counts an injected error as the dependency's, the fallback
    /// answers for it. Give a [`Faults`](crate::fault::Faults) handle (every
    /// call may get one) or a [`FaultLayer`](crate::fault::FaultLayer)
    /// with [`only`](crate::fault::FaultLayer::only) (some calls: a
    /// tenant, a route). Off by default; a handle injects nothing until
    /// its probabilities say so, and [`Faults::set_enabled`](crate::fault::Faults::set_enabled)
    /// switches it at runtime.
    pub fn faults<X2: FaultStage<()>>(self, faults: X2) -> PolicyBuilder<Br, C, Fs, D, R, X2> {
        PolicyBuilder {
            name: self.name,
            breakers: self.breakers,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            budget_margin: self.budget_margin,
            deadline_of: self.deadline_of,
            fallback: self.fallback,
            classifier: self.classifier,
            retry: self.retry,
            faults,
            clock: self.clock,
        }
    }

    /// The clock of the timeout, and of the breaker the policy builds.
    /// Default [`Clock::default`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks every stage and builds the policy.
    // The type says what each stage became; an alias would only hide it.
    #[allow(clippy::type_complexity)]
    pub fn build(self) -> Result<Policy<Br::Breakers, C, Fs::Fallback, D, R, X>, ConfigError>
    where
        Br: BreakerStage,
        Fs: FallbackStage,
    {
        let clock = self.clock.unwrap_or_default();
        let breakers = self.breakers.into_breakers(&self.name, clock)?;
        let bulkhead = self.bulkhead.map(|make| make(&self.name)).transpose()?;
        if let Some(zero) = self.timeout.filter(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "timeout",
                zero,
                "must be longer than zero",
            ));
        }
        let fallback = self.fallback.into_fallback()?;
        Ok(Policy {
            shared: Laned::new(Shared {
                name: self.name,
                breakers,
                bulkhead,
                timeout: self.timeout.map(|timeout| Limit::new(timeout, false)),
                budget_margin: self.budget_margin,
                deadline_of: self.deadline_of,
                clock,
                fallback,
                classifier: self.classifier,
                retry: self.retry,
            }),
            faults: self.faults,
        })
    }
}

impl<Br, C, Fs, D, R, X> fmt::Debug for PolicyBuilder<Br, C, Fs, D, R, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyBuilder")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S, B, C, F, D, R, X: FaultStage<S>> Layer<S> for Policy<B, C, F, D, R, X> {
    type Service = PolicyService<X::Service, B, C, F, D, R>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner: self.faults.wrap(inner),
            shared: self.shared.clone(),
        }
    }
}

/// A service run through a [`Policy`]. Made by the policy as a `Layer`.
pub struct PolicyService<
    S,
    B = CircuitBreaker,
    C = ByKind,
    F = NoFallback,
    D = NoDeadline,
    R = NoRetry,
> {
    inner: S,
    shared: Laned<Shared<B, C, F, D, R>>,
}

impl<S: Clone, B, C, F, D, R> Clone for PolicyService<S, B, C, F, D, R> {
    fn clone(&self) -> Self {
        PolicyService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, B, C, F, D, R> fmt::Debug for PolicyService<S, B, C, F, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyService")
            .field("inner", &self.inner)
            .field("policy", &self.shared.name)
            .finish()
    }
}

impl<S, Req, B, C, F, D, R> Service<Req> for PolicyService<S, B, C, F, D, R>
where
    S: Service<Req> + Clone,
    S::Error: IntoError,
    S::Response: Send + 'static,
    B: Admits<Req>,
    C: Classify<S::Response, Inner<S, Req>>,
    F: AnswersFor<Req, S::Response, Inner<S, Req>>,
    D: DeadlineOf<Req>,
    R: RetryStage<S, Req>,
{
    type Response = S::Response;
    type Error = Error<Inner<S, Req>>;
    type Future = ResponseFuture<S, Req, B, C, F, D, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        // Nothing to count, answer, retry or hold: only the deadline is
        // left, and the timeout layer's own future runs it.
        if !B::COUNTS && !F::ANSWERS && !R::RETRIES && self.shared.bulkhead.is_none() {
            let own = self.shared.deadline_of.deadline_of(&request);
            let due = self.shared.due(Limits { own, total: None });
            return ResponseFuture::timed(&mut self.inner, request, due);
        }
        self.call_staged(request)
    }
}

impl<S, B, C, F, D, R> PolicyService<S, B, C, F, D, R> {
    /// A call through the stages. Inlined, so that the future is made
    /// where its caller keeps it: returned from a function of its own, the
    /// caller's `async fn` moved it into its state in 16-byte loads of the
    /// 8-byte and narrower stores that had just written it, which the CPU
    /// cannot forward, and every awaited call waited for them.
    #[inline(always)]
    fn call_staged<Req>(&mut self, request: Req) -> ResponseFuture<S, Req, B, C, F, D, R>
    where
        S: Service<Req> + Clone,
        S::Error: IntoError,
        B: Admits<Req>,
        D: DeadlineOf<Req>,
        F: AnswersFor<Req, S::Response, Inner<S, Req>>,
        R: RetryStage<S, Req>,
    {
        let shared = &self.shared;
        let key = shared.fallback.key(&request);
        let own = shared.deadline_of.deadline_of(&request);
        let (kept, total) = shared.retry.keep(&self.inner, &request, own);
        let limits = Limits { own, total };
        // The level checked first, so that a call with `TRACE` off makes
        // no span to look at and throw away.
        let span = if B::COUNTS && tracing::level_enabled!(tracing::Level::TRACE) {
            CallSpan::new(tracing::trace_span!(
                target: "seawall::policy",
                "seawall.call",
                policy = %shared.name,
                outcome = tracing::field::Empty,
            ))
        } else {
            CallSpan::none()
        };
        ResponseFuture::start(shared, span, &mut self.inner, request, limits, key, kept)
    }
}
