//! The whole comparison in one run: seawall next to tower's own middleware
//! and every peer crate, on the same always-ready inner service, on the same
//! machine, in the same process. BENCHMARKS.md shows the tables it gives.
//!
//! ```text
//! cargo bench -p seawall-benches --bench suite
//! SEAWALL_BENCH_SHORT=1 cargo bench -p seawall-benches --bench suite   # a few minutes
//! ```
//!
//! Every number is one whole tower call, `poll_ready` included, polled once
//! with a no-op waker: no runtime, whose scheduling would cost more than the
//! thing measured. A current-thread runtime is entered only around the
//! variants that make a tokio `Sleep` per call (it is never polled).
//!
//! Groups: `single` (one thread), `two_threads` (two threads on clones of
//! one service; wall time over the calls of both), `eight_threads` (the
//! same with eight, more than this machine's cores), `window_population`
//! (a closed breaker whose window already holds 10 to 1,000,000 calls) and
//! `registry` (a million keyed breakers). Before measuring, it prints the
//! heap allocations per call of every one-thread variant
//! (`allocations per call, <group>/<variant>: <n>`) and the registry's
//! resident memory per key; `scripts/bench-table` turns the run into tables.
//!
//! With `SEAWALL_BENCH_CALLS_OF=<group>/<variant>` it measures nothing and
//! only drives that variant, for callgrind (group `awaited`: the calls
//! awaited, as the `awaited` group measures them):
//!
//! ```text
//! SEAWALL_BENCH_CALLS_OF=single/seawall_breaker valgrind --tool=callgrind \
//!     --toggle-collect='suite::calls*' target/release/deps/suite-<hash>
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use failsafe::{FailurePolicy, Instrument};
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, Registry};
use seawall::classify::{ByKind, Verdict};
use seawall::fallback::{Fallback, FallbackCache};
use seawall::policy::Policy;
use seawall::timeout::TimeoutLayer;
use seawall::window::Window;
use seawall::Clock;
use tokio::runtime::Runtime;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceBuilder};
use tower_resilience::bulkhead::BulkheadLayer as TrBulkheadLayer;
use tower_resilience::circuitbreaker::CircuitBreakerLayer as TrBreakerLayer;

mod support;
use support::awaited::{
    awaited_call, bench_awaited, breaker_floor_inner, busy, deadline_floor_inner, pending_inner,
    registered_deadline_floor_inner, shared_counter_inner, yielding_inner, LimitFloor,
};
use support::*;

#[global_allocator]
static GLOBAL: Counting = Counting;

const SECOND: Duration = Duration::from_secs(1);
/// Calls per allocation count.
const ALLOCATION_CALLS: u64 = 10_000;
/// Keys in the registry.
const KEYS: u64 = 1_000_000;

/// failsafe 1.3 has no tower layer; this is the least a user would write
/// to get one from its futures API (`failsafe::futures::CircuitBreaker`).
struct FailsafeService<P, I, S> {
    breaker: failsafe::StateMachine<P, I>,
    inner: S,
}

impl<P, I, S> Service<u64> for FailsafeService<P, I, S>
where
    P: FailurePolicy + Send + Sync,
    I: Instrument + Send + Sync,
    S: Service<u64>,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<S::Future, P, I, failsafe::Any>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, request: u64) -> Self::Future {
        failsafe::futures::CircuitBreaker::call(&self.breaker, self.inner.call(request))
    }
}

/// tower-resilience 0.13's breaker with its defaults (50% over a count
/// window of 100). One layer, applied once: clones of its service share it.
fn tower_resilience_breaker() -> TrBreakerLayer {
    TrBreakerLayer::builder().build().unwrap()
}

/// tower-resilience 0.13's bulkhead, refusing at once when full, as
/// seawall's does by default (its `max_wait` of zero arms a tokio timeout
/// per call, so it needs a runtime entered).
fn tower_resilience_bulkhead() -> TrBulkheadLayer {
    tower_resilience_bulkhead_of(100)
}

fn tower_resilience_bulkhead_of(max: usize) -> TrBulkheadLayer {
    TrBulkheadLayer::builder()
        .max_concurrent_calls(max)
        .reject_when_full()
        .build()
        .unwrap()
}

/// tower's `ConcurrencyLimit` of `max` calls over its `Timeout` of a
/// second: the pair a Policy is measured against.
fn tower_pair<S>(max: usize, inner: S) -> ConcurrencyLimit<tower::timeout::Timeout<S>> {
    ServiceBuilder::new()
        .concurrency_limit(max)
        .timeout(SECOND)
        .service(inner)
}

/// A Policy with a value fallback for the benches' `u64` service.
type ValuePolicy = Policy<CircuitBreaker, ByKind, Fallback<u64, u64, std::convert::Infallible>>;

/// A Policy whose fallback answers from a cache keyed by the request.
type CachedPolicy =
    Policy<CircuitBreaker, ByKind, Fallback<u64, u64, std::convert::Infallible, u64>>;

/// A Policy with a breaker and a cached fallback, and its service, the
/// cache holding request 1's answer. The filling call's admission is
/// settled: moka would run it at a later read, a cost of the store, not of
/// the calls measured.
fn cached_fallback() -> (CachedPolicy, impl Service<u64, Response = u64> + Clone) {
    let cache = FallbackCache::<u64, u64>::builder().build().unwrap();
    let policy: CachedPolicy = Policy::builder()
        .name("bench")
        .clock(Clock::coarse())
        .circuit_breaker(CircuitBreaker::builder())
        .fallback(Fallback::keyed(|r: &u64| *r).cache(cache.clone()))
        .build()
        .unwrap();
    let mut service = policy.layer(inner());
    check("cached fallback (filling)", Expect::Answers, &mut service);
    assert_eq!(cache.len(), 1);
    (policy, service)
}

