//! Cancellation and panic storms: many calls at once, each dropped at some
//! point (before its first poll, while queued, mid-call, during a
//! fallback) or blowing up somewhere (in `call`, in the future, in a
//! `Drop`, in a classifier, in a fallback), some polled again after they
//! panicked. Afterwards every permit, probe slot, queue place and pool
//! thread must be accounted for, and the figures must say so.
//!
//! Seeded: a failing round names its seed. Paused time, so that a storm of
//! thousands of calls takes no wall time (the pool's storm excepted: its
//! threads are real).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use seawall::blocking::{BlockingPool, BlockingService};
use seawall::bulkhead::{Bulkhead, BulkheadFigures, BulkheadService, Mode};
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, State};
use seawall::classify::{ByKind, Classify, Verdict};
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use seawall::window::Window;
use seawall::{Clock, Error};
use tower::{Layer, Service, ServiceExt};

/// What the inner service does with one request.
#[derive(Clone, Copy, Debug)]
enum Act {
    Answer,
    Sleep(u64),
    Fail,
    Ignored,
    PanicInCall,
    PanicInPoll,
    PanicInDrop,
    /// Answers 7, which the Policy's classifier panics on.
    Strange,
    Hang,
}

/// How the caller treats its call.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Awaits,
    DropsBeforePolling,
    GivesUpAfter(u64),
    PollsAgainAfterAPanic,
}

/// What the storms did, over every test of this file: printed at the end
/// of each, for the record.
struct Tally {
    calls_without_a_panic: AtomicU64,
    panics_in_call: AtomicU64,
    panics_in_poll: AtomicU64,
    panics_in_drop: AtomicU64,
    panics_in_classifier: AtomicU64,
    panics_in_fallback: AtomicU64,
    awaited: AtomicU64,
    dropped_before_polling: AtomicU64,
    given_up: AtomicU64,
    polled_again: AtomicU64,
}

static TALLY: Tally = Tally {
    calls_without_a_panic: AtomicU64::new(0),
    panics_in_call: AtomicU64::new(0),
    panics_in_poll: AtomicU64::new(0),
    panics_in_drop: AtomicU64::new(0),
    panics_in_classifier: AtomicU64::new(0),
    panics_in_fallback: AtomicU64::new(0),
    awaited: AtomicU64::new(0),
    dropped_before_polling: AtomicU64::new(0),
    given_up: AtomicU64::new(0),
    polled_again: AtomicU64::new(0),
};

impl Tally {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn print(&self, storm: &str) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        println!(
            "{storm}: so far {} calls: {} awaited, {} dropped before polling, {} given up, {} polled again after a panic; panics in call {}, in poll {}, in Drop {}, in the classifier {}, in the fallback {}",
            n(&self.awaited) + n(&self.dropped_before_polling) + n(&self.given_up) + n(&self.polled_again),
            n(&self.awaited),
            n(&self.dropped_before_polling),
            n(&self.given_up),
            n(&self.polled_again),
            n(&self.panics_in_call),
            n(&self.panics_in_poll),
            n(&self.panics_in_drop),
            n(&self.panics_in_classifier),
            n(&self.panics_in_fallback),
        );
    }
}

/// A tiny seeded generator (splitmix64): storms must replay.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn act(&mut self) -> Act {
        let act = match self.below(17) {
            16 => Act::Strange,
            0..=4 => Act::Answer,
            5..=7 => Act::Sleep(1 + self.below(6)),
            8 | 9 => Act::Fail,
            10 => Act::Ignored,
            11 => Act::PanicInCall,
            12 => Act::PanicInPoll,
            13 => Act::PanicInDrop,
            _ => Act::Hang,
        };
        TALLY.count(match act {
            Act::PanicInCall => &TALLY.panics_in_call,
            Act::PanicInPoll => &TALLY.panics_in_poll,
            Act::PanicInDrop => &TALLY.panics_in_drop,
            _ => &TALLY.calls_without_a_panic,
        });
        act
    }

    fn caller(&mut self) -> Caller {
        let caller = match self.below(8) {
            0..=2 => Caller::Awaits,
            3 => Caller::DropsBeforePolling,
            4..=6 => Caller::GivesUpAfter(self.below(15)),
            _ => Caller::PollsAgainAfterAPanic,
        };
        TALLY.count(match caller {
            Caller::Awaits => &TALLY.awaited,
            Caller::DropsBeforePolling => &TALLY.dropped_before_polling,
            Caller::GivesUpAfter(_) => &TALLY.given_up,
            Caller::PollsAgainAfterAPanic => &TALLY.polled_again,
        });
        caller
    }
}

