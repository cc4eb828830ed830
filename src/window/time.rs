//! The time-based window: the newest bucket's counters at fixed addresses
//! (the *hot* bucket, where nearly every call counts), and behind it a ring
//! of the older buckets' counts.
//!
//! A bucket covers one stretch of time, an *epoch* (`now / bucket`). Every
//! counter, hot or in the ring, carries in its top bits the epoch it counts
//! for: `epoch << count_bits | count`. That is what keeps the counts exact
//! while threads count, start buckets and read at once:
//!
//! - **A call of the hot bucket** is one `fetch_add` on a counter whose
//!   address never changes, after one load that says whether `now` is still
//!   in the hot bucket: what a plain counter costs. A striped window's
//!   hot outcome counters come in [`STRIPES`] copies on cache lines of
//!   their own, and each thread counts in one of them: calls on different
//!   cores then write different lines instead of passing one back and
//!   forth.
//!   Everything below treats each stripe's counter as a counter of its
//!   own; readers add the stripes up. An unstriped window (a registry's)
//!   keeps its one copy inline, unpadded, and of its successes and
//!   failures only ([`INLINE`]): its other outcomes and slow calls count
//!   in the ring at once, in their own epoch's slot, as calls do while the
//!   hot bucket moves on.
//! - **Moving on to a new bucket.** The first call past the hot bucket's end
//!   claims the move (the hot epoch word goes to zero), moves each hot
//!   counter's count into the ring with a compare-and-swap that also sets it
//!   to the new epoch's zero (a count added meanwhile fails the swap and is
//!   moved along), then announces the new epoch. No call waits: while the
//!   move is claimed, calls count straight into the ring, in their own
//!   epoch's slot. A call that checked the hot bucket just before the move
//!   and counts just after lands in the newer bucket: counted once, in the
//!   bucket current when it landed.
//! - **The ring** takes counts for an epoch with a compare-and-swap: onto
//!   the count already there for that epoch, or in place of an older epoch's
//!   (which leaves the window); counts of an epoch older than the slot's
//!   have left the window already.
//! - Every count that leaves the window (replaced in the ring, or reset) is
//!   added to the *retired* counters, so the totals since the window was
//!   made are exact: retired, plus everything in the ring and the hot
//!   bucket.
//!
//! Readers sum the ring's counters and the hot ones whose epoch is inside
//! the span: O(buckets), never O(calls). A reading must neither miss a
//! count on its way from one place to another nor see it twice: a breaker
//! would see a failure rate its calls never had, and the lifetime totals,
//! exported as counters, would go down. So every step that takes counts
//! out of one place before putting them into another (a move on, a ring
//! slot with counts taken over, a full counter's call taken back, a reset)
//! is a *transfer*, counted in and out on one word, and a reading is taken
//! again if a transfer was in flight when it began or began while it read.
//! Transfers are on the cold paths only: a call that counts takes nothing
//! out.
//!
//! `count_bits` is `log2(bucket in ns)`, so the epoch bits hold any epoch of
//! a 64-bit nanosecond clock, and a bucket's counter holds a quarter of a
//! call per nanosecond of it (262,144 calls of one outcome in a 1 ms bucket),
//! more than one atomic counter can take in real time. In paused tokio time
//! a test can go past it: the calls beyond go to the totals only.

use std::sync::OnceLock;
use std::time::Duration;

use super::{latency, Outcome, SLOTS, SLOW};
use crate::stripe::{stripe, STRIPES};
use crate::sync::{model_point, AtomicU64};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// More buckets than this buys precision nobody can see, at a cost on every
/// read.
pub(crate) const MAX_BUCKETS: u32 = 1000;

/// The hot bucket's start while it is being moved on: no call's time is in
/// the bucket that would start there (but for the first bucket's calls,
/// which belong to the hot bucket being moved, and may count in it).
const MOVING: u64 = u64::MAX;

/// The low half of [`TimeWindow::transfers`]: the transfers in flight.
const IN_FLIGHT: u64 = u32::MAX as u64;

/// What a transfer's end adds to [`TimeWindow::transfers`]: one more done
/// (the high half), one fewer in flight (the low half).
const TRANSFER_DONE: u64 = (1 << 32) - 1;

/// The hot outcome counters an unstriped window keeps inline: successes
/// and failures, which nearly every call of a breaker is. A registry keeps
/// a million windows, and the other eleven counters would take 88 bytes of
/// each; their calls count in the ring instead (a compare-and-swap where a
/// hot call makes an add), and make the window's storage.
const INLINE: usize = Outcome::Failure as usize + 1;

/// One stripe of a striped window's hot counters, on cache lines of its
/// own: calls on several cores write them, and the breaker's state word
/// is read by every call.
#[repr(align(128))]
struct Hot([AtomicU64; SLOTS]);

