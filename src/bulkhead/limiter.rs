//! The counting semaphore behind a bulkhead.
//!
//! tokio's `Semaphore` takes a mutex on every release, which would put a lock
//! on the healthy path of every call. Here a free permit is one
//! compare-and-swap to take and one `fetch_sub` to give back; the mutex
//! guards only the queue of waiting calls, and a release looks at it only
//! when the waiting count says someone waits. Permits go to waiters first in,
//! first out, handed over directly, so a newcomer cannot overtake a waiter.
//!
//! A waiter is queued before it checks for a free permit once more, and a
//! release frees its permit before it checks for waiters (both sequentially
//! consistent), so one of the two always sees the other: no wakeup is lost.

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
use crate::sync::{
    lock, model_point, seq_cst_handshake, AtomicBool, AtomicU64, AtomicUsize, Mutex,
};

/// Keeps the contended counter on a cache line of its own.
#[repr(align(128))]
struct Hot {
    /// Calls in flight in the low [`IN_FLIGHT_BITS`] bits, and above them
    /// every call ever admitted: the compare-and-swap that takes a permit
    /// counts the admission in the same write, for nothing.
    in_flight: AtomicU64,
    max_in_flight: AtomicUsize,
}

/// The bits of the in-flight word that count calls in flight: the limit is
/// at most `2^20 - 1`, and admissions wrap after `2^44` (17.6 trillion).
pub(crate) const IN_FLIGHT_BITS: u32 = 20;
/// The most calls a bulkhead may allow in flight.
pub(crate) const MAX_LIMIT: usize = (1 << IN_FLIGHT_BITS) - 1;
const IN_FLIGHT: u64 = (1 << IN_FLIGHT_BITS) - 1;
const ADMITTED: u64 = 1 << IN_FLIGHT_BITS;

pub(crate) struct Limiter {
    hot: Hot,
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
            hot: Hot {
                in_flight: AtomicU64::new(0),
                max_in_flight: AtomicUsize::new(0),
            },
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
                    self.grant_free();
                }
            }
        }
    }

    pub(crate) fn adaptive_figures(&self) -> Option<super::AdaptiveFigures> {
        self.adaptive
            .as_ref()
            .map(|controller| controller.figures())
    }

    /// Takes a free permit unless someone is already waiting for one.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.try_take().then(|| Permit {
            limiter: Arc::clone(self),
        })
    }

    /// Takes a free permit, unless someone is already waiting for one, for
    /// a holder that gives it back with [`release`](Self::release).
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        self.waiting.load(Relaxed) == 0 && self.take_free()
    }

    #[inline]
    fn take_free(&self) -> bool {
        let limit = self.limit.load(Relaxed) as u64;
        // Sequentially consistent, for the wakeup argument at the top (a
        // plain load on x86; `ldar` on ARM).
        let mut word = self.hot.in_flight.load(SeqCst);
        loop {
            let in_flight = word & IN_FLIGHT;
            if in_flight >= limit {
                return false;
            }
            match self.hot.in_flight.compare_exchange_weak(
                word,
                word.wrapping_add(ADMITTED + 1),
                SeqCst,
                Relaxed,
            ) {
                Ok(_) => {
                    let now = in_flight as usize + 1;
                    if now > self.hot.max_in_flight.load(Relaxed) {
                        self.hot.max_in_flight.fetch_max(now, Relaxed);
                    }
                    return true;
                }
                Err(actual) => word = actual,
            }
        }
    }

    #[inline]
    pub(crate) fn release(&self) {
        if self.waiting.load(SeqCst) != 0 && self.hand_over() {
            return;
        }
        self.hot.in_flight.fetch_sub(1, SeqCst);
        seq_cst_handshake();
        if self.waiting.load(SeqCst) != 0 {
            self.grant_free();
        }
    }

    /// Gives a releasing call's permit to the oldest waiter, unless the limit
    /// was lowered below what is in flight (then the permit is retired).
    #[cold]
    fn hand_over(&self) -> bool {
        if self.hot.in_flight.load(SeqCst) & IN_FLIGHT > self.limit.load(SeqCst) as u64 {
            return false;
        }
        let mut queue = lock(&self.queue);
        let Some(waiter) = queue.pop_front() else {
            return false;
        };
        self.waiting.fetch_sub(1, SeqCst);
        // The releasing call's permit goes on in flight: one more admitted.
        self.hot.in_flight.fetch_add(ADMITTED, SeqCst);
        drop(queue);
        waiter.grant();
        true
    }

    /// Gives free permits to waiters, oldest first.
    #[cold]
    fn grant_free(&self) {
        let mut queue = lock(&self.queue);
        while !queue.is_empty() && self.take_free() {
            if let Some(waiter) = queue.pop_front() {
                self.waiting.fetch_sub(1, SeqCst);
                waiter.grant();
            }
        }
    }

    /// Joins the queue, if it has room.
    #[cold]
    pub(crate) fn enqueue(self: &Arc<Self>) -> Option<Ticket> {
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
        Some(Ticket {
            limiter: Arc::clone(self),
            waiter,
            settled: false,
        })
    }

    /// Counts a refusal.
    pub(crate) fn count_rejection(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Changes the limit. Calls in flight above a lowered limit finish; no
    /// new call starts until they are below it.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, SeqCst);
        self.grant_free();
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        (self.hot.in_flight.load(Relaxed) & IN_FLIGHT) as usize
    }

    /// Calls admitted since the bulkhead was made (modulo `2^44`).
    pub(crate) fn admitted(&self) -> u64 {
        self.hot.in_flight.load(Relaxed) >> IN_FLIGHT_BITS
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.hot.max_in_flight.load(Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }
}

/// One call's share of the limit, given back when dropped: on completion,
/// error, cancellation or unwinding alike.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
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
    limiter: Arc<Limiter>,
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
            limiter: Arc::clone(&self.limiter),
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
        let limiter = Arc::new(Limiter::new(1, 1));
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
            let limiter = Arc::new(Limiter::new(1, 1));
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

    /// A call leaves the queue while a permit is given back: the permit is
    /// neither lost nor given to the call that left.
    #[test]
    fn a_waiter_leaving_while_a_permit_is_released() {
        loom::model(|| {
            let limiter = Arc::new(Limiter::new(1, 1));
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

    /// The limit is raised while a call waits and another permit comes back:
    /// never more calls in flight than the limit, nothing left over.
    #[test]
    fn raising_the_limit_under_a_waiter() {
        loom::model(|| {
            let limiter = Arc::new(Limiter::new(1, 2));
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
