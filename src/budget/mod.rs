//! Deadlines that travel: the time a request has left, from the edge to the
//! last hop.
//!
//! A request's time budget is the one resilience fact every hop should
//! share. Without it each hop sets its own timeout, a caller that already
//! gave up still makes its dependencies work, and a dependency is blamed
//! (its breaker tripped) for a deadline that was the caller's. gRPC carries
//! the budget in `grpc-timeout`; seawall carries it across HTTP and message
//! hops too, and every seawall part honours it.
//!
//! # The model
//!
//! - **[`Budget`]**: the instant by which the request being served must be
//!   answered, on tokio's clock (so `tokio::time::pause()` drives it in
//!   tests). The code serving a request reads it with [`Budget::current`]
//!   (a task-local, set for the handler's task), or from the request's
//!   extensions.
//! - **At the edge**, [`BudgetLayer`] (feature `tower-http`, and with it
//!   `axum` and `tonic`) reads the incoming budget: gRPC's `grpc-timeout`,
//!   or for plain HTTP the [`HEADER`] (`seawall-budget-ms`: whole
//!   milliseconds left, relative like `grpc-timeout`, so the two hosts'
//!   clocks need not agree). A request without one gets a configured
//!   default, and no budget is longer than a configured maximum. A request
//!   whose budget is already spent is answered at once (a timeout that is
//!   the caller's: `504` through axum's
//!   [`ErrorResponseLayer`](crate::integration::axum::ErrorResponseLayer),
//!   `DEADLINE_EXCEEDED` through tonic's
//!   [`StatusLayer`](crate::integration::tonic::StatusLayer)), without
//!   calling the handler; otherwise the handler runs with the budget
//!   current, and is stopped when it runs out.
//! - **On the way out**, every [`Policy`](crate::policy::Policy) and
//!   [`TimeoutLayer`](crate::timeout::TimeoutLayer) caps its timeout by the
//!   budget left, less a margin (zero unless set with
//!   [`PolicyBuilder::budget_margin`](crate::policy::PolicyBuilder::budget_margin)),
//!   and a Policy makes no call at all once the budget is spent.
//!   [`PropagateBudgetLayer`] writes what is left into an outgoing HTTP or
//!   gRPC request, and sends nothing once it is spent; the messaging styles write it on each message, where a
//!   [`Consumer`](crate::messaging::Consumer) drops work that expired in the
//!   queue (counted as [expired](crate::messaging::ConsumerFigures::expired),
//!   not failed) and runs the rest with the budget current.
//! - **Attribution**: a call that ends because the caller's budget ran out
//!   is the caller's, not the dependency's: the default classifier gives it
//!   [`Verdict::CallerDeadline`](crate::classify::Verdict::CallerDeadline),
//!   counted as [`caller_deadline`](crate::window::Counts::caller_deadline)
//!   and exported as such, never as a failure or a timeout, whichever timer
//!   fired first (seawall's, tonic's or the transport's). A deadline answer
//!   from the server (`504`, `DEADLINE_EXCEEDED`, or tonic's `CANCELLED`
//!   for its own `grpc-timeout` timer) is the caller's deadline too when it
//!   comes once the budget sent has run out, or when the server marked it
//!   with [`CALLER_DEADLINE`] (seawall's servers do, for a timeout that was
//!   their caller's).
//!
//! On messages the budget travels as an absolute time (milliseconds since
//! the Unix epoch, header `Seawall-Deadline` on NATS, `seawall-deadline` on
//! AMQP), because the time a message waits in a queue must count against
//! it: the producer's and the consumer's clocks must then agree (NTP keeps
//! them within milliseconds).
//!
//! ```
//! use std::time::Duration;
//! use seawall::budget::Budget;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let budget = Budget::new(Duration::from_millis(300));
//! let left = budget
//!     .scope(async {
//!         tokio::time::sleep(Duration::from_millis(100)).await;
//!         // Anything called here (a Policy, a message sent) sees it.
//!         Budget::current().map(|budget| budget.remaining())
//!     })
//!     .await;
//! assert_eq!(left, Some(Duration::from_millis(200)));
//! assert_eq!(Budget::current(), None);
//! # }
//! ```

#[cfg(feature = "tower-http")]
mod edge;
#[cfg(feature = "tower-http")]
pub(crate) mod header;
#[cfg(feature = "tower-http")]
mod propagate;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pin_project_lite::pin_project;
use tokio::time::Instant;

