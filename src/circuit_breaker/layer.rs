//! The layer that puts a breaker in front of a service.

use tower_layer::Layer;

use super::{CircuitBreaker, CircuitBreakerService};
use crate::classify::ByKind;

/// Guards services with a circuit breaker (or, with a
/// [`Registry`](super::Registry), a breaker per key).
///
/// Every service this layer makes, and every clone of them, shares the
/// layer's breaker. The classifier decides what counts as a failure; by
/// default [`ByKind`] (every error but a caller's own deadline).
///
/// ```
/// use seawall::circuit_breaker::CircuitBreaker;
/// use seawall::classify::{ByKind, Classify, Verdict};
/// use seawall::Error;
/// use tower::{service_fn, Layer};
///
/// let breaker = CircuitBreaker::builder().build()?;
/// // An HTTP-ish client whose 4xx answers are the caller's fault:
/// let layer = breaker.layer().classify(|result: &Result<u16, Error<std::io::Error>>| match result {
///     Ok(status) if *status >= 500 => Verdict::Failure,
///     Ok(status) if *status >= 400 => Verdict::Ignore,
///     other => ByKind.classify(other),
/// });
/// let service = layer.layer(service_fn(|_: ()| async { Ok::<u16, std::io::Error>(200) }));
/// # drop(service);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = ByKind, B = CircuitBreaker> {
    breakers: B,
    classifier: C,
}

impl<B> CircuitBreakerLayer<ByKind, B> {
    /// A layer over `breakers`: a [`CircuitBreaker`] or a per-key
    /// [`Registry`](super::Registry) selection, classifying results by
    /// [`ByKind`].
    pub fn new(breakers: B) -> Self {
        CircuitBreakerLayer {
            breakers,
            classifier: ByKind,
        }
    }
}

impl<C, B> CircuitBreakerLayer<C, B> {
    /// Decides with `classifier` what counts as a failure (see
    /// [`classify`](crate::classify)): a named classifier, or a closure
    /// over `&Result<Res, Error<E>>`.
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2, B> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            classifier,
        }
    }
}

impl<S, C: Clone, B: Clone> Layer<S> for CircuitBreakerLayer<C, B> {
    type Service = CircuitBreakerService<S, C, B>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breakers.clone(), self.classifier.clone())
    }
}
