//! What a Policy takes for each stage: built handles or their builders,
//! turned into the stage when the Policy is built.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use crate::bulkhead::{Bulkhead, BulkheadBuilder, BulkheadFull, Queue, Reject, Slot};
use crate::circuit_breaker::{
    BreakerFor, CircuitBreaker, CircuitBreakerBuilder, CircuitOpen, Ticket,
};
use crate::classify::Verdict;
use crate::clock::Clock;
use crate::error::{ConfigError, Error, IntoError, Leaf};
use crate::fallback::after::After;
use crate::fallback::{Fallback, FallbackBuilder};
use crate::retry::{Attempts, Retry};
use crate::select::Selects;
use crate::BoxError;

/// The trait a Policy's stage arguments implement, sealed: only seawall's
/// own types are stages.
pub trait Sealed {}

/// What [`PolicyBuilder::circuit_breaker`](super::PolicyBuilder::circuit_breaker)
/// takes: a [`CircuitBreakerBuilder`] (named after the policy and on its
/// clock unless it has its own), a built [`CircuitBreaker`] (shared with
/// whatever else holds it, keeping its name and clock), or a
/// [`Registry`](crate::circuit_breaker::Registry) selection from
/// [`Registry::keyed`](crate::circuit_breaker::Registry::keyed): one breaker
/// per key.
pub trait BreakerStage: Sealed {
    /// The breaker selection the policy admits calls through.
    type Breakers;

    #[doc(hidden)]
    fn into_breakers(self, name: &Arc<str>, clock: Clock) -> Result<Self::Breakers, ConfigError>;
}

/// No breaker: the policy keeps its statistics in a breaker that is forced
/// closed (it records, never trips), named after the policy.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct StatisticsOnly;

impl Sealed for StatisticsOnly {}

impl BreakerStage for StatisticsOnly {
    type Breakers = CircuitBreaker;

    fn into_breakers(self, name: &Arc<str>, clock: Clock) -> Result<CircuitBreaker, ConfigError> {
        CircuitBreaker::builder()
            .defaults(name, clock)
            .statistics_only()
            .build()
    }
}

/// No statistics: the policy admits every call and counts none (no
/// window, no events, no `tracing` span). What it has left to run is only
/// what was configured; with nothing but a timeout (or a per-request
/// deadline) it is the [`Timeout`](crate::timeout::Timeout) layer's own
/// future. Given by [`PolicyBuilder::without_statistics`](super::PolicyBuilder::without_statistics).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct NoStatistics;

impl Sealed for NoStatistics {}

impl BreakerStage for NoStatistics {
    type Breakers = NoStatistics;

    fn into_breakers(self, _: &Arc<str>, _: Clock) -> Result<NoStatistics, ConfigError> {
        Ok(NoStatistics)
    }
}

/// A policy without statistics reports no breaker.
impl crate::observe::Catalogued for NoStatistics {
    fn report_into(&self, _: &mut crate::observe::Report, _: usize) {}
}

/// A built policy's breaker selection for requests of type `Req`: one
/// [`CircuitBreaker`], a registry's per-key selection, or
/// [`NoStatistics`].
pub trait Admits<Req>: Sealed {
    /// Whether calls are counted (and spanned).
    #[doc(hidden)]
    const COUNTS: bool;

    /// What a call keeps of the breaker that admitted it.
    #[doc(hidden)]
    type Held;

    /// Leave to call, with the ticket to settle if the call is counted.
    #[doc(hidden)]
    fn admit(&self, request: &Req) -> (Self::Held, Result<Option<Ticket>, CircuitOpen>);

    /// The breaker that counts the call, if one does.
    #[doc(hidden)]
    fn stats<'a>(&'a self, held: &'a Self::Held) -> Option<&'a CircuitBreaker>;

    /// A call run by its deadline alone, as the timeout layer runs it;
    /// [`Uncounted`] for a selection that counts, so that its policy's
    /// future has no room for one.
    #[doc(hidden)]
    type Timed<Fut>;

