//! Deadlines kept by seawall itself. A call that is still pending after
//! its first poll, under the coarse [`Clock`](crate::Clock), leaves its
//! waker here instead of arming a tokio timer, and the coarse clock's
//! thread, which ticks every millisecond anyway while calls flow, wakes it
//! once its deadline has passed.
//!
//! Why not tokio's timer: arming one per call and cancelling it when the
//! answer comes made a call about ten times dearer in a busy runtime
//! (BENCHMARKS.md, Round 9), more than everything else a Policy does.
//! Setting an alarm is a lock that nobody else wants: the alarms are kept
//! in stripes, each behind a lock of its own on cache lines of its own,
//! and each thread sets its alarms in its own stripe; the keeper takes
//! each lock once a tick. Taking one back takes no lock: it leaves its slot
//! in its stripe's one cell for taken-back slots, by a compare-and-swap,
//! and the stripe's next alarm takes the slot over (with its waker, when
//! it wakes the same task, as a task's calls one after another do), or the
//! keeper frees it at its next sweep. Only when the cell is full does
//! taking one back lock the stripe and free its slot at once.
//!
//! Everything that decides whether an alarm is kept happens under its
//! stripe's lock, so there is no lock-free handshake to lose a wakeup in:
//! an alarm is only set in a stripe the keeper swept recently, and before
//! the keeper parks it marks every stripe as not swept, under its lock,
//! and learns when the first alarm still set is due, which it wakes for.
//! A call that finds its stripe not swept arms a tokio timer instead (and
//! wakes the keeper), so a keeper that is parked, failed to start or is
//! gone (a child process after `fork` has no thread but the one that
//! forked) never holds a deadline it will not wake for.

use std::sync::TryLockError;
use std::task::Waker;

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::sync::{lock, AtomicU32, Mutex, MutexGuard};

/// How many stripes: threads take them in turn, so up to this many
/// threads set alarms without ever meeting on a lock.
const STRIPES: usize = 16;

/// A stripe the keeper has not swept for this long (nanoseconds, five of
/// its ticks) is not trusted with an alarm: the keeper is parked, starved
/// or gone. Short, because a child process after `fork` inherits the
/// stripes as the parent's keeper last swept them, and only this bounds
/// how long after the fork the child may still set an alarm nobody sweeps.
const SWEPT_WITHIN: u64 = 5_000_000;

/// The alarms of the process (one [`Alarms`] for all: the keeper is one
/// thread).
#[cfg(not(seawall_loom))]
pub(crate) fn alarms() -> &'static Alarms {
    static ALARMS: std::sync::OnceLock<Alarms> = std::sync::OnceLock::new();
    ALARMS.get_or_init(Alarms::new)
}

// The models build alarms of their own, and their clocks never set one
// through a call's deadline.
#[cfg(seawall_loom)]
pub(crate) fn alarms() -> &'static Alarms {
    unreachable!("a model's clock sets no alarms")
}

/// Striped alarms; times are nanoseconds on the clock's alarm time
/// (`crate::clock::alarm_now`).
pub(crate) struct Alarms {
    stripes: Box<[Padded]>,
}

/// A stripe on cache lines of its own.
#[repr(align(128))]
struct Padded {
    kept: Mutex<Stripe>,
    /// The slot of an alarm taken back and not yet freed ([`NONE`] if
    /// none): the next alarm set in the stripe takes it over, its waker
    /// too when it wakes the same task (a task's calls, one after another,
    /// take the same slot), and the keeper frees it at its next sweep.
    /// Taking an alarm back is then one locked write on the stripe's line,
    /// not a lock's two and the waker's drop. Written without the lock
    /// only from [`NONE`], by a compare-and-swap (two threads may share a
    /// stripe, and an overwritten slot would never be freed); back to
    /// [`NONE`] only under the lock. While the keeper is parked, the cell
    /// keeps its slot's waker until the keeper sweeps again: one waker
    /// (of a task that may be done) per stripe at most.
    dropped: AtomicU32,
}

/// No slot, in [`Padded::dropped`].
const NONE: u32 = u32::MAX;

