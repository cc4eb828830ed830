//! Calls as applications make them: awaited inside an `async fn` on a
//! runtime, so the caller's state machine holds (and moves) the response
//! future, and inner futures that are pending on their first poll as every
//! real I/O call is.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

use super::Measured;

/// An inner future that is pending on its first poll (waking its task at
/// once) and answers on the second: the shape of every I/O call, without
/// the I/O.
pub struct PendingOnce {
    value: u64,
    polled: bool,
}

impl Future for PendingOnce {
    type Output = Result<u64, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polled {
            return Poll::Ready(Ok(self.value));
        }
        self.polled = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The always-ready service whose futures are [`PendingOnce`].
pub fn pending_inner() -> impl Service<u64, Response = u64, Error = Infallible, Future = PendingOnce>
       + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(|value: u64| PendingOnce {
        value,
        polled: false,
    })
}

/// What the busy runtime's inner services are: shared by its tasks, and
/// sent between its workers.
pub trait BusyInner:
    Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
}

impl<S> BusyInner for S
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
}

/// The inner service of the busy runtime: it yields to the scheduler once
/// per call, as a call that waits for anything does.
pub fn yielding_inner() -> impl BusyInner {
    tower::service_fn(|value: u64| async move {
        tokio::task::yield_now().await;
        Ok::<u64, Infallible>(value)
    })
}

/// [`yielding_inner`] counted in and out of one shared word, refusing
/// above `limit`: the least any concurrency limit kept in a single counter
/// pays per call (two atomic writes to a line both workers write, and
/// nothing else: no `Arc`, no permit type, no queue).
pub fn shared_counter_inner(limit: usize) -> impl BusyInner {
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_FLIGHT.fetch_sub(1, Release);
        }
    }
    tower::service_fn(move |value: u64| async move {
        let leave = Leave;
        if IN_FLIGHT.fetch_add(1, Acquire) >= limit {
            return Ok(u64::MAX);
        }
        tokio::task::yield_now().await;
        drop(leave);
        Ok::<u64, Infallible>(value)
    })
}

/// [`yielding_inner`] with what any deadline on a pending call must do
/// and nothing more: read the time when the call starts (the TSC, as
/// seawall does), and hold a clone of the task's waker while it waits (so
/// that something could wake it), with no timer, no registration and no
/// check: a lower bound, which no working timeout reaches.
pub fn deadline_floor_inner() -> impl BusyInner {
    tower::service_fn(|value: u64| async move {
        let started = black_box(tsc());
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        tokio::task::yield_now().await;
        drop(black_box(waker));
        black_box(started);
        Ok::<u64, Infallible>(value)
    })
}

/// Where a floor counts its calls in flight, if it has a limit.
#[derive(Clone, Copy)]
pub enum LimitFloor {
    /// No limit.
    None,
    /// One word that every thread takes from and gives back to, as seawall's
    /// limits and tower's keep: the take a load, then a compare-and-swap (an
    /// exact limit that refuses at once needs both), and the release one
    /// decrement.
    Shared(usize),
    /// The same take and release on a word of the calling thread's own: the
    /// fast path of a limit whose permits are spread over the threads, each
    /// taking from its own share. What such a limit must also do when a
    /// thread's share runs out while another's is idle (borrow from it, or
    /// refuse a call with permits free elsewhere) is left out: each thread's
    /// share is the whole limit here.
    PerThread(usize),
}

/// A permit of a floor's limit: given back on drop.
struct Leave(&'static AtomicUsize);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Release);
    }
}

impl LimitFloor {
    /// A permit (none without a limit), or `Err` for a call refused.
    fn take(self) -> Result<Option<Leave>, ()> {
        static SHARED: Padded<AtomicUsize> = Padded(AtomicUsize::new(0));
        static OWN: [Padded<AtomicUsize>; SLOT_STRIPES] =
            [const { Padded(AtomicUsize::new(0)) }; SLOT_STRIPES];
        let (word, limit) = match self {
            LimitFloor::None => return Ok(None),
            LimitFloor::Shared(limit) => (&SHARED.0, limit),
            LimitFloor::PerThread(limit) => (&OWN[thread_stripe()].0, limit),
        };
        let mut seen = word.load(Relaxed);
        loop {
            if seen >= limit {
                return Err(());
            }
            match word.compare_exchange_weak(seen, seen + 1, Acquire, Relaxed) {
                Ok(_) => return Ok(Some(Leave(word))),
                Err(now) => seen = now,
            }
        }
    }
}

