//! The timeout's error.

use std::time::Duration;

/// The call did not finish within its deadline; its future was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?}")]
pub struct Elapsed {
    after: Duration,
    callers: bool,
}

impl Elapsed {
    pub(crate) fn new(after: Duration, callers: bool) -> Elapsed {
        Elapsed { after, callers }
    }

    /// Whether the deadline that passed was the caller's own (read from the
    /// request, and shorter than the layer's timeout). Such a timeout says
    /// nothing about the dependency: a breaker should not count it (a client
    /// sending `grpc-timeout: 1n` must not trip a breaker every client
    /// shares), and [`ByErrorKind`](crate::classify::ByErrorKind) does not.
    pub fn is_callers_deadline(&self) -> bool {
        self.callers
    }

    /// How long the call was given: the layer's timeout, or the request's
    /// own shorter deadline.
    pub fn after(&self) -> Duration {
        self.after
    }
}
