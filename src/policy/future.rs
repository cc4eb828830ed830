//! The Policy's one future: queue for the bulkhead if it must, call with a
//! deadline, judge and record one outcome, and fall back.

use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::stage::Limits;
use super::stage::{Admits, AnswersFor, PolicyBulkhead, RetryStage};
use super::Shared;
use crate::bulkhead::{Acquire, Permit, Slot};
use crate::circuit_breaker::{CircuitBreaker, Ticket};
use crate::classify::{Classify, Verdict};
use crate::error::{Error, IntoError};
use crate::fallback::after::{After, Running};
use crate::stripe::{Lane, Laned};
use crate::timeout::future::{Deadline, Due};
use crate::timeout::DeadlineOf;

/// The error type at the bottom of the stack under the policy.
pub(super) type Inner<S, Req> = <<S as Service<Req>>::Error as IntoError>::Inner;

/// What a call through the policy ends with.
type Outcome<S, Req> = Result<<S as Service<Req>>::Response, Error<Inner<S, Req>>>;

pin_project! {
    /// The future of a [`PolicyService`](super::PolicyService) call: every
    /// stage in one future, with no allocation while the call is healthy.
    /// Dropped at any point, it gives back its bulkhead slot or place in
    /// line and its breaker probe slot. Dropped unfinished after the
    /// caller's own deadline passed (by a server's own enforcement of
    /// `grpc-timeout`, say), it counts as the caller's deadline.
    pub struct ResponseFuture<S, Req, B, C, F, D, R>
    where
        S: Service<Req>,
        S::Error: IntoError,
        B: Admits<Req>,
        F: AnswersFor<Req, S::Response, Inner<S, Req>>,
        R: RetryStage<S, Req>,
    {
        #[pin]
        kind: Kind<S, Req, B, C, F, D, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, B, C, F, D, R>
    where
        S: Service<Req>,
        S::Error: IntoError,
        B: Admits<Req>,
        F: AnswersFor<Req, S::Response, Inner<S, Req>>,
        R: RetryStage<S, Req>,
    {
        // A policy with nothing to run but its deadline: the timeout
        // layer's own future (no room at all in a counting policy's).
        Timed {
            #[pin]
            call: B::Timed<S::Future>,
        },
        Staged {
            #[pin]
            staged: Staged<S, Req, B, C, F, D, R>,
        },
    }
}

pin_project! {
    /// A call through the policy's stages.
    struct Staged<S, Req, B, C, F, D, R>
    where
        S: Service<Req>,
        S::Error: IntoError,
        B: Admits<Req>,
        F: AnswersFor<Req, S::Response, Inner<S, Req>>,
        R: RetryStage<S, Req>,
    {
        #[pin]
        state: State<S, Req>,
        held: Held<Req, B, C, F, D, R>,
        key: Option<F::Key>,
        kept: R::Kept,
    }

    impl<S, Req, B, C, F, D, R> PinnedDrop for Staged<S, Req, B, C, F, D, R>
    where
        S: Service<Req>,
        S::Error: IntoError,
        B: Admits<Req>,
        F: AnswersFor<Req, S::Response, Inner<S, Req>>,
        R: RetryStage<S, Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A finished (or uncounted) call has no ticket left: nothing
            // more to look at.
            if this.held.ticket.is_some() {
                dropped_unfinished(this.state, this.held);
            }
        }
    }
}

/// A call dropped before its outcome: the caller's deadline if it has
/// passed (the rest is given back as the call's holdings drop). Out of
/// line: rare, and inlined it would make every finished call's drop
/// longer.
#[cold]
#[inline(never)]
fn dropped_unfinished<S, Req, B, C, F, D, R>(
    state: Pin<&mut State<S, Req>>,
    held: &mut Held<Req, B, C, F, D, R>,
) where
    S: Service<Req>,
    S::Error: IntoError,
    B: Admits<Req>,
{
    if let StateProj::Calling { deadline, .. } = state.project() {
        if deadline.callers_passed().is_some() {
            held.settle(Verdict::CallerDeadline);
        }
    }
}

