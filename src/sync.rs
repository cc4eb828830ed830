//! The atomics and locks of seawall's lock-free parts.
//!
//! Built with `RUSTFLAGS="--cfg seawall_loom"`, they are loom's, so that
//! the loom models beside each of those parts explore every interleaving of
//! their threads (`scripts/loom` runs them). A cfg of our own rather than
//! loom's usual `loom`: tokio reacts to that one, and would no longer build.

#[cfg(seawall_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize},
    Mutex, MutexGuard,
};

#[cfg(not(seawall_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize},
    Mutex, MutexGuard,
};

/// Locks a mutex whose data every holder leaves consistent (no holder
/// panics halfway through a change), so a poisoned one is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A point where a loom model may switch threads; nothing otherwise.
///
/// loom 0.7 explores a switch to another thread before an operation only
/// when that thread's *next* operation conflicts with it: a thread that
/// reads an atomic and then writes it is never run between two reads of
/// another thread (seen in a model of its own). Each of these points, put
/// between the steps of a lock-free sequence, lets the models run the
/// other threads there.
#[inline(always)]
pub(crate) fn model_point() {
    #[cfg(seawall_loom)]
    loom::thread::yield_now();
}

/// Where the code relies on its `SeqCst` accesses being in one total order
/// (a store-then-load handshake between two threads, Dekker's pattern):
/// loom treats `SeqCst` accesses as `AcqRel` and would report the lost
/// wakeup that the total order rules out, so under its models a `SeqCst`
/// fence, which it does model, stands in for the order. Nothing otherwise.
#[inline(always)]
pub(crate) fn seq_cst_handshake() {
    #[cfg(seawall_loom)]
    loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}