    /// Runs a call by its deadline alone. Called only when not
    /// [`COUNTS`](Self::COUNTS).
    #[doc(hidden)]
    fn timed<Fut>(call: crate::timeout::ResponseFuture<Fut>) -> Self::Timed<Fut>;

    #[doc(hidden)]
    fn poll_timed<Fut, T, E>(
        call: Pin<&mut Self::Timed<Fut>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, Error<E::Inner>>>
    where
        Fut: Future<Output = Result<T, E>>,
        E: IntoError;
}

/// No call: a counting policy never runs one by its deadline alone, and
/// an uninhabited type takes no room in its future.
#[doc(hidden)]
pub enum Uncounted<Fut> {
    #[doc(hidden)]
    Never(std::convert::Infallible, std::marker::PhantomData<Fut>),
}

/// A counting selection's timed calls: none (see [`Uncounted`]).
macro_rules! never_timed {
    () => {
        type Timed<Fut> = Uncounted<Fut>;

        fn timed<Fut>(_: crate::timeout::ResponseFuture<Fut>) -> Uncounted<Fut> {
            unreachable!("a policy that counts runs every call through its stages")
        }

        fn poll_timed<Fut, T, E>(
            call: Pin<&mut Uncounted<Fut>>,
            _: &mut Context<'_>,
        ) -> Poll<Result<T, Error<E::Inner>>>
        where
            Fut: Future<Output = Result<T, E>>,
            E: IntoError,
        {
            match *call.as_ref().get_ref() {
                Uncounted::Never(never, _) => match never {},
            }
        }
    };
}

impl<Req> Admits<Req> for CircuitBreaker {
    const COUNTS: bool = true;
    type Held = ();

    // The inherent `admit`: inlining the `BreakerFor` one everywhere made
    // the breaker layer's own calls longer.
    #[inline(always)]
    fn admit(&self, _: &Req) -> ((), Result<Option<Ticket>, CircuitOpen>) {
        ((), CircuitBreaker::admit(self).map(Some))
    }

    #[inline(always)]
    fn stats<'a>(&'a self, held: &'a ()) -> Option<&'a CircuitBreaker> {
        Some(BreakerFor::<Req>::breaker(self, held))
    }

    never_timed!();
}

#[cfg(feature = "registry")]
impl<Req, K, F> Admits<Req> for crate::circuit_breaker::Keyed<K, F>
where
    Self: BreakerFor<Req, Held = CircuitBreaker>,
{
    const COUNTS: bool = true;
    type Held = CircuitBreaker;

    #[inline(always)]
    fn admit(&self, request: &Req) -> (CircuitBreaker, Result<Option<Ticket>, CircuitOpen>) {
        let (breaker, admitted) = BreakerFor::admit(self, request);
        (breaker, admitted.map(Some))
    }

    #[inline(always)]
    fn stats<'a>(&'a self, held: &'a CircuitBreaker) -> Option<&'a CircuitBreaker> {
        Some(BreakerFor::breaker(self, held))
    }

    never_timed!();
}

impl<Req> Admits<Req> for NoStatistics {
    const COUNTS: bool = false;
    type Held = ();

    #[inline(always)]
    fn admit(&self, _: &Req) -> ((), Result<Option<Ticket>, CircuitOpen>) {
        ((), Ok(None))
    }

    #[inline(always)]
    fn stats(&self, _: &()) -> Option<&CircuitBreaker> {
        None
    }

    type Timed<Fut> = crate::timeout::ResponseFuture<Fut>;

    #[inline(always)]
    fn timed<Fut>(call: crate::timeout::ResponseFuture<Fut>) -> Self::Timed<Fut> {
        call
    }

    #[inline(always)]
    fn poll_timed<Fut, T, E>(
        call: Pin<&mut Self::Timed<Fut>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, Error<E::Inner>>>
    where
        Fut: Future<Output = Result<T, E>>,
        E: IntoError,
    {
        call.poll(cx)
    }
}

impl Sealed for CircuitBreakerBuilder {}

impl BreakerStage for CircuitBreakerBuilder {
    type Breakers = CircuitBreaker;