pin_project! {
    /// An attempt waiting in line for the bulkhead. Boxed in the call's
    /// future: it holds a timer, and every caller's future would carry (and
    /// move) its bytes though most calls never wait.
    #[project = QueuedProj]
    struct Queued<S, Req> {
        #[pin]
        acquire: Acquire,
        // The ready inner service and the request, for when room comes.
        call: Option<(S, Req)>,
        // The attempt's limits when it joined the line (by the policy's
        // clock): the wait counts against them.
        limits: Limits,
        queued_at: u64,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
        S::Error: IntoError,
    {
        Queued {
            queued: Pin<Box<Queued<S, Req>>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            deadline: Deadline,
        },
        // Refused before the call: judged and answered through the fallback
        // when polled.
        Refused {
            error: Option<Error<Inner<S, Req>>>,
        },
        Falling {
            running: Running<S::Response>,
            error: Option<Error<Inner<S, Req>>>,
        },
        // Between attempts, holding no slot and no ticket. Boxed: a healthy
        // call's future does not carry a timer it never uses.
        Waiting {
            sleep: Pin<Box<Sleep>>,
        },
        Readying,
    }
}

/// A call's reference to its policy, counted on its thread's lane.
type PolicyRef<B, C, F, D, R> = Arc<Lane<Shared<B, C, F, D, R>>>;

/// A call's `TRACE` span, if a subscriber wants it. Boxed: a span is 40
/// bytes that every call's future would carry, and that its caller's state
/// machine copies at each `.await`, for what only a subscriber of seawall's
/// `TRACE` spans uses (and pays one allocation a call for).
pub(crate) struct CallSpan(ManuallyDrop<Option<Box<tracing::Span>>>);

impl CallSpan {
    /// Keeps `span` unless no subscriber wants it.
    #[inline]
    pub(crate) fn new(span: tracing::Span) -> CallSpan {
        CallSpan(ManuallyDrop::new(
            (!span.is_disabled()).then(|| Box::new(span)),
        ))
    }

    #[inline]
    pub(crate) fn none() -> CallSpan {
        CallSpan(ManuallyDrop::new(None))
    }

    #[inline]
    fn get(&self) -> Option<&tracing::Span> {
        self.0.as_deref()
    }
}

impl Clone for CallSpan {
    fn clone(&self) -> CallSpan {
        CallSpan(ManuallyDrop::new((*self.0).clone()))
    }
}

impl Drop for CallSpan {
    /// Inline, and a check when there is no span: the drop of a box and a
    /// span would not be inlined, and every call would make a call to it.
    #[inline(always)]
    fn drop(&mut self) {
        if self.0.is_some() {
            drop_span(ManuallyDrop::into_inner(std::mem::take(&mut self.0)));
        }
    }
}

#[cold]
#[inline(never)]
fn drop_span(span: Option<Box<tracing::Span>>) {
    drop(span);
}

/// What a call holds of the policy, given back when dropped: the breaker's
/// ticket, and the bulkhead's slot (or the permit a wait in line got).
struct Held<Req, B: Admits<Req>, C, F, D, R> {
    policy: PolicyRef<B, C, F, D, R>,
    span: CallSpan,
    breaker: B::Held,
    ticket: Option<Ticket>,
    bulkhead: Hold,
    /// When the call got its bulkhead slot, for an adaptive limit (zero
    /// otherwise).
    started: u64,
    request: PhantomData<fn(Req)>,
}

/// The bulkhead's part of a call. It has no drop glue: a permit in it goes
/// back through [`Held::release_bulkhead`], which `Held`'s drop runs, so a
/// call that holds a slot or nothing makes no out-of-line call to write or
/// drop its `Hold`.
enum Hold {
    Nothing,
    Slot(Slot),
    /// Granted after waiting in line.
    Permit(ManuallyDrop<Permit>),
}

impl<Req, B: Admits<Req>, C, F, D, R> Held<Req, B, C, F, D, R> {
    fn new(
        policy: PolicyRef<B, C, F, D, R>,
        span: CallSpan,
        breaker: B::Held,
        ticket: Option<Ticket>,
        bulkhead: Hold,
        started: u64,
    ) -> Self {
        Held {
            policy,
            span,
            breaker,
            ticket,
            bulkhead,
            started,
            request: PhantomData,
        }
    }

    /// Tells an adaptive bulkhead how the call that held its slot ended:
    /// timeouts and refusals below are drops, successes and failures are
    /// latencies; what says nothing of the dependency is not sampled.
    #[inline(always)]
    fn sample(&mut self, verdict: Verdict) {
        // Taken: an attempt is sampled once.
        let started = std::mem::take(&mut self.started);
        if started == 0 {
            return;
        }
        let Some(dropped) = crate::bulkhead::dropped(verdict) else {
            return;
        };
        if let Some(bulkhead) = &self.policy.bulkhead {
            bulkhead.sample(started, dropped);
        }
    }

    /// The breaker that admitted the call, where its outcomes count (none
    /// without statistics).
    #[inline]
    fn stats(&self) -> Option<&CircuitBreaker> {
        self.policy.breakers.stats(&self.breaker)
    }

    #[inline]
    fn settle(&mut self, verdict: Verdict) {
        if let (Some(ticket), Some(stats)) = (self.ticket.take(), self.stats()) {
            stats.settle(ticket, verdict);
        }
    }

    #[inline(always)]
    fn release_bulkhead(&mut self) {
        // Most calls of a policy without a bulkhead, or whose slot went back
        // already: nothing to replace or drop.
        if matches!(self.bulkhead, Hold::Nothing) {
            return;
        }
        match std::mem::replace(&mut self.bulkhead, Hold::Nothing) {
            Hold::Slot(slot) => {
                if let Some(bulkhead) = &self.policy.bulkhead {
                    bulkhead.give_back(slot);
                }
            }
            Hold::Permit(permit) => drop(ManuallyDrop::into_inner(permit)),
            Hold::Nothing => {}
        }
    }
}

impl<Req, B: Admits<Req>, C, F, D, R> Drop for Held<Req, B, C, F, D, R> {
    #[inline]
    fn drop(&mut self) {
        // A call that ended gave both back as it did.
        if self.ticket.is_some() || !matches!(self.bulkhead, Hold::Nothing) {
            self.give_back_unfinished();
        }
    }
}

impl<Req, B: Admits<Req>, C, F, D, R> Held<Req, B, C, F, D, R> {
    /// What a call dropped before its end still holds. Out of line and
    /// cold: a finished call's drop is then two checks.
    #[cold]
    #[inline(never)]
    fn give_back_unfinished(&mut self) {
        self.release_bulkhead();
        if let (Some(ticket), Some(stats)) = (self.ticket.take(), self.stats()) {
            stats.abandon(ticket);
        }
    }
}

impl<S, Req, B, C, F, D, R> ResponseFuture<S, Req, B, C, F, D, R>
where
    S: Service<Req> + Clone,
    S::Error: IntoError,
    B: Admits<Req>,
    F: AnswersFor<Req, S::Response, Inner<S, Req>>,
    R: RetryStage<S, Req>,
{
    /// A call's first attempt.
    #[inline(always)]
    pub(crate) fn start(
        policy: &Laned<Shared<B, C, F, D, R>>,
        span: CallSpan,
        service: &mut S,
        request: Req,
        limits: Limits,
        key: F::Key,
        kept: R::Kept,
    ) -> Self {
        attempt(
            policy,
            policy.lane(),
            span,
            service,
            request,
            limits,
            |held, state| ResponseFuture {
                kind: Kind::Staged {
                    staged: Staged {
                        state,
                        held,
                        key: Some(key),
                        kept,
                    },
                },
            },
        )
    }

    /// A call with nothing to run but its deadline.
    #[inline(always)]
    pub(crate) fn timed(service: &mut S, request: Req, due: Due) -> Self {
        ResponseFuture {
            kind: Kind::Timed {
                call: B::timed(crate::timeout::ResponseFuture::call(service, request, due)),
            },
        }
    }
}

/// Admits an attempt: the breaker first, then the bulkhead (a slot, or a
/// place in line), then the call with its deadline. `lane` is the call's
/// hold on `policy`, which is read through the caller's own reference.
#[inline(always)]
fn attempt<S, Req, B, C, F, D, R, T>(
    policy: &Shared<B, C, F, D, R>,
    lane: PolicyRef<B, C, F, D, R>,
    span: CallSpan,
    service: &mut S,
    request: Req,
    limits: Limits,
    then: impl FnOnce(Held<Req, B, C, F, D, R>, State<S, Req>) -> T,
) -> T
where
    S: Service<Req> + Clone,
    S::Error: IntoError,
    B: Admits<Req>,
{
    let (breaker, admitted) = policy.breakers.admit(&request);
    let ticket = match admitted {
        Ok(ticket) => ticket,
        Err(open) => {
            let held = Held::new(lane, span, breaker, None, Hold::Nothing, 0);
            return then(held, State::refused(Error::CircuitOpen(open)));
        }
    };
    let (bulkhead, started) = match &policy.bulkhead {
        None => (Hold::Nothing, 0),
        Some(bulkhead) => match bulkhead.try_take() {
            Some(slot) => (Hold::Slot(slot), bulkhead.start()),
            None => {
                let state = if let PolicyBulkhead::Queue(queue) = bulkhead {
                    // No time left: not worth a place in line.
                    let due = policy.due(limits);
                    if due.is_spent() {
                        State::refused(Error::Timeout(due.elapsed()))
                    } else {
                        match queue.join_line(service) {
                            Ok((acquire, ready)) => State::Queued {
                                queued: Box::pin(Queued {
                                    acquire,
                                    call: Some((ready, request)),
                                    limits,
                                    queued_at: policy.clock.now(),
                                }),
                            },
                            Err(full) => State::refused(Error::BulkheadFull(full)),
                        }
                    }
                } else {
                    State::refused(Error::BulkheadFull(bulkhead.refuse(None)))
                };
                let held = Held::new(lane, span, breaker, ticket, Hold::Nothing, 0);
                return then(held, state);
            }
        },
    };
    let due = policy.due(limits);
    let held = Held::new(lane, span, breaker, ticket, bulkhead, started);
    if due.is_spent() {
        // The caller has no time left: calling would only load the
        // dependency with work nobody waits for. (The bulkhead slot goes
        // back as the refusal is answered.)
        return then(held, State::refused(Error::Timeout(due.elapsed())));
    }
    let future = service.call(request);
    let deadline = due.deadline();
    then(held, State::Calling { future, deadline })
}

impl<S, Req> State<S, Req>
where
    S: Service<Req>,
    S::Error: IntoError,
{
    fn refused(error: Error<Inner<S, Req>>) -> Self {
        State::Refused { error: Some(error) }
    }
}

const COMPLETED: &str = "policy future polled after completion";

impl<S, Req, B, C, F, D, R> Future for ResponseFuture<S, Req, B, C, F, D, R>
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
    type Output = Outcome<S, Req>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Timed { call } => B::poll_timed(call, cx),
            KindProj::Staged { staged } => staged.poll(cx),
        }
    }
}

