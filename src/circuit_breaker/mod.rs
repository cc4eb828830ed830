//! A Hystrix-style circuit breaker with rolling statistics.
//!
//! Use a circuit breaker when a dependency that is down should be refused
//! at once rather than waited for: callers fail fast (or a
//! [fallback](crate::fallback) answers), the dependency gets room to
//! recover, and a few probe calls find out when it has. One
//! [`CircuitBreaker`] guards one dependency; a [`Registry`] (feature
//! `registry`) keeps one per key, so that one tenant's or host's outage does
//! not refuse the others' calls.
//!
//! A breaker watches the outcomes of the calls it guards over a rolling
//! [window](crate::window). While **closed** it lets every call through. When
//! the window says the dependency is unhealthy, it trips **open** and refuses
//! calls at once, without calling the inner service, with a
//! [`CircuitOpen`] error that says when it may try again. After the open
//! duration it turns **half-open** and lets a few probe calls through: if
//! they succeed it closes with a fresh window, if they fail it opens again
//! (for longer, with [exponential](OpenDuration::Exponential) open
//! durations). An operator can also force it **open** or **closed**.
//!
//! Trip rules, combinable:
//!
//! | rule | setting | default |
//! |---|---|---|
//! | error percentage over the window, once it holds enough calls | [`error_threshold`](CircuitBreakerBuilder::error_threshold), [`minimum_calls`](CircuitBreakerBuilder::minimum_calls) | 50% of at least 20 calls |
//! | slow-call percentage | [`slow_calls`](CircuitBreakerBuilder::slow_calls) | off |
//! | failures in a row | [`consecutive_failures`](CircuitBreakerBuilder::consecutive_failures) | off |
//!
//! What counts as a failure is decided by a [classifier](crate::classify)
//! over the whole `Result`.
//!
//! What the module has:
//!
//! - [`CircuitBreaker`], the shared handle: state, [counts](CircuitBreaker::counts)
//!   and [snapshots](CircuitBreaker::snapshot) of its window, lifetime
//!   totals, forcing open or closed, [state changes](CircuitBreaker::subscribe),
//!   and [`try_acquire`](CircuitBreaker::try_acquire) to guard code that is
//!   not a tower service. Built by [`CircuitBreakerBuilder`], whose every
//!   setter documents its default.
//! - [`CircuitBreakerLayer`] and [`CircuitBreakerService`]: the breaker as
//!   a tower layer over one breaker or a registry's
//!   [`keyed`](Registry::keyed) selection ([`BreakerFor`]).
//! - [`Registry`] (feature `registry`): one breaker per key, bounded in keys
//!   and memory; its [`keyed`](Registry::keyed) selection also goes into a
//!   [`Policy`](crate::policy::Policy) as its breaker.
//!
//! # Compared with the alternatives
//!
//! tower has no breaker. Unlike most breaker crates, this one keeps a real
//! sliding window (time- or count-based), times calls only when a rule needs
//! it, checks the breaker in `call` (so `poll_ready` keeps its meaning:
//! the inner service's readiness), and admits a closed-state call with one
//! atomic load and no lock.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use seawall::circuit_breaker::{CircuitBreaker, State};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder()
//!     .minimum_calls(4)
//!     .error_threshold(50.0)
//!     .build()?;
//! let mut service = ServiceBuilder::new()
//!     .layer(breaker.layer())
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err("upstream down") } else { Ok("fine") }
//!     }));
//!
//! for fail in [false, true, false, true] {
//!     let _ = service.ready().await?.call(fail).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let refused = service.ready().await?.call(false).await.unwrap_err();
//! assert!(refused.is_circuit_open());
//!
//! tokio::time::advance(Duration::from_secs(5)).await;
//! assert_eq!(service.ready().await?.call(false).await?, "fine"); // the probe
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok(())
//! # }
//! ```
//!
//! # `call`, not `poll_ready`
//!
//! The breaker decides in `call`, before the inner service's `call` runs.
//! Deciding in `poll_ready` would turn an open breaker into a readiness
//! error, which many callers (hyper, tower's `Buffer`) treat as the service
//! being dead for good. A refused call does not call the inner service, so a
//! slot the inner service reserved in `poll_ready` stays reserved for the
//! next call.