/// [`yielding_inner`] with the least that a deadline that can fire does,
/// under `limit`, and with `breaker` the least a breaker does around it
/// ([`breaker_floor_inner`]'s steps), and nothing else: the time read when
/// the call starts; the task's waker left, for the call's wait, in a slot
/// where another thread could find and wake it (behind a lock of the
/// calling thread's own, taken to leave it; taken back by one
/// compare-and-swap that leaves the slot, and its waker, to the thread's
/// next call, as seawall's alarms do), with no wheel, no sweeper and no
/// check. A timeout that fires
/// without a timer per call does all of it but the limit and the breaker,
/// and a Policy with a breaker, a bulkhead and a timeout all of it and
/// more (its statistics' buckets, the classification): their floors.
pub fn registered_deadline_floor_inner(limit: LimitFloor, breaker: bool) -> impl BusyInner {
    static SLOTS: [Padded<SlotStripe>; SLOT_STRIPES] = [const {
        Padded(SlotStripe {
            slots: Mutex::new(Slots::new()),
            dropped: AtomicUsize::new(NO_SLOT),
        })
    }; SLOT_STRIPES];
    tower::service_fn(move |value: u64| async move {
        let admitted = if breaker {
            let Some(stripe) = breaker_floor_admit() else {
                return Ok(u64::MAX);
            };
            Some(stripe)
        } else {
            None
        };
        let Ok(leave) = limit.take() else {
            // Refused by the limit: an outcome the breaker counts, and
            // its reference dropped.
            if let Some(stripe) = admitted {
                breaker_floor_settle(stripe);
            }
            return Ok(u64::MAX);
        };
        let started = black_box(tsc());
        let stripe = &SLOTS[thread_stripe()].0;
        let slot = std::future::poll_fn(|cx| Poll::Ready(stripe.leave(cx.waker()))).await;
        tokio::task::yield_now().await;
        stripe.take_back(slot);
        black_box(started);
        if let Some(stripe) = admitted {
            breaker_floor_settle(stripe);
        }
        drop(leave);
        Ok::<u64, Infallible>(value)
    })
}

/// [`yielding_inner`] with the least a circuit breaker that counts every
/// outcome exactly does, and nothing else: it reads its state and the
/// time (two words other threads write rarely) and counts a reference on
/// itself for the call's future (which must own what it settles on) before
/// the call, and after it adds the outcome to a counter and drops the
/// reference, both of the calling thread's own (on lines no other thread
/// writes): a breaker's floor.
pub fn breaker_floor_inner() -> impl BusyInner {
    tower::service_fn(|value: u64| async move {
        let Some(stripe) = breaker_floor_admit() else {
            return Ok(u64::MAX);
        };
        tokio::task::yield_now().await;
        breaker_floor_settle(stripe);
        Ok::<u64, Infallible>(value)
    })
}

/// The same floor around an answer ready at once, for the groups that
/// poll a call once or await it: what a tower breaker's call must do
/// whose future owns a reference and counts its outcome (three locked
/// writes), and nothing else.
pub fn breaker_floor_ready() -> impl Service<
    u64,
    Response = u64,
    Error = Infallible,
    Future = std::future::Ready<Result<u64, Infallible>>,
> + Clone {
    tower::service_fn(|value: u64| {
        let Some(stripe) = breaker_floor_admit() else {
            return std::future::ready(Ok(u64::MAX));
        };
        breaker_floor_settle(black_box(stripe));
        std::future::ready(Ok(value))
    })
}

/// The breaker floor's words: its state, its time, and each thread's own
/// tally and reference count.
static BREAKER_STATE: Padded<AtomicU64> = Padded(AtomicU64::new(0));
static BREAKER_TIME: Padded<AtomicU64> = Padded(AtomicU64::new(1));
static BREAKER_TALLIES: [Padded<AtomicU64>; SLOT_STRIPES] =
    [const { Padded(AtomicU64::new(0)) }; SLOT_STRIPES];
static BREAKER_REFERENCES: [Padded<AtomicU64>; SLOT_STRIPES] =
    [const { Padded(AtomicU64::new(1)) }; SLOT_STRIPES];

/// Before the call: the state and the time read, and a reference counted;
/// the stripe it was counted on, or none for a call refused.
fn breaker_floor_admit() -> Option<usize> {
    if BREAKER_STATE.0.load(Acquire) != 0 {
        return None;
    }
    black_box(BREAKER_TIME.0.load(Relaxed));
    let stripe = thread_stripe();
    BREAKER_REFERENCES[stripe].0.fetch_add(1, Relaxed);
    Some(stripe)
}

