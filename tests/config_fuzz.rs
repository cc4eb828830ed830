//! Every builder, fed extreme and random settings: each refused value is a
//! `ConfigError` naming one of the builder's own fields, and each accepted
//! one works when calls come (no overflow, no panic, no hang: calls run in
//! paused time, so a huge duration only moves a clock).

use std::convert::Infallible;
use std::time::Duration;

use proptest::prelude::*;
use seawall::blocking::{BlockingPool, BlockingService};
use seawall::bulkhead::{Bulkhead, BulkheadFigures, BulkheadService, Mode};
use seawall::circuit_breaker::{CircuitBreaker, DroppedCall, OpenDuration, Registry};
use seawall::classify::Verdict;
use seawall::fallback::{Fallback, FallbackCache, FallbackLayer};
use seawall::policy::Policy;
use seawall::timeout::TimeoutLayer;
use seawall::window::Window;
use seawall::{Clock, ConfigError};
use tower::{service_fn, Layer, ServiceExt};

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::MAX),
        any::<u64>().prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_secs),
    ]
}

fn counts_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), 0..100u64, any::<u64>()]
}

fn counts_usize() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(usize::MAX),
        0..100usize,
        any::<usize>()
    ]
}

fn counts_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(1), Just(u32::MAX), 0..2_000u32, any::<u32>()]
}

fn percents() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(100.0),
        Just(100.000_001),
        0.0..100.0f64,
        any::<f64>(),
    ]
}

fn windows() -> impl Strategy<Value = Window> {
    prop_oneof![
        (durations(), counts_u32()).prop_map(|(span, buckets)| Window::time(span, buckets)),
        (1..=20u64, 1..=20u32)
            .prop_map(|(n, b)| Window::time(Duration::from_millis(n * u64::from(b)), b)),
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(1_000_000),
            Just(1_000_001),
            0..500u32
        ]
        .prop_map(Window::count),
    ]
}

fn open_durations() -> impl Strategy<Value = OpenDuration> {
    prop_oneof![
        durations().prop_map(OpenDuration::Fixed),
        (durations(), durations()).prop_map(|(a, b)| OpenDuration::exponential(a, b)),
        (durations(), any::<f64>(), durations(), any::<f64>()).prop_map(
            |(initial, multiplier, max, jitter)| OpenDuration::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            }
        ),
    ]
}

/// Paused time, as the crate's own tests run.
fn paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

/// Makes `calls` calls of 1 ms through `bulkhead`, changes its limit to
/// `later_limit` while they run, and gives its figures once all are done.
fn drain<M: Mode>(bulkhead: Bulkhead<M>, calls: usize, later_limit: usize) -> BulkheadFigures
where
    BulkheadService<Sleeper, M>: tower::Service<()> + Clone + Send + 'static,
    <BulkheadService<Sleeper, M> as tower::Service<()>>::Future: Send,
    <BulkheadService<Sleeper, M> as tower::Service<()>>::Response: Send,
    <BulkheadService<Sleeper, M> as tower::Service<()>>::Error: Send,
{
    paused(async {
        let service = bulkhead.layer().layer(Sleeper);
        let calls: Vec<_> = (0..calls)
            .map(|_| tokio::spawn(service.clone().oneshot(())))
            .collect();
        let _ = bulkhead.set_max_concurrent(later_limit);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        for call in calls {
            let _ = call.await.unwrap();
        }
        bulkhead.figures()
    })
}

/// A service whose calls take 1 ms.
#[derive(Clone)]
struct Sleeper;

impl tower::Service<()> for Sleeper {
    type Response = ();
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        })
    }
}

fn refused_with(err: &ConfigError, fields: &[&str]) -> Result<(), TestCaseError> {
    prop_assert!(
        fields.contains(&err.field()),
        "refused with a field of another builder: {err}"
    );
    prop_assert!(!err.value().is_empty(), "no value named: {err}");
    Ok(())
}

/// Something to do to a breaker or a service, with time moving.
#[derive(Clone, Debug)]
enum Op {
    Call(u8),
    Advance(Duration),
    ForceOpen,
    ForceClosed,
    Reset,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            10 => any::<u8>().prop_map(Op::Call),
            4 => prop_oneof![
                (0..5_000u64).prop_map(Duration::from_millis),
                Just(Duration::from_secs(3_600 * 24 * 365 * 10)),
            ]
            .prop_map(Op::Advance),
            1 => Just(Op::ForceOpen),
            1 => Just(Op::ForceClosed),
            1 => Just(Op::Reset),
        ],
        1..40,
    )
}

fn verdict_of(n: u8) -> Verdict {
    match n % 5 {
        0 => Verdict::Failure,
        1 => Verdict::Timeout,
        2 => Verdict::Ignore,
        3 => Verdict::Rejected,
        _ => Verdict::Success,
    }
}

