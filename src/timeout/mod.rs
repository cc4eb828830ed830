//! A deadline on every call.
//!
//! Use a timeout on every call to a dependency that can hang: a caller that
//! waits for ever ties up its task, its memory and whatever it holds (a
//! bulkhead permit, a connection). Put it under the circuit breaker, so
//! that the breaker counts timeouts; a [`Policy`](crate::policy::Policy)'s
//! [`timeout`](crate::policy::PolicyBuilder::timeout) sits there already.
//!
//! [`Timeout`] fails a call with [`Error::Timeout`]
//! when it has not finished `timeout` after `call`, and drops the inner
//! future (which cancels whatever it was doing, at its next await point). A
//! request can carry its own, shorter deadline, read by a [`DeadlineOf`]
//! (for example from a gRPC `grpc-timeout` header); the layer's timeout
//! caps it. So does what is left of the request's [budget](crate::budget),
//! when one is current; once it is spent, no call is made.
//!
//! # Compared with tower's `Timeout`
//!
//! - The error is typed and says how long the call was given.
//! - Per-request deadlines.
//! - No timer is armed until the inner future has returned `Pending` once,
//!   so a call that answers at once costs a coarse clock read, not a timer
//!   registration. The deadline still counts from `call`.
//! - Nor then a tokio timer, with the coarse [`Clock`] (the default
//!   outside paused tests): the pending call leaves its waker with
//!   seawall's own alarms, which the coarse clock's thread looks at every
//!   millisecond, and which cost a fraction of arming and cancelling a
//!   timer in tokio's wheel (in a busy runtime, a timeout layer's calls
//!   ran about five times as fast; BENCHMARKS.md, Round 9). A deadline
//!   fires within about a millisecond of its time (the thread's tick), as
//!   tokio's do. When an alarm cannot be set (the clock's thread has been
//!   idle and is waking, or cannot run), the call arms a tokio timer
//!   instead; with the tokio clock, it always does, so that paused time
//!   drives it.
//! - The deadline covers the call, not readiness: time spent waiting in
//!   `poll_ready` (for a bulkhead in backpressure mode, say) is not counted.
//!   Put the timeout above a queueing bulkhead to bound queueing too.
//!
//! Time comes from tokio (`tokio::time::pause()` drives it in tests), so the
//! future must be polled inside a tokio runtime with time enabled.
//!
//! ```
//! use std::time::Duration;
//! use seawall::timeout::TimeoutLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_secs(10)).await;
//!     Ok::<_, std::io::Error>("finally")
//! });
//! let service = TimeoutLayer::new(Duration::from_secs(1)).layer(slow);
//! let err = service.oneshot(()).await.unwrap_err();
//! assert_eq!(err.to_string(), "timed out after 1s");
//! # }
//! ```

pub(crate) mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

pub use crate::error::Elapsed;
pub use future::ResponseFuture;

use future::{Due, Limit};
pub use layer::TimeoutLayer;

use crate::clock::Clock;
use crate::error::{Error, IntoError};

/// Reads a request's own deadline, as time left from `call`. Any
/// `Fn(&Req) -> Option<Duration>` is one.
pub trait DeadlineOf<Req> {
    /// The request's deadline, if it carries one.
    fn deadline_of(&self, request: &Req) -> Option<Duration>;
}

impl<F, Req> DeadlineOf<Req> for F
where
    F: Fn(&Req) -> Option<Duration>,
{
    fn deadline_of(&self, request: &Req) -> Option<Duration> {
        self(request)
    }
}

/// Requests carry no deadline of their own: the layer's timeout applies.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDeadline;

impl<Req> DeadlineOf<Req> for NoDeadline {
    #[inline]
    fn deadline_of(&self, _: &Req) -> Option<Duration> {
        None
    }
}

/// A service whose calls fail with a timeout after a deadline. Made by
/// [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S, D = NoDeadline> {
    inner: S,
    timeout: Limit,
    deadline: D,
    budget_margin: Duration,
    clock: Clock,
}

impl<S, D> Timeout<S, D> {
    /// Gives `inner`'s calls `timeout`, or a request's shorter deadline, or
    /// what is left of the current [budget](crate::budget).
    pub fn new(inner: S, timeout: Duration, deadline: D, clock: Clock) -> Self {
        Timeout {
            inner,
            timeout: Limit::new(timeout, false),
            deadline,
            budget_margin: Duration::ZERO,
            clock,
        }
    }

    /// The layer's timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout.timeout()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, D, Req> Service<Req> for Timeout<S, D>
where
    S: Service<Req>,
    S::Error: IntoError,
    D: DeadlineOf<Req>,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let due = Due::for_call(
            Some(self.timeout),
            self.deadline.deadline_of(&request),
            self.budget_margin,
            self.clock,
        );
        ResponseFuture::call(&mut self.inner, request, due)
    }
}