    fn into_breakers(self, name: &Arc<str>, clock: Clock) -> Result<CircuitBreaker, ConfigError> {
        self.defaults(name, clock).build()
    }
}

impl Sealed for CircuitBreaker {}

impl BreakerStage for CircuitBreaker {
    type Breakers = CircuitBreaker;

    fn into_breakers(self, _: &Arc<str>, _: Clock) -> Result<CircuitBreaker, ConfigError> {
        Ok(self)
    }
}

#[cfg(feature = "registry")]
impl<K, F> Sealed for crate::circuit_breaker::Keyed<K, F> {}

#[cfg(feature = "registry")]
impl<K, F> BreakerStage for crate::circuit_breaker::Keyed<K, F> {
    type Breakers = Self;

    fn into_breakers(self, _: &Arc<str>, _: Clock) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

/// A policy's bulkhead: refusing or queueing in the call's future (waiting
/// in `poll_ready` would ask the bulkhead before the breaker).
#[derive(Clone, Debug)]
pub enum PolicyBulkhead {
    Reject(Bulkhead<Reject>),
    Queue(Bulkhead<Queue>),
}

impl PolicyBulkhead {
    #[inline]
    pub(crate) fn try_take(&self) -> Option<Slot> {
        match self {
            PolicyBulkhead::Reject(bulkhead) => bulkhead.try_take(),
            PolicyBulkhead::Queue(bulkhead) => bulkhead.try_take(),
        }
    }

    #[inline(always)]
    pub(crate) fn start(&self) -> u64 {
        match self {
            PolicyBulkhead::Reject(bulkhead) => bulkhead.start(),
            PolicyBulkhead::Queue(bulkhead) => bulkhead.start(),
        }
    }

    #[inline(always)]
    pub(crate) fn sample(&self, started: u64, dropped: bool) {
        match self {
            PolicyBulkhead::Reject(bulkhead) => bulkhead.sample(started, dropped),
            PolicyBulkhead::Queue(bulkhead) => bulkhead.sample(started, dropped),
        }
    }

    #[inline]
    pub(crate) fn give_back(&self, slot: Slot) {
        match self {
            PolicyBulkhead::Reject(bulkhead) => bulkhead.give_back(slot),
            PolicyBulkhead::Queue(bulkhead) => bulkhead.give_back(slot),
        }
    }

    pub(crate) fn report_into(&self, report: &mut crate::observe::Report, top_keys: usize) {
        use crate::observe::Catalogued;
        match self {
            PolicyBulkhead::Reject(bulkhead) => bulkhead.report_into(report, top_keys),
            PolicyBulkhead::Queue(bulkhead) => bulkhead.report_into(report, top_keys),
        }
    }

