//! `ServiceBuilder` methods for seawall's layers, beside tower's own.

use std::time::Duration;

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::bulkhead::{Bulkhead, BulkheadLayer};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use crate::timeout::TimeoutLayer;

/// Adds seawall's layers to tower's [`ServiceBuilder`], so they read like
/// tower's own `.timeout(d)` or `.concurrency_limit(n)`.
///
/// ```
/// use std::time::Duration;
/// use seawall::ServiceBuilderExt;
/// use seawall::bulkhead::Bulkhead;
/// use seawall::circuit_breaker::CircuitBreaker;
/// use tower::{service_fn, ServiceBuilder};
///
/// let breaker = CircuitBreaker::builder().name("search").build()?;
/// let bulkhead = Bulkhead::builder().max_concurrent(32).build()?;
/// let service = ServiceBuilder::new()
///     .circuit_breaker(&breaker)
///     .bulkhead(&bulkhead)
///     .deadline(Duration::from_secs(2))
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

    /// Limits calls in flight with `bulkhead` (shared, like the breaker).
    fn bulkhead(self, bulkhead: &Bulkhead) -> ServiceBuilder<Stack<BulkheadLayer, L>>;

    /// Fails calls that take longer than `timeout` with a typed
    /// [`Error::Timeout`](crate::Error::Timeout). (Named so as not to clash
    /// with tower's own `timeout`.)
    fn deadline(self, timeout: Duration) -> ServiceBuilder<Stack<TimeoutLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn circuit_breaker(
        self,
        breaker: &CircuitBreaker,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(breaker.layer())
    }

    fn bulkhead(self, bulkhead: &Bulkhead) -> ServiceBuilder<Stack<BulkheadLayer, L>> {
        self.layer(bulkhead.layer())
    }

    fn deadline(self, timeout: Duration) -> ServiceBuilder<Stack<TimeoutLayer, L>> {
        self.layer(TimeoutLayer::new(timeout))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
