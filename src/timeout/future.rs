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
use crate::alarm::{alarms, Alarm};
use crate::budget::TIMER_RESOLUTION;
use crate::clock::{alarm_now, alarm_now_coarse, nanos, want_keeper, Clock};
use crate::error::{Error, IntoError};

pin_project! {
    /// The future of a [`Timeout`](super::Timeout) call.
    pub struct ResponseFuture<F> {
        #[pin]
        call: Call<F>,
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
            let deadline = &*this.deadline;
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
            .field("timeout", &self.deadline.limit.timeout())
            .finish_non_exhaustive()
    }
}

/// A call's deadline in its future, counted from its [`Due`]'s start
/// (before the call). No timer until the call has been pending once: most
/// answers that are ready at once (a cache hit, a refusal) then never set
/// one.
pub(crate) struct Deadline {
    timer: Timer,
    limit: Limit,
}

/// How long a call may take, and whether that is the caller's own
/// deadline, in one word: every caller's future carries it (a Policy's
/// future fits in 128 bytes with it, which its callers then move without
/// a call to `memcpy`). Layers keep their timeout made into one already:
/// made for each call, it cost a timeout call 18 instructions.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit(u64);

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.timeout().fmt(f)
    }
}

impl Limit {
    const CALLERS: u64 = 1 << 63;
    /// No deadline: the longest it holds, made once.
    const NONE: Limit = Limit(Limit::CALLERS - 1);

    /// A timeout of 292 years or more is the longest one it holds.
    #[inline]
    pub(crate) fn new(timeout: Duration, callers: bool) -> Limit {
        let nanos = nanos(timeout).min(Limit::CALLERS - 1);
        Limit(if callers {
            nanos | Limit::CALLERS
        } else {
            nanos
        })
    }

    #[inline]
    fn nanos(self) -> u64 {
        self.0 & !Limit::CALLERS
    }

    pub(crate) fn timeout(self) -> Duration {
        Duration::from_nanos(self.nanos())
    }

    /// Whether the timeout is the caller's own deadline.
    #[inline]
    fn callers(self) -> bool {
        self.0 & Limit::CALLERS != 0
    }

    fn elapsed(self) -> Elapsed {
        Elapsed::new(self.timeout(), self.callers())
    }
}

enum Timer {
    Unarmed { clock: Clock, called_at: u64 },
    // The coarse clock's deadline, kept by seawall's own alarms.
    Alarm { alarm: Alarm },
    // The tokio clock's (it follows paused time), or the coarse clock's
    // when no alarm could be set. Boxed: tokio's timer is 112 bytes, which
    // every call's future would carry, and copy, for the few that arm one.
    Armed { sleep: Pin<Box<Sleep>> },
    Never,
}

/// A call's deadline as decided before the call: how long, whose, and when
/// it started. Small and `Copy`, so it stays in registers across the inner
/// call and the call's future then writes its [`Deadline`] where it lives,
/// rather than one built aside before the call and copied in (a wide read
/// of stores just made).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    limit: Limit,
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
        timeout: Option<Limit>,
        own: Option<Duration>,
        margin: Duration,
        clock: Clock,
    ) -> Due {
        let own = crate::budget::cap(own, margin).map(|own| Limit::new(own, true));
        let limit = match (timeout, own) {
            (Some(timeout), Some(own)) if own.nanos() < timeout.nanos() => own,
            (Some(timeout), _) => timeout,
            (None, Some(own)) => own,
            (None, None) => {
                return Due {
                    limit: Limit::NONE,
                    started: None,
                }
            }
        };
        Due {
            limit,
            started: Some((clock, clock.start())),
        }
    }

    /// Whether the caller's deadline was spent before the call: then no
    /// call is made.
    #[inline]
    pub(crate) fn is_spent(&self) -> bool {
        self.limit.callers() && self.limit.nanos() == 0
    }

    /// The error of a call this deadline ended.
    pub(crate) fn elapsed(&self) -> Elapsed {
        self.limit.elapsed()
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
            limit: self.limit,
        }
    }
}

impl Deadline {
    /// The error of a call this deadline ended.
    pub(crate) fn elapsed(&self) -> Elapsed {
        self.limit.elapsed()
    }

    /// Call once the guarded future is pending: ready with the error once
    /// the deadline has passed. A call with no deadline (a Policy given
    /// none) is answered here, inline, since its every pending poll asks:
    /// there is nothing to look at, and out of line it cost a call and the
    /// error made in advance.
    #[inline(always)]
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<Elapsed> {
        if matches!(self.timer, Timer::Never) {
            return Poll::Pending;
        }
        self.poll_timer(cx)
    }