/// Alarms are kept on a wheel of [`SPOKES`] spokes, one per unit of time
/// (`UNIT_SHIFT`): an alarm is on the spoke of the unit it is due in, and a
/// sweep looks only at the spokes of the units since the last one, up to
/// the current one, so its cost follows the alarms that come due, not all
/// those set. An alarm due more than a turn of the wheel away is looked at
/// once a turn. Taking an alarm back leaves its entry on the spoke, dropped
/// by the sweep that finds it no longer there.
struct Stripe {
    slots: Vec<Slot>,
    /// The slots no alarm holds.
    free: Vec<u32>,
    /// Each spoke's entries: slots, by index. Made at the first alarm.
    wheel: Vec<Vec<u32>>,
    /// The first unit a sweep has not finished with: the one the last
    /// sweep was in (alarms due later in it were left for the next).
    next_unit: u64,
    /// When the keeper last swept it (never zero); zero before its first
    /// sweep and once it parks.
    swept_at: u64,
    /// Whether an alarm was set since the last sweep.
    set_lately: bool,
}

/// How many spokes: a turn of the wheel is 256 units, about 268 ms.
const SPOKES: u64 = 256;
/// A unit of time is 2^20 ns, about 1.05 ms: one of the keeper's ticks.
const UNIT_SHIFT: u32 = 20;

/// A slot's waker is taken when it fires, or when its alarm is dropped.
struct Slot {
    /// The unit whose spoke holds the alarm's entry.
    unit: u64,
    due: u64,
    waker: Option<Waker>,
}

/// An alarm that is set: it wakes its waker once the time reaches its
/// due time, and is taken back when dropped.
pub(crate) struct Alarm {
    alarms: &'static Alarms,
    stripe: u32,
    slot: u32,
    due: u64,
}

impl Alarms {
    pub(crate) fn new() -> Alarms {
        let stripe = || Padded {
            kept: Mutex::new(Stripe {
                slots: Vec::new(),
                free: Vec::new(),
                wheel: Vec::new(),
                next_unit: 0,
                swept_at: 0,
                set_lately: false,
            }),
            dropped: AtomicU32::new(NONE),
        };
        Alarms {
            stripes: (0..STRIPES).map(|_| stripe()).collect(),
        }
    }

