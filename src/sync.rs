//! The atomics and locks of seawall's lock-free parts.
//!
//! Built with `RUSTFLAGS="--cfg seawall_loom"`, they are loom's, so that
//! the loom models beside each of those parts explore every interleaving of
//! their threads (`scripts/loom` runs them). A cfg of our own rather than
//! loom's usual `loom`: tokio reacts to that one, and would no longer build.

#[cfg(seawall_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize},
    Arc, Mutex, MutexGuard,
};

#[cfg(not(seawall_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize},
    Arc, Mutex, MutexGuard,
};

/// Locks a mutex whose data every holder leaves consistent (no holder
/// panics halfway through a change), so a poisoned one is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
