//! A limit on calls in flight: Hystrix's semaphore isolation.
//!
//! Use a bulkhead when one slow or overloaded dependency must not tie up
//! every task of its caller: it caps the calls in flight to that
//! dependency, and refuses the rest at once (or lets them wait, bounded).
//! For a synchronous (blocking) client, use a
//! [`BlockingPool`](crate::blocking::BlockingPool) instead.
//!
//! A [`Bulkhead`] lets at most `max_concurrent` calls be in flight at
//! once, shared by every clone of the guarded service. When it is full, a
//! call is refused with [`Error::BulkheadFull`], or waits for room, bounded
//! in time and in queue length ([`Mode`]):
//!
//! | when full ([`Mode`]) | where it waits | like |
//! |---|---|---|
//! | [`Reject`] (default) | nowhere | Hystrix |
//! | [`Queue`] | in the response future, first in first out | resilience4j |
//! | [`Backpressure`] | in `poll_ready` | tower's `ConcurrencyLimit` |
//!
//! The permit is held by the response future and given back when the call
//! ends, fails, unwinds or is dropped at any point, and a call dropped while
//! waiting leaves the line. The limit can be changed at runtime
//! ([`Bulkhead::set_max_concurrent`]) and the live figures read
//! ([`Bulkhead::figures`]).
//!
//! A fixed limit is a guess that is wrong as soon as the dependency's
//! latency changes. An [adaptive](BulkheadBuilder::adaptive) bulkhead
//! moves its limit itself, from the latency and the drops it samples as
//! calls end ([`AdaptiveLimit`]: AIMD, or TCP Vegas's queue estimate),
//! standalone, under a Policy (which samples each call's verdict: timeouts
//! and refusals below are drops), or on a server's routes, where it sheds
//! what the server cannot take. `examples/adaptive_limit.rs` compares a
//! fixed limit with both on a dependency whose capacity changes.
//!
//! # Compared with tower's `ConcurrencyLimit`
//!
//! `ConcurrencyLimit` only waits, without bound, in `poll_ready`, and its
//! semaphore takes a lock each time a permit is given back, on one word
//! every core writes. A bulkhead keeps its permits in shares, one per
//! stripe of threads: a call takes an idle permit from its thread's share
//! with one compare-and-swap and gives it back the same way, and the
//! permit holds the bulkhead through its thread's own reference count, so
//! calls on two cores write different cache lines. It still refuses
//! exactly: only when every permit is in use.
//!
//! The mode is part of the bulkhead's type. The queueing mode calls the
//! inner service from the response future once room comes, so only it needs
//! the guarded service to be `Clone` (like every service axum routes to);
//! the others take any service. A [`Policy`](crate::policy::Policy) takes a
//! [`Reject`] or a [`Queue`] bulkhead, built or as its builder; a
//! [`Backpressure`] one would be asked before the Policy's breaker, and does
//! not compile there.
//!
//! ```
//! use std::time::Duration;
//! use seawall::bulkhead::Bulkhead;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let bulkhead = Bulkhead::builder().max_concurrent(1).build().unwrap();
//! let slow = service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, std::io::Error>(())
//! });
//! let service = bulkhead.layer().layer(slow);
//!
//! let first = tokio::spawn(service.clone().oneshot(()));
//! tokio::task::yield_now().await; // the first call is in flight
//! let second = service.oneshot(()).await.unwrap_err();
//! assert!(second.is_bulkhead_full());
//! assert!(first.await.unwrap().is_ok());
//! assert_eq!(bulkhead.figures().rejected, 1);
//! # }
//! ```

mod adaptive;
mod future;
mod handle;
mod layer;
mod limiter;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_service::Service;

pub use crate::error::{BulkheadFull, Isolation};
pub(crate) use adaptive::dropped;
pub use adaptive::{AdaptiveFigures, AdaptiveLimit};
pub use future::ResponseFuture;
pub use handle::{Backpressure, Bulkhead, BulkheadBuilder, BulkheadFigures, Mode, Queue, Reject};
pub use layer::BulkheadLayer;

pub(crate) use handle::Slot;
pub(crate) use limiter::{Acquire, Permit};

use crate::error::{Error, IntoError};

