//! The layer that puts a bulkhead in front of a service.

use tower_layer::Layer;

use super::{Bulkhead, BulkheadService};

/// Guards services with a [`Bulkhead`]; every service it makes, and every
/// clone of them, shares the bulkhead's limit.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer over `bulkhead`.
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone())
    }
}
