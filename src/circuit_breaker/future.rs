//! The response future: classifies the inner result and records it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{CircuitOpen, Permit};
use crate::classify::Classify;
use crate::error::{Error, IntoError};

pin_project! {
    /// The future of a [`CircuitBreakerService`](super::CircuitBreakerService)
    /// call. Dropping it before it finishes gives back a probe slot it holds.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            permit: Permit,
            classifier: C,
        },
        Refused {
            open: Option<CircuitOpen>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit,
                classifier,
            },
        }
    }

    pub(crate) fn refused(open: CircuitOpen) -> Self {
        ResponseFuture {
            kind: Kind::Refused { open: Some(open) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: IntoError,
    C: Classify<T, E::Inner>,
{
    type Output = Result<T, Error<E::Inner>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx)).map_err(IntoError::into_error);
                // Settled in place: moving the permit out of the future
                // right after `call` wrote it stalls the CPU's store
                // forwarding, which measurably cost more than the breaker.
                permit.settle(classifier.classify(&result));
                Poll::Ready(result)
            }
            KindProj::Refused { open } => {
                ready!(crate::coop::poll_refusal(cx));
                let open = open.take().expect("ResponseFuture polled after completion");
                Poll::Ready(Err(Error::CircuitOpen(open)))
            }
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
