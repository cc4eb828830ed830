//! Which requests a layer acts on: the faults a [`FaultLayer`] injects,
//! the requests a [`RetryLayer`] may send again.
//!
//! [`FaultLayer`]: crate::fault::FaultLayer
//! [`RetryLayer`]: crate::retry::RetryLayer

/// Every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Every;

/// Picks requests. Any `Fn(&Req) -> bool` is one.
pub trait Selects<Req> {
    /// Whether `request` is picked.
    fn selects(&self, request: &Req) -> bool;
}

impl<Req> Selects<Req> for Every {
    #[inline]
    fn selects(&self, _: &Req) -> bool {
        true
    }
}

impl<Req, F: Fn(&Req) -> bool> Selects<Req> for F {
    #[inline]
    fn selects(&self, request: &Req) -> bool {
        self(request)
    }
}
