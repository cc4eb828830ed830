//! The layer that puts a bulkhead in front of a service.

use tower_layer::Layer;

use super::{Bulkhead, BulkheadService, Mode, Reject};

/// Guards services with a [`Bulkhead`]; every service it makes, and every
/// clone of them, shares the bulkhead's limit.
#[derive(Clone, Debug)]
pub struct BulkheadLayer<M: Mode = Reject> {
    bulkhead: Bulkhead<M>,
}

impl<M: Mode> BulkheadLayer<M> {
    /// A layer over `bulkhead`.
    pub fn new(bulkhead: Bulkhead<M>) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S, M: Mode> Layer<S> for BulkheadLayer<M> {
    type Service = BulkheadService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone())
    }
}
