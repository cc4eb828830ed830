//! A soak: a million calls (`SEAWALL_SOAK_CALLS` for more) through a full
//! Policy from 64 tasks on a multi-thread runtime, with calls that answer,
//! yield, fail, are ignored, outlast the timeout, crowd the bulkhead, and
//! bursts of failures that open the breaker. Afterwards the lifetime
//! counters hold every call in exactly one outcome, and each outcome
//! equals what the callers saw. The process's resident memory is measured
//! before and after.

use std::time::{Duration, Instant};

use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::classify::{ByKind, Classify, Verdict};
use seawall::fallback::{Cause, Causes, Fallback};
use seawall::policy::Policy;
use seawall::window::Window;
use seawall::Error;
use tower::{service_fn, Layer, ServiceExt};

const TASKS: u64 = 64;
/// What the fallback answers: told apart from every real answer.
const FALLBACK: u64 = u64::MAX;

#[derive(Debug)]
enum Failure {
    Failed,
    Ignored,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Failure {}
seawall::leaf_error!(Failure);

/// What the callers saw, each kind once per call.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    answered: u64,
    fallback: u64,
    failed: u64,
    ignored: u64,
    timed_out: u64,
    refused_full: u64,
    refused_open: u64,
}

impl Seen {
    fn add(&mut self, other: Seen) {
        self.answered += other.answered;
        self.fallback += other.fallback;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.timed_out += other.timed_out;
        self.refused_full += other.refused_full;
        self.refused_open += other.refused_open;
    }

    fn calls(&self) -> u64 {
        self.answered
            + self.fallback
            + self.failed
            + self.ignored
            + self.timed_out
            + self.refused_full
            + self.refused_open
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux's /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident pages");
    pages * 4096
}

#[test]
fn a_million_calls_each_in_exactly_one_outcome() {
    let calls: u64 = std::env::var("SEAWALL_SOAK_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let policy = Policy::builder()
        .name("soak")
        .circuit_breaker(
            CircuitBreaker::builder()
                .window(Window::time(Duration::from_millis(500), 10))
                .minimum_calls(50)
                .error_threshold(50.0)
                .half_open_probes(3)
                .open_duration(OpenDuration::Fixed(Duration::from_millis(5))),
        )
        .bulkhead(Bulkhead::builder().max_concurrent(32))
        .timeout(Duration::from_millis(3))
        .classify(|result: &Result<u64, Error<Failure>>| match result {
            Err(Error::Inner(Failure::Ignored)) => Verdict::Ignore,
            other => ByKind.classify(other),
        })
        .fallback(
            Fallback::builder()
                .value(FALLBACK)
                .on(Causes::only(&[Cause::CircuitOpen]))
                .max_concurrent(8),
        )
        .build()
        .unwrap();
    let start = Instant::now();
    let inner = service_fn(move |seed: u64| {
        // 20 ms in every 200, four calls in five fail: the breaker opens,
        // half-opens, and closes again.
        let burst = start.elapsed().as_millis() % 200 >= 180;
        async move {
            match seed % 100 {
                _ if burst && !seed.is_multiple_of(5) => Err(Failure::Failed),
                0..=2 => {
                    tokio::task::yield_now().await;
                    Ok(seed)
                }
                3..=5 => Err(Failure::Failed),
                6 => Err(Failure::Ignored),
                // One call in 500 outlasts the timeout, holding its place in
                // the bulkhead meanwhile: enough to fill it now and then.
                7 if seed % 1_000 < 20 => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(seed)
                }
                _ => Ok(seed),
            }
        }
    });
    let service = policy.layer(inner);
    let before = resident_bytes();
    let started = Instant::now();
    let seen = runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let service = service.clone();
                let share = calls / TASKS + u64::from(task < calls % TASKS);
                tokio::spawn(async move {
                    let mut seen = Seen::default();
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(task + 1);
                    for _ in 0..share {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        match service.clone().oneshot(rng % 1_000_000).await {
                            Ok(FALLBACK) => seen.fallback += 1,
                            Ok(_) => seen.answered += 1,
                            Err(Error::Inner(Failure::Failed)) => seen.failed += 1,
                            Err(Error::Inner(Failure::Ignored)) => seen.ignored += 1,
                            Err(Error::Timeout(_)) => seen.timed_out += 1,
                            Err(Error::BulkheadFull(_)) => seen.refused_full += 1,
                            Err(Error::CircuitOpen(_)) => seen.refused_open += 1,
                            Err(other) => panic!("an unexpected error: {other}"),
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut seen = Seen::default();
        for task in tasks {
            seen.add(task.await.unwrap());
        }
        seen
    });
    let elapsed = started.elapsed();
    let after = resident_bytes();
    let lifetime = policy.breaker().lifetime().counts;
    println!(
        "{calls} calls from {TASKS} tasks in {elapsed:?}: {seen:?}; resident {} KiB before, {} KiB after",
        before / 1024,
        after / 1024
    );
    println!("lifetime: {lifetime:?}");

    assert_eq!(seen.calls(), calls, "every call ended once");
    let outcomes = lifetime.success
        + lifetime.failure
        + lifetime.ignored
        + lifetime.timeout
        + lifetime.rejected
        + lifetime.short_circuited;
    assert_eq!(outcomes, calls, "every call in exactly one outcome");
    assert_eq!(lifetime.success, seen.answered);
    assert_eq!(lifetime.failure, seen.failed);
    assert_eq!(lifetime.ignored, seen.ignored);
    assert_eq!(lifetime.timeout, seen.timed_out);
    assert_eq!(lifetime.rejected, seen.refused_full);
    assert_eq!(lifetime.short_circuited, seen.fallback + seen.refused_open);
    assert_eq!(lifetime.fallback_success, seen.fallback);
    assert_eq!(
        lifetime.fallback_rejected + lifetime.fallback_failure,
        seen.refused_open
    );
    for (what, n) in [
        ("timeouts", seen.timed_out),
        ("bulkhead refusals", seen.refused_full),
        ("open periods", seen.refused_open + seen.fallback),
        ("ignored errors", seen.ignored),
    ] {
        assert!(n > 0, "the soak saw no {what}: {seen:?}");
    }
    let figures = policy.bulkhead().unwrap();
    assert_eq!((figures.in_flight, figures.queued), (0, 0));
    let grown = after.saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "the process grew by {} KiB over the soak",
        grown / 1024
    );
}
