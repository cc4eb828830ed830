//! The future of a hedged call: the first attempt, the timer, the second.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::layer::HedgeTo;
use super::Hedge;
use crate::classify::{ByKind, Verdict};
use crate::error::{Error, IntoError};

type Inner<S, Req> = <<S as Service<Req>>::Error as IntoError>::Inner;
type Second<S, T, Req> = <<T as HedgeTo<S>>::Service as Service<Req>>::Future;

pin_project! {
    /// The future of a [`HedgeService`](super::HedgeService) call. Dropped,
    /// it drops both attempts.
    pub struct ResponseFuture<S, Req, T>
    where
        S: Service<Req>,
        S::Error: IntoError,
        T: HedgeTo<S>,
        T::Service: Service<Req>,
    {
        #[pin]
        first: Option<S::Future>,
        #[pin]
        second: Option<Second<S, T, Req>>,
        #[pin]
        timer: Option<Sleep>,
        // The hedge's service and request, until it is sent.
        waiting: Option<(T::Service, Req)>,
        // Readying the hedge's service: the timer fired and the budget paid.
        sending: bool,
        // The first attempt's error, while the hedge may still succeed.
        failed: Option<Error<Inner<S, Req>>>,
        hedge: Hedge,
    }
}

impl<S, Req, T> ResponseFuture<S, Req, T>
where
    S: Service<Req>,
    S::Error: IntoError,
    T: HedgeTo<S>,
    T::Service: Service<Req>,
{
    pub(super) fn new(first: S::Future, waiting: Option<(T::Service, Req)>, hedge: Hedge) -> Self {
        let timer = waiting.as_ref().map(|_| tokio::time::sleep(hedge.delay()));
        ResponseFuture {
            first: Some(first),
            second: None,
            timer,
            waiting,
            sending: false,
            failed: None,
            hedge,
        }
    }
}

impl<S, Req, T> Future for ResponseFuture<S, Req, T>
where
    S: Service<Req>,
    S::Error: IntoError,
    T: HedgeTo<S>,
    T::Service: Service<Req, Response = S::Response, Error = S::Error>,
{
    type Output = Result<S::Response, Error<Inner<S, Req>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(first) = this.first.as_mut().as_pin_mut() {
                if let Poll::Ready(result) = first.poll(cx) {
                    this.first.set(None);
                    this.timer.set(None);
                    *this.waiting = None;
                    match result.map_err(IntoError::into_error) {
                        Err(error) if this.second.is_some() => *this.failed = Some(error),
                        // A success, or a failure with no hedge running:
                        // the answer. A hedge in flight is dropped now, so
                        // that its slot below is free before the caller
                        // drops this future.
                        answer => {
                            this.second.set(None);
                            return Poll::Ready(answer);
                        }
                    }
                }
            }
            if let Some(second) = this.second.as_mut().as_pin_mut() {
                if let Poll::Ready(result) = second.poll(cx) {
                    this.second.set(None);
                    match result.map_err(IntoError::into_error) {
                        Ok(response) => {
                            this.hedge.won();
                            this.first.set(None);
                            this.timer.set(None);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) => {
                            // Refused below (a bulkhead, a breaker): the first
                            // attempt is waited for as if no hedge had been
                            // tried.
                            if ByKind::error(&error) == Verdict::Rejected {
                                this.hedge.refused();
                            }
                            if this.first.is_none() {
                                return Poll::Ready(Err(this.failed.take().unwrap_or(error)));
                            }
                        }
                    }
                }
            }
            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                if timer.poll(cx).is_ready() {
                    this.timer.set(None);
                    *this.sending = this.hedge.pay();
                    if !*this.sending {
                        *this.waiting = None;
                    }
                }
            }
            if *this.sending {
                let (service, _) = this.waiting.as_mut().expect("kept until sent");
                match service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let (mut service, request) = this.waiting.take().expect("kept until sent");
                        let future = service.call(request);
                        *this.sending = false;
                        this.hedge.sent();
                        this.second.set(Some(future));
                        // Poll the hedge once, so it can register its wakeup.
                        continue;
                    }
                    Poll::Ready(Err(_)) => {
                        this.hedge.refused();
                        *this.waiting = None;
                        *this.sending = false;
                    }
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    }
}

impl<S, Req, T> fmt::Debug for ResponseFuture<S, Req, T>
where
    S: Service<Req>,
    S::Error: IntoError,
    T: HedgeTo<S>,
    T::Service: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedge", &self.hedge.name())
            .field("hedged", &self.second.is_some())
            .finish_non_exhaustive()
    }
}