/// The full seawall Policy: timeout, bulkhead, breaker, value fallback.
fn full_policy() -> ValuePolicy {
    full_policy_of(100, Some(SECOND))
}

/// The full Policy with a bulkhead of `max` calls, and `timeout` if any.
fn full_policy_of(max: usize, timeout: Option<Duration>) -> ValuePolicy {
    let policy = Policy::builder().name("bench").clock(Clock::coarse());
    let policy = match timeout {
        Some(timeout) => policy.timeout(timeout),
        None => policy,
    };
    policy
        .bulkhead(Bulkhead::builder().max_concurrent(max))
        .circuit_breaker(CircuitBreaker::builder())
        .fallback(Fallback::builder().value(0u64))
        .build()
        .unwrap()
}

/// What a variant must do with request 1, checked before it is counted or
/// measured, so no number comes from a call that did something else.
#[derive(Clone, Copy)]
enum Expect {
    /// `Ok(1)` at once.
    Answers,
    /// An error at once.
    Refuses,
}

fn check<S: Service<u64, Response = u64>>(name: &str, expect: Expect, service: &mut S) {
    let poll = drive(service, 1);
    match expect {
        Expect::Answers => assert!(
            matches!(poll, Poll::Ready(Ok(1))),
            "{name} must answer at once"
        ),
        Expect::Refuses => assert!(
            matches!(poll, Poll::Ready(Err(_))),
            "{name} must refuse at once"
        ),
    }
}

/// Something done with each variant: count its allocations, or measure it.
/// The variants are built by one function per group and handed here, so
/// both passes see the same services.
trait Visit {
    fn visit<S: Service<u64, Response = u64>>(&mut self, name: &str, expect: Expect, service: S);
}

/// Prints `allocations per call, <group>/<name>: <n>` over 10,000 calls.
struct CountAllocations(&'static str);

impl Visit for CountAllocations {
    fn visit<S: Service<u64, Response = u64>>(
        &mut self,
        name: &str,
        expect: Expect,
        mut service: S,
    ) {
        check(name, expect, &mut service);
        let per_call = allocations_per_call(ALLOCATION_CALLS, |_| {
            black_box(settle(drive(&mut service, black_box(1))));
        });
        println!("allocations per call, {}/{name}: {per_call}", self.0);
    }
}

/// Measures each variant in a criterion group.
struct Measure<'a, 'b>(&'a mut Measured<'b>);

impl Visit for Measure<'_, '_> {
    fn visit<S: Service<u64, Response = u64>>(
        &mut self,
        name: &str,
        expect: Expect,
        mut service: S,
    ) {
        check(name, expect, &mut service);
        bench_service(self.0, name, service);
    }
}

/// Prints `future size, <group>/<name>: <bytes>`: the response future's
/// size, which an awaiting caller's own future holds and moves.
struct Sizes<'a> {
    group: &'static str,
    timers: &'a Runtime,
}

impl Visit for Sizes<'_> {
    fn visit<S: Service<u64, Response = u64>>(&mut self, name: &str, _: Expect, mut service: S) {
        let _timers = self.timers.enter();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(
            matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))),
            "{name} must be ready at once"
        );
        let future = service.call(1);
        println!(
            "future size, {}/{name}: {}",
            self.group,
            std::mem::size_of_val(&future)
        );
    }
}

/// Measures each variant's calls awaited, one after another, inside an
/// `async fn` on a current-thread runtime (with a timer): how applications
/// call.
struct MeasureAwaited<'a, 'b> {
    group: &'a mut Measured<'b>,
    runtime: &'a Runtime,
}

impl Visit for MeasureAwaited<'_, '_> {
    fn visit<S: Service<u64, Response = u64>>(
        &mut self,
        name: &str,
        expect: Expect,
        mut service: S,
    ) {
        let answer = self.runtime.block_on(awaited_call(&mut service, 1));
        match expect {
            Expect::Answers => assert_eq!(answer, 1, "{name} must answer"),
            Expect::Refuses => assert!(answer >= u64::MAX - 1, "{name} must refuse"),
        }
        bench_awaited(self.group, self.runtime, name, service);
    }
}

/// Instead of measuring, drives the one-thread variant named by
/// `SEAWALL_BENCH_CALLS_OF` (`<group>/<variant>`) through [`calls`] (or
/// [`calls_awaited`], for the group `awaited`), `SEAWALL_BENCH_CALLS` times
/// (default 100,000): for instruction counts under callgrind, which the
/// load of a shared machine does not move (see BENCHMARKS.md and
/// `scripts/bench-instructions`).
struct Drive {
    group: String,
    name: String,
    calls: u64,
    /// The runtime the variants are built under, and awaited calls run on.
    timers: std::rc::Rc<Runtime>,
}

impl Drive {
    fn from_env() -> Option<Drive> {
        let of = std::env::var("SEAWALL_BENCH_CALLS_OF").ok()?;
        let (group, name) = of.split_once('/').unwrap_or(("single", &of));
        let calls = std::env::var("SEAWALL_BENCH_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        Some(Drive {
            group: group.to_owned(),
            name: name.to_owned(),
            calls,
            timers: std::rc::Rc::new(timer_runtime()),
        })
    }
}

