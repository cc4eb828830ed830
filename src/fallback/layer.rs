//! The fallback as a layer of its own.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{Fallback, ResponseFuture};
use crate::circuit_breaker::CircuitBreaker;
use crate::classify::{ByKind, Classify};
use crate::error::{Error, IntoError, Leaf};

/// Answers with a [`Fallback`] when the service below fails.
///
/// It judges each result with a [classifier](crate::classify) ([`ByKind`]
/// by default), by the same rule as a [`Policy`](crate::policy::Policy):
/// only responses called successes are cached, and only errors that count
/// against the dependency fall back. Put it above other seawall layers
/// (their timeouts and refusals are among the causes it answers for), or
/// over any service whose error is a [`Leaf`].
///
/// ```
/// use std::time::Duration;
/// use seawall::circuit_breaker::CircuitBreaker;
/// use seawall::fallback::{Fallback, FallbackLayer};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::builder().build()?;
/// breaker.force_open();
/// let fallback = Fallback::builder().value("a default answer").build()?;
/// let service = ServiceBuilder::new()
///     .layer(FallbackLayer::new(fallback).stats(&breaker))
///     .layer(breaker.layer())
///     .service(service_fn(|_: ()| async { Ok::<_, std::io::Error>("fresh") }));
/// assert_eq!(service.oneshot(()).await?, "a default answer");
/// assert_eq!(breaker.counts().fallback_success, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FallbackLayer<Req, Res, E, K, C = ByKind> {
    fallback: Fallback<Req, Res, E, K>,
    classifier: C,
    stats: Option<CircuitBreaker>,
}

impl<Req, Res, E, K, C: Clone> Clone for FallbackLayer<Req, Res, E, K, C> {
    fn clone(&self) -> Self {
        FallbackLayer {
            fallback: self.fallback.clone(),
            classifier: self.classifier.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<Req, Res, E, K> FallbackLayer<Req, Res, E, K> {
    /// A layer answering with `fallback`, judging results by [`ByKind`].
    pub fn new(fallback: Fallback<Req, Res, E, K>) -> Self {
        FallbackLayer {
            fallback,
            classifier: ByKind,
            stats: None,
        }
    }
}

impl<Req, Res, E, K, C> FallbackLayer<Req, Res, E, K, C> {
    /// Judges results with `classifier` (as the breaker below does, if
    /// there is one: give them the same).
    pub fn classify<C2>(self, classifier: C2) -> FallbackLayer<Req, Res, E, K, C2> {
        FallbackLayer {
            fallback: self.fallback,
            classifier,
            stats: self.stats,
        }
    }

    /// Counts the fallback's outcomes in `breaker`'s rolling window (the
    /// breaker below, say).
    pub fn stats(mut self, breaker: &CircuitBreaker) -> Self {
        self.stats = Some(breaker.clone());
        self
    }
}

impl<S, Req, Res, E, K, C: Clone> Layer<S> for FallbackLayer<Req, Res, E, K, C> {
    type Service = FallbackService<S, Req, Res, E, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose failures a [`Fallback`] answers. Made by
/// [`FallbackLayer`].
#[derive(Debug)]
pub struct FallbackService<S, Req, Res, E, K, C = ByKind> {
    inner: S,
    layer: FallbackLayer<Req, Res, E, K, C>,
}

impl<S: Clone, Req, Res, E, K, C: Clone> Clone for FallbackService<S, Req, Res, E, K, C> {
    fn clone(&self) -> Self {
        FallbackService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, Req, Res, E, K, C> FallbackService<S, Req, Res, E, K, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, Res, E, K, C> Service<Req> for FallbackService<S, Req, Res, E, K, C>
where
    S: Service<Req, Response = Res>,
    S::Error: IntoError<Inner = E>,
    E: Leaf,
    Res: Send + 'static,
    C: Classify<Res, E> + Clone,
{
    type Response = Res;
    type Error = Error<E>;
    type Future = ResponseFuture<S::Future, Req, Res, E, K, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = self.layer.fallback.key(&request);
        ResponseFuture::new(self.inner.call(request), key, self.layer.clone())
    }
}

impl<Req, Res, E, K, C> FallbackLayer<Req, Res, E, K, C> {
    pub(super) fn parts(&self) -> (&Fallback<Req, Res, E, K>, &C, Option<&CircuitBreaker>) {
        (&self.fallback, &self.classifier, self.stats.as_ref())
    }
}
