//! The future of a retried call: attempts, and the waits between them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::{Attempts, Retry};
use crate::classify::Classify;
use crate::error::{Error, IntoError};

type Inner<S, Req> = <<S as Service<Req>>::Error as IntoError>::Inner;

pin_project! {
    /// The future of a [`RetryService`](super::RetryService) call. Dropped,
    /// it drops the attempt in flight; nothing is retried after.
    pub struct ResponseFuture<S, Req, P, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // The service and request for the next attempt: none when the
        // request is not retried.
        again: Option<(S, Req)>,
        retry: Retry<P>,
        classifier: C,
        attempts: Attempts,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        // Boxed: a healthy call's future does not carry a timer it never
        // uses.
        Waiting { sleep: Pin<Box<Sleep>> },
        Readying,
    }
}

impl<S, Req, P, C> ResponseFuture<S, Req, P, C>
where
    S: Service<Req>,
{
    pub(super) fn new(
        future: S::Future,
        again: Option<(S, Req)>,
        retry: Retry<P>,
        classifier: C,
        attempts: Attempts,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            again,
            retry,
            classifier,
            attempts,
        }
    }
}

impl<S, Req, P, C> Future for ResponseFuture<S, Req, P, C>
where
    S: Service<Req>,
    S::Error: IntoError,
    Req: Clone,
    C: Classify<S::Response, Inner<S, Req>>,
{
    type Output = Result<S::Response, Error<Inner<S, Req>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx)).map_err(IntoError::into_error);
                    if this.again.is_none() {
                        return Poll::Ready(result);
                    }
                    let verdict = this.classifier.classify(&result);
                    match this.retry.again(this.attempts, verdict, None) {
                        Some(delay) => this.state.set(State::Waiting {
                            sleep: Box::pin(tokio::time::sleep(delay)),
                        }),
                        None => return Poll::Ready(result),
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let (service, request) = this.again.as_mut().expect("retried with a request");
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        return Poll::Ready(Err(error.into_error()));
                    }
                    this.attempts.start(this.retry, None);
                    // The last attempt could take the kept request; a clone
                    // keeps this simple on a path that has already failed.
                    let request = request.clone();
                    let future = call(this.retry, this.attempts, service, request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// Calls `service` in the budget of the rule's total timeout, if it has one.
pub(super) fn call<S: Service<Req>, Req, P>(
    retry: &Retry<P>,
    attempts: &Attempts,
    service: &mut S,
    request: Req,
) -> S::Future {
    match retry.scope(attempts) {
        Some(budget) => budget.sync_scope(|| service.call(request)),
        None => service.call(request),
    }
}

impl<S, Req, P, C> fmt::Debug for ResponseFuture<S, Req, P, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retry", &self.retry.name())
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}