impl Visit for Drive {
    fn visit<S: Service<u64, Response = u64>>(
        &mut self,
        name: &str,
        expect: Expect,
        mut service: S,
    ) {
        if name != self.name {
            return;
        }
        if self.group == "awaited" {
            self.timers
                .block_on(calls_awaited(&mut service, self.calls));
        } else {
            check(name, expect, &mut service);
            calls(&mut service, self.calls);
        }
        println!("{name}: {} calls driven", self.calls);
    }
}

/// `n` whole calls, and nothing else: callgrind's `--toggle-collect` counts
/// inside this function only. Each is request 1, as criterion's are: a
/// keyed variant (the cached fallback) would see a new key every call.
#[inline(never)]
fn calls<S: Service<u64, Response = u64>>(service: &mut S, n: u64) {
    for _ in 0..n {
        black_box(settle(drive(service, black_box(1))));
    }
}

/// `n` whole calls awaited as applications make them (see
/// `support::awaited`), each poll by the runtime's `block_on` through
/// [`calls_polled`], where callgrind counts.
///
/// With `SEAWALL_BENCH_GIVE_WAY` set (as `scripts/bench-instructions` does),
/// the thread gives way to the process's other threads between every
/// eighth poll, outside what callgrind counts: valgrind runs one thread at
/// a time, and seawall's clock thread, which a real machine runs beside the
/// caller on another core, would otherwise sweep the alarms of pending
/// calls too seldom for them to be set (see `src/alarm.rs`), and their
/// count would measure the fallback to tokio's timer, as often as
/// valgrind's scheduling happened to allow.
async fn calls_awaited<S: Service<u64, Response = u64>>(service: &mut S, n: u64) {
    let give_way = std::env::var_os("SEAWALL_BENCH_GIVE_WAY").is_some();
    let mut polls = 0u32;
    let mut calls = std::pin::pin!(async {
        for _ in 0..n {
            black_box(awaited_call(service, black_box(1)).await);
        }
    });
    std::future::poll_fn(|cx| {
        polls = polls.wrapping_add(1);
        if give_way && polls.is_multiple_of(8) {
            std::thread::yield_now();
        }
        calls_polled(calls.as_mut(), cx)
    })
    .await
}

/// A poll of [`calls_awaited`]'s calls, out of line: what callgrind's
/// `--toggle-collect` sees (the `async fn`'s own poll is inlined into the
/// runtime's).
#[inline(never)]
fn calls_polled<F: std::future::Future>(
    calls: std::pin::Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    calls.poll(cx)
}

/// A listener that does nothing: what a registered listener costs beside
/// its own work.
struct Ignore;

impl seawall::observe::Listener for Ignore {
    fn on_call(&self, _: &seawall::observe::CallEvent<'_>) {}
}

/// The full Policy with `breaker` as its breaker.
fn policy_with(breaker: seawall::circuit_breaker::CircuitBreakerBuilder) -> ValuePolicy {
    Policy::builder()
        .name("bench")
        .clock(Clock::coarse())
        .timeout(SECOND)
        .bulkhead(Bulkhead::builder().max_concurrent(100))
        .circuit_breaker(breaker)
        .fallback(Fallback::builder().value(0u64))
        .build()
        .unwrap()
}

/// The full Policy's healthy path as observed: nothing, a listener, and
/// the `metrics` histogram listener on a Prometheus recorder.
fn observe(v: &mut impl Visit) {
    use Expect::Answers;
    v.visit("policy", Answers, full_policy().layer(inner()));
    v.visit(
        "policy_listener",
        Answers,
        policy_with(CircuitBreaker::builder().listener(std::sync::Arc::new(Ignore))).layer(inner()),
    );
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let listener = metrics::with_local_recorder(&recorder, || {
        seawall::observe::metrics::MetricsListener::new("bench")
    });
    v.visit(
        "policy_metrics",
        Answers,
        policy_with(CircuitBreaker::builder().listener(listener)).layer(inner()),
    );
}

/// A service called with a budget current, as a handler under
/// `budget::BudgetLayer` calls its dependencies. The handler's future
/// enters the budget once per poll, whatever it calls; here every call
/// enters it, so the figure is an upper bound.
#[derive(Clone)]
struct InBudget<S> {
    inner: S,
    budget: seawall::budget::Budget,
}

impl<S: Service<u64>> Service<u64> for InBudget<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: u64) -> Self::Future {
        let inner = &mut self.inner;
        self.budget.sync_scope(|| inner.call(request))
    }
}

/// The full Policy's healthy path inside a request's budget (an hour: the
/// policy's timeout still applies). The first budget made current makes
/// every later deadline look the budget up (a task-local read): measured
/// after the variants without one.
fn observe_budgeted(v: &mut impl Visit) {
    v.visit(
        "policy_in_budget",
        Expect::Answers,
        InBudget {
            inner: full_policy().layer(inner()),
            budget: seawall::budget::Budget::new(Duration::from_secs(3_600)),
        },
    );
}

/// The full Policy's healthy path under tracing: a subscriber that wants no
/// `TRACE` spans, then one that takes them all. After these, tracing's
/// callsites keep checking for a subscriber (their interest cache is not
/// rebuilt when the last one goes), so they are measured last.
fn observe_traced(v: &mut impl Visit) {
    use Expect::Answers;
    {
        let info = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        let _info = tracing::subscriber::set_default(info);
        v.visit("policy_tracing_info", Answers, full_policy().layer(inner()));
    }
    {
        use tracing_subscriber::layer::SubscriberExt;
        let all =
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::TRACE);
        let _all = tracing::subscriber::set_default(all);
        v.visit(
            "policy_tracing_trace",
            Answers,
            full_policy().layer(inner()),
        );
    }
}