    pub(crate) fn refuse(&self, waited: Option<std::time::Duration>) -> BulkheadFull {
        match self {
            PolicyBulkhead::Reject(bulkhead) => bulkhead.refuse(waited),
            PolicyBulkhead::Queue(bulkhead) => bulkhead.refuse(waited),
        }
    }
}

/// What [`PolicyBuilder::bulkhead`](super::PolicyBuilder::bulkhead) takes:
/// a bulkhead that refuses or queues when full, built or as its builder
/// (named after the policy unless it has its own name). One that waits in
/// `poll_ready` ([`Backpressure`](crate::bulkhead::Backpressure)) does not
/// fit a policy, which asks the breaker first: it is not a
/// `BulkheadStage`, so it does not compile.
///
/// ```compile_fail
/// use std::time::Duration;
/// use seawall::bulkhead::Bulkhead;
/// use seawall::policy::Policy;
///
/// let waits_in_poll_ready = Bulkhead::builder().backpressure(8, Duration::from_millis(10));
/// let policy = Policy::builder().bulkhead(waits_in_poll_ready);
/// ```
pub trait BulkheadStage: Sealed {
    #[doc(hidden)]
    fn into_bulkhead(self, name: &Arc<str>) -> Result<PolicyBulkhead, ConfigError>;
}

impl Sealed for BulkheadBuilder<Reject> {}
impl Sealed for BulkheadBuilder<Queue> {}
impl Sealed for Bulkhead<Reject> {}
impl Sealed for Bulkhead<Queue> {}

impl BulkheadStage for BulkheadBuilder<Reject> {
    fn into_bulkhead(self, name: &Arc<str>) -> Result<PolicyBulkhead, ConfigError> {
        self.default_name(name).build().map(PolicyBulkhead::Reject)
    }
}

impl BulkheadStage for BulkheadBuilder<Queue> {
    fn into_bulkhead(self, name: &Arc<str>) -> Result<PolicyBulkhead, ConfigError> {
        self.default_name(name).build().map(PolicyBulkhead::Queue)
    }
}

impl BulkheadStage for Bulkhead<Reject> {
    fn into_bulkhead(self, _: &Arc<str>) -> Result<PolicyBulkhead, ConfigError> {
        Ok(PolicyBulkhead::Reject(self))
    }
}

impl BulkheadStage for Bulkhead<Queue> {
    fn into_bulkhead(self, _: &Arc<str>) -> Result<PolicyBulkhead, ConfigError> {
        Ok(PolicyBulkhead::Queue(self))
    }
}

/// What [`PolicyBuilder::fallback`](super::PolicyBuilder::fallback) takes: a
/// [`FallbackBuilder`] or a built [`Fallback`].
pub trait FallbackStage: Sealed {
    /// The fallback the policy answers with.
    type Fallback;

    #[doc(hidden)]
    fn into_fallback(self) -> Result<Self::Fallback, ConfigError>;
}

impl<Req, Res, E, K> Sealed for FallbackBuilder<Req, Res, E, K> {}

impl<Req, Res, E, K> FallbackStage for FallbackBuilder<Req, Res, E, K>
where
    Req: 'static,
    Res: Send + 'static,
    E: 'static,
    K: Send + Sync + 'static,
{
    type Fallback = Fallback<Req, Res, E, K>;

    fn into_fallback(self) -> Result<Self::Fallback, ConfigError> {
        self.build()
    }
}

impl<Req, Res, E, K> Sealed for Fallback<Req, Res, E, K> {}

impl<Req, Res, E, K> FallbackStage for Fallback<Req, Res, E, K> {
    type Fallback = Self;

    fn into_fallback(self) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

/// No fallback: errors reach the caller.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct NoFallback;

impl Sealed for NoFallback {}

impl FallbackStage for NoFallback {
    type Fallback = NoFallback;

    fn into_fallback(self) -> Result<NoFallback, ConfigError> {
        Ok(NoFallback)
    }
}

/// A built policy's fallback for requests of type `Req`: [`NoFallback`], or
/// a [`Fallback`] of that request, response and error type.
pub trait AnswersFor<Req, Res, E>: Sealed {
    /// Whether it may answer for a failed call.
    #[doc(hidden)]
    const ANSWERS: bool;

    /// The key a call keeps for its fallback.
    type Key;

    #[doc(hidden)]
    fn key(&self, request: &Req) -> Self::Key;

    #[doc(hidden)]
    fn keep(&self, key: Self::Key, response: &Res, verdict: Verdict);

    #[doc(hidden)]
    fn recover(
        &self,
        key: Self::Key,
        error: &Error<E>,
        verdict: Verdict,
        stats: Option<&CircuitBreaker>,
    ) -> After<Res>;

    #[doc(hidden)]
    fn finish(
        &self,
        answer: Result<Res, BoxError>,
        error: Error<E>,
        stats: Option<&CircuitBreaker>,
    ) -> Result<Res, Error<E>>;
}

impl<Req, Res, E> AnswersFor<Req, Res, E> for NoFallback {
    const ANSWERS: bool = false;
    type Key = ();

    #[inline]
    fn key(&self, _: &Req) {}

    #[inline]
    fn keep(&self, _: (), _: &Res, _: Verdict) {}