#[derive(Debug)]
struct Failed(&'static str);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Failed {}
seawall::leaf_error!(Failed);

pin_project_lite::pin_project! {
    struct ActFuture {
        act: Act,
        #[pin]
        sleep: tokio::time::Sleep,
    }

    impl PinnedDrop for ActFuture {
        fn drop(this: Pin<&mut Self>) {
            if matches!(this.act, Act::PanicInDrop) && !std::thread::panicking() {
                panic!("the inner future panicked in Drop");
            }
        }
    }
}

impl Future for ActFuture {
    type Output = Result<u32, Failed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match *this.act {
            Act::PanicInPoll => panic!("the inner future panicked"),
            Act::Hang => Poll::Pending,
            Act::Sleep(_) => this.sleep.poll(cx).map(|()| Ok(1)),
            Act::Fail => Poll::Ready(Err(Failed("failed"))),
            Act::Ignored => Poll::Ready(Err(Failed("ignored"))),
            Act::Strange => Poll::Ready(Ok(7)),
            Act::Answer | Act::PanicInDrop | Act::PanicInCall => Poll::Ready(Ok(0)),
        }
    }
}

/// The inner service: does what each request says.
#[derive(Clone)]
struct Chaos;

impl Service<Act> for Chaos {
    type Response = u32;
    type Error = Failed;
    type Future = ActFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, act: Act) -> ActFuture {
        if let Act::PanicInCall = act {
            panic!("the inner call panicked");
        }
        let ms = if let Act::Sleep(ms) = act { ms } else { 0 };
        ActFuture {
            act,
            sleep: tokio::time::sleep(Duration::from_millis(ms)),
        }
    }
}

/// One caller's call, as the caller chose to treat it; panics stay inside.
async fn call<S>(mut service: S, act: Act, caller: Caller)
where
    S: Service<Act> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    let ready = AssertUnwindSafe(service.ready()).catch_unwind().await;
    let Ok(Ok(service)) = ready else { return };
    let Ok(future) = catch_unwind(AssertUnwindSafe(|| service.call(act))) else {
        return;
    };
    let mut future = Box::pin(future);
    match caller {
        Caller::Awaits => {
            // A hung call is waited for as long as a patient caller would.
            let awaited = tokio::time::timeout(Duration::from_millis(40), &mut future);
            let _ = AssertUnwindSafe(awaited).catch_unwind().await;
        }
        Caller::DropsBeforePolling => {}
        Caller::GivesUpAfter(ms) => {
            let _ = AssertUnwindSafe(tokio::time::timeout(Duration::from_millis(ms), &mut future))
                .catch_unwind()
                .await;
        }
        Caller::PollsAgainAfterAPanic => {
            for _ in 0..10 {
                let polled = std::future::poll_fn(|cx| {
                    Poll::Ready(catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))))
                })
                .await;
                match polled {
                    Ok(Poll::Ready(_)) => break,
                    Ok(Poll::Pending) => tokio::time::sleep(Duration::from_millis(3)).await,
                    Err(_) => continue,
                }
            }
        }
    }
    // Dropping may panic too (the inner future's Drop).
    let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
}

/// Runs `calls` calls with the dice's acts and callers, all at once, in
/// paused time, until every one has ended.
async fn storm<S>(service: &S, dice: &mut Dice, calls: usize)
where
    S: Service<Act> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    let tasks: Vec<_> = (0..calls)
        .map(|_| tokio::spawn(call(service.clone(), dice.act(), dice.caller())))
        .collect();
    for task in tasks {
        // Panics were caught inside; a task that still panicked (a Drop
        // panicking while another unwound aborts, so never) is a failure.
        task.await.expect("a storm call escaped its catch");
    }
}

/// Silences the storm's own panics (thousands of them), not the others.
fn quiet_panics() {
    static ONCE: AtomicBool = AtomicBool::new(false);
    if !ONCE.swap(true, Ordering::SeqCst) {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            let deliberate = [
                "the inner future panicked in Drop",
                "the inner future panicked",
                "the inner call panicked",
                "the blocking call panicked",
                "the classifier panicked",
                "the fallback panicked",
                "a Drop that panics",
            ]
            .contains(&message)
                || message.ends_with("polled after completion")
                || message.ends_with("resumed after panicking");
            if !deliberate {
                default(info);
            }
        }));
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

const SEEDS: u64 = 20;
const CALLS: usize = 300;