/// Every one-thread variant, in table order.
fn single(v: &mut impl Visit, timers: &Runtime) {
    use Expect::{Answers, Refuses};

    v.visit("bare", Answers, inner());

    // tower: Timeout makes a `Sleep` per call.
    {
        let _timers = timers.enter();
        v.visit(
            "tower_timeout",
            Answers,
            tower::timeout::Timeout::new(inner(), SECOND),
        );
        v.visit(
            "tower_timeout_concurrency_limit",
            Answers,
            tower_pair(100, inner()),
        );
    }
    v.visit(
        "tower_concurrency_limit",
        Answers,
        tower::limit::ConcurrencyLimit::new(inner(), 100),
    );

    // tower-resilience 0.13.
    v.visit(
        "tower_resilience_breaker",
        Answers,
        tower_resilience_breaker().layer(inner()),
    );
    {
        let _timers = timers.enter();
        v.visit(
            "tower_resilience_bulkhead",
            Answers,
            tower_resilience_bulkhead().layer(inner()),
        );
        v.visit(
            "tower_resilience_stack",
            Answers,
            ServiceBuilder::new()
                .layer(tower_resilience_breaker())
                .layer(tower_resilience_bulkhead())
                .timeout(SECOND)
                .service(inner()),
        );
    }

    // The breaker crates.
    v.visit("breaker_crate", Answers, breaker_crate_service());
    v.visit(
        "failsafe",
        Answers,
        FailsafeService {
            breaker: failsafe::Config::new().build(),
            inner: inner(),
        },
    );
    v.visit("recloser", Answers, recloser_service());
    // The least a tower breaker's call does (a reference its future owns,
    // taken and given back, and its outcome counted: three locked writes),
    // and nothing else.
    v.visit(
        "floor_breaker",
        Answers,
        support::awaited::breaker_floor_ready(),
    );

    // seawall. No runtime: its timeout arms no timer for an answer that is
    // ready on the first poll.
    let breaker = seawall_breaker(CircuitBreaker::builder());
    v.visit("seawall_breaker", Answers, breaker.layer().layer(inner()));
    // The synchronous API, in recloser's shape: a call that settles before
    // it returns, with no future to own the permit.
    v.visit(
        "seawall_breaker_sync",
        Answers,
        support::SeawallSync {
            breaker: seawall_breaker(CircuitBreaker::builder()),
            inner: inner(),
        },
    );
    let breaker = seawall_breaker(
        CircuitBreaker::builder()
            .track_latency(true)
            .slow_calls(SECOND, 50.0),
    );
    v.visit(
        "seawall_breaker_latency",
        Answers,
        breaker.layer().layer(inner()),
    );
    let breaker = seawall_breaker(CircuitBreaker::builder());
    breaker.force_open();
    v.visit(
        "seawall_breaker_open",
        Refuses,
        breaker.layer().layer(inner()),
    );

    // A failure that does not trip (too few calls to judge, for ever):
    // a breaker reads its window, every stripe of it, at each failure.
    let breaker = seawall_breaker(CircuitBreaker::builder().minimum_calls(u64::MAX));
    v.visit(
        "seawall_breaker_failing",
        Refuses,
        breaker.layer().layer(failing_inner()),
    );

    let free = Bulkhead::builder().max_concurrent(100).build().unwrap();
    v.visit("seawall_bulkhead", Answers, free.layer().layer(inner()));
    let adaptive = Bulkhead::builder()
        .max_concurrent(100)
        .adaptive(seawall::bulkhead::AdaptiveLimit::vegas().limits(1, 1000))
        .build()
        .unwrap();
    v.visit(
        "seawall_bulkhead_adaptive",
        Answers,
        adaptive.layer().layer(inner()),
    );
    v.visit(
        "tower_resilience_adaptive",
        Answers,
        tower_resilience::adaptive::AdaptiveLimiterLayer::new(
            tower_resilience::adaptive::Vegas::builder()
                .initial_limit(100)
                .max_limit(1000)
                .build()
                .unwrap(),
        )
        .layer(inner()),
    );
    // Full: one permit, held by a call that is never polled.
    let full = Bulkhead::builder().max_concurrent(1).build().unwrap();
    let mut holder = full.layer().layer(inner());
    assert!(matches!(
        holder.poll_ready(&mut Context::from_waker(futures::task::noop_waker_ref())),
        Poll::Ready(Ok(()))
    ));
    let held = holder.call(0);
    v.visit(
        "seawall_bulkhead_full",
        Refuses,
        full.layer().layer(inner()),
    );
    drop(held);

    v.visit(
        "seawall_timeout",
        Answers,
        TimeoutLayer::new(SECOND)
            .clock(Clock::coarse())
            .layer(inner()),
    );

    // Fault injection switched off, and on with nothing drawn: what a
    // service pays for having the layer in place.
    let faults = seawall::fault::Faults::<u64, std::convert::Infallible>::builder()
        .disabled()
        .build()
        .unwrap();
    v.visit(
        "seawall_fault_off",
        Answers,
        seawall::fault::FaultLayer::new(faults).layer(inner()),
    );
    let faults = seawall::fault::Faults::<u64, std::convert::Infallible>::builder()
        .build()
        .unwrap();
    v.visit(
        "seawall_fault_on_none_drawn",
        Answers,
        seawall::fault::FaultLayer::new(faults).layer(inner()),
    );

    let armed: ValuePolicy = Policy::builder()
        .name("bench")
        .clock(Clock::coarse())
        .fallback(Fallback::builder().value(0u64))
        .build()
        .unwrap();
    v.visit("seawall_fallback", Answers, armed.layer(inner()));

    // Every call answered, and its answer kept in the cache: between
    // refreshes (one a second) the kept one is known fresh.
    let (_policy, service) = cached_fallback();
    v.visit("seawall_cached_fallback_healthy", Answers, service);

    // Every call refused by the forced-open breaker and answered from the
    // cache, which holds request 1's last good answer.
    let (cached, mut service) = cached_fallback();
    cached.breaker().force_open();
    // Checked before the visit: a visitor may drive only other variants.
    check("seawall_cached_fallback (served)", Answers, &mut service);
    assert!(cached.breaker().counts().cache_hit > 0);
    v.visit("seawall_cached_fallback", Answers, service);

    v.visit("seawall_policy", Answers, full_policy().layer(inner()));

    // Only a timeout configured: what a Policy costs beyond what it does.
    let timeout_only: Policy = Policy::builder()
        .name("bench")
        .clock(Clock::coarse())
        .timeout(SECOND)
        .build()
        .unwrap();
    v.visit(
        "seawall_policy_timeout_only",
        Answers,
        timeout_only.layer(inner()),
    );
    // The same without statistics: what is left is the timeout layer.
    let timeout_only_uncounted = Policy::builder()
        .name("bench")
        .clock(Clock::coarse())
        .timeout(SECOND)
        .without_statistics()
        .build()
        .unwrap();
    v.visit(
        "seawall_policy_timeout_only_uncounted",
        Answers,
        timeout_only_uncounted.layer(inner()),
    );
}

