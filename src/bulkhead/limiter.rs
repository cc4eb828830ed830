//! The counting semaphore behind a bulkhead.
//!
//! tokio's `Semaphore` takes a mutex on every release, which would put a lock
//! on the healthy path of every call. Here the permits are spread over
//! shares, one per stripe ([`crate::stripe`]), each on cache lines of its
//! own: a thread takes an idle permit from its stripe's share with one
//! compare-and-swap and gives one back the same way, so calls on two cores
//! write different lines. A share with no idle permit reserves one more
//! from the permits not handed out, under the reservations' lock; a share
//! keeps what it reserved, since releases come back to the share of the
//! thread that releases.
//!
//! A call is refused only when every permit is in use, at one instant.
//! The refusing call drains every share under the lock (their idle
//! permits go back, and each is marked drained, so that a release on it
//! gives its permit straight back too); then the count of permits handed
//! out is the count in use, and it refuses if that is the limit. A later
//! refusal needs no lock while no share has reserved since the drain: it
//! reads the reservations' count, the permits handed out, and the count
//! again.
//!
//! The mutex of the queue guards only waiting calls, and a release looks at
//! it only when the waiting count says someone waits. Permits go to waiters
//! first in, first out, handed over directly, so a newcomer cannot overtake
//! a waiter. A waiter is queued before it checks for a free permit once
//! more, and a release frees its permit before it checks for waiters (both
//! sequentially consistent), so one of the two always sees the other: no
//! wakeup is lost.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::adaptive::Controller;
use crate::stripe::{stripe, Lane, Laned, STRIPES};
use crate::sync::{
    lock, model_point, seq_cst_handshake, AtomicBool, AtomicU64, AtomicUsize, Mutex,
};

/// A stripe's share of the permits, on cache lines of its own: the idle
/// permits it holds in the low [`IDLE_BITS`] bits, then whether it is
/// drained, and above that every call it admitted: the compare-and-swap
/// that takes a permit counts the admission in the same write, for
/// nothing.
#[repr(align(128))]
struct Share(AtomicU64);

/// The bits of a share that count its idle permits: the limit is at most
/// `2^20 - 1`.
const IDLE_BITS: u32 = 20;
const IDLE: u64 = (1 << IDLE_BITS) - 1;
/// A drained share holds no idle permit, and a release on it gives its
/// permit back to the permits not handed out.
const DRAINED: u64 = 1 << IDLE_BITS;
const ADMITTED_SHIFT: u32 = IDLE_BITS + 1;
/// One admission: admissions wrap after `2^43` (8.8 trillion).
const ADMITTED: u64 = 1 << ADMITTED_SHIFT;
/// The most calls a bulkhead may allow in flight.
pub(crate) const MAX_LIMIT: usize = IDLE as usize;

/// The permits handed out to the shares (held idle, or in use), on cache
/// lines of its own: written by reservations and by releases on drained
/// shares, read by every refusal.
#[repr(align(128))]
struct HandedOut(AtomicU64);

/// The calling thread's stripe. `%`: a stripe is below `STRIPES` already,
/// and saying so spares the bounds checks.
#[inline(always)]
fn here() -> usize {
    stripe() % STRIPES
}

pub(crate) struct Limiter {
    shares: [Share; STRIPES],
    handed_out: HandedOut,
    /// Bumped by two by every reservation, before it hands a permit out;
    /// odd while every share is drained since the last one. Changed only
    /// with `reservations` locked.
    epoch: AtomicU64,
    reservations: Mutex<()>,
    /// The most permits handed out at once.
    max_handed_out: AtomicUsize,
    limit: AtomicUsize,
    /// How many waiters are queued; changed only with `queue` locked.
    waiting: AtomicUsize,
    rejected: AtomicU64,
    max_queue: usize,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    /// Moves the limit, for an adaptive bulkhead.
    adaptive: Option<Box<Controller>>,
}

struct Waiter {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    fn grant(&self) {
        self.granted.store(true, Release);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }
}

impl Limiter {
    pub(crate) fn new(limit: usize, max_queue: usize) -> Limiter {
        Limiter {
            shares: std::array::from_fn(|_| Share(AtomicU64::new(0))),
            handed_out: HandedOut(AtomicU64::new(0)),
            epoch: AtomicU64::new(0),
            reservations: Mutex::new(()),
            max_handed_out: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            max_queue,
            queue: Mutex::new(VecDeque::new()),
            adaptive: None,
        }
    }