/// A storm through `bulkhead` in its own mode; its figures after.
fn run_storm<M: Mode>(bulkhead: Bulkhead<M>, seed: u64) -> BulkheadFigures
where
    BulkheadService<Chaos, M>: Service<Act> + Clone + Send + 'static,
    <BulkheadService<Chaos, M> as Service<Act>>::Future: Send + 'static,
    <BulkheadService<Chaos, M> as Service<Act>>::Response: Send,
    <BulkheadService<Chaos, M> as Service<Act>>::Error: Send,
{
    let service = bulkhead.layer().layer(Chaos);
    paused_runtime().block_on(async {
        let mut dice = Dice(seed);
        storm(&service, &mut dice, CALLS).await;
    });
    bulkhead.figures()
}

#[test]
fn bulkheads_of_every_mode_give_back_every_permit_and_place() {
    quiet_panics();
    for seed in 0..SEEDS {
        for mode in 0..3 {
            let builder = Bulkhead::builder().max_concurrent(4);
            let wait = Duration::from_millis(30);
            let figures = match mode {
                0 => run_storm(builder.reject_when_full().build().unwrap(), seed),
                1 => run_storm(builder.queue(16, wait).build().unwrap(), seed),
                _ => run_storm(builder.backpressure(16, wait).build().unwrap(), seed),
            };
            assert_eq!(
                (figures.in_flight, figures.queued),
                (0, 0),
                "seed {seed}, mode {mode}: {figures:?}"
            );
            assert!(figures.max_in_flight_seen <= 4, "seed {seed}, mode {mode}");
        }
    }
    TALLY.print("bulkhead storms");
}

/// A half-open breaker whose probes all ended must still decide: the free
/// probe slots, taken and answered, close it. A slot that a dropped or
/// panicked probe kept would keep it half-open for good.
fn assert_not_stuck_half_open(breaker: &CircuitBreaker, seed: u64) {
    if breaker.state() != State::HalfOpen {
        return;
    }
    let mut probes = Vec::new();
    while let Ok(probe) = breaker.try_acquire() {
        assert!(probe.is_probe(), "seed {seed}");
        probes.push(probe);
    }
    for probe in probes {
        probe.record(Verdict::Success);
    }
    assert_ne!(
        breaker.state(),
        State::HalfOpen,
        "seed {seed}: a probe slot was never given back"
    );
}

/// The Policy with every stage, a classifier and a fallback that panic on
/// some results, and a half-open breaker whose probes are dropped and
/// panic: afterwards the bulkhead is empty, and a half-open breaker still
/// has its probe slot.
#[test]
fn a_policy_gives_back_its_permits_probes_and_fallback_places() {
    quiet_panics();
    for seed in 0..SEEDS {
        let runtime = paused_runtime();
        let _entered = runtime.enter();
        let policy = Policy::builder()
            .name("storm")
            .circuit_breaker(
                CircuitBreaker::builder()
                    .window(Window::count(20))
                    .minimum_calls(10)
                    .half_open_probes(2)
                    .open_duration(OpenDuration::Fixed(Duration::from_millis(10))),
            )
            .bulkhead(
                Bulkhead::builder()
                    .max_concurrent(4)
                    .queue(16, Duration::from_millis(30)),
            )
            .timeout(Duration::from_millis(12))
            .classify(|result: &Result<u32, Error<Failed>>| match result {
                Ok(7) => {
                    TALLY.count(&TALLY.panics_in_classifier);
                    panic!("the classifier panicked")
                }
                Err(Error::Inner(Failed("ignored"))) => Verdict::Ignore,
                other => ByKind.classify(other),
            })
            .fallback(
                Fallback::builder()
                    .function_async(|_: &(), error: &Error<Failed>| {
                        let panics = error.is_timeout();
                        async move {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            if panics {
                                TALLY.count(&TALLY.panics_in_fallback);
                                panic!("the fallback panicked");
                            }
                            Ok::<u32, Failed>(99)
                        }
                    })
                    .max_concurrent(3),
            )
            .build()
            .unwrap();
        let service = policy.layer(Chaos);
        runtime.block_on(async {
            let mut dice = Dice(seed);
            for _ in 0..4 {
                storm(&service, &mut dice, CALLS / 4).await;
                tokio::time::advance(Duration::from_millis(11)).await;
            }
        });
        let bulkhead = policy.bulkhead().unwrap();
        assert_eq!((bulkhead.in_flight, bulkhead.queued), (0, 0), "seed {seed}");
        let breaker = policy.breaker();
        assert_not_stuck_half_open(breaker, seed);
        // Three slow fallbacks at once: none refused, so no place was kept.
        breaker.force_open();
        let before = breaker.lifetime().counts.fallback_rejected;
        runtime.block_on(async {
            let calls: Vec<_> = (0..3)
                .map(|_| tokio::spawn(service.clone().oneshot(Act::Answer)))
                .collect();
            for call in calls {
                assert_eq!(call.await.unwrap().unwrap(), 99, "seed {seed}");
            }
        });
        assert_eq!(
            breaker.lifetime().counts.fallback_rejected,
            before,
            "seed {seed}: a fallback place was never given back"
        );
    }
    TALLY.print("policy storms");
}