#[cfg(feature = "tower-http")]
pub use edge::{BudgetFuture, BudgetLayer, BudgetService};
#[cfg(feature = "tower-http")]
pub use propagate::{PropagateBudget, PropagateBudgetLayer, PropagateFuture};

/// The HTTP header that carries a budget between seawall services: whole
/// milliseconds left (`seawall-budget-ms: 250`). gRPC requests carry
/// `grpc-timeout` instead.
pub const HEADER: &str = "seawall-budget-ms";

/// The header a seawall server adds to a deadline answer (`504`, gRPC
/// `DEADLINE_EXCEEDED`) that its caller's budget caused, so that the
/// caller's [`PropagateBudgetLayer`] counts it as the caller's deadline
/// even when it arrives before the deadline the caller sent (the server
/// kept a margin). Value `1`.
pub const CALLER_DEADLINE: &str = "seawall-caller-deadline";

tokio::task_local! {
    static CURRENT: Budget;
}

/// Whether any budget was ever made current: until then, reading the
/// current one costs a relaxed load and no task-local lookup.
static EVER_SCOPED: AtomicBool = AtomicBool::new(false);

/// The time a request has left: the instant by which it must be answered,
/// on tokio's clock. Cheap to copy. See the [module's notes](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Budget {
    deadline: Instant,
}

impl Budget {
    /// A budget of `remaining` from now.
    pub fn new(remaining: Duration) -> Budget {
        Budget::until(Instant::now() + remaining.min(FAR))
    }

    /// A budget that runs out at `deadline`.
    pub fn until(deadline: Instant) -> Budget {
        Budget { deadline }
    }

    /// The instant it runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time left; zero once spent.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether no time is left.
    pub fn is_spent(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Whether it has run out as timers see it: tokio's timers fire on
    /// whole milliseconds, so another timer for the same deadline, started
    /// a little earlier elsewhere, may fire up to [`TIMER_RESOLUTION`]
    /// before it.
    #[cfg(feature = "tower-http")]
    pub(crate) fn has_run_out(&self) -> bool {
        self.remaining() <= TIMER_RESOLUTION
    }

    /// The budget a dependency gets when its caller keeps `margin` to
    /// answer with: `margin` shorter.
    pub fn less(self, margin: Duration) -> Budget {
        Budget {
            // A margin reaching back before the clock's epoch leaves
            // nothing: spent now.
            deadline: self
                .deadline
                .checked_sub(margin)
                .unwrap_or_else(|| self.deadline.min(Instant::now())),
        }
    }

    /// The budget of the request being served by this task, if it has one:
    /// set by [`scope`](Self::scope), which [`BudgetLayer`] and the
    /// messaging [`Consumer`](crate::messaging::Consumer) use. A task
    /// spawned by the handler starts without it: pass it on with `scope`.
    #[inline]
    pub fn current() -> Option<Budget> {
        if !EVER_SCOPED.load(Relaxed) {
            return None;
        }
        Budget::current_in_scope()
    }

    /// The task-local lookup, out of line: every call of every Policy
    /// inlines [`current`](Self::current), and a process that never makes
    /// a budget current pays only its load and branch.
    #[inline(never)]
    fn current_in_scope() -> Option<Budget> {
        CURRENT.try_with(|budget| *budget).ok()
    }

    /// Runs `future` with this budget current (the shorter of it and the
    /// one already current, if any: a budget never grows on the way in).
    pub fn scope<F: Future>(self, future: F) -> Scoped<F> {
        scoped(Some(self), future)
    }

    /// Runs `f` with this budget current (the shorter of it and the one
    /// already current): for code that calls a service outside a future,
    /// in a hand-written `poll`, say.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        self.scoped_in(Budget::current()).enter(f)
    }

    /// The shorter of this budget and `outer`, the one already current.
    pub(crate) fn scoped_in(self, outer: Option<Budget>) -> Budget {
        outer.map_or(self, |outer| outer.min(self))
    }

    /// Runs `f` with this budget current: the budget is seen by whatever
    /// `f` calls, such as a service's `call` or a future's `poll`.
    pub(crate) fn enter<R>(self, f: impl FnOnce() -> R) -> R {
        EVER_SCOPED.store(true, Relaxed);
        CURRENT.sync_scope(self, f)
    }