impl<S, Req, B, C, F, D, R> Staged<S, Req, B, C, F, D, R>
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
    /// Inlined into the caller's poll, as the call is: with no function
    /// boundary between what the call wrote and what the poll reads, and
    /// none for the outcome to cross, the compiler keeps more of both in
    /// registers.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<S, Req>> {
        let span = self.held.span.get().cloned();
        let _entered = span.as_ref().map(tracing::Span::enter);
        loop {
            let mut this = self.as_mut().project();
            let mut retryable = true;
            let result = match this.state.as_mut().project() {
                StateProj::Calling { future, deadline } => match future.poll(cx) {
                    Poll::Ready(result) => {
                        let deadline = &*deadline;
                        result.map_err(|error| deadline.attribute(error))
                    }
                    Poll::Pending => Err(Error::Timeout(ready!(deadline.poll_elapsed(cx)))),
                },
                StateProj::Queued { queued } => {
                    let QueuedProj {
                        acquire,
                        call,
                        limits,
                        queued_at,
                    } = queued.as_mut().project();
                    match ready!(acquire.poll(cx)) {
                        Ok(permit) => {
                            this.held.started = permit.start();
                            // A call in line holds no slot yet. Nothing may
                            // be overwritten here: a `Hold` has no drop glue,
                            // so an overwritten permit would be leaked.
                            debug_assert!(matches!(this.held.bulkhead, Hold::Nothing));
                            this.held.bulkhead = Hold::Permit(ManuallyDrop::new(permit));
                            let (mut service, request) = call.take().expect(COMPLETED);
                            let policy = &this.held.policy;
                            let waited = policy.clock.now().saturating_sub(*queued_at);
                            let due = policy.due(limits.less(Duration::from_nanos(waited)));
                            if due.is_spent() {
                                Err(Error::Timeout(due.elapsed()))
                            } else {
                                let future = service.call(request);
                                let deadline = due.deadline();
                                this.state.set(State::Calling { future, deadline });
                                continue;
                            }
                        }
                        Err(waited) => {
                            let bulkhead = this.held.policy.bulkhead.as_ref().expect(COMPLETED);
                            Err(Error::BulkheadFull(bulkhead.refuse(Some(waited))))
                        }
                    }
                }
                StateProj::Refused { error } => {
                    ready!(crate::coop::poll_refusal(cx));
                    Err(error.take().expect(COMPLETED))
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                    continue;
                }
                StateProj::Readying => {
                    let policy = &this.held.policy;
                    match ready!(policy.retry.poll_ready(this.kept, cx)) {
                        Ok(()) => {
                            let (service, request, limits) = policy.retry.next(this.kept);
                            let span = this.held.span.clone();
                            let (held, state) = attempt(
                                policy,
                                Arc::clone(policy),
                                span,
                                service,
                                request,
                                limits,
                                |held, state| (held, state),
                            );
                            *this.held = held;
                            this.state.set(state);
                            continue;
                        }
                        Err(error) => {
                            // The service is broken, not the call: sending
                            // again would only fail again.
                            retryable = false;
                            Err(error)
                        }
                    }
                }
                StateProj::Falling { running, error } => {
                    let answer = ready!(running.poll(cx));
                    let error = error.take().expect(COMPLETED);
                    let held = &*this.held;
                    return Poll::Ready(held.policy.fallback.finish(answer, error, held.stats()));
                }
            };
            // The call is over: one verdict, for the breaker and the
            // fallback. Counted before its bulkhead slot goes back, so that
            // whoever sees the slot free sees the call counted.
            let verdict = this.held.policy.classifier.classify(&result);
            this.held.settle(verdict);
            this.held.sample(verdict);
            this.held.release_bulkhead();
            if let Some(span) = this.held.span.get() {
                span.record("outcome", verdict.outcome().as_str());
            }
            let held = &*this.held;
            if retryable {
                if let Some(delay) = held.policy.retry.again(this.kept, verdict, held.stats()) {
                    this.state.set(State::Waiting {
                        sleep: Box::pin(tokio::time::sleep(delay)),
                    });
                    continue;
                }
            }
            let key = this.key.take().expect(COMPLETED);
            let held = &*this.held;
            let error = match result {
                Ok(response) => {
                    held.policy.fallback.keep(key, &response, verdict);
                    return Poll::Ready(Ok(response));
                }
                Err(error) => error,
            };
            match held
                .policy
                .fallback
                .recover(key, &error, verdict, held.stats())
            {
                After::Answered(answer) => return Poll::Ready(Ok(answer)),
                After::Unanswered => return Poll::Ready(Err(error)),
                After::Running(running) => this.state.set(State::Falling {
                    running,
                    error: Some(error),
                }),
            }
        }
    }
}