    /// Sets an alarm that wakes `waker` once the time reaches `due`, in the
    /// calling thread's stripe; none if the keeper has not swept that
    /// stripe lately (`now` is the time, or an earlier one, such as the
    /// call's start: lately is then as of that time), or is sweeping it
    /// now. The lock is only tried: a caller never waits on the keeper
    /// (nor, in a child forked while the parent's keeper held it, for
    /// ever).
    pub(crate) fn set(&'static self, due: u64, now: u64, waker: &Waker) -> Option<Alarm> {
        let stripe = thread_stripe();
        let padded = &self.stripes[stripe];
        let mut kept = match padded.kept.try_lock() {
            Ok(kept) => kept,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if kept.swept_at == 0 || now.saturating_sub(kept.swept_at) > SWEPT_WITHIN {
            return None;
        }
        let dropped = padded.dropped.load(Acquire);
        let index = if dropped != NONE {
            // A plain store: the lock is held, and no other thread writes
            // it but from NONE.
            padded.dropped.store(NONE, Relaxed);
            match &mut kept.slots[dropped as usize].waker {
                // Cloned only if it wakes another task.
                Some(set) => set.clone_from(waker),
                fired => *fired = Some(waker.clone()),
            }
            dropped
        } else {
            let slot = Slot {
                unit: 0,
                due,
                waker: Some(waker.clone()),
            };
            match kept.free.pop() {
                Some(index) => {
                    kept.slots[index as usize] = slot;
                    index
                }
                None => {
                    // Beyond `u32::MAX - 1` alarms in one stripe (the last
                    // index is NONE): arm tokio's timer.
                    let index = u32::try_from(kept.slots.len())
                        .ok()
                        .filter(|&index| index != NONE)?;
                    kept.slots.push(slot);
                    index
                }
            }
        };
        kept.place(index, due);
        kept.set_lately = true;
        Some(Alarm {
            alarms: self,
            stripe: stripe as u32,
            slot: index,
            due,
        })
    }

    /// The keeper's tick: wakes every alarm due by `now` (after letting go
    /// of the stripe's lock, so that a woken task never waits on it) and
    /// says whether any alarm was set since the last tick (the alarms are
    /// in use). `woken` is the keeper's buffer, left empty.
    pub(crate) fn sweep(&self, now: u64, woken: &mut Vec<Waker>) -> bool {
        let mut set_lately = false;
        for stripe in self.stripes.iter() {
            set_lately |= stripe.lock_freed().sweep(now, woken);
            for waker in woken.drain(..) {
                // A waker that panics must not take the keeper, and every
                // alarm it would wake after, with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            }
        }
        set_lately
    }

    /// Before the keeper parks: marks every stripe as not swept, so that no
    /// alarm is set until it sweeps again (calls arm tokio's timer, and
    /// wake it), and says when the first alarm still set comes due, which
    /// the keeper must wake for; none if no alarm is set.
    pub(crate) fn close(&self) -> Option<u64> {
        let mut wake_at = None;
        for stripe in self.stripes.iter() {
            let mut kept = stripe.lock_freed();
            kept.swept_at = 0;
            let set = kept.slots.iter().filter(|slot| slot.waker.is_some());
            if let Some(due) = set.map(|slot| slot.due).min() {
                wake_at = Some(wake_at.map_or(due, |earlier: u64| earlier.min(due)));
            }
        }
        wake_at
    }
}

impl Padded {
    /// The keeper's lock of the stripe, with the slot of the alarm last
    /// taken back freed: not woken, and not waited for by a parked keeper.
    fn lock_freed(&self) -> MutexGuard<'_, Stripe> {
        let mut kept = lock(&self.kept);
        let dropped = self.dropped.swap(NONE, Acquire);
        if dropped != NONE {
            kept.free(dropped);
        }
        kept
    }
}

impl Stripe {
    /// Frees slot `index`, whose alarm was taken back.
    fn free(&mut self, index: u32) {
        self.slots[index as usize].waker = None;
        self.free.push(index);
    }

    fn any_set(&self) -> bool {
        self.slots.len() > self.free.len()
    }

    /// Puts slot `index`'s entry on the spoke of the unit `due` falls in,
    /// or of the first unit the sweeps have not finished with, if they are
    /// past it.
    fn place(&mut self, index: u32, due: u64) {
        if self.wheel.is_empty() {
            self.wheel = (0..SPOKES).map(|_| Vec::new()).collect();
        }
        let unit = (due >> UNIT_SHIFT).max(self.next_unit);
        let slot = &mut self.slots[index as usize];
        slot.unit = unit;
        slot.due = due;
        self.wheel[(unit % SPOKES) as usize].push(index);
    }

    /// Takes the wakers of the alarms due by `now` on the spokes of the
    /// units since the last sweep, up to the one `now` is in (at most a
    /// turn of them); says whether an alarm was set since the last sweep.
    fn sweep(&mut self, now: u64, woken: &mut Vec<Waker>) -> bool {
        self.swept_at = now.max(1);
        let set_lately = std::mem::take(&mut self.set_lately);
        let current = now >> UNIT_SHIFT;
        let first = self.next_unit.max(current.saturating_sub(SPOKES - 1));
        self.next_unit = self.next_unit.max(current);
        if !self.any_set() {
            if !self.slots.is_empty() {
                // Entries left on the spokes name slots that are gone.
                self.slots.clear();
                self.free.clear();
                self.wheel.iter_mut().for_each(Vec::clear);
            }
            return set_lately;
        }
        let Stripe { slots, wheel, .. } = self;
        for unit in first..=current {
            wheel[(unit % SPOKES) as usize].retain(|&index| {
                let slot = &mut slots[index as usize];
                if slot.waker.is_none() || slot.unit % SPOKES != unit % SPOKES {
                    // Taken back, fired, or a former alarm's entry.
                    return false;
                }
                if slot.unit > unit || slot.due > now {
                    // A later turn's, or due later in the current unit.
                    return true;
                }
                woken.extend(slot.waker.take());
                false
            });
        }
        set_lately
    }
}

impl Alarm {
    /// Makes the alarm wake `waker` (the task's latest), and wake it again
    /// if it already fired: whoever polls after a wakeup checks the time
    /// itself, so a second wakeup is harmless and a lost one is not. True
    /// if the keeper must be woken for it: an alarm that fired is set
    /// again, and the keeper, parked, sleeps until the alarms it knew of.
    pub(crate) fn rewake(&self, waker: &Waker) -> bool {
        let mut kept = lock(&self.alarms.stripes[self.stripe as usize].kept);
        let slot = &mut kept.slots[self.slot as usize];
        match &mut slot.waker {
            Some(set) => {
                set.clone_from(waker);
                false
            }
            None => {
                slot.waker = Some(waker.clone());
                kept.place(self.slot, self.due);
                kept.swept_at == 0
            }
        }
    }

