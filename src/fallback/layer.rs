//! The fallback as a layer of its own.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{Fallback, ResponseFuture};
use crate::error::Error;

/// Answers with a [`Fallback`] when the service below fails.
///
/// It sits above other seawall layers (or a service whose error is a
/// [`seawall::Error`](crate::Error); map a plain error with `Error::Inner`),
/// so it can tell a timeout from a refusal from a failure, and passes their
/// single-level `Error<E>` through. Inside a [`Policy`](crate::policy) the
/// fallback also sees responses that its classifier calls failures.
#[derive(Debug)]
pub struct FallbackLayer<Req, Res, E, K> {
    fallback: Fallback<Req, Res, E, K>,
}

impl<Req, Res, E, K> Clone for FallbackLayer<Req, Res, E, K> {
    fn clone(&self) -> Self {
        FallbackLayer {
            fallback: self.fallback.clone(),
        }
    }
}

impl<Req, Res, E, K> FallbackLayer<Req, Res, E, K> {
    /// A layer answering with `fallback`.
    pub fn new(fallback: Fallback<Req, Res, E, K>) -> Self {
        FallbackLayer { fallback }
    }
}

impl<S, Req, Res, E, K> Layer<S> for FallbackLayer<Req, Res, E, K> {
    type Service = FallbackService<S, Req, Res, E, K>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// A service whose failures a [`Fallback`] answers. Made by
/// [`FallbackLayer`].
#[derive(Debug)]
pub struct FallbackService<S, Req, Res, E, K> {
    inner: S,
    fallback: Fallback<Req, Res, E, K>,
}

impl<S: Clone, Req, Res, E, K> Clone for FallbackService<S, Req, Res, E, K> {
    fn clone(&self) -> Self {
        FallbackService {
            inner: self.inner.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<S, Req, Res, E, K> FallbackService<S, Req, Res, E, K> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, Res, E, K> Service<Req> for FallbackService<S, Req, Res, E, K>
where
    S: Service<Req, Response = Res, Error = Error<E>>,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = Error<E>;
    type Future = ResponseFuture<S::Future, Req, Res, E, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = self.fallback.key(&request);
        ResponseFuture::new(self.inner.call(request), key, self.fallback.clone())
    }
}
