//! The timeout's error.

use std::time::Duration;

/// The call did not finish within its deadline; its future was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?}")]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    pub(crate) fn new(after: Duration) -> Elapsed {
        Elapsed { after }
    }

    /// How long the call was given: the layer's timeout, or the request's
    /// own shorter deadline.
    pub fn after(&self) -> Duration {
        self.after
    }
}
