//! Where a fallback must not answer: a substitute answer would tell the
//! caller something false. A messaging [`Notifier`](crate::messaging::Notifier)
//! would report a message the broker never took as published; a
//! [`Consumer`](crate::messaging::Consumer) would acknowledge a message its
//! handler failed on, and the broker would forget it. They run their calls
//! with fallbacks withheld, and the error goes on to them.

#[cfg(feature = "messaging")]
use std::future::Future;

#[cfg(feature = "messaging")]
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static WITHHELD: bool;
}

/// Makes the call `f` (a service's `call`, which may answer at once) with
/// fallbacks withheld, or not.
#[cfg(feature = "messaging")]
pub(crate) fn call<R>(withheld: bool, f: impl FnOnce() -> R) -> R {
    WITHHELD.sync_scope(withheld, f)
}

/// Runs `future` with fallbacks withheld, or not.
#[cfg(feature = "messaging")]
pub(crate) fn run<F: Future>(withheld: bool, future: F) -> TaskLocalFuture<bool, F> {
    WITHHELD.scope(withheld, future)
}

/// Whether the code running now has fallbacks withheld.
pub(super) fn is_withheld() -> bool {
    WITHHELD.try_with(|withheld| *withheld).unwrap_or(false)
}