/// A breaker layer alone, half-open, under a storm of probes that are
/// dropped and panic.
#[test]
fn half_open_probe_slots_come_back() {
    quiet_panics();
    for seed in 0..SEEDS {
        let runtime = paused_runtime();
        let breaker = runtime.block_on(async {
            CircuitBreaker::builder()
                .clock(Clock::tokio())
                .consecutive_failures(1)
                .half_open_probes(3)
                .open_duration(OpenDuration::Fixed(Duration::from_millis(1)))
                .build()
                .unwrap()
        });
        let service = breaker.layer().layer(Chaos);
        runtime.block_on(async {
            let mut dice = Dice(seed);
            for _ in 0..10 {
                breaker.force_open();
                breaker.reset();
                breaker.try_acquire().unwrap().record(Verdict::Failure);
                tokio::time::advance(Duration::from_millis(2)).await;
                storm(&service, &mut dice, CALLS / 10).await;
                assert_not_stuck_half_open(&breaker, seed);
            }
        });
    }
    TALLY.print("half-open storms");
}

/// Requests and answers that panic when dropped, calls given up while
/// queued and while running, calls that panic: the pool's threads all live,
/// none is busy, nothing is queued, and it still answers.
#[test]
fn a_blocking_pool_keeps_every_thread() {
    quiet_panics();
    struct Bomb(bool);
    impl Drop for Bomb {
        fn drop(&mut self) {
            if self.0 && !std::thread::panicking() {
                panic!("a Drop that panics");
            }
        }
    }
    let pool = BlockingPool::builder().threads(3).queue(6).build().unwrap();
    let service = BlockingService::new(pool.clone(), |(act, bomb): (Act, Bomb)| {
        match act {
            Act::PanicInCall | Act::PanicInPoll => panic!("the blocking call panicked"),
            Act::Sleep(ms) => std::thread::sleep(Duration::from_micros(ms * 10)),
            _ => {}
        }
        std::mem::forget(bomb);
        match act {
            Act::Fail => Err(Failed("failed")),
            _ => Ok(Bomb(matches!(act, Act::PanicInDrop))),
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    for seed in 0..SEEDS {
        runtime.block_on(async {
            let mut dice = Dice(seed);
            let tasks: Vec<_> = (0..CALLS)
                .map(|_| {
                    let (act, caller) = (dice.act(), dice.caller());
                    let bomb = Bomb(matches!(act, Act::PanicInDrop | Act::Hang));
                    let mut service = service.clone();
                    tokio::spawn(async move {
                        let Ok(future) =
                            catch_unwind(AssertUnwindSafe(|| service.call((act, bomb))))
                        else {
                            return;
                        };
                        // The caller's own drops (an answer that panics when
                        // dropped, waiting in the channel) are the caller's.
                        match caller {
                            Caller::DropsBeforePolling => {
                                let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
                            }
                            Caller::GivesUpAfter(_) => {
                                let mut given_up =
                                    Box::pin(tokio::time::timeout(Duration::ZERO, future));
                                let answer =
                                    AssertUnwindSafe(given_up.as_mut()).catch_unwind().await;
                                if let Ok(Ok(Ok(bomb))) = answer {
                                    std::mem::forget(bomb);
                                }
                                // An answer that came as the caller gave up
                                // waits in the dropped call, and panics there.
                                let _ = catch_unwind(AssertUnwindSafe(move || drop(given_up)));
                            }
                            _ => {
                                let answer = AssertUnwindSafe(future).catch_unwind().await;
                                if let Ok(Ok(bomb)) = answer {
                                    std::mem::forget(bomb);
                                }
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("a pool call escaped its catch");
            }
        });
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        while pool.figures().busy + pool.figures().queued > 0 {
            assert!(
                std::time::Instant::now() < give_up,
                "seed {seed}: {:?}",
                pool.figures()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let figures = pool.figures();
        assert_eq!(figures.threads_alive, 3, "seed {seed}: {figures:?}");
        assert_eq!(figures.threads_replaced, 0, "seed {seed}: {figures:?}");
        let answer = runtime.block_on(service.clone().oneshot((Act::Answer, Bomb(false))));
        std::mem::forget(answer.unwrap());
    }
    let figures = pool.figures();
    assert!(
        figures.panics_outside_calls > 0,
        "the storm dropped bombs: {figures:?}"
    );
    TALLY.print("pool storms");
}