/// Inner futures pending on their first poll, as every real I/O call is:
/// a timeout arms its timer, and a Policy's future is polled twice. Only
/// awaited (a one-poll call would never answer).
fn pending_inner_variants(v: &mut impl Visit, timers: &Runtime) {
    use Expect::Answers;

    v.visit("bare_pending", Answers, pending_inner());
    {
        let _timers = timers.enter();
        v.visit(
            "tower_timeout_pending",
            Answers,
            tower::timeout::Timeout::new(pending_inner(), SECOND),
        );
        v.visit(
            "tower_timeout_concurrency_limit_pending",
            Answers,
            tower_pair(100, pending_inner()),
        );
    }
    v.visit(
        "seawall_timeout_pending",
        Answers,
        TimeoutLayer::new(SECOND)
            .clock(Clock::coarse())
            .layer(pending_inner()),
    );
    v.visit(
        "seawall_policy_pending",
        Answers,
        full_policy().layer(pending_inner()),
    );
    // No deadline: what its pending poll still asks of the deadline.
    v.visit(
        "seawall_policy_no_timeout_pending",
        Answers,
        full_policy_of(100, None).layer(pending_inner()),
    );
}

/// Tasks of the busy runtime.
const BUSY_TASKS: u64 = 256;
/// Its concurrency limits: above the tasks, so that every call is admitted
/// and the figures are the layers' cost, not refusals or waits.
const BUSY_LIMIT: usize = 1024;