impl Default for Hot {
    fn default() -> Hot {
        Hot(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    /// At most [`MAX_BUCKETS`]. This and the next are narrow, like the
    /// stripes' pointer, because a registry keeps a million windows.
    buckets: u16,
    /// Low bits of a counter that count; the epoch is above them.
    count_bits: u8,
    track_latency: bool,
    /// When the hot bucket starts (its epoch times the bucket); `MOVING`
    /// while a call moves the hot counters on to a new bucket.
    hot_start: AtomicU64,
    /// Transfers of counts from one place to another (see
    /// [`TimeWindow::transferring`]): how many are in flight in the low
    /// half, how many are done in the high half. Only ever grows.
    transfers: AtomicU64,
    /// An unstriped window's hot success and failure counters (a
    /// registry's). Inline, on the lines of the breaker's state: a key is
    /// rarely called from two cores at once, and aligning them would cost
    /// each of a registry's breakers a quarter of a kilobyte.
    inline: [AtomicU64; INLINE],
    /// A striped window's hot outcome counters, one copy per stripe, made
    /// with the window; none for an unstriped window.
    stripes: Option<Box<[Hot; STRIPES]>>,
    /// Made when first needed (a bucket that saw calls ends, a call is
    /// timed): a registry may hold a million windows, most of which never
    /// need it.
    storage: OnceLock<Storage>,
}

/// The window's counters beyond the hot outcome ones, in one allocation:
/// with latency tracking the hot bucket's histogram first, then the
/// totals of counts that left the window (never reset), then per slot of
/// the ring its counters (the outcomes and slow calls, then with latency
/// tracking the histogram's), and last the reset floor.
struct Storage(Box<[AtomicU64]>);

impl Storage {
    /// Calls of epochs before this one are forgotten (a reset). In the
    /// storage, which a reset makes: a window never reset needs none.
    fn floor(&self) -> &AtomicU64 {
        &self.0[self.0.len() - 1]
    }
}

/// The counters of a window's [`Storage`]: the hot histogram's, then the
/// retired totals and each ring slot's, a bucket's counters each, then
/// the floor.
fn storage_counters(buckets: usize, track_latency: bool) -> usize {
    let histogram = histogram_counters(track_latency);
    histogram + (buckets + 1) * (SLOTS + histogram) + 1
}

/// Adds `count` of each of `counters` to `sums`, pairwise. A reader reads
/// every ring slot and every stripe (a breaker on each failure): when the
/// counters are as many as the sums, which every run of them is but an
/// unstriped window's few hot ones, the loop's length is known and it is
/// unrolled.
#[inline(always)]
fn add_each<const N: usize>(
    sums: &mut [u64; N],
    counters: &[AtomicU64],
    count: &impl Fn(u64) -> u64,
) {
    match <&[AtomicU64; N]>::try_from(counters) {
        Ok(run) => add_pairwise(sums, run, count),
        Err(_) => add_pairwise(sums, counters, count),
    }
}

#[inline(always)]
fn add_pairwise<'a, const N: usize>(
    sums: &mut [u64; N],
    counters: impl IntoIterator<Item = &'a AtomicU64>,
    count: &impl Fn(u64) -> u64,
) {
    for (sum, counter) in sums.iter_mut().zip(counters) {
        *sum += count(counter.load(Acquire));
    }
}

/// A bucket's latency histogram's counters: none without latency tracking.
fn histogram_counters(track_latency: bool) -> usize {
    if track_latency {
        latency::BUCKETS
    } else {
        0
    }
}

/// Counters of one kind, for [`TimeWindow::counter`].
#[derive(Clone, Copy)]
enum At {
    /// The hot bucket's, of one stripe (the latency histogram has one).
    Hot(usize),
    Ring(usize),
}

impl TimeWindow {
    /// A window of `buckets` over `span`; `striped` for one that threads
    /// may call from several cores at once (see [`crate::stripe`]).
    pub(crate) fn new(
        span: Duration,
        buckets: u32,
        track_latency: bool,
        striped: bool,
    ) -> TimeWindow {
        // `Window::validate` guarantees a whole number of nanoseconds, at
        // least a millisecond.
        let bucket_nanos = u64::try_from(span.as_nanos() / u128::from(buckets)).unwrap_or(u64::MAX);
        let count_bits = bucket_nanos.ilog2() as u8;
        let window = TimeWindow {
            bucket_nanos,
            buckets: buckets.min(MAX_BUCKETS) as u16,
            count_bits,
            track_latency,
            hot_start: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
            inline: std::array::from_fn(|_| AtomicU64::new(0)),
            stripes: striped.then(|| Box::new(std::array::from_fn(|_| Hot::default()))),
            storage: OnceLock::new(),
        };
        // loom cannot see the synchronization of std's `OnceLock`: under its
        // models the storage is made at once.
        #[cfg(seawall_loom)]
        window.storage();
        window
    }

    /// Bytes an unstriped window of this shape (a registry's) allocates
    /// once it needs its ring.
    #[cfg(feature = "registry")]
    pub(crate) fn storage_bytes(buckets: u32, track_latency: bool) -> usize {
        storage_counters(buckets as usize, track_latency) * std::mem::size_of::<u64>()
    }

    /// A counter counting past this takes its call back out (see the
    /// module's notes): half the count bits, so that no number of threads
    /// adding at once can carry into the epoch.
    #[inline(always)]
    fn full(&self) -> u64 {
        1 << (self.count_bits - 1)
    }

    /// Counters per bucket: the outcomes and slow calls, and the histogram's.
    fn counters(&self) -> usize {
        SLOTS + self.hot_latency_counters()
    }

    /// The hot bucket's histogram's counters: none without latency tracking.
    fn hot_latency_counters(&self) -> usize {
        histogram_counters(self.track_latency)
    }

    #[inline(always)]
    fn storage(&self) -> &Storage {
        match self.storage.get() {
            Some(storage) => storage,
            None => self.make_storage(),
        }
    }

    #[cold]
    #[inline(never)]
    fn make_storage(&self) -> &Storage {
        let counters = storage_counters(self.buckets.into(), self.track_latency);
        self.storage
            .get_or_init(|| Storage((0..counters).map(|_| AtomicU64::new(0)).collect()))
    }

    /// Counter `i` (an outcome, the slow calls, then the latency buckets) of
    /// the hot bucket or of a ring slot.
    #[inline(always)]
    fn counter<'a>(&'a self, storage: &'a Storage, at: At, i: usize) -> &'a AtomicU64 {
        match at {
            At::Hot(stripe) if i < SLOTS => self.outcome_counter(stripe, i),
            _ => &storage.0[self.stored(at, i)],
        }
    }

    /// Where counter `i` at `at` is in the storage: a ring slot's, or the
    /// hot bucket's histogram's one copy (`i` from [`SLOTS`]); the hot
    /// outcome counters are not there.
    #[inline(always)]
    fn stored(&self, at: At, i: usize) -> usize {
        match at {
            At::Hot(_) => i - SLOTS,
            At::Ring(slot) => self.hot_latency_counters() + (slot + 1) * self.counters() + i,
        }
    }

