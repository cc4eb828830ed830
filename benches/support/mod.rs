//! What every bench shares: the always-ready inner service, one whole tower
//! call driven without a runtime, and two threads sharing a service.

#![allow(dead_code)] // each bench uses its own subset

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use futures::task::noop_waker_ref;
use tower::{Layer, Service};

pub mod awaited;

pub type Measured<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The service every variant guards: ready at once, answers at once, never
/// fails, so only the wrapper's work differs between variants.
pub fn inner(
) -> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
       + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(|x: u64| std::future::ready(Ok::<u64, Infallible>(x)))
}

/// [`inner`] counted in and out of one shared word, refusing above
/// `limit`: what any exact concurrency limit kept in a single counter pays
/// per call at least (two atomic writes to a line every caller writes, and
/// nothing else). On two threads, the floor of a bulkhead's call.
pub fn shared_counter_ready(
    limit: usize,
) -> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
       + Clone
       + Send
       + Sync
       + 'static {
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::{Acquire, Release};

    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
    tower::service_fn(move |x: u64| {
        let admitted = IN_FLIGHT.fetch_add(1, Acquire) < limit;
        IN_FLIGHT.fetch_sub(1, Release);
        std::future::ready(Ok::<u64, Infallible>(if admitted { x } else { u64::MAX }))
    })
}

/// One whole tower call, `poll_ready` included, as a caller makes it: a
/// service that needs a permit per call (`ConcurrencyLimit`) pays for it
/// here, and everything the response future drops is dropped inside.
#[inline(always)]
pub fn drive<S: Service<u64>>(
    service: &mut S,
    request: u64,
) -> Poll<Result<S::Response, S::Error>> {
    let mut cx = Context::from_waker(noop_waker_ref());
    if !matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        // A pending service would make every later number meaningless.
        panic!("the benchmarked service must be ready at once");
    }
    let future = pin!(service.call(request));
    future.poll(&mut cx)
}

/// The answer as one word. Handing the optimizer the whole 16-byte `Poll`
/// instead made it store it as two words and reload it as one, a
/// store-forwarding stall: the bare service measured ~8 ns instead of ~1.
#[inline(always)]
pub fn settle<E>(poll: Poll<Result<u64, E>>) -> u64 {
    match poll {
        Poll::Ready(result) => answer(result),
        Poll::Pending => u64::MAX - 1,
    }
}

/// An answer or an error as one word (see [`settle`]).
#[inline(always)]
pub fn answer<E>(result: Result<u64, E>) -> u64 {
    result.unwrap_or(u64::MAX)
}

/// An inner service that fails every call at once (without allocating:
/// an `io::Error` of a kind alone is one word).
pub fn failing_inner() -> impl Service<
    u64,
    Response = u64,
    Error = std::io::Error,
    Future = Ready<Result<u64, std::io::Error>>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(|_: u64| {
        std::future::ready(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    })
}

/// Asserts that a call answered at once with `Ok`, so a closed-state number
/// cannot come from a refused or pending call.
pub fn assert_passes<S: Service<u64>>(service: &mut S) {
    assert!(
        matches!(drive(service, 7), Poll::Ready(Ok(_))),
        "a closed breaker must let the call through"
    );
}

/// Measures one service's calls.
pub fn bench_service<S: Service<u64, Response = u64>>(
    group: &mut Measured<'_>,
    name: &str,
    mut service: S,
) {
    group.bench_function(name, |b| {
        b.iter(|| black_box(settle(drive(&mut service, black_box(1)))))
    });
}

/// Runs `call` on two threads at once, `iters` times each, and gives the
/// wall time per call of both together: what a shared breaker costs when
/// its cache lines bounce between cores.
pub fn two_threads<F>(iters: u64, call: F) -> Duration
where
    F: FnMut(u64) + Clone + Send,
{
    threads(2, iters, call)
}

/// [`two_threads`] on `count` threads: with more threads than cores, the
/// ones that run at once are whichever the OS picks.
pub fn threads<F>(count: u32, iters: u64, call: F) -> Duration
where
    F: FnMut(u64) + Clone + Send,
{
    // Every worker and the timer start together, so thread start-up is
    // outside the measurement.
    let start = Barrier::new(count as usize + 1);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .map(|_| {
                let mut call = call.clone();
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    for i in 0..iters {
                        call(i);
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for worker in workers {
            worker.join().unwrap();
        }
        began.elapsed() / count
    })
}

/// Measures two threads calling clones of one service, every call request
/// 1 as in the one-thread groups (a keyed variant would see a new key per
/// call otherwise).
pub fn bench_shared<S>(group: &mut Measured<'_>, name: &str, service: S)
where
    S: Service<u64, Response = u64> + Clone + Send,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // Each worker gets its own clone (as each connection would);
            // the clones share the breaker.
            let mut service = service.clone();
            two_threads(iters, move |_| {
                black_box(settle(drive(&mut service, black_box(1))));
            })
        })
    });
}

/// Whether `SEAWALL_BENCH_SHORT=1` asks for the short mode.
pub fn short_mode() -> bool {
    std::env::var_os("SEAWALL_BENCH_SHORT").is_some_and(|v| v == "1")
}

/// Short enough that the whole run takes about a minute and a half; with
/// `SEAWALL_BENCH_SHORT=1`, a third of a second of warm-up, 0.7 s of
/// measurement and 10 samples per variant (a quick look, not a record).
pub fn configure(group: &mut Measured<'_>) {
    if short_mode() {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(700));
    } else {
        group
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2));
    }
}