impl<S, Req, B, C, F, D, R> std::fmt::Debug for ResponseFuture<S, Req, B, C, F, D, R>
where
    S: Service<Req>,
    S::Error: IntoError,
    B: Admits<Req>,
    F: AnswersFor<Req, S::Response, Inner<S, Req>>,
    R: RetryStage<S, Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("ResponseFuture");
        if let Kind::Staged { staged } = &self.kind {
            f.field("policy", &staged.held.policy.name);
        }
        f.finish_non_exhaustive()
    }
}

impl PolicyBulkhead {
    pub(crate) fn figures(&self) -> crate::bulkhead::BulkheadFigures {
        match self {
            PolicyBulkhead::Reject(bulkhead) => bulkhead.figures(),
            PolicyBulkhead::Queue(bulkhead) => bulkhead.figures(),
        }
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use std::time::Duration;

    use tower::{service_fn, Layer, Service};

    use super::Kind;
    use crate::bulkhead::Bulkhead;
    use crate::policy::{Policy, PolicyBuilder};

    /// Whether a call through `policy`, given a timeout, runs the timeout
    /// layer's own future.
    macro_rules! runs_timed {
        ($policy:expr) => {{
            let policy = $policy.timeout(Duration::from_secs(1)).build().unwrap();
            let mut service =
                policy.layer(service_fn(
                    |n: u32| async move { Ok::<_, std::io::Error>(n) },
                ));
            matches!(service.call(7).kind, Kind::Timed { .. })
        }};
    }

    fn named() -> PolicyBuilder {
        Policy::builder().name("timed")
    }

    #[tokio::test]
    async fn only_a_policy_with_nothing_but_a_deadline_runs_the_timeouts_future() {
        assert!(runs_timed!(named().without_statistics()));
        assert!(!runs_timed!(named()), "statistics kept");
        let bulkhead = Bulkhead::builder().max_concurrent(1);
        let held = named().bulkhead(bulkhead).without_statistics();
        assert!(!runs_timed!(held), "a bulkhead to hold");
    }
}