    /// The deadline as milliseconds since the Unix epoch (rounded down),
    /// for a message that may wait in a queue: the wall clock's now plus
    /// what is left.
    pub fn to_unix_millis(&self) -> u64 {
        // The wall clock read first, tokio's after: the time between the
        // reads shortens the budget rather than lengthening it.
        let at = SystemTime::now() + self.remaining();
        let millis = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        u64::try_from(millis).unwrap_or(u64::MAX)
    }

    /// The budget of a message that must be answered by `millis` since the
    /// Unix epoch (read on the wall clock now).
    pub fn from_unix_millis(millis: u64) -> Budget {
        // tokio's clock read first, the wall clock after: the time between
        // the reads shortens the budget rather than lengthening it.
        let now = Instant::now();
        // A time past what the platform's clock can hold is no limit.
        let Some(at) = UNIX_EPOCH.checked_add(Duration::from_millis(millis)) else {
            return Budget::until(now + FAR);
        };
        let remaining = at.duration_since(SystemTime::now()).unwrap_or_default();
        Budget::until(now + remaining.min(FAR))
    }
}

/// tokio's timers fire on whole milliseconds.
pub(crate) const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Far enough to mean "no limit", near enough that adding it to an
/// `Instant` cannot overflow (about 30 years, as tokio's own "far future").
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `own`, a request's own deadline, capped by what is left of the current
/// budget less `margin`: the cap every seawall deadline applies.
#[inline]
pub(crate) fn cap(own: Option<Duration>, margin: Duration) -> Option<Duration> {
    if !EVER_SCOPED.load(Relaxed) {
        return own;
    }
    cap_in_scope(own, margin)
}

/// Out of line, so that the many deadlines of a process without budgets
/// stay small enough to inline.
#[inline(never)]
fn cap_in_scope(own: Option<Duration>, margin: Duration) -> Option<Duration> {
    let Some(budget) = Budget::current_in_scope() else {
        return own;
    };
    let left = budget.remaining().saturating_sub(margin);
    Some(own.map_or(left, |own| own.min(left)))
}

/// `future`, run with `budget` current if there is one.
pub(crate) fn scoped<F: Future>(budget: Option<Budget>, future: F) -> Scoped<F> {
    Scoped {
        inner: future,
        budget,
    }
}

pin_project! {
    /// A future run with a [`Budget`] current. Made by [`Budget::scope`].
    #[derive(Debug)]
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        budget: Option<Budget>,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        match this.budget {
            Some(budget) => budget.scoped_in(Budget::current()).enter(|| inner.poll(cx)),
            None => inner.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_scope_inside_a_scope_never_grows_the_budget() {
        let outer = Budget::new(Duration::from_millis(100));
        let seen = outer
            .scope(async {
                let longer =
                    Budget::new(Duration::from_secs(10)).scope(async { Budget::current() });
                let shorter =
                    Budget::new(Duration::from_millis(10)).scope(async { Budget::current() });
                (longer.await, shorter.await.map(|b| b.remaining()))
            })
            .await;
        assert_eq!(seen.0, Some(outer));
        assert_eq!(seen.1, Some(Duration::from_millis(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn spent_budgets_stay_spent_and_margins_never_underflow() {
        let budget = Budget::new(Duration::from_millis(5));
        assert!(!budget.is_spent());
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(budget.is_spent());
        assert_eq!(budget.remaining(), Duration::ZERO);
        let less = Budget::new(Duration::from_millis(5)).less(Duration::MAX);
        assert!(less.is_spent());
        assert_eq!(Budget::new(Duration::MAX).remaining(), FAR);
    }

    #[test]
    fn unix_millis_round_trip_within_a_millisecond() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let budget = Budget::new(Duration::from_secs(60));
            let back = Budget::from_unix_millis(budget.to_unix_millis());
            // Rounded down to the millisecond: never later (the wall clock
            // and tokio's may tick apart by a rounding in between).
            assert!(back.deadline() <= budget.deadline() + Duration::from_millis(1));
            assert!(back.deadline() + Duration::from_secs(30) > budget.deadline());
            assert!(Budget::from_unix_millis(0).is_spent());
            assert!(Budget::from_unix_millis(u64::MAX).remaining() > FAR - Duration::from_secs(1));
        });
    }
}
