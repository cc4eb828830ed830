//! What every bench shares: the always-ready inner service, one whole tower
//! call driven without a runtime, and two threads sharing a service.

#![allow(dead_code)] // each bench uses its own subset

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use futures::task::noop_waker_ref;
use tower::Service;

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
    // Both workers and the timer start together, so thread start-up is
    // outside the measurement.
    let start = Barrier::new(3);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
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
        began.elapsed() / 2
    })
}

/// Measures two threads calling clones of one service.
pub fn bench_shared<S>(group: &mut Measured<'_>, name: &str, service: S)
where
    S: Service<u64, Response = u64> + Clone + Send,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // Each worker gets its own clone (as each connection would);
            // the clones share the breaker.
            let mut service = service.clone();
            two_threads(iters, move |x| {
                black_box(settle(drive(&mut service, black_box(x))));
            })
        })
    });
}

/// Short enough that the whole run takes about a minute and a half.
pub fn configure(group: &mut Measured<'_>) {
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
}
