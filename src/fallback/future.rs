//! The response future: the call, then, if it failed for a handled cause,
//! the fallback.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{Attempt, Cause, Fallback, Running};
use crate::error::Error;

pin_project! {
    /// The future of a [`FallbackService`](super::FallbackService) call.
    pub struct ResponseFuture<F, Req, Res, E, K> {
        #[pin]
        state: State<F, Res, E, K>,
        fallback: Fallback<Req, Res, E, K>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, Res, E, K> {
        Calling {
            #[pin]
            future: F,
            key: Option<K>,
        },
        Falling {
            running: Running<Res>,
            error: Option<Error<E>>,
        },
    }
}

impl<F, Req, Res, E, K> ResponseFuture<F, Req, Res, E, K> {
    pub(crate) fn new(future: F, key: K, fallback: Fallback<Req, Res, E, K>) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                key: Some(key),
            },
            fallback,
        }
    }
}

impl<F, Req, Res, E, K> Future for ResponseFuture<F, Req, Res, E, K>
where
    F: Future<Output = Result<Res, Error<E>>>,
    Res: Send + 'static,
{
    type Output = Result<Res, Error<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            match this.state.project() {
                StateProj::Calling { future, key } => {
                    let result = ready!(future.poll(cx));
                    let key = key.take().expect("polled after completion");
                    let error = match result {
                        Ok(response) => {
                            this.fallback.store(key, &response);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) if !this.fallback.handles(Cause::of(&error)) => {
                            return Poll::Ready(Err(error));
                        }
                        Err(error) => error,
                    };
                    match this.fallback.attempt(&key, &error) {
                        Attempt::Answered(response) => return Poll::Ready(Ok(response)),
                        Attempt::Unanswered => return Poll::Ready(Err(error)),
                        Attempt::Running(running) => {
                            self.as_mut().project().state.set(State::Falling {
                                running,
                                error: Some(error),
                            })
                        }
                    }
                }
                StateProj::Falling { running, error } => {
                    let answer = ready!(running.poll(cx));
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(this.fallback.finish(answer).ok_or(error));
                }
            }
        }
    }
}

impl<F, Req, Res, E, K> std::fmt::Debug for ResponseFuture<F, Req, Res, E, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
