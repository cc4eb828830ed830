//! `ServiceBuilder` methods for seawall's layers, beside tower's own.

use std::time::Duration;

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::bulkhead::{Bulkhead, BulkheadLayer, Mode};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use crate::timeout::TimeoutLayer;

/// Adds seawall's layers to tower's [`ServiceBuilder`], so they read like
/// tower's own `.timeout(d)` or `.concurrency_limit(n)`. Named so that it
/// can be imported beside tower-http's `ServiceBuilderExt`, and its methods
/// so that none shadows or is shadowed by tower's or tower-http's.
///
/// ```
/// use std::time::Duration;
/// use seawall::ResilienceExt;
/// use seawall::bulkhead::Bulkhead;
/// use seawall::circuit_breaker::CircuitBreaker;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::builder().name("search").build()?;
/// let bulkhead = Bulkhead::builder().max_concurrent(32).build()?;
/// let search = ServiceBuilder::new()
///     .circuit_breaker(&breaker)
///     .bulkhead(&bulkhead)
///     .call_timeout(Duration::from_secs(2))
///     .service(service_fn(|query: String| async move { Ok::<_, std::io::Error>(query.len()) }));
/// // One error type through all three layers: `Error<io::Error>`.
/// let hits: Result<usize, seawall::Error<std::io::Error>> = search.oneshot("rust".into()).await;
/// assert_eq!(hits?, 4);
/// # Ok(()) }
/// ```
pub trait ResilienceExt<L>: sealed::Sealed {
    /// Guards the service with `breaker` (a shared handle: the builder's
    /// services and the caller's handle see the same breaker).
    fn circuit_breaker(
        self,
        breaker: &CircuitBreaker,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>>;

    /// Limits calls in flight with `bulkhead` (shared, like the breaker).
    fn bulkhead<M: Mode>(
        self,
        bulkhead: &Bulkhead<M>,
    ) -> ServiceBuilder<Stack<BulkheadLayer<M>, L>>;

    /// Fails calls that take longer than `timeout` with a typed
    /// [`Error::Timeout`](crate::Error::Timeout) (a [`TimeoutLayer`]; tower's
    /// own `.timeout` gives a `BoxError`).
    fn call_timeout(self, timeout: Duration) -> ServiceBuilder<Stack<TimeoutLayer, L>>;
}

impl<L> ResilienceExt<L> for ServiceBuilder<L> {
    fn circuit_breaker(
        self,
        breaker: &CircuitBreaker,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(breaker.layer())
    }

    fn bulkhead<M: Mode>(
        self,
        bulkhead: &Bulkhead<M>,
    ) -> ServiceBuilder<Stack<BulkheadLayer<M>, L>> {
        self.layer(bulkhead.layer())
    }

    fn call_timeout(self, timeout: Duration) -> ServiceBuilder<Stack<TimeoutLayer, L>> {
        self.layer(TimeoutLayer::new(timeout))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
