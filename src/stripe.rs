//! Striping: what every call writes comes in a few copies, each on cache
//! lines of its own, and each thread writes one of them. Calls on several
//! cores then write different lines instead of passing one line back and
//! forth, which is what decides a call's cost once cores share a breaker
//! or a Policy.
//!
//! Two things are striped: the hot bucket of a time window (summed by its
//! readers), and the reference count that a call's future takes on what it
//! settles on: a breaker ([`Striped`]), a Policy or a bulkhead's limiter
//! ([`Laned`]).

use std::ops::Deref;
use std::sync::Arc;

/// How many copies. Eight: the workers of a runtime on up to eight cores
/// (most machines and containers a service runs on), or with up to eight
/// workers on fewer, then never share one, and on more cores each copy is
/// shared by an eighth of them. Each copy costs a standalone breaker 128
/// bytes of tally and 256 of lane, a Policy 256 more of lane, and a
/// bulkhead 256 of lane (and 128 of its limiter's share): a
/// breaker's heap is about 3.5 KiB, a Policy's with its own breaker about
/// 6 KiB (1.2 and 2 with two copies). A registry's breakers are not
/// striped: each is rarely called from two cores at once, and a registry
/// keeps thousands. A power of two, so that the turn taken by each thread
/// (a counter that wraps) keeps giving each stripe in turn.
#[cfg(not(seawall_loom))]
pub(crate) const STRIPES: usize = 8;

/// Two under loom: what the models check is calls on different stripes
/// and on one, which two give, and every stripe more is more atomic
/// operations for each reader to interleave.
#[cfg(seawall_loom)]
pub(crate) const STRIPES: usize = 2;

/// The stripe the calling thread writes: threads take the stripes in turn,
/// in the order they first ask.
#[cfg(not(seawall_loom))]
#[inline(always)]
pub(crate) fn stripe() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;

    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let stripe = STRIPE.with(Cell::get);
    if stripe < STRIPES {
        return stripe;
    }
    let stripe = next_stripe(&NEXT);
    STRIPE.with(|s| s.set(stripe));
    stripe
}

/// The stripe of the thread that asks `next`'s `n`th: in turn, so that
/// threads that first ask one after another (a runtime's workers, as they
/// start) each write their own.
#[cfg(not(seawall_loom))]
fn next_stripe(next: &std::sync::atomic::AtomicUsize) -> usize {
    next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES
}

// Under loom each model thread says which stripe it writes (see
// `on_stripe`), so that the models cover calls on different stripes.
#[cfg(seawall_loom)]
loom::thread_local! {
    static LOOM_STRIPE: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

#[cfg(seawall_loom)]
pub(crate) fn stripe() -> usize {
    LOOM_STRIPE.with(std::cell::Cell::get)
}

/// Runs `f` in a new model thread that writes stripe `stripe` (the model's
/// own thread writes stripe 0).
#[cfg(all(test, seawall_loom))]
pub(crate) fn on_stripe<T: Send + 'static>(
    stripe: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> loom::thread::JoinHandle<T> {
    loom::thread::spawn(move || {
        LOOM_STRIPE.with(|s| s.set(stripe));
        f()
    })
}

/// A cheap handle to a `T` shared by every clone, from which a call takes
/// an owning reference ([`Local`]) that counts on the calling thread's
/// stripe: a response future must own what it settles on (tower's futures
/// outlive the service that made them), and cloning one `Arc` per call on
/// two cores is a line both write twice a call.
///
/// Each stripe is an `Arc` of its own, padded to its own lines, holding the
/// one `Arc<T>`; [`unstriped`](Striped::unstriped) makes none (for a
/// registry's breakers): its calls clone the handle's `Arc`, and it costs
/// no allocation beside the value's own.
pub(crate) struct Striped<T> {
    shared: Arc<T>,
    lanes: Option<Arc<[Arc<Lane<T>>; STRIPES]>>,
}

/// One stripe: the shared `Arc` again, its own count on lines of its own.
#[repr(align(128))]
pub(crate) struct Lane<T>(Arc<T>);

impl<T> Striped<T> {
    /// A handle with one lane per stripe.
    pub(crate) fn new(shared: T) -> Self {
        let Laned { shared, lanes } = Laned::new(shared);
        Striped {
            shared,
            lanes: Some(lanes),
        }
    }

    /// A handle without lanes: [`local`](Self::local) clones its `Arc`.
    pub(crate) fn unstriped(shared: T) -> Self {
        Self::from_unstriped(Arc::new(shared))
    }

    /// The handle of a value that never had lanes, from its `Arc` (which a
    /// registry keeps in place of the handle, half its size).
    pub(crate) fn from_unstriped(shared: Arc<T>) -> Self {
        Striped {
            shared,
            lanes: None,
        }
    }

    /// The value's `Arc`, for [`from_unstriped`](Self::from_unstriped).
    #[cfg(feature = "registry")]
    pub(crate) fn arc(&self) -> &Arc<T> {
        &self.shared
    }

    /// An owning reference for one call, counted on this thread's stripe.
    #[inline]
    pub(crate) fn local(&self) -> Local<T> {
        match &self.lanes {
            // `%`: a stripe is below `STRIPES` already, and saying so spares
            // the bounds check.
            Some(lanes) => Local::Lane(Arc::clone(&lanes[stripe() % STRIPES])),
            None => Local::Whole(Arc::clone(&self.shared)),
        }
    }

    /// Whether two handles share one `T`.
    pub(crate) fn ptr_eq(&self, other: &Striped<T>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<T> Clone for Striped<T> {
    fn clone(&self) -> Self {
        Striped {
            shared: Arc::clone(&self.shared),
            lanes: self.lanes.clone(),
        }
    }
}

impl<T> Deref for Striped<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.shared
    }
}

/// A [`Striped`] handle that always has its lanes (a Policy's: there is
/// one per policy, not thousands): a call's reference is its lane itself,
/// and reading through it asks no question of which kind it is.
pub(crate) struct Laned<T> {
    shared: Arc<T>,
    lanes: Arc<[Arc<Lane<T>>; STRIPES]>,
}

impl<T> Laned<T> {
    /// A handle with one lane per stripe.
    pub(crate) fn new(shared: T) -> Self {
        let shared = Arc::new(shared);
        let lanes = Arc::new(std::array::from_fn(|_| Arc::new(Lane(Arc::clone(&shared)))));
        Laned { shared, lanes }
    }

    /// An owning reference for one call, counted on this thread's stripe.
    #[inline]
    pub(crate) fn lane(&self) -> Arc<Lane<T>> {
        // `%`: as in `Striped::local`.
        self.lane_at(stripe() % STRIPES)
    }

    /// [`lane`](Self::lane) for a caller that read its stripe already.
    #[inline]
    pub(crate) fn lane_at(&self, stripe: usize) -> Arc<Lane<T>> {
        Arc::clone(&self.lanes[stripe])
    }
}

impl<T> Clone for Laned<T> {
    fn clone(&self) -> Self {
        Laned {
            shared: Arc::clone(&self.shared),
            lanes: Arc::clone(&self.lanes),
        }
    }
}

impl<T> Deref for Laned<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.shared
    }
}

