//! The response future: waits for the pool thread's answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::thread;

use tokio::sync::oneshot;

use super::pool::{JobState, Shared};
use crate::bulkhead::{BulkheadFull, Isolation};
use crate::error::{Error, IntoError};

pub(crate) type Answer<T, E> = thread::Result<Result<T, E>>;

/// The future of a [`BlockingService`](super::BlockingService) call.
///
/// Dropping it before the answer came gives the call up: a call still queued
/// is not run; a running one finishes unwatched and is counted as abandoned.
pub struct ResponseFuture<T, E> {
    state: State<T, E>,
}

enum State<T, E> {
    Submitted(Submitted<T, E>),
    Refused(Option<BulkheadFull>),
}

struct Submitted<T, E> {
    answer: oneshot::Receiver<Answer<T, E>>,
    job: Arc<JobState>,
    pool: Arc<Shared>,
    answered: bool,
}

impl<T, E> Drop for Submitted<T, E> {
    fn drop(&mut self) {
        if !self.answered {
            self.job.give_up(&self.pool);
        }
    }
}

impl<T, E> ResponseFuture<T, E> {
    pub(crate) fn submitted(
        answer: oneshot::Receiver<Answer<T, E>>,
        job: Arc<JobState>,
        pool: Arc<Shared>,
    ) -> Self {
        ResponseFuture {
            state: State::Submitted(Submitted {
                answer,
                job,
                pool,
                answered: false,
            }),
        }
    }

    pub(crate) fn refused(full: BulkheadFull) -> Self {
        ResponseFuture {
            state: State::Refused(Some(full)),
        }
    }
}

impl<T, E: IntoError> Future for ResponseFuture<T, E> {
    type Output = Result<T, Error<E::Inner>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`: no projection needed.
        match &mut self.get_mut().state {
            State::Submitted(submitted) => {
                let answer = ready!(Pin::new(&mut submitted.answer).poll(cx));
                submitted.answered = true;
                match answer {
                    Ok(Ok(Ok(response))) => Poll::Ready(Ok(response)),
                    Ok(Ok(Err(error))) => Poll::Ready(Err(error.into_error())),
                    // The call panicked on its thread: the panic is the
                    // caller's, as if it had called the function itself.
                    Ok(Err(panic)) => std::panic::resume_unwind(panic),
                    // The job was dropped unrun, which only a pool that
                    // could not run it does.
                    Err(_) => Poll::Ready(Err(Error::BulkheadFull(BulkheadFull::new(
                        Isolation::ThreadPool,
                        submitted.pool_threads(),
                        None,
                    )))),
                }
            }
            State::Refused(full) => {
                let full = full.take().expect("polled after completion");
                Poll::Ready(Err(Error::BulkheadFull(full)))
            }
        }
    }
}

impl<T, E> Submitted<T, E> {
    fn pool_threads(&self) -> usize {
        self.pool.threads()
    }
}

impl<T, E> std::fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