/// A service guarded by a [`Bulkhead`]. Made by [`BulkheadLayer`]; what it
/// does when the bulkhead is full depends on the bulkhead's [mode](Mode).
pub struct BulkheadService<S, M = Reject> {
    inner: S,
    bulkhead: Bulkhead<M>,
    /// Backpressure mode: what `poll_ready` got for the next call.
    reserved: Reserved,
}

enum Reserved {
    Nothing,
    Waiting(Pin<Box<Acquire>>),
    Permit(Permit),
    Refusal(BulkheadFull),
}

impl<S, M: Mode> BulkheadService<S, M> {
    /// Guards `inner` with `bulkhead`.
    pub fn new(inner: S, bulkhead: Bulkhead<M>) -> Self {
        BulkheadService {
            inner,
            bulkhead,
            reserved: Reserved::Nothing,
        }
    }

    /// The bulkhead guarding this service.
    pub fn bulkhead(&self) -> &Bulkhead<M> {
        &self.bulkhead
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

    /// Calls the inner service with a permit, or builds the refusal.
    #[inline]
    fn call_with<Req>(
        &mut self,
        permit: Option<Permit>,
        request: Req,
    ) -> ResponseFuture<S::Future, S, Req>
    where
        S: Service<Req>,
    {
        match permit {
            Some(permit) => ResponseFuture::called(self.inner.call(request), permit),
            None => ResponseFuture::refused(self.bulkhead.refuse(None)),
        }
    }
}

impl<S: Clone, M: Mode> Clone for BulkheadService<S, M> {
    /// A clone shares the bulkhead, not a permit reserved by `poll_ready`.
    fn clone(&self) -> Self {
        BulkheadService::new(self.inner.clone(), self.bulkhead.clone())
    }
}

impl<S: std::fmt::Debug, M: Mode> std::fmt::Debug for BulkheadService<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadService")
            .field("inner", &self.inner)
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for BulkheadService<S, Reject>
where
    S: Service<Req>,
    S::Error: IntoError,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = ResponseFuture<S::Future, S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let permit = self.bulkhead.try_acquire();
        self.call_with(permit, request)
    }
}

impl<S, Req> Service<Req> for BulkheadService<S, Queue>
where
    S: Service<Req> + Clone,
    S::Error: IntoError,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = ResponseFuture<S::Future, S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(permit) = self.bulkhead.try_acquire() {
            return ResponseFuture::called(self.inner.call(request), permit);
        }
        match self.bulkhead.join_line(&mut self.inner) {
            Ok((acquire, ready)) => {
                ResponseFuture::waiting(acquire, ready, request, self.bulkhead.clone())
            }
            Err(full) => ResponseFuture::refused(full),
        }
    }
}

impl<S> BulkheadService<S, Backpressure> {
    /// Holds a permit, or a refusal, for the next call.
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.reserved {
                Reserved::Permit(_) | Reserved::Refusal(_) => return Poll::Ready(()),
                Reserved::Nothing => {
                    self.reserved = match self.bulkhead.try_acquire() {
                        Some(permit) => Reserved::Permit(permit),
                        None => match self.bulkhead.wait(self.bulkhead.mode().max_wait) {
                            // Boxed: only a service that must wait pays for it.
                            Ok(acquire) => Reserved::Waiting(Box::pin(acquire)),
                            Err(full) => Reserved::Refusal(full),
                        },
                    }
                }
                Reserved::Waiting(acquire) => {
                    self.reserved = match acquire.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(permit)) => Reserved::Permit(permit),
                        Poll::Ready(Err(waited)) => {
                            Reserved::Refusal(self.bulkhead.refuse(Some(waited)))
                        }
                    }
                }
            }
        }
    }
}

impl<S, Req> Service<Req> for BulkheadService<S, Backpressure>
where
    S: Service<Req>,
    S::Error: IntoError,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = ResponseFuture<S::Future, S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.poll_reserve(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.reserved, Reserved::Nothing) {
            Reserved::Permit(permit) => ResponseFuture::called(self.inner.call(request), permit),
            Reserved::Refusal(full) => ResponseFuture::refused(full),
            // Not reserved: `poll_ready` was skipped.
            Reserved::Nothing | Reserved::Waiting(_) => {
                let permit = self.bulkhead.try_acquire();
                self.call_with(permit, request)
            }
        }
    }
}
