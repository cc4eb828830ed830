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
//! each lock once a tick.
//!
//! Everything that decides whether an alarm is kept happens under its
//! stripe's lock, so there is no lock-free handshake to lose a wakeup in:
//! an alarm is only set in a stripe the keeper swept recently, and the
//! keeper only parks after it found every stripe empty and marked each as
//! not swept, under its lock. A call that finds its stripe not swept arms a
//! tokio timer instead (and wakes the keeper), so a keeper that is parked,
//! failed to start or is gone (a child process after `fork` has no thread
//! but the one that forked) never holds a deadline.

use std::sync::TryLockError;
use std::task::Waker;

use crate::sync::{lock, Mutex};

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
struct Padded(Mutex<Stripe>);

struct Stripe {
    slots: Vec<Slot>,
    /// The slots no alarm holds.
    free: Vec<u32>,
    /// No waker in this stripe is due before this.
    earliest: u64,
    /// When the keeper last swept it (never zero); zero before its first
    /// sweep and once it parks.
    swept_at: u64,
}

/// A slot's waker is taken when it fires, or when its alarm is dropped.
struct Slot {
    due: u64,
    waker: Option<Waker>,
}

/// An alarm that is set: it wakes its waker once the time reaches its
/// due time, and is taken back when dropped.
pub(crate) struct Alarm {
    alarms: &'static Alarms,
    stripe: u32,
    slot: u32,
}

impl Alarms {
    pub(crate) fn new() -> Alarms {
        let stripe = || {
            Padded(Mutex::new(Stripe {
                slots: Vec::new(),
                free: Vec::new(),
                earliest: u64::MAX,
                swept_at: 0,
            }))
        };
        Alarms {
            stripes: (0..STRIPES).map(|_| stripe()).collect(),
        }
    }

    /// Sets an alarm that wakes `waker` once the time reaches `due`, in the
    /// calling thread's stripe; none if the keeper has not swept that
    /// stripe lately (`now` is the time), or is sweeping it now. The lock
    /// is only tried: a caller never waits on the keeper (nor, in a child
    /// forked while the parent's keeper held it, for ever).
    pub(crate) fn set(&'static self, due: u64, now: u64, waker: &Waker) -> Option<Alarm> {
        let stripe = thread_stripe();
        let mut kept = match self.stripes[stripe].0.try_lock() {
            Ok(kept) => kept,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if kept.swept_at == 0 || now.saturating_sub(kept.swept_at) > SWEPT_WITHIN {
            return None;
        }
        let slot = Slot {
            due,
            waker: Some(waker.clone()),
        };
        let index = match kept.free.pop() {
            Some(index) => {
                kept.slots[index as usize] = slot;
                index
            }
            None => {
                // Beyond `u32::MAX` alarms in one stripe: arm tokio's timer.
                let index = u32::try_from(kept.slots.len()).ok()?;
                kept.slots.push(slot);
                index
            }
        };
        kept.earliest = kept.earliest.min(due);
        Some(Alarm {
            alarms: self,
            stripe: stripe as u32,
            slot: index,
        })
    }

    /// The keeper's tick: wakes every alarm due by `now` (after letting go
    /// of the stripe's lock, so that a woken task never waits on it) and
    /// says whether any alarm is still set. `woken` is the keeper's buffer,
    /// left empty.
    pub(crate) fn sweep(&self, now: u64, woken: &mut Vec<Waker>) -> bool {
        let mut any_set = false;
        for stripe in self.stripes.iter() {
            {
                let mut kept = lock(&stripe.0);
                kept.swept_at = now.max(1);
                if kept.earliest <= now {
                    let mut earliest = u64::MAX;
                    for slot in kept.slots.iter_mut() {
                        if slot.waker.is_none() {
                            continue;
                        }
                        if slot.due <= now {
                            woken.extend(slot.waker.take());
                        } else {
                            earliest = earliest.min(slot.due);
                        }
                    }
                    kept.earliest = earliest;
                }
                any_set |= kept.slots.len() > kept.free.len();
            }
            for waker in woken.drain(..) {
                // A waker that panics must not take the keeper, and every
                // alarm it would wake after, with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            }
        }
        any_set
    }

    /// Before the keeper parks: true, and every stripe marked as not swept
    /// (so that no alarm is set until it sweeps again), if no alarm is set;
    /// false, and nothing changed, if one is.
    pub(crate) fn close(&self) -> bool {
        let mut kept: Vec<_> = self.stripes.iter().map(|stripe| lock(&stripe.0)).collect();
        if kept.iter().any(|kept| kept.slots.len() > kept.free.len()) {
            return false;
        }
        for kept in &mut kept {
            kept.swept_at = 0;
        }
        true
    }
}

impl Alarm {
    /// Makes the alarm wake `waker` (the task's latest), and wake it again
    /// if it already fired: whoever polls after a wakeup checks the time
    /// itself, so a second wakeup is harmless and a lost one is not.
    pub(crate) fn rewake(&self, waker: &Waker) {
        let mut guard = lock(&self.alarms.stripes[self.stripe as usize].0);
        let kept = &mut *guard;
        let slot = &mut kept.slots[self.slot as usize];
        match &mut slot.waker {
            Some(set) => set.clone_from(waker),
            None => slot.waker = Some(waker.clone()),
        }
        kept.earliest = kept.earliest.min(slot.due);
    }
}

impl Drop for Alarm {
    // Out of line: inlined, it made every deadline's drop glue (which a
    // call answered at once runs too) too big to inline.
    #[inline(never)]
    fn drop(&mut self) {
        let mut kept = lock(&self.alarms.stripes[self.stripe as usize].0);
        let slot = &mut kept.slots[self.slot as usize];
        slot.waker = None;
        slot.due = u64::MAX;
        kept.free.push(self.slot);
    }
}

/// The stripe the calling thread sets its alarms in: threads take the
/// stripes in turn, in the order they first ask. Not `crate::stripe`'s:
/// that one has two stripes, sized for what every breaker keeps per
/// stripe, where the alarms are one set for the process.
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

    /// Alarms of the test's own, swept once at `swept`.
    fn swept_at(swept: u64) -> &'static Alarms {
        let alarms = Box::leak(Box::new(Alarms::new()));
        alarms.sweep(swept, &mut Vec::new());
        alarms
    }