/// One whole tower call, polled until it answers: what a task woken with a
/// no-op waker would do. For services whose future can be pending without
/// any real wait (a peer taking an async lock under contention), where
/// [`drive`] would drop the call half-way and measure less than it costs.
#[inline(always)]
pub fn drive_until_ready<S: Service<u64>>(
    service: &mut S,
    request: u64,
) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(noop_waker_ref());
    while service.poll_ready(&mut cx).is_pending() {}
    let mut future = pin!(service.call(request));
    loop {
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            return result;
        }
    }
}

/// [`bench_shared`], with every call polled until it answers
/// ([`drive_until_ready`]).
pub fn bench_shared_until_ready<S>(group: &mut Measured<'_>, name: &str, service: S)
where
    S: Service<u64, Response = u64> + Clone + Send,
{
    bench_shared_on(group, name, 2, service);
}

/// [`bench_shared_until_ready`] on `count` threads.
pub fn bench_shared_on<S>(group: &mut Measured<'_>, name: &str, count: u32, service: S)
where
    S: Service<u64, Response = u64> + Clone + Send,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut service = service.clone();
            threads(count, iters, move |_| {
                black_box(answer(drive_until_ready(&mut service, black_box(1))));
            })
        })
    });
}

/// A current-thread runtime with a timer, to enter around peers that make
/// a tokio `Sleep` per call (it is never polled: the inner future wins).
pub fn timer_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A seawall breaker built like a user would, on the default (coarse) clock.
pub fn seawall_breaker(
    builder: seawall::circuit_breaker::CircuitBreakerBuilder,
) -> seawall::circuit_breaker::CircuitBreaker {
    let breaker = builder.clock(seawall::Clock::coarse()).build().unwrap();
    // The time window starts a bucket on the first call; do it before
    // measuring so the first sample does not pay for it.
    let _ = breaker.counts();
    breaker
}

/// breaker 2.0.2 with its documented preset; its tower layer is its
/// intended use with tower.
pub fn breaker_crate() -> breaker::CircuitBreaker {
    breaker::CircuitBreaker::new(breaker::CircuitBreakerConfig::standard())
}

/// recloser 1.4 with the settings resilience4j users know: 50% over the last
/// 100 calls (its defaults too). The open wait is long so a tripped one stays
/// open for the whole run.
pub fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .open_wait(Duration::from_secs(3600))
        .build()
}

/// The breaker crate's tower layer around [`inner`], as every group
/// measures it.
pub fn breaker_crate_service() -> impl Service<u64, Response = u64> + Clone + Send {
    breaker::tower::BreakerLayer::new(breaker_crate()).layer(inner())
}

/// recloser around [`inner`], through its synchronous entry point (see
/// [`RecloserSync`]), as every group measures it.
pub fn recloser_service() -> impl Service<u64, Response = u64> + Clone + Send {
    RecloserSync {
        recloser: Arc::new(recloser()),
        inner: inner(),
    }
}

/// recloser's own entry point is a synchronous closure: the closure makes
/// the same tower call the other variants make, so only recloser's work
/// differs.
#[inline(always)]
pub fn recloser_call<S: Service<u64>>(
    recloser: &recloser::Recloser,
    service: &mut S,
    request: u64,
) -> Result<S::Response, recloser::Error<S::Error>> {
    recloser.call(|| match drive(service, request) {
        Poll::Ready(result) => result,
        Poll::Pending => unreachable!("the inner service answers at once"),
    })
}

/// recloser's synchronous `call` ([`recloser_call`]) as a service, so it is
/// driven like every other variant: its future is an answer made in `call`.
/// Clones share the recloser.
#[derive(Clone)]
pub struct RecloserSync<S> {
    pub recloser: std::sync::Arc<recloser::Recloser>,
    pub inner: S,
}

impl<S: Service<u64>> Service<u64> for RecloserSync<S> {
    type Response = S::Response;
    type Error = recloser::Error<S::Error>;
    type Future = Ready<Result<S::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The closure asks the inner service itself.
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, request: u64) -> Self::Future {
        std::future::ready(recloser_call(&self.recloser, &mut self.inner, request))
    }
}

/// Counts this thread's heap allocations when installed as the global
/// allocator (`#[global_allocator] static A: Counting = Counting;`): a
/// thread-local increment per allocation, nothing per free.
pub struct Counting;

thread_local! {
    pub static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
}

/// Heap allocations per run of `call`, over `runs` runs, on this thread
/// (meaningful only with [`Counting`] installed).
pub fn allocations_per_call(runs: u64, mut call: impl FnMut(u64)) -> f64 {
    let before = ALLOCATIONS.with(std::cell::Cell::get);
    for i in 0..runs {
        call(i);
    }
    (ALLOCATIONS.with(std::cell::Cell::get) - before) as f64 / runs as f64
}

/// This process's resident memory, in bytes (`/proc/self/statm`, 4 KiB
/// pages), or `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// seawall's breaker through its synchronous API (`try_acquire`, the inner
/// call, `Permit::record`): the shape of [`RecloserSync`], so the two differ
/// only in the breakers' work. A refusal answers `Err(None)`.
#[derive(Clone)]
pub struct SeawallSync<S> {
    pub breaker: seawall::circuit_breaker::CircuitBreaker,
    pub inner: S,
}

impl<S: Service<u64>> Service<u64> for SeawallSync<S> {
    type Response = S::Response;
    type Error = Option<S::Error>;
    type Future = Ready<Result<S::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, request: u64) -> Self::Future {
        let Ok(permit) = self.breaker.try_acquire() else {
            return std::future::ready(Err(None));
        };
        let result = match drive(&mut self.inner, request) {
            Poll::Ready(result) => result,
            Poll::Pending => unreachable!("the inner service answers at once"),
        };
        permit.record(if result.is_ok() {
            seawall::classify::Verdict::Success
        } else {
            seawall::classify::Verdict::Failure
        });
        std::future::ready(result.map_err(Some))
    }
}
