//! The retry layer: a [`Retry`] rule above any service.

use std::fmt;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::Retry;
use crate::classify::{ByKind, Classify};
use crate::error::{Error, IntoError};
use crate::select::{Every, Selects};

/// Retries the calls of the services it makes by a [`Retry`] rule, judging
/// each attempt with a [classifier](crate::classify) ([`ByKind`] by
/// default). Put it above the breaker and below the fallback (see the
/// [module's notes](super#where-retries-go-and-why)).
///
/// The request must be `Clone`: the layer keeps a copy for the next
/// attempt, and a clone of the service, which it readies before each
/// retry.
pub struct RetryLayer<P = Every, C = ByKind> {
    retry: Retry<P>,
    classifier: C,
}

impl<P> RetryLayer<P> {
    /// Retries by `retry`, judging attempts with [`ByKind`].
    pub fn new(retry: Retry<P>) -> Self {
        RetryLayer {
            retry,
            classifier: ByKind,
        }
    }
}

impl<P, C> RetryLayer<P, C> {
    /// Judges each attempt with `classifier` (the one the breaker below
    /// uses, so that what it counts as a failure is what is retried).
    pub fn classify<C2>(self, classifier: C2) -> RetryLayer<P, C2> {
        RetryLayer {
            retry: self.retry,
            classifier,
        }
    }
}

impl<P: Clone, C: Clone> Clone for RetryLayer<P, C> {
    fn clone(&self) -> Self {
        RetryLayer {
            retry: self.retry.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<P, C> fmt::Debug for RetryLayer<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for RetryLayer<P, C> {
    type Service = RetryService<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: self.retry.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service whose calls are retried by a [`Retry`] rule. Made by a
/// [`RetryLayer`].
pub struct RetryService<S, P = Every, C = ByKind> {
    inner: S,
    retry: Retry<P>,
    classifier: C,
}

impl<S: Clone, P: Clone, C: Clone> Clone for RetryService<S, P, C> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            retry: self.retry.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, P, C> fmt::Debug for RetryService<S, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("retry", &self.retry.name())
            .finish()
    }
}

type Inner<S, Req> = <<S as Service<Req>>::Error as IntoError>::Inner;

impl<S, Req, P, C> Service<Req> for RetryService<S, P, C>
where
    S: Service<Req> + Clone,
    S::Error: IntoError,
    Req: Clone,
    P: Selects<Req> + Clone,
    C: Classify<S::Response, Inner<S, Req>> + Clone,
{
    type Response = S::Response;
    type Error = Error<Inner<S, Req>>;
    type Future = ResponseFuture<S, Req, P, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let attempts = self.retry.first();
        // The ready service takes this call; a clone, readied in its turn,
        // takes the retries.
        let again = self
            .retry
            .selects(&request)
            .then(|| (self.inner.clone(), request.clone()));
        let future = super::future::call(&self.retry, &attempts, &mut self.inner, request);
        ResponseFuture::new(
            future,
            again,
            self.retry.clone(),
            self.classifier.clone(),
            attempts,
        )
    }
}