    /// The same limiter, its limit moved by `controller`.
    pub(crate) fn adaptive(mut self, controller: Controller) -> Limiter {
        self.adaptive = Some(Box::new(controller));
        self
    }

    /// When a call starts, if the limit adapts (zero otherwise: no clock
    /// read for a fixed limit).
    #[inline(always)]
    pub(crate) fn start(&self) -> u64 {
        match &self.adaptive {
            Some(controller) => controller.start(),
            None => 0,
        }
    }

    /// A call that started at `started` (by [`start`](Self::start)) is
    /// over, dropped (timed out, refused below) or not: a sample for the
    /// adaptive limit. Called before its permit goes back.
    #[inline(always)]
    pub(crate) fn sample(&self, started: u64, dropped: bool) {
        if started == 0 {
            return;
        }
        if let Some(controller) = &self.adaptive {
            let (in_flight, from) = (self.in_flight(), self.limit());
            if let Some(to) = controller.sample(started, dropped, in_flight, from) {
                // Unless the limit was set from outside meanwhile.
                if self
                    .limit
                    .compare_exchange(from, to, SeqCst, Relaxed)
                    .is_ok()
                {
                    self.limit_moved(from, to);
                }
            }
        }
    }

    pub(crate) fn adaptive_figures(&self) -> Option<super::AdaptiveFigures> {
        self.adaptive
            .as_ref()
            .map(|controller| controller.figures())
    }

    /// Takes a free permit, unless someone is already waiting for one, for
    /// a holder that gives it back with [`release`](Self::release).
    #[inline(always)]
    pub(crate) fn try_take(&self) -> bool {
        self.try_take_at(here())
    }

    /// [`try_take`](Self::try_take) for a caller that knows its stripe.
    #[inline(always)]
    fn try_take_at(&self, at: usize) -> bool {
        self.waiting.load(Relaxed) == 0 && self.take_free(at)
    }

    /// Takes an idle permit from the share `at` (the calling thread's), or
    /// else one more from those not handed out.
    #[inline(always)]
    fn take_free(&self, at: usize) -> bool {
        let share = &self.shares[at].0;
        // Sequentially consistent, for the wakeup argument at the top (a
        // plain load on x86; `ldar` on ARM).
        let word = share.load(SeqCst);
        (word & IDLE != 0
            && share
                .compare_exchange(word, word - 1 + ADMITTED, SeqCst, SeqCst)
                .is_ok())
            || self.take_contended(at)
    }