const BREAKER_FIELDS: &[&str] = &[
    "window.buckets",
    "window.span",
    "window.calls",
    "minimum_calls",
    "error_threshold",
    "slow_calls.percent",
    "slow_calls.slower_than",
    "consecutive_failures",
    "open_duration",
    "open_duration.initial",
    "open_duration.multiplier",
    "open_duration.max",
    "open_duration.jitter",
    "half_open_probes",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn breaker_settings(
        window in windows(),
        minimum_calls in counts_u64(),
        error_threshold in percents(),
        slow in prop::option::of((durations(), percents())),
        consecutive in prop::option::of(counts_u32()),
        open in open_durations(),
        probes in counts_u32(),
        count_dropped in any::<bool>(),
        latency in any::<bool>(),
        ops in ops(),
    ) {
        let built = paused(async {
            let mut builder = CircuitBreaker::builder()
                .window(window)
                .minimum_calls(minimum_calls)
                .error_threshold(error_threshold)
                .open_duration(open)
                .half_open_probes(probes)
                .track_latency(latency)
                .clock(Clock::tokio());
            if let Some((slower_than, percent)) = slow {
                builder = builder.slow_calls(slower_than, percent);
            }
            if let Some(failures) = consecutive {
                builder = builder.consecutive_failures(failures);
            }
            if count_dropped {
                builder = builder.dropped_calls(DroppedCall::CountAsFailure);
            }
            let breaker = match builder.build() {
                Ok(breaker) => breaker,
                Err(err) => return Err(err),
            };
            let mut held = Vec::new();
            for op in &ops {
                match op {
                    Op::Call(n) => match breaker.try_acquire() {
                        Ok(permit) if n % 7 == 0 => held.push(permit),
                        Ok(permit) => permit.record(verdict_of(*n)),
                        Err(open) => {
                            let _ = (open.retry_after(), open.to_string());
                        }
                    },
                    Op::Advance(d) => tokio::time::advance(*d).await,
                    Op::ForceOpen => breaker.force_open(),
                    Op::ForceClosed => breaker.force_closed(),
                    Op::Reset => breaker.reset(),
                }
                let _ = (breaker.state(), breaker.counts());
            }
            drop(held);
            let (window, lifetime) = (breaker.snapshot(), breaker.lifetime());
            let _ = (window.latency.map(|l| l.p99()), lifetime.latency.map(|l| l.p99()));
            Ok(())
        });
        if let Err(err) = built {
            refused_with(&err, BREAKER_FIELDS)?;
        }
    }

    #[test]
    fn registry_settings(
        max_keys in counts_u64(),
        max_memory in counts_u64(),
        idle in prop::option::of(durations()),
        keys in prop::collection::vec(any::<u16>(), 1..50),
    ) {
        let mut builder = Registry::<u16>::builder(CircuitBreaker::builder().clock(Clock::coarse()))
            .max_keys(max_keys)
            .max_memory(max_memory);
        if let Some(idle) = idle {
            builder = builder.idle_timeout(idle);
        }
        match builder.build() {
            Ok(registry) => {
                for key in keys {
                    if let Ok(permit) = registry.get(key).try_acquire() {
                        permit.record(Verdict::Failure);
                    }
                    let _ = registry.get_if_present(&key);
                }
                prop_assert!(registry.len() <= max_keys.max(1));
                let _ = registry.worst_case_bytes();
            }
            Err(err) => refused_with(&err, &["max_keys", "idle_timeout"])?,
        }
    }

    #[test]
    fn bulkhead_settings(
        max_concurrent in counts_usize(),
        mode in 0..3u8,
        max_queue in counts_usize(),
        max_wait in durations(),
        later_limit in counts_usize(),
        calls in 1..20usize,
    ) {
        let builder = Bulkhead::builder().max_concurrent(max_concurrent);
        let built = match mode {
            0 => builder.reject_when_full().build().map(|b| drain(b, calls, later_limit)),
            1 => builder.queue(max_queue, max_wait).build().map(|b| drain(b, calls, later_limit)),
            _ => builder
                .backpressure(max_queue, max_wait)
                .build()
                .map(|b| drain(b, calls, later_limit)),
        };
        match built {
            Ok(figures) => assert_eq!((figures.in_flight, figures.queued), (0, 0)),
            Err(err) => refused_with(&err, &["max_concurrent", "max_queue", "max_wait"])?,
        }
    }

    #[test]
    fn pool_settings(
        threads in prop_oneof![Just(0usize), Just(1), Just(2), Just(1_025), Just(usize::MAX)],
        queue in counts_usize(),
        calls in 1..10u32,
    ) {
        match BlockingPool::builder().threads(threads).queue(queue).build() {
            Ok(pool) => paused(async {
                let service = BlockingService::new(pool.clone(), |n: u32| Ok::<_, Infallible>(n));
                for n in 0..calls {
                    let answer = service.clone().oneshot(n).await;
                    assert!(matches!(answer, Ok(m) if m == n) || answer.is_err());
                }
            }),
            Err(err) => refused_with(&err, &["threads"])?,
        }
    }

    #[test]
    fn timeout_settings(timeout in durations(), inner in 0..3u64) {
        paused(async {
            let service = TimeoutLayer::new(timeout).layer(service_fn(move |_: ()| async move {
                tokio::time::sleep(Duration::from_millis(inner)).await;
                Ok::<_, std::io::Error>(())
            }));
            let _ = service.oneshot(()).await;
        });
    }

    #[test]
    fn policy_and_fallback_settings(
        timeout in prop::option::of(durations()),
        max_concurrent in counts_usize(),
        fallback_concurrent in counts_usize(),
        fallback_timeout in prop::option::of(durations()),
        max_entries in counts_u64(),
        max_stale in prop::option::of(durations()),
        refresh_after in prop::option::of(durations()),
        ttl in prop::option::of(durations()),
        ops in ops(),
    ) {
        let built = paused(async {
            let mut cache = FallbackCache::<u8, u8>::builder().max_entries(max_entries);
            if let Some(max_stale) = max_stale {
                cache = cache.max_stale(max_stale);
            }
            if let Some(refresh_after) = refresh_after {
                cache = cache.refresh_after(refresh_after);
            }
            if let Some(ttl) = ttl {
                cache = cache.time_to_live(ttl);
            }
            let cache = cache.build()?;
            let mut fallback = Fallback::keyed(|n: &u8| *n)
                .cache(cache)
                .value(0u8)
                .max_concurrent(fallback_concurrent);
            if let Some(fallback_timeout) = fallback_timeout {
                fallback = fallback.timeout(fallback_timeout);
            }
            let mut policy = Policy::builder().name("fuzz")
                .circuit_breaker(CircuitBreaker::builder().minimum_calls(2))
                .bulkhead(Bulkhead::builder().max_concurrent(max_concurrent))
                .fallback(fallback);
            if let Some(timeout) = timeout {
                policy = policy.timeout(timeout);
            }
            let policy = policy.build()?;
            let service = policy.layer(service_fn(|n: u8| async move {
                tokio::time::sleep(Duration::from_millis(u64::from(n % 4))).await;
                if n.is_multiple_of(3) {
                    Err(std::io::Error::other("down"))
                } else {
                    Ok(n)
                }
            }));
            for op in &ops {
                match op {
                    Op::Call(n) => {
                        let _ = service.clone().oneshot(*n).await;
                    }
                    Op::Advance(d) => tokio::time::advance(*d).await,
                    Op::ForceOpen => policy.breaker().force_open(),
                    Op::ForceClosed => policy.breaker().force_closed(),
                    Op::Reset => policy.breaker().reset(),
                }
            }
            Ok::<_, ConfigError>(())
        });
        if let Err(err) = built {
            refused_with(&err, &[
                "max_entries", "max_stale", "refresh_after", "time_to_live",
                "timeout", "max_concurrent",
            ])?;
        }
    }

    #[test]
    fn a_fallback_layer_with_any_settings(
        fallback_concurrent in counts_usize(),
        fallback_timeout in prop::option::of(durations()),
        calls in 1..20u8,
    ) {
        let mut fallback = Fallback::builder().value(7u8).max_concurrent(fallback_concurrent);
        if let Some(fallback_timeout) = fallback_timeout {
            fallback = fallback.timeout(fallback_timeout);
        }
        match fallback.build() {
            Ok(fallback) => paused(async {
                let service = FallbackLayer::new(fallback)
                    .layer(TimeoutLayer::new(Duration::from_millis(1)).layer(service_fn(|n: u8| async move {
                        tokio::time::sleep(Duration::from_millis(u64::from(n % 3))).await;
                        Ok::<u8, std::io::Error>(n)
                    })));
                for n in 0..calls {
                    let _ = service.clone().oneshot(n).await;
                }
            }),
            Err(err) => refused_with(&err, &["max_concurrent", "timeout"])?,
        }
    }
}

/// The largest pool the builder accepts starts, works and stops.
#[test]
fn the_largest_pool_works() {
    let pool = BlockingPool::builder().threads(1_024).build().unwrap();
    assert_eq!(pool.figures().threads_alive, 1_024);
    let service = BlockingService::new(pool, |n: u32| Ok::<_, Infallible>(n + 1));
    let answer = paused(async { service.oneshot(41).await });
    assert_eq!(answer.unwrap(), 42);
}

/// The largest count window takes a full lap and more.
#[test]
fn the_largest_count_window_slides() {
    let breaker = CircuitBreaker::builder()
        .window(Window::count(1_000_000))
        .minimum_calls(1_000_000)
        .disable_error_threshold()
        .build()
        .unwrap();
    for i in 0..1_000_100u32 {
        let verdict = if i % 2 == 0 {
            Verdict::Success
        } else {
            Verdict::Failure
        };
        breaker.try_acquire().unwrap().record(verdict);
    }
    let counts = breaker.counts();
    assert_eq!(counts.calls(), 1_000_000);
    assert_eq!(breaker.lifetime().counts.calls(), 1_000_100);
}
