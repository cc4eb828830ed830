//! `ServiceBuilder` methods for seawall's layers, beside tower's own.

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};

/// Adds seawall's layers to tower's [`ServiceBuilder`], so they read like
/// tower's own `.timeout(d)` or `.concurrency_limit(n)`.
///
/// ```
/// use seawall::ServiceBuilderExt;
/// use seawall::circuit_breaker::CircuitBreaker;
/// use tower::{service_fn, ServiceBuilder};
///
/// let breaker = CircuitBreaker::builder().name("search").build()?;
/// let service = ServiceBuilder::new()
///     .circuit_breaker(&breaker)
///     .service(service_fn(|query: String| async move { Ok::<_, std::io::Error>(query.len()) }));
/// # drop(service);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Guards the service with `breaker` (a shared handle: the builder's
    /// services and the caller's handle see the same breaker).
    fn circuit_breaker(
        self,
        breaker: &CircuitBreaker,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn circuit_breaker(
        self,
        breaker: &CircuitBreaker,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(breaker.layer())
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