impl<T> Deref for Lane<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A call's owning reference to a [`Striped`] value.
pub(crate) enum Local<T> {
    /// Counted on a stripe's lane.
    Lane(Arc<Lane<T>>),
    /// The handle's own `Arc`.
    Whole(Arc<T>),
}

impl<T> Deref for Local<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        match self {
            Local::Lane(lane) => &lane.0,
            Local::Whole(whole) => whole,
        }
    }
}

impl<T> From<Striped<T>> for Local<T> {
    fn from(handle: Striped<T>) -> Self {
        Local::Whole(handle.shared)
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_on_its_threads_own_lane() {
        let striped = Striped::new(7u32);
        let lanes: Vec<_> = striped
            .lanes
            .iter()
            .flat_map(|lanes| lanes.iter())
            .map(Arc::as_ptr)
            .collect();
        assert_eq!(lanes.len(), STRIPES);
        assert!(lanes
            .iter()
            .enumerate()
            .all(|(i, a)| lanes[..i].iter().all(|b| a != b)));
        let here = striped.local();
        let Local::Lane(lane) = &here else {
            panic!("a striped handle gives lanes")
        };
        assert_eq!(Arc::as_ptr(lane), lanes[stripe()]);
        assert_eq!(*here, 7);
    }

    #[test]
    fn a_laned_call_counts_on_its_threads_own_lane() {
        let laned = Laned::new(7u32);
        let here = laned.lane();
        assert!(Arc::ptr_eq(&here, &laned.lanes[stripe()]));
        let there = std::thread::spawn({
            let laned = laned.clone();
            move || Arc::ptr_eq(&laned.lane(), &laned.lanes[stripe()])
        });
        assert!(there.join().unwrap());
        assert_eq!(**here, 7);
        drop(laned);
        assert_eq!(**here, 7, "a lane keeps the value alive");
    }

    /// A runtime of up to eight workers (the cores of most machines a
    /// service runs on, or more workers than cores) calls on eight
    /// different lines: with fewer stripes, two workers running at once
    /// could write one line, and pass it back and forth at every call.
    #[test]
    fn eight_threads_that_first_ask_in_turn_each_write_a_stripe_of_their_own() {
        for first in [0, 5, usize::MAX - 3] {
            let next = std::sync::atomic::AtomicUsize::new(first);
            let mut taken: Vec<usize> = (0..8).map(|_| next_stripe(&next)).collect();
            assert!(taken.iter().all(|&stripe| stripe < STRIPES));
            taken.sort_unstable();
            taken.dedup();
            assert_eq!(taken.len(), 8, "from {first}: {taken:?}");
        }
    }

    #[test]
    fn a_local_reference_keeps_the_value_alive() {
        for striped in [Striped::new(vec![1, 2]), Striped::unstriped(vec![1, 2])] {
            let local = striped.local();
            drop(striped);
            assert_eq!(*local, [1, 2]);
        }
    }

    #[test]
    fn clones_share_one_value() {
        let a = Striped::unstriped(());
        assert!(a.ptr_eq(&a.clone()));
        assert!(!a.ptr_eq(&Striped::unstriped(())));
    }
}
