//! The hedging layer: a [`Hedge`] rule above any service.

use std::fmt;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::Hedge;
use crate::error::{Error, IntoError};
use crate::select::{Every, Selects};

/// Hedges the calls of the services it makes by a [`Hedge`] rule (see the
/// [module's notes](super)): to a clone of the same service by default, or
/// to [another](Self::to).
pub struct HedgeLayer<P = Every, T = Same> {
    hedge: Hedge,
    only: P,
    to: T,
}

/// Hedges go to a clone of the service the first attempt went to.
#[derive(Clone, Copy, Debug, Default)]
pub struct Same;

/// Hedges go to another service (another region, a replica): see
/// [`HedgeLayer::to`].
#[derive(Clone, Debug)]
pub struct Other<A>(A);

/// Where a hedge goes: [`Same`] or [`Other`].
pub trait HedgeTo<S>: sealed::Sealed {
    /// The service hedges are sent to.
    type Service;

    #[doc(hidden)]
    fn service(&self, first: &S) -> Self::Service;
}

mod sealed {
    /// Only seawall's targets are [`HedgeTo`](super::HedgeTo)s.
    pub trait Sealed {}
}

impl sealed::Sealed for Same {}
impl<A> sealed::Sealed for Other<A> {}

impl<S: Clone> HedgeTo<S> for Same {
    type Service = S;

    #[inline]
    fn service(&self, first: &S) -> S {
        first.clone()
    }
}

impl<S, A: Clone> HedgeTo<S> for Other<A> {
    type Service = A;

    #[inline]
    fn service(&self, _: &S) -> A {
        self.0.clone()
    }
}

impl HedgeLayer {
    /// Hedges every call by `hedge`, to the same service.
    pub fn new(hedge: Hedge) -> Self {
        HedgeLayer {
            hedge,
            only: Every,
            to: Same,
        }
    }
}

impl<P, T> HedgeLayer<P, T> {
    /// Hedges only the requests `only` selects (the idempotent ones); the
    /// others get one attempt and no timer.
    pub fn only<P2>(self, only: P2) -> HedgeLayer<P2, T> {
        HedgeLayer {
            hedge: self.hedge,
            only,
            to: self.to,
        }
    }

    /// Sends hedges to `service` (cloned for each), which answers with the
    /// same response and error types.
    pub fn to<A>(self, service: A) -> HedgeLayer<P, Other<A>> {
        HedgeLayer {
            hedge: self.hedge,
            only: self.only,
            to: Other(service),
        }
    }
}

impl<P: Clone, T: Clone> Clone for HedgeLayer<P, T> {
    fn clone(&self) -> Self {
        HedgeLayer {
            hedge: self.hedge.clone(),
            only: self.only.clone(),
            to: self.to.clone(),
        }
    }
}

impl<P, T> fmt::Debug for HedgeLayer<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("hedge", &self.hedge)
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone, T: Clone> Layer<S> for HedgeLayer<P, T> {
    type Service = HedgeService<S, P, T>;

    fn layer(&self, inner: S) -> Self::Service {
        HedgeService {
            inner,
            hedge: self.hedge.clone(),
            only: self.only.clone(),
            to: self.to.clone(),
        }
    }
}

/// A service whose slow calls are hedged. Made by a [`HedgeLayer`].
pub struct HedgeService<S, P = Every, T = Same> {
    inner: S,
    hedge: Hedge,
    only: P,
    to: T,
}

impl<S: Clone, P: Clone, T: Clone> Clone for HedgeService<S, P, T> {
    fn clone(&self) -> Self {
        HedgeService {
            inner: self.inner.clone(),
            hedge: self.hedge.clone(),
            only: self.only.clone(),
            to: self.to.clone(),
        }
    }
}

impl<S: fmt::Debug, P, T> fmt::Debug for HedgeService<S, P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeService")
            .field("inner", &self.inner)
            .field("hedge", &self.hedge.name())
            .finish()
    }
}

impl<S, Req, P, T> Service<Req> for HedgeService<S, P, T>
where
    S: Service<Req>,
    S::Error: IntoError,
    T: HedgeTo<S>,
    T::Service: Service<Req, Response = S::Response, Error = S::Error>,
    Req: Clone,
    P: Selects<Req>,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = ResponseFuture<S, Req, T>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.hedge.request();
        let second = self
            .only
            .selects(&request)
            .then(|| (self.to.service(&self.inner), request.clone()));
        ResponseFuture::new(self.inner.call(request), second, self.hedge.clone())
    }
}
