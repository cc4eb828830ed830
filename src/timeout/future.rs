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
    /// Calls `service` under `due`; makes no call when the caller's
    /// deadline was spent before it (nobody would wait for the answer).
    #[inline(always)]
    pub(crate) fn call<S, Req>(service: &mut S, request: Req, due: Due) -> Self
    where
        S: Service<Req, Future = F>,
    {
        let call = if due.is_spent() {
            Call::NotMade
        } else {
            Call::Made {
                future: service.call(request),
            }
        };
        ResponseFuture {
            call,
            deadline: due.deadline(),
        }
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
    /// A call's deadline in its future, counted from its [`Due`]'s start
    /// (before the call). No timer until the call has been pending once:
    /// most answers that are ready at once (a cache hit, a refusal) then
    /// never touch tokio's timer wheel.
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

/// A call's deadline as decided before the call: how long, whose, and when
/// it started. Small and `Copy`, so it stays in registers across the inner
/// call and the call's future then writes its [`Deadline`] where it lives:
/// a `Deadline` made before the call was built aside and copied into the
/// future (136 bytes, most of them the room for a timer), a wide read of
/// stores just made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    timeout: Duration,
    // Whether `timeout` is the caller's own deadline.
    callers: bool,
    // The clock and its reading at the start; none for no deadline.
    started: Option<(Clock, u64)>,
}

impl Due {
    /// A call's deadline, by the one rule every seawall stage follows: the
    /// stage's `timeout`, or the caller's when that is shorter (then
    /// flagged as the caller's, which the default classifier does not
    /// blame on the dependency); none when neither is set. The caller's is
    /// the request's `own` deadline or what is left of the current
    /// [budget](crate::budget) less `margin`, whichever is shorter.
    ///
    /// The start is read from the precise clock: a coarse read can lag by
    /// more than a millisecond when the machine is busy, and a lagging start
    /// would make the deadline fire early.
    #[inline]
    pub(crate) fn for_call(
        timeout: Option<Duration>,
        own: Option<Duration>,
        margin: Duration,
        clock: Clock,
    ) -> Due {
        let own = crate::budget::cap(own, margin);
        let (timeout, callers) = match (timeout, own) {
            (Some(timeout), Some(own)) if own < timeout => (own, true),
            (Some(timeout), _) => (timeout, false),
            (None, Some(own)) => (own, true),
            (None, None) => {
                return Due {
                    timeout: Duration::MAX,
                    callers: false,
                    started: None,
                }
            }
        };
        Due {
            timeout,
            callers,
            started: Some((clock, clock.start())),
        }
    }

    /// Whether the caller's deadline was spent before the call: then no
    /// call is made.
    #[inline]
    pub(crate) fn is_spent(&self) -> bool {
        self.callers && self.timeout.is_zero()
    }

    /// The error of a call this deadline ended.
    pub(crate) fn elapsed(&self) -> Elapsed {
        Elapsed::new(self.timeout, self.callers)
    }

    /// The deadline a call's future keeps. No timer until the call has
    /// been pending once.
    #[inline(always)]
    pub(crate) fn deadline(self) -> Deadline {
        let timer = match self.started {
            Some((clock, called_at)) => Timer::Unarmed { clock, called_at },
            None => Timer::Never,
        };
        Deadline {
            timer,
            timeout: self.timeout,
            callers: self.callers,
        }
    }
}

impl Deadline {
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