    #[inline]
    fn recover(&self, _: (), _: &Error<E>, _: Verdict, _: Option<&CircuitBreaker>) -> After<Res> {
        After::Unanswered
    }

    fn finish(
        &self,
        _: Result<Res, BoxError>,
        error: Error<E>,
        _: Option<&CircuitBreaker>,
    ) -> Result<Res, Error<E>> {
        Err(error)
    }
}

impl<Req, Res, E, K> AnswersFor<Req, Res, E> for Fallback<Req, Res, E, K>
where
    Res: Send + 'static,
    E: Leaf,
{
    const ANSWERS: bool = true;
    type Key = K;

    #[inline]
    fn key(&self, request: &Req) -> K {
        Fallback::key(self, request)
    }

    #[inline]
    fn keep(&self, key: K, response: &Res, verdict: Verdict) {
        Fallback::keep(self, key, response, verdict);
    }

    #[inline]
    fn recover(
        &self,
        key: K,
        error: &Error<E>,
        verdict: Verdict,
        stats: Option<&CircuitBreaker>,
    ) -> After<Res> {
        Fallback::recover(self, key, error, verdict, stats)
    }

    fn finish(
        &self,
        answer: Result<Res, BoxError>,
        error: Error<E>,
        stats: Option<&CircuitBreaker>,
    ) -> Result<Res, Error<E>> {
        Fallback::finish(self, answer, error, stats)
    }
}

/// No retries: one attempt per call (the default).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct NoRetry;

impl Sealed for NoRetry {}

/// A policy without retries reports none.
impl crate::observe::Catalogued for NoRetry {
    fn report_into(&self, _: &mut crate::observe::Report, _: usize) {}
}
impl<P> Sealed for Retry<P> {}

/// A built policy's retry stage for calls to `S` with requests of type
/// `Req`: [`NoRetry`], or a [`Retry`] rule (which needs `Req: Clone`).
pub trait RetryStage<S, Req>: Sealed {
    /// Whether a call may be attempted more than once.
    #[doc(hidden)]
    const RETRIES: bool;

    /// What a call keeps for its next attempt.
    type Kept;

    /// Keeps what retries need (the first attempt is counted), and says
    /// how long the rule's total timeout leaves.
    #[doc(hidden)]
    fn keep(
        &self,
        service: &S,
        request: &Req,
        own: Option<Duration>,
    ) -> (Self::Kept, Option<Duration>);

    /// After an attempt: the wait before the next, if there is one.
    #[doc(hidden)]
    fn again(
        &self,
        kept: &mut Self::Kept,
        verdict: Verdict,
        breaker: Option<&CircuitBreaker>,
    ) -> Option<Duration>;

    /// Readies the service for the next attempt.
    #[doc(hidden)]
    fn poll_ready(
        &self,
        kept: &mut Self::Kept,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error<<S::Error as IntoError>::Inner>>>
    where
        S: Service<Req>,
        S::Error: IntoError;

    /// The next attempt: its ready service, its request, and its limits.
    #[doc(hidden)]
    fn next<'k>(&self, kept: &'k mut Self::Kept) -> (&'k mut S, Req, Limits);
}

impl<S, Req> RetryStage<S, Req> for NoRetry {
    const RETRIES: bool = false;
    type Kept = ();

    #[inline]
    fn keep(&self, _: &S, _: &Req, _: Option<Duration>) -> ((), Option<Duration>) {
        ((), None)
    }

    #[inline]
    fn again(&self, _: &mut (), _: Verdict, _: Option<&CircuitBreaker>) -> Option<Duration> {
        None
    }

    fn poll_ready(
        &self,
        _: &mut (),
        _: &mut Context<'_>,
    ) -> Poll<Result<(), Error<<S::Error as IntoError>::Inner>>>
    where
        S: Service<Req>,
        S::Error: IntoError,
    {
        unreachable!("a policy without retries never makes a second attempt")
    }

