//! The response future: waits for room if it must, then holds the permit
//! until the inner call is over.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::limiter::{Acquire, Permit};
use super::{Bulkhead, BulkheadFull, Queue};
use crate::error::{Error, IntoError};

pin_project! {
    /// The future of a [`BulkheadService`](super::BulkheadService) call.
    /// Dropping it at any point gives back its permit or its place in line.
    pub struct ResponseFuture<F, S, Req> {
        #[pin]
        state: State<F, S, Req>,
    }
}

pin_project! {
    /// A call waiting in line. Boxed in the response future: it holds a
    /// timer, and every caller's future would carry (and move) its bytes
    /// though most calls never wait.
    #[project = WaitingProj]
    struct Waiting<S, Req> {
        #[pin]
        acquire: Acquire,
        // The ready inner service and the request, for when room comes.
        inner: Option<(S, Req)>,
        bulkhead: Bulkhead<Queue>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, Req> {
        Waiting {
            waiting: Pin<Box<Waiting<S, Req>>>,
        },
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            // When the call started, for an adaptive limit (zero otherwise).
            started: u64,
        },
        Refused {
            full: Option<BulkheadFull>,
        },
    }
}

impl<F, S, Req> ResponseFuture<F, S, Req> {
    pub(crate) fn called(future: F, permit: Permit) -> Self {
        ResponseFuture {
            state: State::Called {
                future,
                started: permit.start(),
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn waiting(
        acquire: Acquire,
        inner: S,
        request: Req,
        bulkhead: Bulkhead<Queue>,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                waiting: Box::pin(Waiting {
                    acquire,
                    inner: Some((inner, request)),
                    bulkhead,
                }),
            },
        }
    }

    pub(crate) fn refused(full: BulkheadFull) -> Self {
        ResponseFuture {
            state: State::Refused { full: Some(full) },
        }
    }
}

impl<S, Req, T, E> Future for ResponseFuture<S::Future, S, Req>
where
    S: Service<Req, Response = T, Error = E>,
    E: IntoError,
{
    type Output = Result<T, Error<E::Inner>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Called {
                    future,
                    permit,
                    started,
                } => {
                    let result = ready!(future.poll(cx)).map_err(IntoError::into_error);
                    if let Some(permit) = permit.take() {
                        if *started != 0 {
                            let verdict = crate::classify::Classify::classify(
                                &crate::classify::ByKind,
                                &result,
                            );
                            if let Some(dropped) = super::adaptive::dropped(verdict) {
                                permit.sample(*started, dropped);
                            }
                        }
                        // Room for the next call as soon as this one is over.
                        drop(permit);
                    }
                    return Poll::Ready(result);
                }
                StateProj::Waiting { waiting } => {
                    let WaitingProj {
                        acquire,
                        inner,
                        bulkhead,
                    } = waiting.as_mut().project();
                    match ready!(acquire.poll(cx)) {
                        Ok(permit) => {
                            let (mut service, request) =
                                inner.take().expect("polled after completion");
                            let started = permit.start();
                            let future = service.call(request);
                            self.as_mut().project().state.set(State::Called {
                                future,
                                permit: Some(permit),
                                started,
                            });
                        }
                        Err(waited) => {
                            let full = bulkhead.refuse(Some(waited));
                            return Poll::Ready(Err(Error::BulkheadFull(full)));
                        }
                    }
                }
                StateProj::Refused { full } => {
                    ready!(crate::coop::poll_refusal(cx));
                    let full = full.take().expect("polled after completion");
                    return Poll::Ready(Err(Error::BulkheadFull(full)));
                }
            }
        }
    }
}

impl<F, S, Req> std::fmt::Debug for ResponseFuture<F, S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
