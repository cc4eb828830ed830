//! The layer that injects a [`Faults`]' faults into the calls it sees.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use super::{Drawn, FaultKind, Faults};
use crate::error::{Error, IntoError};
use crate::select::{Every, Selects};

/// Injects faults into the calls of the services it makes (see the
/// [module's notes](super)); [`only`](Self::only) picks the requests
/// (a tenant, a key, a kind of call). Put it under the parts that should
/// see the faults as the dependency's.
pub struct FaultLayer<Res, E, P = Every> {
    faults: Faults<Res, E>,
    only: P,
}

impl<Res, E> FaultLayer<Res, E> {
    /// Injects `faults` into every call.
    pub fn new(faults: Faults<Res, E>) -> Self {
        FaultLayer {
            faults,
            only: Every,
        }
    }

    /// Injects faults only into the requests `only` selects; the others
    /// pass untouched and draw nothing.
    pub fn only<P>(self, only: P) -> FaultLayer<Res, E, P> {
        FaultLayer {
            faults: self.faults,
            only,
        }
    }
}

impl<Res, E, P: Clone> Clone for FaultLayer<Res, E, P> {
    fn clone(&self) -> Self {
        FaultLayer {
            faults: self.faults.clone(),
            only: self.only.clone(),
        }
    }
}

impl<Res, E, P> fmt::Debug for FaultLayer<Res, E, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayer")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl<S, Res, E, P: Clone> Layer<S> for FaultLayer<Res, E, P> {
    type Service = FaultService<S, Res, E, P>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            faults: self.faults.clone(),
            only: self.only.clone(),
        }
    }
}

/// A service whose calls may get faults. Made by [`FaultLayer`].
pub struct FaultService<S, Res, E, P = Every> {
    inner: S,
    faults: Faults<Res, E>,
    only: P,
}

impl<S: Clone, Res, E, P: Clone> Clone for FaultService<S, Res, E, P> {
    fn clone(&self) -> Self {
        FaultService {
            inner: self.inner.clone(),
            faults: self.faults.clone(),
            only: self.only.clone(),
        }
    }
}

impl<S: fmt::Debug, Res, E, P> fmt::Debug for FaultService<S, Res, E, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultService")
            .field("inner", &self.inner)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl<S, Req, Res, E, P> Service<Req> for FaultService<S, Res, E, P>
where
    S: Service<Req, Response = Res> + Clone,
    S::Error: IntoError<Inner = E>,
    P: Selects<Req>,
{
    type Response = Res;
    type Error = Error<E>;
    type Future = FaultFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        if !self.faults.is_enabled() {
            return FaultFuture {
                state: State::Calling {
                    future: self.inner.call(request),
                },
            };
        }
        self.call_drawing(request)
    }
}

impl<S, Res, E, P> FaultService<S, Res, E, P> {
    /// A call while injection is on. Inlined, like the call itself: a
    /// future made in a function of its own, or on two paths one of which
    /// is such a function, reaches the caller through a temporary that the
    /// caller copies in 16-byte loads of the narrower stores that just
    /// wrote it, which the CPU cannot forward. The faults' own work
    /// (drawing one) stays out of line.
    #[inline(always)]
    fn call_drawing<Req>(&mut self, request: Req) -> FaultFuture<S, Req>
    where
        S: Service<Req, Response = Res> + Clone,
        S::Error: IntoError<Inner = E>,
        P: Selects<Req>,
    {
        let drawn = if self.only.selects(&request) {
            self.faults.draw()
        } else {
            Drawn::Nothing
        };
        let state = match drawn {
            Drawn::Nothing => State::Calling {
                future: self.inner.call(request),
            },
            Drawn::Fault(FaultKind::Outcome) => State::Answered {
                outcome: Some(self.faults.outcome()),
            },
            Drawn::Fault(FaultKind::Latency) => {
                // The ready service goes with the call; a clone stays.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                State::Delayed {
                    sleep: Box::pin(tokio::time::sleep(self.faults.latency())),
                    call: Some((ready, request)),
                }
            }
            Drawn::Fault(FaultKind::Abort) => State::Aborting {
                future: self.inner.call(request),
                outcome: Some(self.faults.outcome()),
            },
            Drawn::Fault(FaultKind::Hang) => State::Hanging,
        };
        FaultFuture { state }
    }
}

pin_project! {
    /// The future of a [`FaultService`] call.
    pub struct FaultFuture<S, Req>
    where
        S: Service<Req>,
        S::Error: IntoError,
    {
        #[pin]
        state: State<S, Req>,
    }
}

type Outcome<S, Req> =
    Result<<S as Service<Req>>::Response, <<S as Service<Req>>::Error as IntoError>::Inner>;

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
        S::Error: IntoError,
    {
        Calling {
            #[pin]
            future: S::Future,
        },
        Answered {
            outcome: Option<Outcome<S, Req>>,
        },
        // Boxed: a delay is rare, and the timer would make every call's
        // future larger.
        Delayed {
            sleep: Pin<Box<Sleep>>,
            call: Option<(S, Req)>,
        },
        Aborting {
            #[pin]
            future: S::Future,
            outcome: Option<Outcome<S, Req>>,
        },
        Hanging,
    }
}

const COMPLETED: &str = "fault future polled after completion";

impl<S, Req> Future for FaultFuture<S, Req>
where
    S: Service<Req>,
    S::Error: IntoError,
{
    type Output = Result<S::Response, Error<<S::Error as IntoError>::Inner>>;

    /// A call with no fault drawn, the one a layer left in production
    /// makes, is polled inline; the faults' states out of line, so that
    /// this stays small enough to inline everywhere.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let StateProj::Calling { future } = self.as_mut().project().state.project() {
            return future.poll(cx).map_err(IntoError::into_error);
        }
        self.poll_faulted(cx)
    }
}

impl<S, Req> FaultFuture<S, Req>
where
    S: Service<Req>,
    S::Error: IntoError,
{
    /// A call with a fault drawn (a delayed one that is `Calling` again
    /// comes back here too).
    #[inline(never)]
    fn poll_faulted(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<<Self as Future>::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            match state.as_mut().project() {
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(IntoError::into_error);
                }
                StateProj::Answered { outcome } => {
                    let outcome = outcome.take().expect(COMPLETED);
                    return Poll::Ready(outcome.map_err(Error::Inner));
                }
                StateProj::Delayed { sleep, call } => {
                    std::task::ready!(sleep.as_mut().poll(cx));
                    let (mut service, request) = call.take().expect(COMPLETED);
                    state.set(State::Calling {
                        future: service.call(request),
                    });
                }
                StateProj::Aborting { future, outcome } => {
                    // One poll sends the request on its way; what it would
                    // have answered is lost with it.
                    let _ = future.poll(cx);
                    let outcome = outcome.take();
                    state.set(State::Answered { outcome });
                }
                StateProj::Hanging => return Poll::Pending,
            }
        }
    }
}

impl<S, Req> fmt::Debug for FaultFuture<S, Req>
where
    S: Service<Req>,
    S::Error: IntoError,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFuture").finish_non_exhaustive()
    }
}