    fn next<'k>(&self, _: &'k mut ()) -> (&'k mut S, Req, Limits) {
        unreachable!("a policy without retries never makes a second attempt")
    }
}

/// What a call under a retrying policy keeps for its next attempt.
pub struct Kept<S, Req> {
    service: S,
    request: Req,
    own: Option<Duration>,
    attempts: Attempts,
}

impl<S, Req, P> RetryStage<S, Req> for Retry<P>
where
    S: Clone,
    Req: Clone,
    P: Selects<Req>,
{
    const RETRIES: bool = true;
    type Kept = Option<Kept<S, Req>>;

    #[inline]
    fn keep(
        &self,
        service: &S,
        request: &Req,
        own: Option<Duration>,
    ) -> (Self::Kept, Option<Duration>) {
        let attempts = self.first();
        let total = attempts.total_left();
        let kept = self.selects(request).then(|| Kept {
            service: service.clone(),
            request: request.clone(),
            own,
            attempts,
        });
        (kept, total)
    }

    #[inline]
    fn again(
        &self,
        kept: &mut Self::Kept,
        verdict: Verdict,
        breaker: Option<&CircuitBreaker>,
    ) -> Option<Duration> {
        let kept = kept.as_mut()?;
        Retry::again(self, &mut kept.attempts, verdict, breaker)
    }

    fn poll_ready(
        &self,
        kept: &mut Self::Kept,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error<<S::Error as IntoError>::Inner>>>
    where
        S: Service<Req>,
        S::Error: IntoError,
    {
        let kept = kept.as_mut().expect("retried with what was kept");
        kept.service.poll_ready(cx).map_err(IntoError::into_error)
    }

    fn next<'k>(&self, kept: &'k mut Self::Kept) -> (&'k mut S, Req, Limits) {
        let kept = kept.as_mut().expect("retried with what was kept");
        let (own, total) = kept.attempts.start(self, kept.own);
        (
            &mut kept.service,
            kept.request.clone(),
            Limits { own, total },
        )
    }
}

/// An attempt's time limits besides the policy's timeout: the request's
/// own deadline, and what the retry rule's total timeout leaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub(crate) own: Option<Duration>,
    pub(crate) total: Option<Duration>,
}

impl Limits {
    /// The same limits, `spent` later.
    pub(crate) fn less(self, spent: Duration) -> Limits {
        Limits {
            own: self.own.map(|own| own.saturating_sub(spent)),
            total: self.total.map(|total| total.saturating_sub(spent)),
        }
    }
}

/// No faults injected (the default).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct NoFaults;

impl Sealed for NoFaults {}
impl<Res, E> Sealed for crate::fault::Faults<Res, E> {}
impl<Res, E, P> Sealed for crate::fault::FaultLayer<Res, E, P> {}

/// What [`PolicyBuilder::faults`](super::PolicyBuilder::faults) takes:
/// [`NoFaults`], a [`Faults`](crate::fault::Faults) handle, or a
/// [`FaultLayer`](crate::fault::FaultLayer) (which may select calls).
/// The stage wraps the service the policy guards.
pub trait FaultStage<S>: Sealed {
    /// The service the policy calls: `S`, or `S` with faults injected.
    type Service;

    #[doc(hidden)]
    fn wrap(&self, inner: S) -> Self::Service;
}

impl<S> FaultStage<S> for NoFaults {
    type Service = S;

    #[inline]
    fn wrap(&self, inner: S) -> S {
        inner
    }
}

impl<S, Res, E> FaultStage<S> for crate::fault::Faults<Res, E> {
    type Service = crate::fault::FaultService<S, Res, E>;

    fn wrap(&self, inner: S) -> Self::Service {
        use tower_layer::Layer;
        crate::fault::FaultLayer::new(self.clone()).layer(inner)
    }
}

impl<S, Res, E, P: Clone> FaultStage<S> for crate::fault::FaultLayer<Res, E, P> {
    type Service = crate::fault::FaultService<S, Res, E, P>;

    fn wrap(&self, inner: S) -> Self::Service {
        use tower_layer::Layer;
        self.layer(inner)
    }
}