mod breaker;
mod config;
mod event;
mod future;
mod layer;
mod listener;
mod preset;
#[cfg(feature = "registry")]
mod registry;

use std::task::{Context, Poll};

use tower_service::Service;

pub use crate::error::{CircuitOpen, State};
pub use breaker::{CircuitBreaker, Permit, Ticket, Transitions};
pub use config::{CircuitBreakerBuilder, DroppedCall, OpenDuration, Settings};
pub use event::{History, Reason, Transition};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use listener::{CallEvent, Listener};
pub use preset::{Preset, Warning};
#[cfg(feature = "registry")]
pub use registry::{Keyed, Registry, RegistryBuilder};

use crate::classify::{ByKind, Classify};
use crate::error::{Error, IntoError};

/// Which breaker guards a request: one [`CircuitBreaker`] for every
/// request, or one per key through a [`Registry`] (feature `registry`).
///
/// The [`CircuitBreakerLayer`] admits calls through it, and the
/// [`Policy`](crate::policy::Policy) finds through it the breaker that
/// admitted a call (see [`Admits`](crate::policy::Admits)); each call's
/// [`Ticket`] is settled on that breaker.
pub trait BreakerFor<Req> {
    /// What a call keeps of the breaker that admitted it, beside its
    /// ticket: nothing for one breaker (its guard holds that already), the
    /// key's breaker for a registry.
    type Held;

    /// Asks the request's breaker for leave to call.
    fn admit(&self, request: &Req) -> (Self::Held, Result<Ticket, CircuitOpen>);

    /// The breaker that admitted a call.
    fn breaker<'a>(&'a self, held: &'a Self::Held) -> &'a CircuitBreaker;

    /// A [`Permit`] that owns what settling the call needs, for a guard that
    /// does not keep this selection.
    fn permit(&self, held: Self::Held, ticket: Ticket) -> Permit;
}

impl<Req> BreakerFor<Req> for CircuitBreaker {
    type Held = ();

    #[inline]
    fn admit(&self, _: &Req) -> ((), Result<Ticket, CircuitOpen>) {
        ((), CircuitBreaker::admit(self))
    }

    #[inline]
    fn breaker<'a>(&'a self, _: &'a ()) -> &'a CircuitBreaker {
        self
    }

    #[inline]
    fn permit(&self, _: (), ticket: Ticket) -> Permit {
        CircuitBreaker::permit(self, ticket)
    }
}

/// A service guarded by a circuit breaker. Made by [`CircuitBreakerLayer`];
/// clones share the breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S, C = ByKind, B = CircuitBreaker> {
    inner: S,
    breakers: B,
    classifier: C,
}

impl<S, C, B> CircuitBreakerService<S, C, B> {
    /// Guards `inner` with `breakers`, judging results with `classifier`.
    pub fn new(inner: S, breakers: B, classifier: C) -> Self {
        CircuitBreakerService {
            inner,
            breakers,
            classifier,
        }
    }

    /// The breaker (or breaker selection) guarding this service.
    pub fn breakers(&self) -> &B {
        &self.breakers
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

impl<S, C, B, Req> Service<Req> for CircuitBreakerService<S, C, B>
where
    S: Service<Req>,
    S::Error: IntoError,
    C: Classify<S::Response, <S::Error as IntoError>::Inner> + Clone,
    B: BreakerFor<Req>,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    // Always inlined: a closed breaker's admission is a load and a test,
    // cheaper than the call LLVM would otherwise leave around it.
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        match self.breakers.admit(&request) {
            (held, Ok(ticket)) => {
                let permit = self.breakers.permit(held, ticket);
                ResponseFuture::called(self.inner.call(request), permit, self.classifier.clone())
            }
            (_, Err(open)) => ResponseFuture::refused(open),
        }
    }
}
