//! The layer that puts a breaker in front of a service.

use tower_layer::Layer;

use super::{CircuitBreaker, CircuitBreakerService};
use crate::classify::AnyError;

/// Guards services with a circuit breaker (or, with a
/// [`Registry`](super::Registry), a breaker per key).
///
/// Every service this layer makes, and every clone of them, shares the
/// layer's breaker. The classifier decides what counts as a failure; by
/// default every `Err`.
///
/// ```
/// use seawall::circuit_breaker::CircuitBreaker;
/// use seawall::classify::Verdict;
/// use tower::{service_fn, Layer};
///
/// let breaker = CircuitBreaker::builder().build()?;
/// // An HTTP-ish client whose 4xx answers are the caller's fault:
/// let layer = breaker.layer().classify(|result: &Result<u16, std::io::Error>| match result {
///     Ok(status) if *status >= 500 => Verdict::Failure,
///     Ok(status) if *status >= 400 => Verdict::Ignore,
///     Ok(_) => Verdict::Success,
///     Err(_) => Verdict::Failure,
/// });
/// let service = layer.layer(service_fn(|_: ()| async { Ok::<u16, std::io::Error>(200) }));
/// # drop(service);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = AnyError, B = CircuitBreaker> {
    breakers: B,
    classifier: C,
}

impl<B> CircuitBreakerLayer<AnyError, B> {
    /// A layer over `breakers`: a [`CircuitBreaker`] or a per-key
    /// [`Registry`](super::Registry) selection, classifying every `Err` as a
    /// failure.
    pub fn new(breakers: B) -> Self {
        CircuitBreakerLayer {
            breakers,
            classifier: AnyError,
        }
    }
}

impl<C, B> CircuitBreakerLayer<C, B> {
    /// Decides with `classifier` what counts as a failure (see
    /// [`classify`](crate::classify)).
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