/// Calls through one service shared by 256 tasks on a two-worker runtime,
/// each call yielding once inside: where cache lines shared between the
/// workers, not instructions, decide. Prints
/// `busy runtime, <variant>: <calls/s>`, the median of five runs. The runs
/// go round the variants in turn: this machine's runtime sometimes runs
/// every timer-heavy variant about three times slower for a while, and
/// interleaving spreads that over all variants instead of landing on one.
fn busy_runtime() {
    let calls = if short_mode() { 500_000 } else { 2_000_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _timers = runtime.enter();
    let runtime = &runtime;
    type Run<'a> = Box<dyn Fn() -> f64 + 'a>;
    let variants: Vec<(&str, Run<'_>)> = vec![
        (
            "bare",
            Box::new(|| busy(runtime, yielding_inner(), calls, BUSY_TASKS)),
        ),
        // One shared counter in and out per call and nothing else: the
        // floor of any limit kept in one word (tower's and seawall's are).
        (
            "floor_shared_counter",
            Box::new(|| busy(runtime, shared_counter_inner(BUSY_LIMIT), calls, BUSY_TASKS)),
        ),
        // What a breaker that counts every outcome must do, and nothing
        // more: the floor of seawall's breaker.
        (
            "floor_breaker",
            Box::new(|| busy(runtime, breaker_floor_inner(), calls, BUSY_TASKS)),
        ),
        // What any deadline on a pending call must do, and nothing more:
        // a lower bound no working timeout reaches.
        (
            "floor_deadline",
            Box::new(|| busy(runtime, deadline_floor_inner(), calls, BUSY_TASKS)),
        ),
        // A deadline that something could fire, and nothing else: the
        // floor of a timeout without a timer per call.
        (
            "floor_registered_deadline",
            Box::new(|| {
                let floor = registered_deadline_floor_inner(LimitFloor::None, false);
                busy(runtime, floor, calls, BUSY_TASKS)
            }),
        ),
        // The same under an exact limit in one word, with a breaker's
        // floor around it: the floor of a Policy with a breaker, a
        // bulkhead and a timeout, as seawall's are made.
        (
            "floor_policy",
            Box::new(|| {
                let limit = LimitFloor::Shared(BUSY_LIMIT);
                let floor = registered_deadline_floor_inner(limit, true);
                busy(runtime, floor, calls, BUSY_TASKS)
            }),
        ),
        // The same with the limit's permits spread over the threads (its
        // fast path only): how far a limit not kept in one word would
        // move the Policy's floor.
        (
            "floor_policy_per_thread_limit",
            Box::new(|| {
                let limit = LimitFloor::PerThread(BUSY_LIMIT);
                let floor = registered_deadline_floor_inner(limit, true);
                busy(runtime, floor, calls, BUSY_TASKS)
            }),
        ),
        (
            "tower_concurrency_limit",
            Box::new(|| {
                let service = ServiceBuilder::new()
                    .concurrency_limit(BUSY_LIMIT)
                    .service(yielding_inner());
                busy(runtime, service, calls, BUSY_TASKS)
            }),
        ),
        // A tokio timer per call and nothing else: the floor of any
        // deadline that arms one (seawall's timeout and Policy do).
        (
            "tower_timeout",
            Box::new(|| {
                let service = tower::timeout::Timeout::new(yielding_inner(), SECOND);
                busy(runtime, service, calls, BUSY_TASKS)
            }),
        ),
        (
            "tower_timeout_concurrency_limit",
            Box::new(|| {
                let service = tower_pair(BUSY_LIMIT, yielding_inner());
                busy(runtime, service, calls, BUSY_TASKS)
            }),
        ),
        (
            "tower_resilience_stack",
            Box::new(|| {
                let service = ServiceBuilder::new()
                    .layer(tower_resilience_breaker())
                    .layer(tower_resilience_bulkhead_of(BUSY_LIMIT))
                    .timeout(SECOND)
                    .service(yielding_inner());
                busy(runtime, service, calls, BUSY_TASKS)
            }),
        ),
        (
            "seawall_breaker",
            Box::new(|| {
                let breaker = seawall_breaker(CircuitBreaker::builder());
                let service = breaker.layer().layer(yielding_inner());
                busy(runtime, service, calls, BUSY_TASKS)
            }),
        ),
        (
            "seawall_bulkhead",
            Box::new(|| {
                let bulkhead = Bulkhead::builder()
                    .max_concurrent(BUSY_LIMIT)
                    .build()
                    .unwrap();
                busy(
                    runtime,
                    bulkhead.layer().layer(yielding_inner()),
                    calls,
                    BUSY_TASKS,
                )
            }),
        ),
        (
            "seawall_timeout",
            Box::new(|| {
                let service = TimeoutLayer::new(SECOND)
                    .clock(Clock::coarse())
                    .layer(yielding_inner());
                busy(runtime, service, calls, BUSY_TASKS)
            }),
        ),
        (
            "seawall_policy_no_timeout",
            Box::new(|| {
                let policy = full_policy_of(BUSY_LIMIT, None);
                busy(runtime, policy.layer(yielding_inner()), calls, BUSY_TASKS)
            }),
        ),
        (
            "seawall_policy",
            Box::new(|| {
                let policy = full_policy_of(BUSY_LIMIT, Some(SECOND));
                busy(runtime, policy.layer(yielding_inner()), calls, BUSY_TASKS)
            }),
        ),
    ];
    // `SEAWALL_BENCH_BUSY=<name>`: only the variant so named, for a
    // profiler's sake.
    let only = std::env::var("SEAWALL_BENCH_BUSY").ok();
    let variants: Vec<_> = variants
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|only| *name == only))
        .collect();
    let mut rates = vec![Vec::new(); variants.len()];
    for _ in 0..5 {
        for ((_, run), rates) in variants.iter().zip(&mut rates) {
            rates.push(run());
        }
    }
    for ((name, _), mut rates) in variants.iter().zip(rates) {
        rates.sort_by(f64::total_cmp);
        println!("busy runtime, {name}: {:.0} calls/s", rates[2]);
    }
}

/// tower's retry policy with its `TpsBudget`, as tower's docs write one:
/// deposit on a success, withdraw before a retry.
#[derive(Clone)]
struct TowerBudgeted(Arc<tower::retry::budget::TpsBudget>);

impl tower::retry::Policy<u64, u64, std::convert::Infallible> for TowerBudgeted {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut u64,
        result: &mut Result<u64, std::convert::Infallible>,
    ) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}

/// tower's hedge policy: every request may be hedged.
#[derive(Clone)]
struct TowerHedgeAll;