/// After the call: the outcome counted and the reference dropped.
fn breaker_floor_settle(stripe: usize) {
    BREAKER_TALLIES[stripe].0.fetch_add(1, Relaxed);
    BREAKER_REFERENCES[stripe].0.fetch_sub(1, Release);
}

/// What seawall reads a call's start from: the TSC, through quanta.
fn tsc() -> u64 {
    static TSC: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    TSC.get_or_init(quanta::Clock::new).raw()
}

/// The calling thread's stripe of the floors' per-thread lines: threads
/// take them in turn, as seawall's do.
fn thread_stripe() -> usize {
    static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Relaxed) % SLOT_STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

/// On cache lines of its own, as seawall keeps what threads write.
#[repr(align(128))]
struct Padded<T>(T);

/// Stripes of the floors' per-thread lines (slots, tallies, references):
/// more than the threads that call, so that none shares one.
const SLOT_STRIPES: usize = 16;

/// A stripe's slots, and the cell where a slot taken back waits for the
/// stripe's next call ([`NO_SLOT`] if none).
struct SlotStripe {
    slots: Mutex<Slots>,
    dropped: AtomicUsize,
}

/// No slot, in [`SlotStripe::dropped`].
const NO_SLOT: usize = usize::MAX;

impl SlotStripe {
    /// Leaves `waker` in a slot: the one taken back last, keeping its
    /// waker if it wakes the same task, or a free one.
    fn leave(&self, waker: &Waker) -> usize {
        let mut slots = lock(&self.slots);
        let dropped = self.dropped.load(Acquire);
        if dropped == NO_SLOT {
            return slots.leave(waker.clone());
        }
        self.dropped.store(NO_SLOT, Relaxed);
        match &mut slots.wakers[dropped] {
            Some(left) => left.clone_from(waker),
            none => *none = Some(waker.clone()),
        }
        dropped
    }

    /// Takes a slot back: into the cell if it is empty, else freed.
    fn take_back(&self, slot: usize) {
        if self
            .dropped
            .compare_exchange(NO_SLOT, slot, Release, Relaxed)
            .is_err()
        {
            drop(lock(&self.slots).take_back(slot));
        }
    }
}

/// Wakers left for a call's wait, and the slots free to take.
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Slots {
    const fn new() -> Slots {
        Slots {
            wakers: Vec::new(),
            free: Vec::new(),
        }
    }

    fn leave(&mut self, waker: Waker) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.wakers[slot] = Some(waker);
                slot
            }
            None => {
                self.wakers.push(Some(waker));
                self.wakers.len() - 1
            }
        }
    }

    fn take_back(&mut self, slot: usize) -> Option<Waker> {
        self.free.push(slot);
        self.wakers[slot].take()
    }
}

fn lock(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One call as an application writes it.
pub async fn awaited_call<S: Service<u64, Response = u64>>(service: &mut S, request: u64) -> u64 {
    match service.ready().await {
        Ok(ready) => ready.call(request).await.unwrap_or(u64::MAX),
        Err(_) => u64::MAX - 1,
    }
}

/// Measures `service`'s calls awaited one after another on `runtime` (a
/// current-thread runtime: its `block_on` is paid once per sample, not per
/// call).
pub fn bench_awaited<S: Service<u64, Response = u64>>(
    group: &mut Measured<'_>,
    runtime: &Runtime,
    name: &str,
    mut service: S,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let began = Instant::now();
                for _ in 0..iters {
                    black_box(awaited_call(&mut service, black_box(1)).await);
                }
                began.elapsed()
            })
        })
    });
}

/// `calls` calls through clones of `service` from `tasks` tasks on
/// `runtime` (a multi-thread one); the calls per second of the whole.
pub fn busy<S>(runtime: &Runtime, service: S, calls: u64, tasks: u64) -> f64
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    let took: Duration = runtime.block_on(async {
        let began = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let mut service = service.clone();
                let share = calls / tasks + u64::from(task < calls % tasks);
                tokio::spawn(async move {
                    for call in 0..share {
                        black_box(awaited_call(&mut service, black_box(call)).await);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("a busy-runtime task panicked");
        }
        began.elapsed()
    });
    calls as f64 / took.as_secs_f64()
}