    /// The total of counter `i`'s counts that left the window.
    #[inline(always)]
    fn retired<'a>(&self, storage: &'a Storage, i: usize) -> &'a AtomicU64 {
        &storage.0[self.hot_latency_counters() + i]
    }

    /// Hot outcome counter `i` of a stripe: a striped window's copy, or an
    /// unstriped window's inline one (`i` below [`INLINE`]). Never in the
    /// storage, so that calls of the hot bucket need none.
    #[inline(always)]
    fn outcome_counter(&self, stripe: usize, i: usize) -> &AtomicU64 {
        match &self.stripes {
            // `%`: a stripe is below `STRIPES` already, and saying so spares
            // the bounds check.
            Some(stripes) => &stripes[stripe % STRIPES].0[i],
            None => &self.inline[i],
        }
    }

    /// The stripes that hold a copy of hot counter `i`: each, for an
    /// outcome counter (none, for an unstriped window's beyond
    /// [`INLINE`]); the first, for the histogram's one.
    fn hot_stripes(&self, i: usize) -> std::ops::Range<usize> {
        let stripes = match self.stripes {
            Some(_) if i < SLOTS => STRIPES,
            None if i < SLOTS => usize::from(i < INLINE),
            _ => 1,
        };
        0..stripes
    }

    #[inline]
    fn epoch_of(&self, word: u64) -> u64 {
        word >> self.count_bits
    }

    #[inline]
    fn count_of(&self, word: u64) -> u64 {
        word & self.count_mask()
    }

    /// The bits of a counter that count.
    #[inline]
    fn count_mask(&self) -> u64 {
        (1 << self.count_bits) - 1
    }

    /// Records one call at `now`; returns the count its outcome's counter
    /// held before (for sampling: it is zero at the first call of a bucket
    /// and every so many calls after). Always inlined into the breaker's
    /// verdict, like the window's own `record_nanos`.
    #[inline(always)]
    pub(crate) fn record(
        &self,
        now: u64,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) -> u64 {
        // Acquire: the hot counters were moved on before their start was
        // announced, so this call's count lands after the move.
        let start = self.hot_start.load(Acquire);
        // One comparison for both ends: before the start wraps around.
        if now.wrapping_sub(start) >= self.bucket_nanos {
            return self.record_elsewhere(now, outcome, slow, latency_bucket);
        }
        model_point();
        self.record_hot(now, outcome, slow, latency_bucket)
    }

    /// Records a call of the hot bucket, whose time `now` is in it.
    #[inline(always)]
    fn record_hot(
        &self,
        now: u64,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) -> u64 {
        let prior = self.add_hot(now, outcome as usize);
        if slow {
            self.add_hot(now, SLOW);
        }
        if let Some(bucket) = latency_bucket.filter(|_| self.track_latency) {
            // The histogram's one copy is the first stripe's.
            let counter = self.hot_counter(0, SLOTS + bucket);
            if counter.fetch_add(1, Relaxed) & self.full() != 0 {
                self.take_back(counter, SLOTS + bucket);
            }
        }
        prior
    }

    #[inline(always)]
    fn add_hot(&self, now: u64, i: usize) -> u64 {
        let stripe = match self.stripes {
            Some(_) => stripe(),
            None if i < INLINE => 0,
            None => return self.add_to_ring_now(now, i),
        };
        let counter = self.outcome_counter(stripe, i);
        let prior = counter.fetch_add(1, Relaxed);
        if prior & self.full() != 0 {
            self.take_back(counter, i);
        }
        prior
    }

    /// The ring slot that counts `epoch`'s calls.
    fn slot_of(&self, epoch: u64) -> usize {
        (epoch % u64::from(self.buckets)) as usize
    }

    /// Counts a call of outcome counter `i` in the ring, at `now`'s epoch:
    /// an unstriped window's outcome without a hot counter. Returns the
    /// count the counter held before, like a hot call.
    #[cold]
    #[inline(never)]
    fn add_to_ring_now(&self, now: u64, i: usize) -> u64 {
        let epoch = now / self.bucket_nanos;
        let slot = self.slot_of(epoch);
        self.add_to_ring(self.storage(), slot, epoch, i, 1)
    }

    /// Counter `i` of a stripe's hot bucket, for a call that counts in it:
    /// only the histogram's are in the storage, so a window that does not
    /// time calls needs none until a bucket with calls moves into the ring.
    #[inline(always)]
    fn hot_counter(&self, stripe: usize, i: usize) -> &AtomicU64 {
        match i < SLOTS {
            true => self.outcome_counter(stripe, i),
            false => self.counter(self.storage(), At::Hot(stripe), i),
        }
    }

    /// A call outside the hot bucket: past its end (this call moves it on,
    /// unless another is), or before its start (a call that read the clock
    /// a while ago).
    #[cold]
    #[inline(never)]
    fn record_elsewhere(
        &self,
        now: u64,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) -> u64 {
        let epoch = now / self.bucket_nanos;
        let start = self.hot_start.load(Acquire);
        if start != MOVING
            && start / self.bucket_nanos < epoch
            && self
                .hot_start
                .compare_exchange(start, MOVING, AcqRel, Acquire)
                .is_ok()
        {
            model_point();
            self.move_hot_on(epoch);
            model_point();
            self.hot_start.store(epoch * self.bucket_nanos, Release);
            // The call that started the bucket counts in it like any other.
            return self.record_hot(now, outcome, slow, latency_bucket);
        }
        let storage = self.storage();
        let slot = self.slot_of(epoch);
        self.add_to_ring(storage, slot, epoch, outcome as usize, 1);
        if slow {
            self.add_to_ring(storage, slot, epoch, SLOW, 1);
        }
        if let Some(bucket) = latency_bucket.filter(|_| self.track_latency) {
            self.add_to_ring(storage, slot, epoch, SLOTS + bucket, 1);
        }
        0
    }

    /// Runs `transfer`, which takes counts out of one place (with a
    /// `Release` write) before it puts them into another, announced to
    /// readers: a reading that misses the counts on their way sees the
    /// transfer begun or in flight, and is taken again.
    fn transferring<R>(&self, transfer: impl FnOnce() -> R) -> R {
        // Relaxed: a reader that misses the counts has read the `Release`
        // write that took them out, which comes after this.
        self.transfers.fetch_add(1, Relaxed);
        let done = transfer();
        // Release: a reader that sees the transfer done sees where the
        // counts went.
        self.transfers.fetch_add(TRANSFER_DONE, Release);
        done
    }

    /// Moves each hot counter's count into the ring and the counter on to
    /// `epoch`'s zero. Only the call that claimed the move runs it.
    fn move_hot_on(&self, epoch: u64) {
        let zero = epoch << self.count_bits;
        self.transferring(|| {
            for i in 0..self.counters() {
                for stripe in self.hot_stripes(i) {
                    let counter = self.hot_counter(stripe, i);
                    let mut word = counter.load(Acquire);
                    model_point();
                    loop {
                        match counter.compare_exchange_weak(word, zero, AcqRel, Acquire) {
                            Ok(_) => break,
                            Err(actual) => word = actual,
                        }
                    }
                    let (from, count) = (self.epoch_of(word), self.count_of(word));
                    if count > 0 {
                        let slot = self.slot_of(from);
                        self.add_to_ring(self.storage(), slot, from, i, count);
                    }
                }
            }
        });
    }

    /// Adds `n` calls of `epoch` to counter `i` of ring slot `slot`; taking
    /// the slot over from an older epoch, whose count goes to the retired
    /// totals, is a transfer. Returns the epoch's count before.
    fn add_to_ring(&self, storage: &Storage, slot: usize, epoch: u64, i: usize, n: u64) -> u64 {
        let counter = self.counter(storage, At::Ring(slot), i);
        let room = |word: u64| self.full() - self.count_of(word).min(self.full());
        let mut word = counter.load(Acquire);
        model_point();
        loop {
            let held = self.epoch_of(word);
            let (next, left) = if held > epoch {
                // The slot holds a later lap: this epoch left the window.
                self.retire(storage, i, n);
                return 0;
            } else if held == epoch {
                let added = n.min(room(word));
                (word + added, n - added)
            } else {
                let added = n.min(self.full());
                ((epoch << self.count_bits) | added, n - added)
            };
            let swap = || counter.compare_exchange_weak(word, next, AcqRel, Acquire);
            let swapped = if held < epoch && self.count_of(word) > 0 {
                // The older epoch's count leaves for the retired totals.
                self.transferring(|| {
                    let swapped = swap();
                    if swapped.is_ok() {
                        model_point();
                        self.retire(storage, i, self.count_of(word));
                    }
                    swapped
                })
            } else {
                swap()
            };
            match swapped {
                Ok(_) => {
                    self.retire(storage, i, left);
                    return if held == epoch {
                        self.count_of(word)
                    } else {
                        0
                    };
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Takes a call back out of a hot counter that is full, into the totals
    /// (a transfer); unless the count was moved on meanwhile, taking it
    /// along.
    #[cold]
    fn take_back(&self, counter: &AtomicU64, i: usize) {
        self.transferring(|| {
            let mut word = counter.load(Relaxed);
            while word & self.full() != 0 {
                match counter.compare_exchange_weak(word, word - 1, Release, Relaxed) {
                    Ok(_) => return self.retire(self.storage(), i, 1),
                    Err(actual) => word = actual,
                }
            }
        })
    }

    /// Keeps `n` calls of counter `i` in the lifetime totals only.
    fn retire(&self, storage: &Storage, i: usize, n: u64) {
        if n > 0 {
            self.retired(storage, i).fetch_add(n, Relaxed);
        }
    }

    /// Counts one call in the lifetime totals only.
    pub(crate) fn record_retired(
        &self,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) {
        let storage = self.storage();
        self.retire(storage, outcome as usize, 1);
        if slow {
            self.retire(storage, SLOW, 1);
        }
        if let Some(bucket) = latency_bucket.filter(|_| self.track_latency) {
            self.retire(storage, SLOTS + bucket, 1);
        }
    }

    /// Runs `read` until no transfer was in flight when it began, nor began
    /// while it ran: then it missed no count on its way (see the module's
    /// notes).
    fn read_whole(&self, mut read: impl FnMut()) {
        let mut tries = 0u32;
        loop {
            // Acquire: the transfers done before are seen where they put
            // their counts.
            let before = self.transfers.load(Acquire);
            if before & IN_FLIGHT == 0 {
                read();
                // The reads are `Acquire` loads: this one comes after them.
                if self.transfers.load(Acquire) == before {
                    return;
                }
            }
            // A transfer is a few atomic operations, unless its thread was
            // preempted.
            model_point();
            tries += 1;
            if tries < 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Sums counters `first..first + N` over the window at `now`, the
    /// ring's and the hot bucket's, read whole (see
    /// [`read_whole`](Self::read_whole)).
    fn sum<const N: usize>(&self, now: u64, first: usize, sums: &mut [u64; N]) {
        self.read_whole(|| {
            sums.fill(0);
            self.read_sum(now, first, sums);
        });
    }

    fn read_sum<const N: usize>(&self, now: u64, first: usize, sums: &mut [u64; N]) {
        let current = now / self.bucket_nanos;
        let storage = self.storage.get();
        // No storage: no reset made one.
        let floor = storage.map_or(0, |storage| storage.floor().load(Acquire));
        let oldest = (current + 1)
            .saturating_sub(u64::from(self.buckets))
            .max(floor);
        // A reset after `now`: nothing of the window is left.
        let Some(span) = current.checked_sub(oldest) else {
            return;
        };
        // One comparison: epochs before `oldest` wrap above the span. The
        // counter's layout copied in, not read through `self`: after every
        // acquire load of a counter it would be read again.
        let (bits, mask) = (self.count_bits, self.count_mask());
        let in_window = move |word: u64| match (word >> bits).wrapping_sub(oldest) <= span {
            true => word & mask,
            false => 0,
        };
        self.add_counts(storage, first, sums, in_window);
    }

    /// Adds `count` of each ring and hot counter `first..first + N` to
    /// `sums`: what a reading of the window and of the totals share. A
    /// reading is of the outcome counters (`first` zero) or of the
    /// histogram's (`first` [`SLOTS`]), never of both.
    fn add_counts<const N: usize>(
        &self,
        storage: Option<&Storage>,
        first: usize,
        sums: &mut [u64; N],
        count: impl Fn(u64) -> u64,
    ) {
        debug_assert!(first + N <= SLOTS || first >= SLOTS);
        if let Some(storage) = storage {
            for slot in 0..self.buckets as usize {
                let at = self.stored(At::Ring(slot), first);
                add_each(sums, &storage.0[at..at + N], &count);
                model_point();
            }
        }
        if first < SLOTS {
            // Stripe by stripe: a model may run other threads between them.
            match &self.stripes {
                Some(stripes) => {
                    for stripe in stripes.iter() {
                        add_each(sums, &stripe.0[first..], &count);
                        model_point();
                    }
                }
                // Beyond them, an unstriped window's outcomes count in the
                // ring.
                None => {
                    add_each(sums, self.inline.get(first..).unwrap_or(&[]), &count);
                    model_point();
                }
            }
        } else if let Some(storage) = storage {
            // The histogram's hot counters: one copy, made with the storage.
            let at = self.stored(At::Hot(0), first);
            add_each(sums, &storage.0[at..at + N], &count);
            model_point();
        }
    }

    pub(crate) fn counts(&self, now: u64) -> [u64; SLOTS] {
        let mut counts = [0; SLOTS];
        self.sum(now, 0, &mut counts);
        counts
    }

    pub(crate) fn snapshot(&self, now: u64) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let latency = self.track_latency.then(|| {
            let mut latency = [0; latency::BUCKETS];
            self.sum(now, SLOTS, &mut latency);
            latency.to_vec()
        });
        (self.counts(now), latency)
    }

    /// Every call ever recorded, by outcome: never reset.
    pub(crate) fn totals(&self) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let latency = self.track_latency.then(|| {
            let mut latency = [0; latency::BUCKETS];
            self.total(SLOTS, &mut latency);
            latency.to_vec()
        });
        (self.total_counts(), latency)
    }

    /// The outcome totals alone: read without allocating.
    pub(crate) fn total_counts(&self) -> [u64; SLOTS] {
        let mut counts = [0; SLOTS];
        self.total(0, &mut counts);
        counts
    }

    /// Totals of counters `first..first + sums.len()`: retired, the ring
    /// and the hot bucket, read whole like the window's sums, so that a
    /// reading is never below the one before.
    fn total<const N: usize>(&self, first: usize, sums: &mut [u64; N]) {
        self.read_whole(|| {
            sums.fill(0);
            self.read_totals(first, sums);
        });
    }

    fn read_totals<const N: usize>(&self, first: usize, sums: &mut [u64; N]) {
        let storage = self.storage.get();
        if let Some(storage) = storage {
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum += self.retired(storage, first + i).load(Acquire);
            }
            model_point();
        }
        let mask = self.count_mask();
        self.add_counts(storage, first, sums, move |word| word & mask);
    }

    /// Forgets the calls recorded before `now`: the older buckets by the
    /// floor, `now`'s own by zeroing its counts (retiring them).
    pub(crate) fn reset(&self, now: u64) {
        let current = now / self.bucket_nanos;
        let storage = self.storage();
        storage.floor().fetch_max(current, AcqRel);
        let slot = self.slot_of(current);
        let zero = current << self.count_bits;
        // A transfer: the counts zeroed go to the retired totals.
        self.transferring(|| {
            for i in 0..self.counters() {
                for at in std::iter::once(At::Ring(slot)).chain(self.hot_stripes(i).map(At::Hot)) {
                    let counter = self.counter(storage, at, i);
                    let mut word = counter.load(Acquire);
                    while self.epoch_of(word) == current && word != zero {
                        match counter.compare_exchange_weak(word, zero, AcqRel, Acquire) {
                            Ok(_) => {
                                self.retire(storage, i, self.count_of(word));
                                break;
                            }
                            Err(actual) => word = actual,
                        }
                    }
                }
            }
        });
    }
}

impl std::fmt::Debug for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeWindow")
            .field("bucket", &Duration::from_nanos(self.bucket_nanos))
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

/// A window of `buckets` buckets of a millisecond each, for the tests
/// and the models.
#[cfg(test)]
fn of_millis(buckets: u32, striped: bool) -> TimeWindow {
    TimeWindow::new(
        Duration::from_millis(u64::from(buckets)),
        buckets,
        false,
        striped,
    )
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use std::sync::atomic::AtomicU64 as Clock;
    use std::sync::{Arc, Barrier};

    use super::*;

    const MS: u64 = 1_000_000;

    fn window(buckets: u32) -> TimeWindow {
        of_millis(buckets, true)
    }

    /// Both kinds of window: striped, and unstriped (a registry's, whose
    /// hot bucket keeps only successes and failures inline).
    fn windows(buckets: u32) -> [TimeWindow; 2] {
        [true, false].map(|striped| of_millis(buckets, striped))
    }

    fn count(counts: [u64; SLOTS], outcome: Outcome) -> u64 {
        counts[outcome as usize]
    }

    /// A reading of the latency histogram adds its hot bucket's counters
    /// (one copy, beside the outcomes' stripes) to the ring's, in the
    /// window and in the totals.
    #[test]
    fn a_reading_adds_the_hot_buckets_latencies_to_the_rings() {
        for striped in [true, false] {
            let w = TimeWindow::new(Duration::from_millis(10), 10, true, striped);
            w.record(0, Outcome::Success, false, Some(3));
            // The next bucket's first call moves the first into the ring.
            w.record(2 * MS, Outcome::Failure, false, Some(3));
            w.record(2 * MS, Outcome::Success, false, Some(5));
            let (counts, latency) = w.snapshot(2 * MS);
            let (totals, lifetime) = w.totals();
            for (counts, latency) in [(counts, latency), (totals, lifetime)] {
                let latency = latency.expect("latency is tracked");
                assert_eq!((latency[3], latency[5]), (2, 1), "striped: {striped}");
                assert_eq!(latency.iter().sum::<u64>(), 3, "striped: {striped}");
                let outcomes = (
                    count(counts, Outcome::Success),
                    count(counts, Outcome::Failure),
                );
                assert_eq!(outcomes, (2, 1), "striped: {striped}");
            }
        }
    }

    #[test]
    fn a_bucket_counts_from_its_first_call_to_the_span() {
        let w = window(10);
        w.record(0, Outcome::Failure, false, None);
        w.record(3 * MS + 7, Outcome::Success, true, None);
        assert_eq!(count(w.counts(9 * MS + 999_999), Outcome::Failure), 1);
        let later = w.counts(10 * MS);
        assert_eq!(
            (
                count(later, Outcome::Failure),
                count(later, Outcome::Success),
                later[SLOW]
            ),
            (0, 1, 1)
        );
        assert_eq!(w.counts(13 * MS), [0; SLOTS]);
        assert_eq!(count(w.totals().0, Outcome::Failure), 1);
    }

    /// A window that does not time calls takes its storage (its ring) only
    /// when a bucket that saw calls ends: a registry's key called once, or
    /// within one bucket, carries none.
    #[test]
    fn a_window_makes_its_ring_when_a_bucket_with_calls_ends() {
        for striped in [false, true] {
            let w = of_millis(10, striped);
            w.record(5 * MS + 1, Outcome::Failure, false, None);
            // An unstriped window counts slow calls in the ring (see the
            // next test).
            w.record(5 * MS + 2, Outcome::Success, striped, None);
            assert!(w.storage.get().is_none(), "no ring for one bucket's calls");
            let counts = w.counts(5 * MS + 3);
            assert_eq!(
                (
                    count(counts, Outcome::Failure),
                    count(counts, Outcome::Success),
                    counts[SLOW]
                ),
                (1, 1, u64::from(striped)),
                "striped: {striped}"
            );
            assert_eq!(count(w.totals().0, Outcome::Success), 1);
            assert!(w.storage.get().is_none(), "reading makes no storage");
            w.record(6 * MS, Outcome::Success, false, None);
            assert!(
                w.storage.get().is_some(),
                "the first bucket's calls moved to the ring"
            );
            let counts = w.counts(6 * MS);
            assert_eq!(
                (
                    count(counts, Outcome::Failure),
                    count(counts, Outcome::Success)
                ),
                (1, 2),
                "striped: {striped}"
            );
            assert_eq!(count(w.counts(15 * MS + 1), Outcome::Success), 1);
            assert_eq!(count(w.totals().0, Outcome::Success), 2);
        }
    }

    /// An unstriped window (a registry's) keeps only successes and
    /// failures in its hot bucket: every other outcome, and slow calls,
    /// count in the ring at once, in the hot bucket's epoch, and are read,
    /// moved on, reset and totalled like the hot bucket's.
    #[test]
    fn an_unstriped_window_counts_its_other_outcomes_in_the_ring() {
        let w = of_millis(10, false);
        w.record(5 * MS + 1, Outcome::Success, false, None);
        w.record(5 * MS + 2, Outcome::Failure, false, None);
        assert!(
            w.storage.get().is_none(),
            "successes and failures are inline"
        );
        assert_eq!(w.record(5 * MS + 3, Outcome::Timeout, true, None), 0);
        assert_eq!(w.record(5 * MS + 4, Outcome::Timeout, false, None), 1);
        w.record(5 * MS + 5, Outcome::ShortCircuited, false, None);
        assert!(
            w.storage.get().is_some(),
            "a timeout is counted in the ring"
        );
        let at = |counts: [u64; SLOTS]| {
            [
                Outcome::Success,
                Outcome::Failure,
                Outcome::Timeout,
                Outcome::ShortCircuited,
            ]
            .map(|outcome| count(counts, outcome))
        };
        assert_eq!(at(w.counts(5 * MS + 6)), [1, 1, 2, 1]);
        assert_eq!(w.counts(5 * MS + 6)[SLOW], 1);
        w.record(6 * MS, Outcome::Timeout, false, None);
        assert_eq!(at(w.counts(6 * MS)), [1, 1, 3, 1]);
        assert_eq!(at(w.counts(15 * MS)), [0, 0, 1, 0], "epoch 5 has left");
        w.reset(15 * MS);
        w.record(15 * MS + 1, Outcome::Success, false, None);
        w.record(15 * MS + 2, Outcome::Timeout, false, None);
        w.reset(15 * MS + 3);
        assert_eq!(at(w.counts(15 * MS + 4)), [0, 0, 0, 0]);
        assert_eq!(at(w.totals().0), [2, 1, 4, 1]);
    }

    #[test]
    fn a_late_call_counts_in_its_own_bucket() {
        let w = window(2);
        w.record(0, Outcome::Success, false, None);
        w.record(2 * MS, Outcome::Success, false, None); // epoch 0 has left
        w.record(0, Outcome::Failure, false, None); // read the clock at 0, landed late
        let counts = w.counts(2 * MS);
        assert_eq!(
            (
                count(counts, Outcome::Success),
                count(counts, Outcome::Failure)
            ),
            (1, 0)
        );
        let totals = w.totals().0;
        assert_eq!(
            (
                count(totals, Outcome::Success),
                count(totals, Outcome::Failure)
            ),
            (2, 1)
        );
    }

    /// Threads released together record at the times of a clock that a
    /// driver moves forward half a bucket at a time; returns the epoch of
    /// each call.
    fn concurrent_calls(w: &Arc<TimeWindow>, steps: usize) -> (Vec<(u64, Outcome)>, u64) {
        const THREADS: usize = 4;
        const CALLS: usize = 2_000;
        let clock = Arc::new(Clock::new(0));
        let start = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (w, clock, start) = (w.clone(), clock.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..CALLS)
                        .map(|i| {
                            let now = clock.load(Relaxed);
                            let outcome = match (i + t) % 5 {
                                0 => Outcome::Failure,
                                1 => Outcome::Timeout,
                                _ => Outcome::Success,
                            };
                            w.record(now, outcome, false, None);
                            (now / MS, outcome)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        start.wait();
        for _ in 0..steps {
            clock.fetch_add(MS / 2, Relaxed);
            std::thread::yield_now();
        }
        let calls = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (calls, clock.load(Relaxed))
    }

    fn calls_of(calls: &[(u64, Outcome)], outcome: Outcome, upto: u64) -> u64 {
        calls
            .iter()
            .filter(|(epoch, o)| *o == outcome && *epoch <= upto)
            .count() as u64
    }

    /// Buckets started under concurrent calls, many of them, no slot reused:
    /// every call is in the window, and none in a bucket older than the time
    /// it read (one that raced a bucket's start may land in the newer one).
    #[test]
    fn buckets_started_under_concurrent_calls_count_exactly() {
        for round in 0..20 {
            for w in windows(1000) {
                let w = Arc::new(w);
                let (calls, now) = concurrent_calls(&w, 60);
                for outcome in [Outcome::Success, Outcome::Failure, Outcome::Timeout] {
                    let all = calls_of(&calls, outcome, u64::MAX);
                    assert_eq!(count(w.counts(now), outcome), all, "round {round}");
                    assert_eq!(count(w.totals().0, outcome), all, "round {round}");
                    for upto in 0..=now / MS {
                        let counts = w.counts(upto * MS + MS - 1);
                        assert!(
                            count(counts, outcome) <= calls_of(&calls, outcome, upto),
                            "{outcome:?} up to epoch {upto}, round {round}"
                        );
                    }
                }
            }
        }
    }

    /// Slots taken over by newer buckets under concurrent calls, many laps
    /// of small rings: every call is in the totals once, and once the span
    /// has passed nothing of the laps is left in the window.
    #[test]
    fn rotations_under_concurrent_calls_lose_and_leave_nothing() {
        for round in 0..40 {
            let buckets = [1u32, 2, 3, 10][round % 4];
            for w in windows(buckets) {
                let w = Arc::new(w);
                let (calls, now) = concurrent_calls(&w, 50);
                let totals = w.totals().0;
                for outcome in [Outcome::Success, Outcome::Failure, Outcome::Timeout] {
                    assert_eq!(
                        count(totals, outcome),
                        calls_of(&calls, outcome, u64::MAX),
                        "{outcome:?} in the totals, round {round}"
                    );
                }
                let later = now + u64::from(buckets) * MS;
                w.record(later, Outcome::CacheHit, false, None);
                let counts = w.counts(later);
                assert_eq!(
                    (
                        count(counts, Outcome::Success),
                        count(counts, Outcome::Failure),
                        count(counts, Outcome::Timeout),
                        count(counts, Outcome::CacheHit)
                    ),
                    (0, 0, 0, 1),
                    "round {round}"
                );
            }
        }
    }

    /// Concurrent calls on `w` (see [`concurrent_calls`]) while a thread
    /// reads `read` over and over and checks that no count goes down;
    /// returns the calls.
    fn read_during_concurrent_calls(
        w: &Arc<TimeWindow>,
        read: fn(&TimeWindow) -> [u64; SLOTS],
    ) -> Vec<(u64, Outcome)> {
        use std::sync::atomic::AtomicBool;
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (w, done) = (w.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = [0; SLOTS];
                while !done.load(Acquire) {
                    let counts = read(&w);
                    for (i, (now, before)) in counts.iter().zip(last).enumerate() {
                        assert!(*now >= before, "counter {i}: {before} then {now}");
                    }
                    last = counts;
                }
            })
        };
        let (calls, _) = concurrent_calls(w, 50);
        done.store(true, Release);
        assert!(reader.join().is_ok(), "a reading went down");
        calls
    }

    /// The lifetime totals, read over and over while threads count, move
    /// buckets on and take ring slots over, never go down: a count on its
    /// way from one place to another is never missed by a reading.
    #[test]
    fn lifetime_totals_never_go_down_under_concurrent_calls() {
        for round in 0..40 {
            for w in windows([1u32, 2][round % 2]) {
                let w = Arc::new(w);
                let calls = read_during_concurrent_calls(&w, TimeWindow::total_counts);
                for outcome in [Outcome::Success, Outcome::Timeout] {
                    assert_eq!(
                        count(w.total_counts(), outcome),
                        calls_of(&calls, outcome, u64::MAX),
                        "{outcome:?}, round {round}"
                    );
                }
            }
        }
    }

    /// The window's counts, read over and over while threads count and
    /// move buckets on, never go down while every call is inside the span
    /// read: a reading never misses a count on its way to the ring, which
    /// could make a breaker see a failure rate its calls never had.
    #[test]
    fn window_counts_never_miss_a_moving_count() {
        for round in 0..40 {
            for w in windows(1000) {
                let w = Arc::new(w);
                let calls = read_during_concurrent_calls(&w, |w| w.counts(999 * MS));
                for outcome in [Outcome::Failure, Outcome::Timeout] {
                    assert_eq!(
                        count(w.counts(999 * MS), outcome),
                        calls_of(&calls, outcome, u64::MAX),
                        "{outcome:?}, round {round}"
                    );
                }
            }
        }
    }

    #[test]
    fn reset_forgets_the_current_bucket_but_keeps_the_totals() {
        let w = window(10);
        w.record(MS, Outcome::Failure, false, None);
        w.record(2 * MS, Outcome::Failure, false, None);
        w.reset(2 * MS + 5);
        assert_eq!(w.counts(2 * MS + 6), [0; SLOTS]);
        w.record(2 * MS + 7, Outcome::Success, false, None);
        let counts = w.counts(2 * MS + 8);
        assert_eq!(
            (
                count(counts, Outcome::Success),
                count(counts, Outcome::Failure)
            ),
            (1, 0)
        );
        assert_eq!(count(w.totals().0, Outcome::Failure), 2);
    }

    #[test]
    fn a_full_bucket_counts_on_in_the_totals() {
        let w = window(1);
        let full = 1u64 << (MS.ilog2() - 1);
        for _ in 0..full + 10 {
            w.record(0, Outcome::Success, false, None);
        }
        assert_eq!(count(w.counts(0), Outcome::Success), full);
        assert_eq!(count(w.totals().0, Outcome::Success), full + 10);
        w.record(MS, Outcome::Failure, false, None);
        let counts = w.counts(MS);
        assert_eq!(
            (
                count(counts, Outcome::Success),
                count(counts, Outcome::Failure)
            ),
            (0, 1),
            "the full counter's epoch bits are intact"
        );
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use loom::sync::Arc;

    use super::*;
    use crate::stripe::on_stripe;

    const MS: u64 = 1_000_000;

    fn window(buckets: u32) -> TimeWindow {
        of_millis(buckets, true)
    }

    /// Two calls start the same fresh bucket together: both are counted
    /// (the race that lost calls at a bucket's start).
    #[test]
    fn two_calls_starting_a_bucket_are_both_counted() {
        loom::model(|| {
            let w = Arc::new(window(2));
            let other = {
                let w = w.clone();
                on_stripe(1, move || w.record(5 * MS, Outcome::Success, false, None))
            };
            w.record(5 * MS, Outcome::Success, false, None);
            other.join().unwrap();
            assert_eq!(w.counts(5 * MS)[Outcome::Success as usize], 2);
            assert_eq!(w.totals().0[Outcome::Success as usize], 2);
        });
    }

    /// A reader while a bucket starts never sees more calls than were made.
    #[test]
    fn a_read_while_a_bucket_starts() {
        loom::model(|| {
            let w = Arc::new(window(2));
            let other = {
                let w = w.clone();
                on_stripe(1, move || w.record(5 * MS, Outcome::Success, false, None))
            };
            assert!(w.counts(5 * MS)[Outcome::Success as usize] <= 1);
            other.join().unwrap();
            assert_eq!(w.counts(5 * MS)[Outcome::Success as usize], 1);
        });
    }

    /// Two calls past the hot bucket's end race to move it on (one moves,
    /// the other counts in the hot bucket or in the ring): both are counted
    /// once. (Readers racing a move: `a_read_racing_a_move_misses_nothing`
    /// and `every_stripe_is_read_and_moved_on`.)
    #[test]
    fn calls_racing_a_move_to_a_new_bucket() {
        loom::model(|| {
            let w = Arc::new(window(2));
            w.record(0, Outcome::Failure, false, None);
            let threads: Vec<_> = (0..2)
                .map(|n| {
                    let w = w.clone();
                    on_stripe(n % STRIPES, move || {
                        w.record(MS, Outcome::Success, false, None)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let counts = w.counts(MS);
            assert_eq!(counts[Outcome::Success as usize], 2);
            assert_eq!(counts[Outcome::Failure as usize], 1);
            assert_eq!(w.totals().0[Outcome::Success as usize], 2);
        });
    }

    /// Counts on both stripes: a read sums them, a move to a new bucket
    /// takes every stripe on (a stripe left behind would count its next
    /// calls in the bucket gone by), and a read racing the move counts each
    /// call once at most.
    #[test]
    fn every_stripe_is_read_and_moved_on() {
        loom::model(|| {
            let w = Arc::new(window(2));
            w.record(0, Outcome::Failure, false, None);
            let w1 = w.clone();
            on_stripe(1, move || w1.record(0, Outcome::Failure, false, None))
                .join()
                .unwrap();
            assert_eq!(w.counts(0)[Outcome::Failure as usize], 2);
            let mover = {
                let w = w.clone();
                on_stripe(1, move || {
                    w.record(MS, Outcome::Success, false, None);
                    w.record(MS, Outcome::Success, false, None);
                })
            };
            assert!(w.counts(MS)[Outcome::Failure as usize] <= 2);
            mover.join().unwrap();
            let counts = w.counts(MS);
            assert_eq!(counts[Outcome::Failure as usize], 2);
            assert_eq!(counts[Outcome::Success as usize], 2);
            // The failures' bucket has left the window; the successes' has
            // not.
            let counts = w.counts(2 * MS);
            assert_eq!(counts[Outcome::Failure as usize], 0);
            assert_eq!(counts[Outcome::Success as usize], 2);
        });
    }

    /// A call that found the hot bucket current lands once, before or after
    /// another call moves the bucket on under it.
    #[test]
    fn a_call_racing_a_move_lands_once() {
        loom::model(|| {
            let w = Arc::new(window(2));
            let hot = {
                let w = w.clone();
                on_stripe(1, move || w.record(0, Outcome::Success, false, None))
            };
            let mover = {
                let w = w.clone();
                on_stripe(0, move || w.record(MS, Outcome::Failure, false, None))
            };
            hot.join().unwrap();
            mover.join().unwrap();
            let counts = w.counts(MS);
            assert_eq!(counts[Outcome::Success as usize], 1);
            assert_eq!(counts[Outcome::Failure as usize], 1);
            assert_eq!(w.totals().0[Outcome::Success as usize], 1);
        });
    }

    /// After an idle gap of a whole span, the old hot bucket's counts moved
    /// into the ring must not land in the slot's newer bucket, which calls
    /// of the new epoch may be filling at the same time.
    #[test]
    fn counts_moved_after_an_idle_gap_stay_out_of_the_window() {
        loom::model(|| {
            let w = Arc::new(window(2));
            w.record(0, Outcome::Failure, false, None);
            let threads: Vec<_> = (0..2)
                .map(|n| {
                    let w = w.clone();
                    on_stripe(n % STRIPES, move || {
                        w.record(2 * MS, Outcome::Failure, false, None)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(w.counts(2 * MS)[Outcome::Failure as usize], 2);
            assert_eq!(w.totals().0[Outcome::Failure as usize], 3);
        });
    }

    /// A call of the current bucket and a late one of the bucket whose slot
    /// it takes over race: the late call is counted once, in whichever
    /// bucket it lands (the totals keep it either way).
    #[test]
    fn a_slot_taken_over_under_a_late_call_loses_nothing() {
        loom::model(|| {
            let w = Arc::new(window(1));
            w.record(0, Outcome::Failure, false, None);
            let late = {
                let w = w.clone();
                on_stripe(1, move || w.record(0, Outcome::Failure, false, None))
            };
            w.record(MS, Outcome::Success, false, None);
            late.join().unwrap();
            let counts = w.counts(MS);
            assert_eq!(counts[Outcome::Success as usize], 1);
            assert!(counts[Outcome::Failure as usize] <= 1);
            let totals = w.totals().0;
            assert_eq!(totals[Outcome::Success as usize], 1);
            assert_eq!(totals[Outcome::Failure as usize], 2);
        });
    }

    /// Records `before`, then reads the lifetime failures while another
    /// thread records `call`: the reading is never below the one before,
    /// though the counts it reads may be on their way to the ring or to the
    /// retired totals.
    fn failures_read_during(before: &[(u64, Outcome)], call: (u64, Outcome)) -> Arc<TimeWindow> {
        let w = Arc::new(window(1));
        for &(at, outcome) in before {
            w.record(at, outcome, false, None);
        }
        let failures = w.total_counts()[Outcome::Failure as usize];
        let other = {
            let w = w.clone();
            on_stripe(1, move || w.record(call.0, call.1, false, None))
        };
        let read = w.total_counts()[Outcome::Failure as usize];
        assert!(read >= failures, "{failures} then {read}");
        other.join().unwrap();
        w
    }

    /// The lifetime totals read while a call moves the hot bucket on into
    /// the one-bucket ring, whose slot it takes over.
    #[test]
    fn lifetime_totals_never_go_down() {
        loom::model(|| {
            let failures = [(0, Outcome::Failure), (MS, Outcome::Failure)];
            let w = failures_read_during(&failures, (2 * MS, Outcome::Success));
            assert_eq!(w.total_counts()[Outcome::Success as usize], 1);
        });
    }

    /// The lifetime totals read while a late call takes a ring slot over
    /// from an older bucket.
    #[test]
    fn lifetime_totals_never_go_down_under_a_late_call() {
        loom::model(|| {
            let calls = [
                (0, Outcome::Failure),
                (0, Outcome::Failure),
                (2 * MS, Outcome::Success),
            ];
            let w = failures_read_during(&calls, (MS, Outcome::Failure));
            assert_eq!(w.total_counts()[Outcome::Failure as usize], 3);
        });
    }

    /// A reading while a call moves the hot bucket on sees every call of
    /// the bucket moved, in the hot bucket or in the ring: never the
    /// failures without the successes (a failure rate no call had).
    #[test]
    fn a_read_racing_a_move_misses_nothing() {
        loom::model(|| {
            let w = Arc::new(window(2));
            w.record(0, Outcome::Success, false, None);
            w.record(0, Outcome::Failure, false, None);
            let mover = {
                let w = w.clone();
                on_stripe(1, move || w.record(MS, Outcome::Timeout, false, None))
            };
            let seen = w.counts(MS);
            assert_eq!(
                (
                    seen[Outcome::Success as usize],
                    seen[Outcome::Failure as usize]
                ),
                (1, 1),
                "{seen:?}"
            );
            mover.join().unwrap();
        });
    }

    /// A registry's window, whose hot bucket has successes and failures
    /// only.
    fn unstriped(buckets: u32) -> TimeWindow {
        of_millis(buckets, false)
    }

    /// An unstriped window's timeout counts in the ring at the hot bucket's
    /// epoch while another call moves the hot bucket on: it lands once,
    /// and a reading meanwhile misses neither the success on its way to
    /// the ring nor the timeout counted there before.
    #[test]
    fn an_unstriped_ring_call_racing_a_move_lands_once() {
        loom::model(|| {
            let w = Arc::new(unstriped(2));
            w.record(0, Outcome::Success, false, None);
            w.record(0, Outcome::Timeout, false, None);
            let ring = {
                let w = w.clone();
                loom::thread::spawn(move || w.record(0, Outcome::Timeout, false, None))
            };
            let mover = {
                let w = w.clone();
                loom::thread::spawn(move || w.record(MS, Outcome::Failure, false, None))
            };
            let seen = w.counts(MS);
            assert_eq!(seen[Outcome::Success as usize], 1, "{seen:?}");
            assert!(seen[Outcome::Timeout as usize] >= 1, "{seen:?}");
            ring.join().unwrap();
            mover.join().unwrap();
            let counts = w.counts(MS);
            assert_eq!(counts[Outcome::Timeout as usize], 2);
            assert_eq!(counts[Outcome::Failure as usize], 1);
            assert_eq!(w.totals().0[Outcome::Timeout as usize], 2);
        });
    }

    /// An unstriped window's late timeout races a call of a newer epoch
    /// taking its ring slot over: counted once, in whichever bucket it
    /// lands (the totals keep it either way).
    #[test]
    fn an_unstriped_late_ring_call_racing_a_take_over() {
        loom::model(|| {
            let w = Arc::new(unstriped(1));
            w.record(0, Outcome::Timeout, false, None);
            let late = {
                let w = w.clone();
                loom::thread::spawn(move || w.record(0, Outcome::Timeout, false, None))
            };
            w.record(MS, Outcome::Timeout, false, None);
            late.join().unwrap();
            assert!((1..=2).contains(&w.counts(MS)[Outcome::Timeout as usize]));
            assert_eq!(w.total_counts()[Outcome::Timeout as usize], 3);
        });
    }

    /// A reset racing a call: the call is forgotten with the rest or counted
    /// after, never half; the totals keep it either way.
    #[test]
    fn a_reset_racing_a_call() {
        loom::model(|| {
            let w = Arc::new(window(2));
            w.record(0, Outcome::Failure, false, None);
            let call = {
                let w = w.clone();
                on_stripe(1, move || w.record(0, Outcome::Failure, false, None))
            };
            w.reset(0);
            call.join().unwrap();
            assert!(w.counts(0)[Outcome::Failure as usize] <= 1);
            assert_eq!(w.totals().0[Outcome::Failure as usize], 2);
        });
    }
}