impl tower::hedge::Policy<u64> for TowerHedgeAll {
    fn clone_request(&self, request: &u64) -> Option<u64> {
        Some(*request)
    }

    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

/// Retries and hedges on the healthy path (every call answered at once):
/// what a request pays for the rule being there.
fn retry(v: &mut impl Visit, timers: &Runtime) {
    use seawall::hedge::{Hedge, HedgeLayer};
    use seawall::retry::{Retry, RetryBudget, RetryLayer};
    use Expect::Answers;

    v.visit("bare", Answers, inner());
    v.visit(
        "tower_retry_budget",
        Answers,
        tower::retry::Retry::new(
            TowerBudgeted(Arc::new(tower::retry::budget::TpsBudget::default())),
            inner(),
        ),
    );
    v.visit(
        "tower_resilience_retry",
        Answers,
        tower_resilience::retry::RetryLayer::<u64, u64, std::convert::Infallible>::builder()
            .max_attempts(3)
            .build()
            .layer(inner()),
    );
    let budget = || {
        RetryBudget::builder()
            .clock(Clock::coarse())
            .build()
            .unwrap()
    };
    let rule = || {
        Retry::builder()
            .clock(Clock::coarse())
            .budget(budget())
            .build()
            .unwrap()
    };
    v.visit(
        "seawall_retry",
        Answers,
        RetryLayer::new(rule()).layer(inner()),
    );
    v.visit("seawall_policy", Answers, full_policy().layer(inner()));
    let retrying = Policy::builder()
        .name("bench")
        .clock(Clock::coarse())
        .timeout(SECOND)
        .bulkhead(Bulkhead::builder().max_concurrent(100))
        .circuit_breaker(CircuitBreaker::builder())
        .retry(rule())
        .fallback(Fallback::builder().value(0u64))
        .build()
        .unwrap();
    v.visit("seawall_policy_retry", Answers, retrying.layer(inner()));

    // Hedges arm a timer per call.
    let _timers = timers.enter();
    v.visit(
        "tower_hedge",
        Answers,
        tower::hedge::Hedge::new(inner(), TowerHedgeAll, 10, 0.95, Duration::from_secs(10)),
    );
    v.visit(
        "tower_resilience_hedge",
        Answers,
        tower_resilience::hedge::HedgeLayer::builder()
            .delay(Duration::from_millis(100))
            .max_hedged_attempts(2)
            .build()
            .layer(inner()),
    );
    let hedge = Hedge::builder()
        .clock(Clock::coarse())
        .delay(Duration::from_millis(100))
        .budget(budget())
        .build()
        .unwrap();
    v.visit(
        "seawall_hedge",
        Answers,
        HedgeLayer::new(hedge).layer(inner()),
    );
}

/// A closed breaker whose window already holds this many calls.
fn window_population(v: &mut impl Visit) {
    for calls in [10, 1_000, 100_000, 1_000_000] {
        // A window of 10 cannot hold the default minimum of 20 calls.
        let breaker = seawall_breaker(
            CircuitBreaker::builder()
                .window(Window::count(calls))
                .minimum_calls(u64::from(calls).min(20)),
        );
        let mut service = breaker.layer().layer(inner());
        for i in 0..u64::from(calls) {
            black_box(settle(drive(&mut service, i)));
        }
        assert_eq!(breaker.counts().calls(), u64::from(calls), "a full ring");
        v.visit(&format!("count_{calls}"), Expect::Answers, service);
    }
    // The default time window (10 s in 10 buckets), after a million calls.
    let breaker = seawall_breaker(CircuitBreaker::builder());
    let mut service = breaker.layer().layer(inner());
    for i in 0..1_000_000 {
        black_box(settle(drive(&mut service, i)));
    }
    v.visit("time_1000000", Expect::Answers, service);
}

/// One breaker, or one Policy, shared by two threads.
fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    configure(&mut group);
    // Every call polled until it answers: tower-resilience takes an async
    // lock per call, which is pending while the other thread holds it.
    bench_shared_until_ready(&mut group, "bare", inner());
    bench_shared_until_ready(
        &mut group,
        "tower_concurrency_limit",
        tower::limit::ConcurrencyLimitLayer::new(100).layer(inner()),
    );
    bench_shared_until_ready(
        &mut group,
        "tower_resilience_breaker",
        tower_resilience_breaker().layer(inner()),
    );
    bench_shared_until_ready(&mut group, "breaker_crate", breaker_crate_service());
    bench_shared_until_ready(&mut group, "recloser", recloser_service());
    let breaker = seawall_breaker(CircuitBreaker::builder());
    bench_shared_until_ready(
        &mut group,
        "seawall_breaker",
        breaker.layer().layer(inner()),
    );
    bench_shared_until_ready(
        &mut group,
        "floor_shared_counter",
        shared_counter_ready(100),
    );
    let bulkhead = Bulkhead::builder().max_concurrent(100).build().unwrap();
    bench_shared_until_ready(
        &mut group,
        "seawall_bulkhead",
        bulkhead.layer().layer(inner()),
    );
    bench_shared_until_ready(&mut group, "seawall_policy", full_policy().layer(inner()));
    let (_policy, service) = cached_fallback();
    bench_shared_until_ready(&mut group, "seawall_cached_fallback_healthy", service);
    let (served, service) = cached_fallback();
    served.breaker().force_open();
    bench_shared_until_ready(&mut group, "seawall_cached_fallback", service);
    group.finish();
}

/// Threads beyond this machine's two cores: a runtime with more workers
/// than cores (a container that reports the host's, a blocking pool, two
/// runtimes), of which the two that run at once are whichever the OS
/// picks. Calls stay cheap only if those two never write one line.
const OVERSUBSCRIBED: u32 = 8;

/// One breaker, or one Policy, shared by [`OVERSUBSCRIBED`] threads.
fn eight_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("eight_threads");
    configure(&mut group);
    let on = OVERSUBSCRIBED;
    bench_shared_on(&mut group, "bare", on, inner());
    bench_shared_on(&mut group, "breaker_crate", on, breaker_crate_service());
    bench_shared_on(&mut group, "recloser", on, recloser_service());
    let breaker = seawall_breaker(CircuitBreaker::builder());
    bench_shared_on(
        &mut group,
        "seawall_breaker",
        on,
        breaker.layer().layer(inner()),
    );
    bench_shared_on(
        &mut group,
        "seawall_policy",
        on,
        full_policy().layer(inner()),
    );
    group.finish();
}

