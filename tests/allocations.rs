//! The healthy path and the rejection path allocate nothing: counted by a
//! global allocator, per thread, so tests running beside this one do not
//! disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use seawall::timeout::TimeoutLayer;
use seawall::window::Window;
use seawall::Clock;
use tower::{service_fn, Layer, Service};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Drives `calls` calls through a breaker-guarded, always-ready service.
fn drive(breaker: &CircuitBreaker, calls: u64) {
    drive_through(&mut breaker.layer().layer(ready_service()), calls);
}

fn ready_service() -> impl Service<bool, Response = (), Error = &'static str> + Clone {
    service_fn(|fail: bool| std::future::ready(if fail { Err("failed") } else { Ok(()) }))
}

/// Drives `calls` calls through `service`, each answered at its first poll.
fn drive_through<S: Service<bool>>(service: &mut S, calls: u64) {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    for i in 0..calls {
        assert!(service.poll_ready(&mut cx).is_ready());
        let future = pin!(service.call(i % 10 == 0));
        assert!(matches!(future.poll(&mut cx), Poll::Ready(_)));
    }
}

#[test]
fn healthy_and_refused_calls_allocate_nothing() {
    let configs = [
        CircuitBreaker::builder().minimum_calls(1_000_000),
        CircuitBreaker::builder()
            .window(Window::count(100))
            .minimum_calls(100),
        CircuitBreaker::builder()
            .minimum_calls(1_000_000)
            .track_latency(true)
            .slow_calls(Duration::from_secs(1), 50.0),
    ];
    for builder in configs {
        let breaker = builder.build().unwrap();
        drive(&breaker, 10); // starts the coarse clock's thread once
        assert_eq!(
            allocations_during(|| drive(&breaker, 10_000)),
            0,
            "closed: {breaker:?}"
        );
        breaker.force_open();
        assert_eq!(
            allocations_during(|| drive(&breaker, 10_000)),
            0,
            "open: {breaker:?}"
        );
    }
}

#[test]
fn free_bulkheads_full_bulkheads_and_timeouts_allocate_nothing() {
    let bulkhead = Bulkhead::builder().max_concurrent(4).build().unwrap();
    let mut guarded = bulkhead.layer().layer(ready_service());
    drive_through(&mut guarded, 10);
    assert_eq!(
        allocations_during(|| drive_through(&mut guarded, 10_000)),
        0,
        "free bulkhead"
    );

    // Full: its only permit held by a call that is never polled.
    let full = Bulkhead::builder().max_concurrent(1).build().unwrap();
    let mut holder = full.layer().layer(ready_service());
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    assert!(holder.poll_ready(&mut cx).is_ready());
    let _held = holder.call(false);
    let mut refused = full.layer().layer(ready_service());
    let mut refuse_all = || {
        for _ in 0..10_000 {
            assert!(refused.poll_ready(&mut cx).is_ready());
            let future = pin!(refused.call(false));
            assert!(matches!(future.poll(&mut cx), Poll::Ready(Err(_))));
        }
    };
    refuse_all();
    assert_eq!(allocations_during(refuse_all), 0, "full bulkhead");

    let mut timed = TimeoutLayer::new(Duration::from_secs(1))
        .clock(Clock::coarse())
        .layer(ready_service());
    drive_through(&mut timed, 10);
    assert_eq!(
        allocations_during(|| drive_through(&mut timed, 10_000)),
        0,
        "timeout"
    );
}

#[test]
fn a_healthy_policy_call_allocates_nothing() {
    let policy = Policy::builder()
        .name("p")
        .clock(Clock::coarse())
        .circuit_breaker(CircuitBreaker::builder())
        .bulkhead(Bulkhead::builder().max_concurrent(10))
        .timeout(Duration::from_secs(1))
        .fallback(Fallback::builder().value(()))
        .build()
        .unwrap();
    let mut service = policy.layer(service_fn(|_: bool| std::future::ready(Ok::<_, &str>(()))));
    drive_through(&mut service, 10);
    assert_eq!(
        allocations_during(|| drive_through(&mut service, 10_000)),
        0
    );
}

