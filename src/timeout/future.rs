//! The response future: the inner future, raced against a timer that is
//! only armed if the inner future is not ready at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::Elapsed;
use crate::budget::TIMER_RESOLUTION;
use crate::clock::Clock;
use crate::error::{Error, IntoError};

pin_project! {
    /// The future of a [`Timeout`](super::Timeout) call.
    pub struct ResponseFuture<F> {
        #[pin]
        call: Call<F>,
        #[pin]
        deadline: Deadline,
    }
}

pin_project! {
    #[project = CallProj]
    enum Call<F> {
        Made {
            #[pin]
            future: F,
        },
        // The caller's deadline was spent before the call.
        NotMade,
    }
}

impl<F> ResponseFuture<F> {
    /// Calls `service` under `deadline`; makes no call when the caller's
    /// deadline was spent before it (nobody would wait for the answer).
    #[inline(always)]
    pub(crate) fn call<S, Req>(service: &mut S, request: Req, deadline: Deadline) -> Self
    where
        S: Service<Req, Future = F>,
    {
        let call = if deadline.is_spent() {
            Call::NotMade
        } else {
            Call::Made {
                future: service.call(request),
            }
        };
        ResponseFuture { call, deadline }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: IntoError,
{
    type Output = Result<T, Error<E::Inner>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let CallProj::Made { future } = this.call.project() else {
            return Poll::Ready(Err(Error::Timeout(this.deadline.elapsed())));
        };
        if let Poll::Ready(result) = future.poll(cx) {
            let deadline = this.deadline.as_ref().get_ref();
            return Poll::Ready(result.map_err(|error| deadline.attribute(error)));
        }
        this.deadline
            .poll_elapsed(cx)
            .map(|elapsed| Err(Error::Timeout(elapsed)))
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.deadline.timeout)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A call's deadline, counted from its creation (at `call`). No timer
    /// until the call has been pending once: most answers that are ready at
    /// once (a cache hit, a refusal) then never touch tokio's timer wheel.
    pub(crate) struct Deadline {
        #[pin]
        timer: Timer,
        timeout: Duration,
        // Whether `timeout` is the caller's own deadline.
        callers: bool,
    }
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Unarmed {
            clock: Clock,
            called_at: u64,
        },
        Armed {
            #[pin]
            sleep: Sleep,
        },
        Never,
    }
}

impl Deadline {
    /// A call's deadline, by the one rule every seawall stage follows: the
    /// stage's `timeout`, or the caller's when that is shorter (then
    /// flagged as the caller's, which the default classifier does not
    /// blame on the dependency); none when neither is set. The caller's is
    /// the request's `own` deadline or what is left of the current
    /// [budget](crate::budget) less `margin`, whichever is shorter.
    #[inline]
    pub(crate) fn for_call(
        timeout: Option<Duration>,
        own: Option<Duration>,
        margin: Duration,
        clock: Clock,
    ) -> Deadline {
        let own = crate::budget::cap(own, margin);
        match (timeout, own) {
            (Some(timeout), Some(own)) if own < timeout => Deadline::new(own, clock, true),
            (Some(timeout), _) => Deadline::new(timeout, clock, false),
            (None, Some(own)) => Deadline::new(own, clock, true),
            (None, None) => Deadline::never(),
        }
    }

    /// Whether the caller's deadline was spent before the call: then no
    /// call is made.
    #[inline]
    pub(crate) fn is_spent(&self) -> bool {
        self.callers && self.timeout.is_zero()
    }

    /// No deadline: never elapses, never arms a timer.
    pub(crate) fn never() -> Deadline {
        Deadline {
            timer: Timer::Never,
            timeout: Duration::MAX,
            callers: false,
        }
    }

    /// A deadline `timeout` from now; `callers` if it is the caller's own.
    ///
    /// The start is read from the precise clock: a coarse read can lag by
    /// more than a millisecond when the machine is busy, and a lagging start
    /// would make the deadline fire early.
    pub(crate) fn new(timeout: Duration, clock: Clock, callers: bool) -> Deadline {
        Deadline {
            timer: Timer::Unarmed {
                clock,
                called_at: clock.start(),
            },
            timeout,
            callers,
        }
    }

    /// The error of a call this deadline ended.
    pub(crate) fn elapsed(&self) -> Elapsed {
        Elapsed::new(self.timeout, self.callers)
    }

    /// Call once the guarded future is pending: ready with the error once
    /// the deadline has passed.
    pub(crate) fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Elapsed> {
        let elapsed = self.elapsed();
        let mut this = self.project();
        if let TimerProj::Unarmed { clock, called_at } = this.timer.as_mut().project() {
            let spent = Duration::from_nanos(clock.nanos_since(*called_at));
            let Some(remaining) = this.timeout.checked_sub(spent).filter(|r| !r.is_zero()) else {
                return Poll::Ready(elapsed);
            };
            this.timer.set(Timer::Armed {
                sleep: tokio::time::sleep(remaining),
            });
        }
        match this.timer.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx).map(|()| elapsed),
            TimerProj::Unarmed { .. } | TimerProj::Never => Poll::Pending,
        }
    }

    /// The caller's own deadline, if this is it and it has passed: a call
    /// that failed (or was dropped) by then failed because its caller gave
    /// up, and is told and counted as the caller's deadline. Another timer
    /// for the same deadline (tonic's for `grpc-timeout`, in a client's
    /// channel or around a server's layers) may fire first: it started a
    /// little earlier, and tokio's timers fire on whole milliseconds, so a
    /// deadline less than [`TIMER_RESOLUTION`] away counts as passed.
    pub(crate) fn callers_passed(&self) -> Option<Elapsed> {
        if !self.callers {
            return None;
        }
        let passed = match &self.timer {
            Timer::Unarmed { clock, called_at } => {
                Duration::from_nanos(clock.nanos_since(*called_at)) + TIMER_RESOLUTION
                    >= self.timeout
            }
            Timer::Armed { sleep } => {
                tokio::time::Instant::now() + TIMER_RESOLUTION >= sleep.deadline()
            }
            Timer::Never => false,
        };
        passed.then(|| Elapsed::new(self.timeout, true))
    }

    /// An inner call's error, or the caller's deadline if it has passed
    /// (see [`callers_passed`](Self::callers_passed)).
    #[inline]
    pub(crate) fn attribute<E: IntoError>(&self, error: E) -> Error<E::Inner> {
        match self.callers_passed() {
            Some(elapsed) => Error::Timeout(elapsed),
            None => error.into_error(),
        }
    }
}