/// A registry holding `keys` keyed breakers, and what it cost in
/// resident memory: first with every key looked up once (a breaker that
/// never saw a call), then with one call recorded on every key, then with
/// calls in two buckets on every key (a time window's ring made: what a
/// key called now and then takes).
///
/// `window` is the breakers' window: `time` (the default, Hystrix's 10 s in
/// 10 buckets), `time_latency` (the same, timing calls for percentiles) or
/// `count` (the last 100 calls).
fn registry_of(keys: u64, window: &str) -> Registry<u64> {
    let breaker = CircuitBreaker::builder().clock(Clock::coarse());
    let breaker = match window {
        "time" => breaker,
        "time_latency" => breaker.track_latency(true),
        "count" => breaker.window(Window::count(100)),
        other => panic!("no window kind {other:?}: time, time_latency or count"),
    };
    let before = resident_bytes();
    let began = Instant::now();
    // No memory bound: the worst case is what this measures.
    let registry = Registry::<u64>::builder(breaker)
        .max_keys(keys)
        .max_memory(u64::MAX)
        .build()
        .unwrap();
    for key in 0..keys {
        let _ = registry.get(key);
    }
    let took = began.elapsed();
    let looked_up = resident_bytes();
    println!("registry: {keys} keys built in {took:.2?} ({window} window)");
    for key in 0..keys {
        admit(&registry, key);
    }
    let called = resident_bytes();
    // Past the time windows' one-second bucket: each key's next call
    // moves its first call into the ring.
    std::thread::sleep(Duration::from_millis(1100));
    for key in 0..keys {
        admit(&registry, key);
    }
    let called_again = resident_bytes();
    if let (Some(before), Some(looked_up), Some(called), Some(called_again)) =
        (before, looked_up, called, called_again)
    {
        let per_key = |after: u64| after.saturating_sub(before) as f64 / keys as f64;
        println!(
            "registry memory per key ({window} window): {:.0} bytes looked up, {:.0} bytes after one call each, {:.0} after calls in two buckets (resident {:.1} MiB before, {:.1} MiB after)",
            per_key(looked_up),
            per_key(called),
            per_key(called_again),
            before as f64 / 1048576.0,
            called_again as f64 / 1048576.0,
        );
    }
    assert_eq!(registry.len(), keys, "every key kept");
    registry
}

/// Looks a key's breaker up, asks it to admit a call and records the call's
/// success.
#[inline(always)]
fn admit(registry: &Registry<u64>, key: u64) -> bool {
    match registry.get(key).try_acquire() {
        Ok(permit) => {
            permit.record(Verdict::Success);
            true
        }
        Err(_) => false,
    }
}

/// Walks all the keys in a scattered order (a stride coprime with their
/// number), so lookups miss the CPU caches as a real key mix would.
#[inline(always)]
fn scattered(i: u64) -> u64 {
    i.wrapping_mul(617_237) % KEYS
}

fn registry_allocations(registry: &Registry<u64>) {
    let hot = allocations_per_call(ALLOCATION_CALLS, |_| {
        black_box(admit(registry, black_box(7)));
    });
    println!("allocations per call, registry/hot_key: {hot}");
    let spread = allocations_per_call(ALLOCATION_CALLS, |i| {
        black_box(admit(registry, black_box(scattered(i))));
    });
    println!("allocations per call, registry/scattered_keys: {spread}");
}

fn registry_bench(c: &mut Criterion, registry: &Registry<u64>) {
    let mut group = c.benchmark_group("registry");
    configure(&mut group);
    group.bench_function("hot_key", |b| {
        b.iter(|| black_box(admit(registry, black_box(7))))
    });
    group.bench_function("scattered_keys", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(admit(registry, black_box(scattered(i))))
        })
    });
    group.finish();
}

fn suite(c: &mut Criterion) {
    // Only the registry's memory, with the window named: one kind a process,
    // each on a fresh heap.
    if let Ok(window) = std::env::var("SEAWALL_BENCH_REGISTRY_WINDOW") {
        // A tenth of the keys: with latency tracked, a million would need
        // about 24 GB.
        registry_of(KEYS / 10, &window);
        return;
    }
    if let Some(mut drive) = Drive::from_env() {
        let timers = drive.timers.clone();
        match drive.group.as_str() {
            "window_population" => window_population(&mut drive),
            "observe" => {
                observe(&mut drive);
                observe_budgeted(&mut drive);
                observe_traced(&mut drive);
            }
            "retry" => retry(&mut drive, &timers),
            "awaited" => {
                single(&mut drive, &timers);
                pending_inner_variants(&mut drive, &timers);
            }
            _ => single(&mut drive, &timers),
        }
        return;
    }
    // First, on a fresh heap, so its resident memory is its own.
    let registry = registry_of(KEYS, "time");
    let timers = timer_runtime();

    single(&mut CountAllocations("single"), &timers);
    retry(&mut CountAllocations("retry"), &timers);
    window_population(&mut CountAllocations("window_population"));
    registry_allocations(&registry);

    single(
        &mut Sizes {
            group: "single",
            timers: &timers,
        },
        &timers,
    );
    pending_inner_variants(
        &mut Sizes {
            group: "awaited",
            timers: &timers,
        },
        &timers,
    );

    let mut group = c.benchmark_group("single");
    configure(&mut group);
    single(&mut Measure(&mut group), &timers);
    group.finish();

    let mut group = c.benchmark_group("awaited");
    configure(&mut group);
    let mut awaited = MeasureAwaited {
        group: &mut group,
        runtime: &timers,
    };
    single(&mut awaited, &timers);
    pending_inner_variants(&mut awaited, &timers);
    group.finish();

    busy_runtime();

    two_threads(c);
    eight_threads(c);

    let mut group = c.benchmark_group("retry");
    configure(&mut group);
    retry(&mut Measure(&mut group), &timers);
    group.finish();

    let mut group = c.benchmark_group("window_population");
    configure(&mut group);
    window_population(&mut Measure(&mut group));
    group.finish();

    registry_bench(c, &registry);

    // Last, the budgeted and traced variants last of all: see
    // `observe_budgeted` and `observe_traced`.
    observe(&mut CountAllocations("observe"));
    let mut group = c.benchmark_group("observe");
    configure(&mut group);
    observe(&mut Measure(&mut group));
    observe_budgeted(&mut CountAllocations("observe"));
    observe_budgeted(&mut Measure(&mut group));
    observe_traced(&mut CountAllocations("observe"));
    observe_traced(&mut Measure(&mut group));
    group.finish();
}

criterion_group!(benches, suite);
criterion_main!(benches);