    /// [`take_free`](Self::take_free) when the share had no idle permit
    /// or changed under it (another thread on the stripe). Out of line,
    /// so that the common take stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn take_contended(&self, at: usize) -> bool {
        let taken = self.shares[at].0.fetch_update(SeqCst, SeqCst, |word| {
            (word & IDLE != 0).then(|| word - 1 + ADMITTED)
        });
        taken.is_ok() || self.reserve(at)
    }

    /// Hands one more permit out, to the share `at` (in use at once), if
    /// fewer than the limit are; else drains every share and tries again,
    /// or refuses.
    fn reserve(&self, at: usize) -> bool {
        let limit = self.limit.load(SeqCst) as u64;
        if self.full_since_drain(limit) {
            return false;
        }
        let _reserving = lock(&self.reservations);
        if self.handed_out.0.load(SeqCst) >= limit {
            self.drain();
            if self.handed_out.0.load(SeqCst) >= limit {
                return false;
            }
        }
        // Before the permit is handed out: a refusal that read the count
        // of permits handed out before it sees the epoch moved.
        let epoch = self.epoch.load(SeqCst);
        self.epoch.store((epoch | 1) + 1, SeqCst);
        let handed_out = self.handed_out.0.fetch_add(1, SeqCst) + 1;
        // No longer drained: its releases come back to it.
        let _ = self.shares[at]
            .0
            .fetch_update(SeqCst, SeqCst, |word| Some((word & !DRAINED) + ADMITTED));
        let handed_out = handed_out as usize;
        if handed_out > self.max_handed_out.load(Relaxed) {
            self.max_handed_out.fetch_max(handed_out, Relaxed);
        }
        true
    }

    /// Whether the last drain left every permit in use, and no share has
    /// reserved since: then a call is refused without the lock. The epoch
    /// is odd while every share is drained, and a reservation moves it
    /// before it hands a permit out, so an epoch unmoved around the read of
    /// the permits handed out means they were all in use when read.
    #[inline]
    fn full_since_drain(&self, limit: u64) -> bool {
        let epoch = self.epoch.load(SeqCst);
        epoch & 1 == 1
            && self.handed_out.0.load(SeqCst) >= limit
            && self.epoch.load(SeqCst) == epoch
    }

    /// Gives every share's idle permits back and marks it drained, so that
    /// releases on it give theirs back too: then the permits handed out are
    /// the permits in use. With `reservations` locked.
    fn drain(&self) {
        for share in &self.shares {
            // The update always applies: `Ok` and `Err` both hold the word
            // it replaced.
            let (Ok(word) | Err(word)) = share
                .0
                .fetch_update(SeqCst, SeqCst, |word| Some((word & !IDLE) | DRAINED));
            model_point();
            let idle = word & IDLE;
            if idle > 0 {
                self.handed_out.0.fetch_sub(idle, SeqCst);
            }
        }
        let epoch = self.epoch.load(SeqCst);
        self.epoch.store(epoch | 1, SeqCst);
    }

    #[inline(always)]
    pub(crate) fn release(&self) {
        if self.waiting.load(SeqCst) != 0 && self.hand_over() {
            return;
        }
        let share = &self.shares[here()].0;
        let word = share.load(SeqCst);
        if word & DRAINED != 0
            || share
                .compare_exchange(word, word + 1, SeqCst, SeqCst)
                .is_err()
        {
            self.give_back_contended(share);
        }
        seq_cst_handshake();
        if self.waiting.load(SeqCst) != 0 {
            self.grant_free();
        }
    }

    /// [`release`](Self::release) when the share is drained (the permit
    /// goes back to those not handed out) or changed under it.
    #[cold]
    #[inline(never)]
    fn give_back_contended(&self, share: &AtomicU64) {
        let kept = share.fetch_update(SeqCst, SeqCst, |word| {
            (word & DRAINED == 0).then_some(word + 1)
        });
        if kept.is_err() {
            self.handed_out.0.fetch_sub(1, SeqCst);
        }
    }

    /// Gives a releasing call's permit to the oldest waiter, unless the limit
    /// was lowered below what is in use (then the permit is retired).
    #[cold]
    fn hand_over(&self) -> bool {
        if self.over_limit() {
            return false;
        }
        let mut queue = lock(&self.queue);
        let Some(waiter) = queue.pop_front() else {
            return false;
        };
        self.waiting.fetch_sub(1, SeqCst);
        // The releasing call's permit goes on in use: one more admitted.
        self.shares[here()].0.fetch_add(ADMITTED, SeqCst);
        drop(queue);
        waiter.grant();
        true
    }

    /// Whether more permits are in use than the limit (it was lowered).
    /// No more are handed out than the limit otherwise, so only then are
    /// the shares drained to count them.
    fn over_limit(&self) -> bool {
        let limit = self.limit.load(SeqCst) as u64;
        if self.handed_out.0.load(SeqCst) <= limit {
            return false;
        }
        let _reserving = lock(&self.reservations);
        self.drain();
        self.handed_out.0.load(SeqCst) > limit
    }

    /// Gives free permits to waiters, oldest first.
    #[cold]
    fn grant_free(&self) {
        let mut queue = lock(&self.queue);
        while !queue.is_empty() && self.take_free(here()) {
            if let Some(waiter) = queue.pop_front() {
                self.waiting.fetch_sub(1, SeqCst);
                waiter.grant();
            }
        }
    }

    /// Joins the queue, if it has room.
    #[cold]
    fn join_queue(&self) -> Option<Arc<Waiter>> {
        let waiter = Arc::new(Waiter {
            granted: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        {
            let mut queue = lock(&self.queue);
            if queue.len() >= self.max_queue {
                return None;
            }
            queue.push_back(Arc::clone(&waiter));
            self.waiting.fetch_add(1, SeqCst);
        }
        seq_cst_handshake();
        model_point();
        // A permit freed just before we queued would otherwise go unnoticed.
        self.grant_free();
        Some(waiter)
    }

    /// Counts a refusal.
    pub(crate) fn count_rejection(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Changes the limit. Calls in flight above a lowered limit finish; no
    /// new call starts until they are below it.
    pub(crate) fn set_limit(&self, limit: usize) {
        let from = self.limit.swap(limit, SeqCst);
        self.limit_moved(from, limit);
    }

    /// After the limit moved from `from` to `to`: a lowered limit takes
    /// the shares' idle permits back, so that no call takes one while
    /// more than the limit are in use; a raised one may admit waiters.
    fn limit_moved(&self, from: usize, to: usize) {
        if to < from {
            let _reserving = lock(&self.reservations);
            self.drain();
        }
        self.grant_free();
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Calls in flight: the permits handed out less those idle (exact
    /// while no call starts or ends).
    pub(crate) fn in_flight(&self) -> usize {
        let idle: u64 = self
            .shares
            .iter()
            .map(|share| share.0.load(Relaxed) & IDLE)
            .sum();
        self.handed_out.0.load(Relaxed).saturating_sub(idle) as usize
    }

    /// Calls admitted since the bulkhead was made (modulo `2^43`).
    pub(crate) fn admitted(&self) -> u64 {
        let admitted = self.shares.iter().fold(0u64, |sum, share| {
            sum.wrapping_add(share.0.load(Relaxed) >> ADMITTED_SHIFT)
        });
        admitted & (u64::MAX >> ADMITTED_SHIFT)
    }

    /// The most permits handed out at once: at least the most calls ever
    /// in flight at once.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_handed_out.load(Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }
}

/// A limiter as the bulkhead layer shares it: each permit holds it through
/// its thread's lane, so that calls on two cores do not count their
/// references on one line (a Policy's calls hold no reference of their
/// own: they give back through the Policy's).
impl Laned<Limiter> {
    /// Takes a free permit unless someone is already waiting for one.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<Permit> {
        // One stripe for the share and the lane: the thread-local is read
        // once.
        let at = here();
        self.try_take_at(at).then(|| Permit {
            limiter: self.lane_at(at),
        })
    }

    /// Joins the queue, if it has room.
    #[cold]
    pub(crate) fn enqueue(&self) -> Option<Ticket> {
        self.join_queue().map(|waiter| Ticket {
            limiter: self.clone(),
            waiter,
            settled: false,
        })
    }
}

/// One call's share of the limit, given back when dropped: on completion,
/// error, cancellation or unwinding alike.
pub(crate) struct Permit {
    limiter: Arc<Lane<Limiter>>,
}

impl Permit {
    /// See [`Limiter::start`].
    #[inline(always)]
    pub(crate) fn start(&self) -> u64 {
        self.limiter.start()
    }

    /// See [`Limiter::sample`].
    #[inline(always)]
    pub(crate) fn sample(&self, started: u64, dropped: bool) {
        self.limiter.sample(started, dropped);
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.limiter.release();
    }
}

/// A place in the queue. Dropped before its permit was granted, it leaves
/// the queue; dropped after, it gives the permit back.
pub(crate) struct Ticket {
    limiter: Laned<Limiter>,
    waiter: Arc<Waiter>,
    settled: bool,
}

impl Ticket {
    fn poll_granted(&mut self, cx: &mut Context<'_>) -> Poll<Permit> {
        // Polled again after its permit was handed out (by a future whose
        // inner call panicked, say): another permit would be one too many,
        // for good.
        assert!(!self.settled, "a bulkhead's wait polled after completion");
        if !self.waiter.granted.load(Acquire) {
            *lock(&self.waiter.waker) = Some(cx.waker().clone());
            // Granted between the check and storing the waker: the granter
            // found no waker to wake.
            if !self.waiter.granted.load(Acquire) {
                return Poll::Pending;
            }
        }
        self.settled = true;
        Poll::Ready(Permit {
            limiter: self.limiter.lane(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut queue = lock(&self.limiter.queue);
        if let Some(at) = queue.iter().position(|w| Arc::ptr_eq(w, &self.waiter)) {
            queue.remove(at);
            self.limiter.waiting.fetch_sub(1, SeqCst);
            return;
        }
        drop(queue);
        // Out of the queue: it was granted a permit nobody will use.
        self.limiter.release();
    }
}

pin_project! {
    /// Waits in the queue for a permit, at most `max_wait`.
    pub(crate) struct Acquire {
        ticket: Ticket,
        #[pin]
        deadline: Sleep,
        max_wait: Duration,
    }
}

impl Acquire {
    pub(crate) fn new(ticket: Ticket, max_wait: Duration) -> Acquire {
        Acquire {
            ticket,
            deadline: tokio::time::sleep(max_wait),
            max_wait,
        }
    }
}

impl Future for Acquire {
    /// The permit, or how long it waited in vain.
    type Output = Result<Permit, Duration>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(permit) = this.ticket.poll_granted(cx) {
            return Poll::Ready(Ok(permit));
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(*this.max_wait)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "polled after completion")]
    fn a_granted_wait_polled_again_panics_rather_than_mint_a_permit() {
        let limiter = Laned::new(Limiter::new(1, 1));
        let held = limiter.try_acquire().unwrap();
        let mut ticket = limiter.enqueue().unwrap();
        drop(held);
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(permit) = ticket.poll_granted(&mut cx) else {
            panic!("the released permit went to the waiter");
        };
        drop(permit);
        let _ = ticket.poll_granted(&mut cx);
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use loom::thread;

    use super::*;

    /// Waits for the ticket's permit, spinning as loom wants (with yields).
    fn granted(mut ticket: Ticket) -> Permit {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(permit) = ticket.poll_granted(&mut cx) {
                return permit;
            }
            thread::yield_now();
        }
    }

    fn settled(limiter: &Limiter) -> (usize, usize, usize) {
        (
            limiter.in_flight(),
            limiter.queued(),
            lock(&limiter.queue).len(),
        )
    }

    /// A call queues while the permit it waits for is given back: the permit
    /// reaches it (no lost wakeup), once.
    #[test]
    fn a_released_permit_reaches_a_waiter_joining_the_queue() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 1));
            let held = limiter.try_acquire().unwrap();
            let waiter = {
                let limiter = limiter.clone();
                thread::spawn(move || drop(granted(limiter.enqueue().unwrap())))
            };
            drop(held);
            waiter.join().unwrap();
            assert_eq!(settled(&limiter), (0, 0, 0));
            // Whether the waiter took the freed permit or was handed it.
            assert_eq!(limiter.admitted(), 2, "each admission counted once");
        });
    }

    /// A call queues while the permit it waits for is given back to a
    /// drained share (straight to the permits not handed out, which the
    /// waiter reads without the lock): the permit reaches it.
    #[test]
    fn a_permit_released_on_a_drained_share_reaches_a_waiter() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 1));
            let held = limiter.try_acquire().unwrap();
            let refused = {
                let limiter = limiter.clone();
                crate::stripe::on_stripe(1, move || limiter.try_acquire().is_none())
            };
            assert!(refused.join().unwrap(), "refused: every share drained");
            let waiter = {
                let limiter = limiter.clone();
                crate::stripe::on_stripe(1, move || drop(granted(limiter.enqueue().unwrap())))
            };
            drop(held);
            waiter.join().unwrap();
            assert_eq!(settled(&limiter), (0, 0, 0));
            assert_eq!(limiter.admitted(), 2, "each admission counted once");
        });
    }

    /// A call leaves the queue while a permit is given back: the permit is
    /// neither lost nor given to the call that left.
    #[test]
    fn a_waiter_leaving_while_a_permit_is_released() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 1));
            let held = limiter.try_acquire().unwrap();
            let waiter = {
                let limiter = limiter.clone();
                thread::spawn(move || drop(limiter.enqueue().unwrap()))
            };
            drop(held);
            waiter.join().unwrap();
            assert_eq!(settled(&limiter), (0, 0, 0));
            assert!(limiter.try_acquire().is_some(), "the permit is free");
        });
    }

    /// A permit given back on one stripe while a call on another finds its
    /// own share empty and every permit handed out: a call that starts
    /// after the release gets the permit (the drain finds it in the other
    /// share), and the permit is never lost.
    #[test]
    fn a_release_on_one_stripe_against_a_take_on_another() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 0));
            // Stripe 0's share has the one permit, in use.
            let held = limiter.try_acquire().unwrap();
            let released = Arc::new(AtomicBool::new(false));
            let taker = {
                let (limiter, released) = (limiter.clone(), released.clone());
                crate::stripe::on_stripe(1, move || {
                    let after_the_release = released.load(SeqCst);
                    let took = limiter.try_acquire().is_some();
                    assert!(took || !after_the_release, "refused with the permit free");
                    took
                })
            };
            drop(held);
            released.store(true, SeqCst);
            let took = taker.join().unwrap();
            assert_eq!(limiter.in_flight(), 0);
            assert_eq!(limiter.admitted(), 1 + u64::from(took));
            assert!(limiter.try_acquire().is_some(), "the permit is free");
        });
    }

    /// Two stripes take the one permit at once: one call in flight, and
    /// the other refused.
    #[test]
    fn two_stripes_take_the_last_permit_at_once() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 0));
            let other = {
                let limiter = limiter.clone();
                crate::stripe::on_stripe(1, move || {
                    let permit = limiter.try_acquire();
                    let took = permit.is_some();
                    std::mem::forget(permit);
                    took
                })
            };
            let mine = limiter.try_acquire();
            let theirs = other.join().unwrap();
            assert!(mine.is_some() != theirs, "exactly one admitted");
            assert_eq!(limiter.in_flight(), 1);
            assert_eq!(limiter.max_in_flight(), 1);
        });
    }

    /// A permit freed on a drained share while a call on another stripe
    /// is refused without the lock (every share drained since the last
    /// reservation): a call that starts after the release gets the permit.
    #[test]
    fn a_release_on_a_drained_share_against_a_lockless_refusal() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 0));
            let held = limiter.try_acquire().unwrap();
            // Refused once: every share drained, the permit in use.
            let refused = {
                let limiter = limiter.clone();
                crate::stripe::on_stripe(1, move || limiter.try_acquire().is_none())
            };
            assert!(refused.join().unwrap());
            let released = Arc::new(AtomicBool::new(false));
            let taker = {
                let (limiter, released) = (limiter.clone(), released.clone());
                crate::stripe::on_stripe(1, move || {
                    let after_the_release = released.load(SeqCst);
                    let took = limiter.try_acquire().is_some();
                    assert!(took || !after_the_release, "refused with the permit free");
                })
            };
            drop(held);
            released.store(true, SeqCst);
            taker.join().unwrap();
            assert_eq!(limiter.in_flight(), 0);
            assert!(limiter.try_acquire().is_some(), "the permit is free");
        });
    }

    /// After a drain, a share reserves again and keeps the permit its call
    /// gives back: a call on another stripe finds it, not the drain's
    /// verdict.
    #[test]
    fn a_share_that_reserved_after_a_drain_is_not_refused_for() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 0));
            let on_one = |limiter: &Laned<Limiter>| {
                let limiter = limiter.clone();
                crate::stripe::on_stripe(1, move || limiter.try_acquire().is_some())
                    .join()
                    .unwrap()
            };
            let held = limiter.try_acquire().unwrap();
            assert!(!on_one(&limiter), "refused: the permit is in use");
            drop(held);
            // Stripe 0 reserves the permit again, and keeps it idle.
            drop(limiter.try_acquire().unwrap());
            assert!(on_one(&limiter), "the idle permit is found");
        });
    }

    /// The limit is lowered while another stripe takes a permit and the
    /// calling stripe's share holds one idle: the idle permit is taken
    /// back, so no call starts while the limit is in use.
    #[test]
    fn a_lowered_limit_takes_idle_permits_back() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(2, 0));
            // Stripe 0's share keeps one permit idle.
            drop(limiter.try_acquire().unwrap());
            let other = {
                let limiter = limiter.clone();
                crate::stripe::on_stripe(1, move || limiter.try_acquire())
            };
            limiter.set_limit(1);
            let held = other.join().unwrap();
            if held.is_some() {
                assert!(limiter.try_acquire().is_none(), "one in use of one");
            }
            drop(held);
            assert_eq!(limiter.in_flight(), 0);
            assert!(limiter.try_acquire().is_some(), "the permit is free");
        });
    }

    /// The limit is raised while a call waits and another permit comes back:
    /// never more calls in flight than the limit, nothing left over.
    #[test]
    fn raising_the_limit_under_a_waiter() {
        loom::model(|| {
            let limiter = Laned::new(Limiter::new(1, 2));
            let held = limiter.try_acquire().unwrap();
            let waiter = {
                let limiter = limiter.clone();
                thread::spawn(move || {
                    let permit = granted(limiter.enqueue().unwrap());
                    assert!(limiter.in_flight() <= 2);
                    drop(permit);
                })
            };
            limiter.set_limit(2);
            drop(held);
            waiter.join().unwrap();
            assert_eq!(settled(&limiter), (0, 0, 0));
        });
    }
}
