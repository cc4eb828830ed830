//! The Policy's one future: queue for the bulkhead if it must, call with a
//! deadline, record one outcome, and fall back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::Shared;
use crate::bulkhead::{Acquire, Permit as BulkheadPermit};
use crate::circuit_breaker::Ticket;
use crate::classify::{Classify, Verdict};
use crate::error::Error;
use crate::fallback::{Attempt, Cause, Running};
use crate::timeout::future::Deadline;

pin_project! {
    /// The future of a [`PolicyService`](super::PolicyService) call: every
    /// stage in one future, with no allocation while the call is healthy.
    /// Dropped at any point, it gives back its bulkhead permit or place in
    /// line and its breaker probe slot.
    pub struct ResponseFuture<F, S, Req, Res, E, K, C> {
        #[pin]
        state: State<F, S, Req, Res, E>,
        held: Held<Req, Res, E, K, C>,
        key: Option<K>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, Req, Res, E> {
        Queued {
            #[pin]
            acquire: Acquire,
            // The ready inner service and the request, for when room comes.
            call: Option<(S, Req)>,
            timeout: Option<(std::time::Duration, bool)>,
        },
        Calling {
            #[pin]
            future: F,
            #[pin]
            deadline: Deadline,
        },
        // Refused before the call: answered through the fallback when polled.
        Refused {
            error: Option<Error<E>>,
        },
        Falling {
            running: Running<Res>,
            error: Option<Error<E>>,
        },
    }
}

/// What a call holds of the policy, given back when dropped.
pub(crate) struct Held<Req, Res, E, K, C> {
    policy: Arc<Shared<Req, Res, E, K, C>>,
    ticket: Option<Ticket>,
    bulkhead: Hold,
}

enum Hold {
    Nothing,
    /// A permit taken on the fast path: given back through the policy's
    /// bulkhead, without a handle of its own.
    Raw,
    /// A permit granted after waiting in line.
    Owned(#[allow(dead_code)] BulkheadPermit),
}

impl<Req, Res, E, K, C> Held<Req, Res, E, K, C> {
    pub(crate) fn new(policy: Arc<Shared<Req, Res, E, K, C>>, ticket: Option<Ticket>) -> Self {
        Held {
            policy,
            ticket,
            bulkhead: Hold::Nothing,
        }
    }

    #[inline]
    pub(crate) fn took_bulkhead_permit(&mut self) {
        self.bulkhead = Hold::Raw;
    }

    /// Records the verdict on a call refused before it started.
    pub(crate) fn settle_now(&mut self, verdict: Verdict) {
        self.settle(verdict);
    }

    #[inline]
    fn settle(&mut self, verdict: Verdict) {
        if let Some(ticket) = self.ticket.take() {
            self.policy.breaker.settle(ticket, verdict);
        }
    }

    #[inline]
    fn release_bulkhead(&mut self) {
        match std::mem::replace(&mut self.bulkhead, Hold::Nothing) {
            Hold::Raw => {
                if let Some(bulkhead) = &self.policy.bulkhead {
                    bulkhead.give_back();
                }
            }
            Hold::Owned(permit) => drop(permit),
            Hold::Nothing => {}
        }
    }
}

impl<Req, Res, E, K, C> Drop for Held<Req, Res, E, K, C> {
    #[inline]
    fn drop(&mut self) {
        self.release_bulkhead();
        if let Some(ticket) = self.ticket.take() {
            self.policy.breaker.abandon(ticket);
        }
    }
}

impl<F, S, Req, Res, E, K, C> ResponseFuture<F, S, Req, Res, E, K, C> {
    pub(crate) fn calling(
        held: Held<Req, Res, E, K, C>,
        future: F,
        deadline: Deadline,
        key: Option<K>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { future, deadline },
            held,
            key,
        }
    }

    pub(crate) fn queued(
        held: Held<Req, Res, E, K, C>,
        acquire: Acquire,
        service: S,
        request: Req,
        timeout: Option<(std::time::Duration, bool)>,
        key: Option<K>,
    ) -> Self {
        ResponseFuture {
            state: State::Queued {
                acquire,
                call: Some((service, request)),
                timeout,
            },
            held,
            key,
        }
    }

    pub(crate) fn refused(held: Held<Req, Res, E, K, C>, error: Error<E>, key: Option<K>) -> Self {
        ResponseFuture {
            state: State::Refused { error: Some(error) },
            held,
            key,
        }
    }
}

const COMPLETED: &str = "policy future polled after completion";

impl<S, Req, Res, E, K, C> Future for ResponseFuture<S::Future, S, Req, Res, E, K, C>
where
    S: Service<Req, Response = Res, Error = E>,
    C: Classify<Res, E>,
    Res: Send + 'static,
{
    type Output = Result<Res, Error<E>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let failed = match this.state.as_mut().project() {
                StateProj::Calling { future, deadline } => match future.poll(cx) {
                    Poll::Ready(result) => {
                        this.held.release_bulkhead();
                        let verdict = this.held.policy.classifier.classify(&result);
                        this.held.settle(verdict);
                        match result {
                            Ok(response) => {
                                if verdict == Verdict::Success {
                                    this.held.policy.store(this.key.take(), &response);
                                }
                                return Poll::Ready(Ok(response));
                            }
                            Err(error) if verdict.counts_as_error() => Error::Inner(error),
                            Err(error) => return Poll::Ready(Err(Error::Inner(error))),
                        }
                    }
                    Poll::Pending => {
                        let elapsed = ready!(deadline.poll_elapsed(cx));
                        this.held.release_bulkhead();
                        let verdict = this.held.policy.verdict_on_timeout(&elapsed);
                        this.held.settle(verdict);
                        Error::Timeout(elapsed)
                    }
                },
                StateProj::Queued {
                    acquire,
                    call,
                    timeout,
                } => match ready!(acquire.poll(cx)) {
                    Ok(permit) => {
                        this.held.bulkhead = Hold::Owned(permit);
                        let (mut service, request) = call.take().expect(COMPLETED);
                        let future = service.call(request);
                        let deadline = this.held.policy.deadline(*timeout);
                        this.state.set(State::Calling { future, deadline });
                        continue;
                    }
                    Err(waited) => {
                        let full = this.held.policy.refuse(Some(waited));
                        let verdict = this.held.policy.verdict_on_rejection();
                        this.held.settle(verdict);
                        Error::BulkheadFull(full)
                    }
                },
                StateProj::Refused { error } => error.take().expect(COMPLETED),
                StateProj::Falling { running, error } => {
                    let answer = ready!(running.poll(cx));
                    let error = error.take().expect(COMPLETED);
                    let fallback = this
                        .held
                        .policy
                        .fallback
                        .as_ref()
                        .expect("falling back without a fallback");
                    return Poll::Ready(fallback.finish(answer).ok_or(error));
                }
            };
            // The call failed: the fallback's turn.
            let Some(fallback) = this.held.policy.fallback.as_ref() else {
                return Poll::Ready(Err(failed));
            };
            if !fallback.handles(Cause::of(&failed)) {
                return Poll::Ready(Err(failed));
            }
            let key = this.key.take().expect(COMPLETED);
            match fallback.attempt(&key, &failed) {
                Attempt::Answered(response) => return Poll::Ready(Ok(response)),
                Attempt::Unanswered => return Poll::Ready(Err(failed)),
                Attempt::Running(running) => this.state.set(State::Falling {
                    running,
                    error: Some(failed),
                }),
            }
        }
    }
}

impl<F, S, Req, Res, E, K, C> std::fmt::Debug for ResponseFuture<F, S, Req, Res, E, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("policy", &self.held.policy.name)
            .finish_non_exhaustive()
    }
}
