//! The response future: the call, then, if its result calls for one, the
//! fallback.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{After, FallbackLayer, Running};
use crate::classify::Classify;
use crate::error::{Error, IntoError, Leaf};

pin_project! {
    /// The future of a [`FallbackService`](super::FallbackService) call.
    pub struct ResponseFuture<F, Req, Res, E, K, C> {
        #[pin]
        state: State<F, Res, E, K>,
        layer: FallbackLayer<Req, Res, E, K, C>,
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

impl<F, Req, Res, E, K, C> ResponseFuture<F, Req, Res, E, K, C> {
    pub(crate) fn new(future: F, key: K, layer: FallbackLayer<Req, Res, E, K, C>) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                key: Some(key),
            },
            layer,
        }
    }
}

const COMPLETED: &str = "fallback future polled after completion";

impl<F, Fe, Req, Res, E, K, C> Future for ResponseFuture<F, Req, Res, E, K, C>
where
    F: Future<Output = Result<Res, Fe>>,
    Fe: IntoError<Inner = E>,
    E: Leaf,
    Res: Send + 'static,
    C: Classify<Res, E>,
{
    type Output = Result<Res, Error<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let (fallback, classifier, stats) = this.layer.parts();
            match this.state.project() {
                StateProj::Calling { future, key } => {
                    let result = ready!(future.poll(cx)).map_err(IntoError::into_error);
                    let verdict = classifier.classify(&result);
                    let key = key.take().expect(COMPLETED);
                    let error = match result {
                        Ok(response) => {
                            fallback.keep(key, &response, verdict);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) => error,
                    };
                    match fallback.recover(key, &error, verdict, stats) {
                        After::Answered(answer) => return Poll::Ready(Ok(answer)),
                        After::Unanswered => return Poll::Ready(Err(error)),
                        After::Running(running) => {
                            self.as_mut().project().state.set(State::Falling {
                                running,
                                error: Some(error),
                            })
                        }
                    }
                }
                StateProj::Falling { running, error } => {
                    let answer = ready!(running.poll(cx));
                    let error = error.take().expect(COMPLETED);
                    return Poll::Ready(fallback.finish(answer, error, stats));
                }
            }
        }
    }
}

impl<F, Req, Res, E, K, C> std::fmt::Debug for ResponseFuture<F, Req, Res, E, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