    /// When the alarm is due.
    pub(crate) fn due(&self) -> u64 {
        self.due
    }
}

impl Drop for Alarm {
    // Out of line: inlined, it made every deadline's drop glue (which a
    // call answered at once runs too) too big to inline.
    #[inline(never)]
    fn drop(&mut self) {
        let stripe = &self.alarms.stripes[self.stripe as usize];
        if stripe
            .dropped
            .compare_exchange(NONE, self.slot, Release, Relaxed)
            .is_err()
        {
            lock(&stripe.kept).free(self.slot);
        }
    }
}

/// The stripe the calling thread sets its alarms in: threads take the
/// stripes in turn, in the order they first ask. Not `crate::stripe`'s:
/// that one has eight stripes, sized for what every breaker keeps per
/// stripe, where the alarms are one set for the process and can afford
/// twice as many.
#[cfg(not(seawall_loom))]
fn thread_stripe() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Relaxed) % STRIPES);
        }
        stripe.get()
    })
}

#[cfg(seawall_loom)]
fn thread_stripe() -> usize {
    crate::stripe::stripe()
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A unit of the wheel, in nanoseconds.
    const U: u64 = 1 << UNIT_SHIFT;

    /// A waker that counts its wakeups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn woken(count: &Count) -> usize {
        count.0.load(Relaxed)
    }

    /// Alarms of the test's own, swept once at `swept`.
    fn swept_at(swept: u64) -> &'static Alarms {
        let alarms = Box::leak(Box::new(Alarms::new()));
        alarms.sweep(swept, &mut Vec::new());
        alarms
    }

    fn stripe_of(alarms: &Alarms) -> MutexGuard<'_, Stripe> {
        lock(&alarms.stripes[thread_stripe()].kept)
    }

    #[test]
    fn an_alarm_wakes_its_task_once_when_due_and_no_sooner() {
        let alarms = swept_at(U);
        let (count, waker) = counting();
        let alarm = alarms
            .set(10 * U + 5, 2 * U, &waker)
            .expect("a swept stripe takes alarms");
        let mut buffer = Vec::new();
        assert!(alarms.sweep(10 * U + 4, &mut buffer), "an alarm was set");
        assert_eq!(woken(&count), 0, "not due yet, in its unit");
        // The next tick is in the next unit: the last one's spoke is
        // looked at again.
        assert!(!alarms.sweep(11 * U + 1, &mut buffer), "none set since");
        assert_eq!(woken(&count), 1, "due");
        alarms.sweep(12 * U, &mut buffer);
        assert_eq!(woken(&count), 1, "woken once");
        drop(alarm);
        assert!(buffer.is_empty());
    }

    #[test]
    fn an_alarm_a_turn_or_more_away_waits_for_its_turn() {
        let alarms = swept_at(U);
        let (count, waker) = counting();
        let due = (2 + 3 * SPOKES) * U;
        let _alarm = alarms.set(due, 2 * U, &waker).unwrap();
        let mut buffer = Vec::new();
        // Every tick of three turns: the spoke comes round three times
        // before the alarm is due.
        for unit in 2..=(2 + 3 * SPOKES) {
            alarms.sweep(unit * U - 1, &mut buffer);
            assert_eq!(
                woken(&count),
                0,
                "woken at unit {unit}, before its due time"
            );
        }
        alarms.sweep(due, &mut buffer);
        assert_eq!(woken(&count), 1);
    }

    #[test]
    fn a_keeper_late_by_more_than_a_turn_still_wakes_every_due_alarm() {
        let alarms = swept_at(U);
        let (count, waker) = counting();
        let _soon = alarms.set(3 * U, 2 * U, &waker).unwrap();
        let _later = alarms.set(200 * U, 2 * U, &waker).unwrap();
        alarms.sweep(1000 * U, &mut Vec::new());
        assert_eq!(woken(&count), 2);
    }

    #[test]
    fn a_rewoken_alarm_wakes_the_latest_waker_even_after_firing() {
        let alarms = swept_at(U);
        let (first, waker) = counting();
        let alarm = alarms.set(10 * U, 2 * U, &waker).unwrap();
        let (second, other) = counting();
        assert!(!alarm.rewake(&other), "not fired: the keeper knows of it");
        alarms.sweep(10 * U, &mut Vec::new());
        assert_eq!((woken(&first), woken(&second)), (0, 1));
        // Polled again after it fired (by a spurious wakeup, say): it fires
        // again at the next sweep rather than never.
        assert!(!alarm.rewake(&other), "the keeper sweeps: it will see it");
        alarms.sweep(10 * U + 1, &mut Vec::new());
        assert_eq!(woken(&second), 2);
        // Fired, and set again while the keeper is parked: it must be woken.
        assert!(alarms.close().is_none(), "nothing left to wake for");
        assert!(alarm.rewake(&other));
    }

    #[test]
    fn a_slot_taken_again_is_not_woken_by_its_former_alarms_entry() {
        let alarms = swept_at(U);
        let (first, waker) = counting();
        drop(alarms.set(5 * U, 2 * U, &waker).unwrap());
        let (second, other) = counting();
        let _again = alarms.set(50 * U, 2 * U, &other).unwrap();
        assert_eq!(stripe_of(alarms).slots.len(), 1, "the slot was taken again");
        alarms.sweep(6 * U, &mut Vec::new());
        assert_eq!((woken(&first), woken(&second)), (0, 0));
        alarms.sweep(50 * U, &mut Vec::new());
        assert_eq!(woken(&second), 1);
    }

    #[test]
    fn no_alarm_is_set_where_the_keeper_has_not_swept_lately() {
        let (_, waker) = counting();
        let never = Box::leak(Box::new(Alarms::new()));
        assert!(never.set(10, 2, &waker).is_none(), "never swept");
        let alarms = swept_at(100);
        assert!(alarms
            .set(u64::MAX, 100 + SWEPT_WITHIN + 1, &waker)
            .is_none());
        assert!(alarms.set(u64::MAX, 100 + SWEPT_WITHIN, &waker).is_some());
    }

    #[test]
    fn a_closing_keeper_learns_when_the_first_alarm_set_is_due_and_none_is_set_after() {
        let alarms = swept_at(U);
        let (count, waker) = counting();
        assert_eq!(alarms.close(), None, "no alarm set");
        alarms.sweep(2 * U, &mut Vec::new());
        let later = alarms.set(30 * U + 7, 2 * U, &waker).unwrap();
        let first = alarms.set(20 * U + 7, 2 * U, &waker).unwrap();
        let fired = alarms.set(3 * U, 2 * U, &waker).unwrap();
        alarms.sweep(4 * U, &mut Vec::new());
        assert_eq!(woken(&count), 1);
        assert_eq!(
            alarms.close(),
            Some(20 * U + 7),
            "the first due time with a waker to wake"
        );
        assert!(
            alarms.set(10 * U, 4 * U, &waker).is_none(),
            "closed until swept"
        );
        alarms.sweep(5 * U, &mut Vec::new());
        assert!(alarms.set(10 * U, 5 * U, &waker).is_some(), "swept again");
        drop((later, first, fired));
    }

    #[test]
    fn an_alarm_taken_back_is_never_woken_and_its_slot_is_freed_at_the_next_sweep() {
        let alarms = swept_at(U);
        let (count, waker) = counting();
        drop(alarms.set(5 * U, 2 * U, &waker).unwrap());
        assert_eq!(Arc::strong_count(&count), 3, "its slot keeps its waker");
        alarms.sweep(6 * U, &mut Vec::new());
        assert_eq!(woken(&count), 0, "taken back before it was due");
        assert_eq!(Arc::strong_count(&count), 2, "the sweep let its waker go");
        let stripe = stripe_of(alarms);
        assert_eq!((stripe.slots.len(), stripe.free.len()), (0, 0));
    }

    #[test]
    fn the_next_alarm_takes_over_the_slot_and_the_waker_of_the_one_taken_back() {
        let alarms = swept_at(U);
        let (count, waker) = counting();
        drop(alarms.set(5 * U, 2 * U, &waker).unwrap());
        let again = alarms.set(8 * U, 2 * U, &waker).unwrap();
        assert_eq!(again.slot, 0, "the slot taken back");
        assert_eq!(
            Arc::strong_count(&count),
            3,
            "the same task's waker is kept, not cloned again"
        );
        let (other_count, other) = counting();
        drop(again);
        let other_task = alarms.set(9 * U, 2 * U, &other).unwrap();
        assert_eq!(
            (Arc::strong_count(&count), Arc::strong_count(&other_count)),
            (2, 3),
            "another task's alarm wakes its own task"
        );
        alarms.sweep(8 * U + 1, &mut Vec::new());
        assert_eq!(woken(&count), 0, "the slot's former alarm is not woken");
        alarms.sweep(9 * U, &mut Vec::new());
        assert_eq!((woken(&count), woken(&other_count)), (0, 1));
        // Two taken back before a sweep: one waits in the stripe's cell,
        // the other is freed at once; the sweep frees the first.
        let first = alarms.set(20 * U, 10 * U, &waker).unwrap();
        let second = alarms.set(20 * U, 10 * U, &waker).unwrap();
        drop((other_task, first, second));
        alarms.sweep(21 * U, &mut Vec::new());
        assert_eq!(woken(&count), 0);
        let stripe = stripe_of(alarms);
        assert_eq!((stripe.slots.len(), stripe.free.len()), (0, 0));
    }

    #[test]
    fn a_stripe_with_no_alarm_left_lets_its_slots_and_entries_go() {
        let alarms = swept_at(U);
        let (_, waker) = counting();
        let first = alarms.set(10 * U, 2 * U, &waker).unwrap();
        let second = alarms.set(10 * U, 2 * U, &waker).unwrap();
        drop(first);
        let third = alarms.set(10 * U, 2 * U, &waker).unwrap();
        assert_eq!(
            stripe_of(alarms).slots.len(),
            2,
            "a dropped alarm's slot is used again"
        );
        drop((second, third));
        alarms.sweep(3 * U, &mut Vec::new());
        let stripe = stripe_of(alarms);
        assert_eq!((stripe.slots.len(), stripe.free.len()), (0, 0));
        assert!(
            stripe.wheel.iter().all(Vec::is_empty),
            "no entry names a slot that is gone"
        );
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use std::sync::Arc;
    use std::task::Wake;

    use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use loom::thread;

    use super::*;

    const U: u64 = 1 << UNIT_SHIFT;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// An alarm set while the keeper sweeps and parks: either it was
    /// refused (and its call arms tokio's timer), or the keeper wakes by
    /// its due time. Never set with nobody to wake it.
    #[test]
    fn an_alarm_set_while_the_keeper_parks_is_kept_or_refused() {
        loom::model(|| {
            let alarms: &'static Alarms = Box::leak(Box::new(Alarms::new()));
            alarms.sweep(U, &mut Vec::new());
            let caller = thread::spawn(move || {
                let count = Arc::new(Count(AtomicUsize::new(0)));
                alarms.set(5 * U, 2 * U, &Waker::from(count))
            });
            alarms.sweep(2 * U, &mut Vec::new());
            let wake_at = alarms.close();
            if let Some(alarm) = caller.join().unwrap() {
                assert!(
                    wake_at.is_some_and(|at| at <= alarm.due()),
                    "an alarm set with its keeper parked past its due time"
                );
            }
        });
    }

    /// An alarm that comes due while it is set and swept: woken once.
    #[test]
    fn a_due_alarm_is_woken_once_whatever_the_order() {
        loom::model(|| {
            let alarms: &'static Alarms = Box::leak(Box::new(Alarms::new()));
            alarms.sweep(U, &mut Vec::new());
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let caller = thread::spawn(move || alarms.set(5 * U, 2 * U, &waker));
            alarms.sweep(6 * U, &mut Vec::new());
            let alarm = caller.join().unwrap();
            alarms.sweep(7 * U, &mut Vec::new());
            assert_eq!(count.0.load(SeqCst), usize::from(alarm.is_some()));
            drop(alarm);
        });
    }

    /// Every slot of the stripe the model's threads set their alarms in
    /// is free.
    fn all_free(alarms: &Alarms) -> bool {
        let kept = lock(&alarms.stripes[thread_stripe()].kept);
        kept.slots.len() == kept.free.len()
    }

    /// Alarms taken back while the keeper sweeps: the next alarm set takes
    /// over one's slot and is woken when due, none taken back is woken
    /// after its drop, and every slot is freed by the sweep after.
    #[test]
    fn a_slot_taken_back_during_a_sweep_is_freed_or_taken_over_once() {
        loom::model(|| {
            let alarms: &'static Alarms = Box::leak(Box::new(Alarms::new()));
            alarms.sweep(U, &mut Vec::new());
            let dropped = Arc::new(Count(AtomicUsize::new(0)));
            let kept = Arc::new(Count(AtomicUsize::new(0)));
            let (dropped_waker, kept_waker) =
                (Waker::from(dropped.clone()), Waker::from(kept.clone()));
            let caller = thread::spawn(move || {
                let first = alarms.set(10 * U, 2 * U, &dropped_waker);
                let second = alarms.set(10 * U, 2 * U, &dropped_waker);
                drop((first, second));
                alarms.set(40 * U, 2 * U, &kept_waker)
            });
            alarms.sweep(3 * U, &mut Vec::new());
            let alarm = caller.join().unwrap();
            alarms.sweep(30 * U, &mut Vec::new());
            assert_eq!(dropped.0.load(SeqCst), 0, "woken after it was taken back");
            assert_eq!(kept.0.load(SeqCst), 0, "woken before it was due");
            alarms.sweep(40 * U, &mut Vec::new());
            assert_eq!(
                kept.0.load(SeqCst),
                usize::from(alarm.is_some()),
                "an alarm set is woken once when due"
            );
            drop(alarm);
            alarms.sweep(41 * U, &mut Vec::new());
            assert!(all_free(alarms), "a slot taken back and never freed");
        });
    }

    /// Two threads of one stripe take their alarms back at once, while the
    /// keeper sweeps: each slot is freed once, none lost to the other.
    #[test]
    fn two_threads_taking_alarms_back_in_one_stripe_lose_no_slot() {
        loom::model(|| {
            let alarms: &'static Alarms = Box::leak(Box::new(Alarms::new()));
            alarms.sweep(U, &mut Vec::new());
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let alarm = alarms.set(10 * U, 2 * U, &waker);
            let other = alarms.set(10 * U, 2 * U, &waker);
            let taker = thread::spawn(move || drop(other));
            drop(alarm);
            alarms.sweep(3 * U, &mut Vec::new());
            taker.join().unwrap();
            alarms.sweep(4 * U, &mut Vec::new());
            assert_eq!(count.0.load(SeqCst), 0);
            assert!(all_free(alarms), "a slot taken back and never freed");
        });
    }
}