/// A healthy call keeps its answer in the cache only when the kept one is
/// older than `refresh_after`; every tenth call here fails and is answered
/// from the cache.
#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn a_policy_with_a_cached_fallback_allocates_nothing_between_refreshes() {
    use seawall::fallback::FallbackCache;
    let cache = FallbackCache::<bool, ()>::builder()
        .clock(Clock::tokio())
        .build()
        .unwrap();
    let policy = Policy::builder()
        .name("p")
        .clock(Clock::tokio())
        .circuit_breaker(CircuitBreaker::builder())
        .fallback(Fallback::keyed(|_: &bool| false).cache(cache.clone()))
        .build()
        .unwrap();
    let mut service = policy.layer(ready_service());
    drive_through(&mut service, 10);
    assert_eq!(cache.len(), 1, "settles the first answer's admission");
    assert_eq!(
        allocations_during(|| drive_through(&mut service, 10_000)),
        0
    );
    assert_eq!(cache.figures().stored, 1);
    assert_eq!(cache.figures().hits, 1_000);
}

/// An open breaker's refusals answered from the cache, the path a cached
/// fallback exists for, allocate nothing of seawall's. One answer in 64 is
/// read from moka (for its eviction policy), and moka's housekeeping, run
/// by one of its reads in 64 or so, hands crossbeam-epoch a 2 KiB bag of
/// garbage now and then: about one allocation in 8,000 answers here. The
/// bound is four times that, and one more for each 300 ms the answers
/// take (moka also runs its housekeeping at that interval, which a loaded
/// machine reaches sooner): an allocation per answer, or per moka read,
/// would be far above it. Outside a runtime, so that tokio's task budget
/// never makes a refusal wait.
#[cfg(feature = "cache")]
#[test]
fn refusals_answered_from_the_cache_allocate_only_in_mokas_housekeeping() {
    use seawall::fallback::FallbackCache;
    const ANSWERS: u64 = 100_000;
    let cache = FallbackCache::<bool, ()>::builder().build().unwrap();
    let policy = Policy::builder()
        .name("p")
        .circuit_breaker(CircuitBreaker::builder())
        .fallback(Fallback::keyed(|_: &bool| false).cache(cache.clone()))
        .build()
        .unwrap();
    let mut service = policy.layer(ready_service());
    drive_through(&mut service, 2);
    assert_eq!(cache.len(), 1, "settles the first answer's admission");
    policy.breaker().force_open();
    let started = std::time::Instant::now();
    let allocations = allocations_during(|| drive_through(&mut service, ANSWERS));
    let periods = u64::try_from(started.elapsed().as_millis() / 300).unwrap_or(u64::MAX);
    assert!(
        allocations <= ANSWERS / 2_000 + periods + 1,
        "{allocations} allocations in {ANSWERS} answers from the cache, in {:?}",
        started.elapsed()
    );
    assert_eq!(policy.breaker().counts().cache_hit, ANSWERS);
}

#[test]
fn healthy_retried_and_hedged_calls_allocate_nothing() {
    use seawall::hedge::{Hedge, HedgeLayer};
    use seawall::retry::{Retry, RetryBudget, RetryLayer};

    let budget = RetryBudget::builder()
        .clock(Clock::coarse())
        .build()
        .unwrap();
    let retry = Retry::builder()
        .clock(Clock::coarse())
        .budget(budget)
        .build()
        .unwrap();
    let policy = Policy::builder()
        .clock(Clock::coarse())
        .circuit_breaker(CircuitBreaker::builder())
        .timeout(Duration::from_secs(1))
        .retry(retry.clone())
        .build()
        .unwrap();
    let mut service = policy.layer(service_fn(|_: bool| std::future::ready(Ok::<_, &str>(()))));
    drive_through(&mut service, 10);
    assert_eq!(
        allocations_during(|| drive_through(&mut service, 10_000)),
        0,
        "a policy that retries"
    );
    let healthy = service_fn(|_: bool| std::future::ready(Ok::<_, &str>(())));
    let mut layered = RetryLayer::new(retry).layer(healthy);
    drive_through(&mut layered, 10);
    assert_eq!(
        allocations_during(|| drive_through(&mut layered, 10_000)),
        0,
        "the retry layer"
    );

    // A hedge's timer needs a runtime; entering it is done before counting.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let hedge = Hedge::builder().clock(Clock::coarse()).build().unwrap();
    let mut hedged = HedgeLayer::new(hedge).layer(ready_service());
    drive_through(&mut hedged, 10);
    assert_eq!(
        allocations_during(|| drive_through(&mut hedged, 10_000)),
        0,
        "the hedge layer"
    );
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations_during(|| drop(std::hint::black_box(Box::new(1)))) >= 1);
}