    fn slots_of(alarms: &Alarms) -> usize {
        lock(&alarms.stripes[thread_stripe()].0).slots.len()
    }

    #[test]
    fn an_alarm_wakes_its_task_once_when_due_and_no_sooner() {
        let alarms = swept_at(1);
        let (count, waker) = counting();
        let alarm = alarms
            .set(10, 2, &waker)
            .expect("a swept stripe takes alarms");
        let mut woken = Vec::new();
        assert!(alarms.sweep(9, &mut woken), "the alarm is set");
        assert_eq!(count.0.load(Relaxed), 0, "not due at 9");
        alarms.sweep(10, &mut woken);
        assert_eq!(count.0.load(Relaxed), 1, "due at 10");
        assert!(
            alarms.sweep(11, &mut woken),
            "fired but not dropped: still set"
        );
        assert_eq!(count.0.load(Relaxed), 1, "woken once");
        drop(alarm);
        assert!(!alarms.sweep(12, &mut woken), "dropped: none set");
        assert!(woken.is_empty());
    }

    #[test]
    fn a_rewoken_alarm_wakes_the_latest_waker_even_after_firing() {
        let alarms = swept_at(1);
        let (first, waker) = counting();
        let alarm = alarms.set(10, 2, &waker).unwrap();
        let (second, other) = counting();
        alarm.rewake(&other);
        alarms.sweep(10, &mut Vec::new());
        assert_eq!((first.0.load(Relaxed), second.0.load(Relaxed)), (0, 1));
        // Polled again after it fired (by a spurious wakeup, say): it fires
        // again rather than never.
        alarm.rewake(&other);
        alarms.sweep(11, &mut Vec::new());
        assert_eq!(second.0.load(Relaxed), 2);
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
    fn the_keeper_closes_only_with_no_alarm_set_and_none_is_set_after() {
        let alarms = swept_at(1);
        let (_, waker) = counting();
        let alarm = alarms.set(10, 2, &waker).unwrap();
        assert!(!alarms.close(), "an alarm is set");
        assert!(
            alarms.set(10, 2, &waker).is_some(),
            "a refused close changed nothing"
        );
        drop(alarm);
        assert!(alarms.close());
        assert!(alarms.set(10, 2, &waker).is_none(), "closed until swept");
        alarms.sweep(3, &mut Vec::new());
        assert!(alarms.set(10, 4, &waker).is_some(), "swept again");
    }

    #[test]
    fn a_dropped_alarms_slot_is_used_again() {
        let alarms = swept_at(1);
        let (_, waker) = counting();
        let first = alarms.set(10, 2, &waker).unwrap();
        let second = alarms.set(10, 2, &waker).unwrap();
        drop(first);
        let third = alarms.set(10, 2, &waker).unwrap();
        assert_eq!(slots_of(alarms), 2);
        drop((second, third));
        assert!(alarms.close(), "every slot given back");
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use std::sync::Arc;
    use std::task::Wake;

    use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use loom::thread;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// An alarm set while the keeper sweeps and decides to park: either
    /// the keeper saw it and stays, or it was refused (and its call arms
    /// tokio's timer). Never set with the keeper gone.
    #[test]
    fn an_alarm_set_while_the_keeper_parks_is_kept_or_refused() {
        loom::model(|| {
            let alarms: &'static Alarms = Box::leak(Box::new(Alarms::new()));
            alarms.sweep(1, &mut Vec::new());
            let caller = thread::spawn(move || {
                let count = Arc::new(Count(AtomicUsize::new(0)));
                alarms.set(5, 2, &Waker::from(count))
            });
            let set_seen = alarms.sweep(2, &mut Vec::new());
            let parked = !set_seen && alarms.close();
            let alarm = caller.join().unwrap();
            assert!(
                !(alarm.is_some() && parked),
                "an alarm set with its keeper parked"
            );
        });
    }

    /// An alarm that comes due while it is set and swept: woken once.
    #[test]
    fn a_due_alarm_is_woken_once_whatever_the_order() {
        loom::model(|| {
            let alarms: &'static Alarms = Box::leak(Box::new(Alarms::new()));
            alarms.sweep(1, &mut Vec::new());
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let caller = thread::spawn(move || alarms.set(5, 2, &waker));
            alarms.sweep(5, &mut Vec::new());
            let alarm = caller.join().unwrap();
            alarms.sweep(6, &mut Vec::new());
            assert_eq!(count.0.load(SeqCst), usize::from(alarm.is_some()));
            drop(alarm);
        });
    }
}