    /// [`poll_elapsed`](Self::poll_elapsed) with a deadline. The error is
    /// made only when it is the answer: most polls of a pending call find
    /// it not due.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Elapsed> {
        let limit = self.limit;
        match &mut self.timer {
            Timer::Unarmed { clock, called_at } => {
                let remaining = match clock.alarm_start(*called_at) {
                    Some(start) => {
                        let due = start.saturating_add(limit.nanos());
                        // The coarse time is never ahead, so a call it finds
                        // due is; one it does not, its alarm ends at the
                        // keeper's next tick.
                        if alarm_now_coarse() >= due {
                            return Poll::Ready(limit.elapsed());
                        }
                        // The start stands for the time now in the keeper's
                        // check: it is no later, and it spares a TSC read.
                        if let Some(alarm) = alarms().set(due, start, cx.waker()) {
                            self.timer = Timer::Alarm { alarm };
                            return Poll::Pending;
                        }
                        want_keeper();
                        match due.checked_sub(alarm_now()).filter(|&left| left > 0) {
                            Some(left) => Duration::from_nanos(left),
                            None => return Poll::Ready(limit.elapsed()),
                        }
                    }
                    None => {
                        let spent = clock.nanos_since(*called_at);
                        match limit.nanos().checked_sub(spent).filter(|&r| r > 0) {
                            Some(remaining) => Duration::from_nanos(remaining),
                            None => return Poll::Ready(limit.elapsed()),
                        }
                    }
                };
                let mut sleep = Box::pin(tokio::time::sleep(remaining));
                let fired = sleep.as_mut().poll(cx).map(|()| limit.elapsed());
                self.timer = Timer::Armed { sleep };
                fired
            }
            Timer::Alarm { alarm } => {
                if alarm_now() >= alarm.due() {
                    return Poll::Ready(limit.elapsed());
                }
                if alarm.rewake(cx.waker()) {
                    want_keeper();
                }
                Poll::Pending
            }
            Timer::Armed { sleep } => sleep.as_mut().poll(cx).map(|()| limit.elapsed()),
            // Answered by `poll_elapsed` before it calls here.
            Timer::Never => Poll::Pending,
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
        if !self.limit.callers() {
            return None;
        }
        let passed = match &self.timer {
            Timer::Unarmed { clock, called_at } => {
                clock
                    .nanos_since(*called_at)
                    .saturating_add(nanos(TIMER_RESOLUTION))
                    >= self.limit.nanos()
            }
            Timer::Alarm { alarm } => {
                alarm_now().saturating_add(nanos(TIMER_RESOLUTION)) >= alarm.due()
            }
            Timer::Armed { sleep } => {
                tokio::time::Instant::now() + TIMER_RESOLUTION >= sleep.deadline()
            }
            Timer::Never => false,
        };
        passed.then(|| self.limit.elapsed())
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

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use std::convert::Infallible;
    use std::future::{pending, poll_fn};
    use std::task::Waker;

    use tower::{service_fn, Layer};

    use super::*;
    use crate::timeout::TimeoutLayer;

    /// Waits (20 s at most) until the keeper sweeps this thread's stripe.
    fn keeper_sweeps() {
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            want_keeper();
            if alarms().set(u64::MAX, alarm_now(), Waker::noop()).is_some() {
                return;
            }
            assert!(
                std::time::Instant::now() < give_up,
                "the keeper never swept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_limit_keeps_its_timeout_and_whose_it_is() {
        for callers in [false, true] {
            for (timeout, kept) in [
                (Duration::ZERO, Duration::ZERO),
                (Duration::from_millis(250), Duration::from_millis(250)),
                // 292 years and more: the longest it holds.
                (Duration::MAX, Duration::from_nanos((1 << 63) - 1)),
            ] {
                let limit = Limit::new(timeout, callers);
                assert_eq!((limit.timeout(), limit.callers()), (kept, callers));
                let elapsed = limit.elapsed();
                assert_eq!(
                    (elapsed.after(), elapsed.is_callers_deadline()),
                    (kept, callers)
                );
            }
        }
        assert_eq!(Limit::new(Duration::MAX, false), Limit::NONE);
        // What every call's future carries: its timer and one word.
        assert_eq!(
            std::mem::size_of::<Deadline>(),
            std::mem::size_of::<Timer>() + 8
        );
    }

    #[test]
    fn a_call_first_polled_after_its_deadline_under_the_coarse_clock_times_out_then() {
        let timeout = Duration::from_millis(5);
        let mut service = TimeoutLayer::new(timeout)
            .clock(Clock::coarse())
            .layer(service_fn(|()| pending::<Result<(), Infallible>>()));
        let mut call = Box::pin(service.call(()));
        let Timer::Unarmed { clock, called_at } = call.deadline.timer else {
            panic!("a call's timer is unarmed until its first poll");
        };
        let due = clock.alarm_start(called_at).unwrap() + nanos(timeout);
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        while alarm_now_coarse() < due {
            assert!(
                std::time::Instant::now() < give_up,
                "the coarse time stopped"
            );
            want_keeper();
            std::thread::sleep(Duration::from_millis(1));
        }
        let polled = call.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            matches!(polled, Poll::Ready(Err(Error::Timeout(_)))),
            "{polled:?}"
        );
    }

    #[test]
    fn a_call_pending_under_the_coarse_clock_is_timed_out_by_an_alarm() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut service = TimeoutLayer::new(Duration::from_millis(30))
                .clock(Clock::coarse())
                .layer(service_fn(|()| pending::<Result<(), Infallible>>()));
            // A call may still find its stripe locked by a sweep (and arm
            // tokio's timer): another call is made then, up to a hundred.
            let mut tries = 0;
            let call = loop {
                keeper_sweeps();
                let mut call = Box::pin(service.call(()));
                let first = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
                assert!(first.is_pending());
                if matches!(call.deadline.timer, Timer::Alarm { .. }) {
                    break call;
                }
                tries += 1;
                assert!(tries < 100, "no alarm was set: a tokio timer was armed");
            };
            // Nothing but the alarm wakes the call: the guard, which ends
            // a test whose alarm never fires, is looked at first, so its
            // own wakeup finds it done rather than polling the call.
            let ended = tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_secs(20)) => panic!("the alarm never fired"),
                ended = call => ended,
            };
            assert!(matches!(ended, Err(Error::Timeout(_))), "{ended:?}");
        });
    }
}
