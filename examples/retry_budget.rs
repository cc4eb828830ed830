//! Retries that cannot make an outage worse, and hedges that cut a slow
//! tail, measured in virtual time (the run takes well under a second).
//!
//! 1. 64 callers against a dependency that fails 3 calls in 10 (a
//!    brownout), then every call (an outage), through a Policy that retries
//!    up to 3 times: without a budget, then with a 10% budget. The table
//!    shows what the dependency took per request, and what the breaker did.
//! 2. A replica whose every 20th call takes a second: its p50 and p99
//!    without hedging, and with a hedge after its measured p95.
//!
//! ```text
//! cargo run --example retry_budget
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::hedge::{Hedge, HedgeLayer};
use seawall::policy::Policy;
use seawall::retry::{Backoff, Retry, RetryBudget};
use seawall::window::Window;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

const CALLERS: u64 = 64;
const REQUESTS_EACH: u64 = 50;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::pause();
    println!("64 callers, {REQUESTS_EACH} requests each, up to 3 attempts per request\n");
    println!(
        "{:<8} {:<7} {:>9} {:>9} {:>7} {:>8} {:>14} {:>8}",
        "failing", "budget", "requests", "reached", "calls", "retries", "calls/reached", "breaker"
    );
    for failing_in_ten in [3, 10] {
        for budget in [false, true] {
            storm(failing_in_ten, budget).await?;
        }
    }
    println!(
        "\n'reached': requests the open breaker did not refuse. Without a budget, retries\n\
         add 40% to a brownout and triple an outage until the breaker opens; with a 10%\n\
         budget the dependency takes at most 1.1 calls per request, and the breaker\n\
         opens all the same.\n"
    );
    hedging().await?;
    Ok(())
}

async fn storm(failing_in_ten: u64, budgeted: bool) -> Result<(), Box<dyn std::error::Error>> {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let dependency = service_fn(move |n: u64| {
        let fails = seen.fetch_add(1, Relaxed) % 10 < failing_in_ten;
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if fails {
                Err(std::io::Error::other("unavailable"))
            } else {
                Ok(n)
            }
        }
    });
    let mut retry = Retry::builder()
        .name("inventory")
        .max_attempts(3)
        .backoff(Backoff::exponential(Duration::from_millis(10)));
    if budgeted {
        retry = retry.budget(
            RetryBudget::builder()
                .ratio(0.1)
                .min_per_second(0)
                .build()?,
        );
    }
    let retry = retry.build()?;
    let policy = Policy::builder()
        .name("inventory")
        .circuit_breaker(
            CircuitBreaker::builder()
                .window(Window::Time {
                    span: Duration::from_secs(10),
                    buckets: 10,
                })
                .minimum_calls(500)
                .error_threshold(50.0)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(60))),
        )
        .retry(retry.clone())
        .build()?;
    let service = policy.layer(dependency);
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let service = service.clone();
            tokio::spawn(async move {
                for n in 0..REQUESTS_EACH {
                    let _ = service.clone().oneshot(caller * 1000 + n).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await?;
    }
    let figures = retry.figures();
    let calls = calls.load(Relaxed);
    // Requests whose first attempt reached the dependency (the others
    // were refused by the open breaker).
    let reached = calls - figures.retries;
    println!(
        "{:<8} {:<7} {:>9} {:>9} {:>7} {:>8} {:>14.2} {:>8}",
        format!("{}0%", failing_in_ten),
        if budgeted { "10%" } else { "none" },
        figures.requests,
        reached,
        calls,
        figures.retries,
        calls as f64 / reached as f64,
        policy.breaker().state().as_str(),
    );
    Ok(())
}

async fn hedging() -> Result<(), Box<dyn std::error::Error>> {
    let replica = || {
        let calls = Arc::new(AtomicU64::new(0));
        service_fn(move |n: u64| {
            let slow = calls.fetch_add(1, Relaxed).is_multiple_of(20);
            async move {
                let delay = if slow { 1000 } else { 20 };
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, std::io::Error>(n)
            }
        })
    };
    let plain = percentiles(replica(), 2000).await?;

    // The breaker measures latency; the hedge waits for its p95.
    let policy = Policy::builder()
        .name("replica")
        .circuit_breaker(CircuitBreaker::builder().track_latency(true))
        .build()?;
    let hedge = Hedge::builder()
        .percentile(policy.breaker(), 0.95, 100, Duration::from_millis(100))
        .budget(RetryBudget::builder().ratio(0.1).build()?)
        .build()?;
    let hedged = HedgeLayer::new(hedge.clone()).layer(policy.layer(replica()));
    let with_hedges = percentiles(hedged, 2000).await?;
    let figures = hedge.figures();
    println!("a replica whose every 20th call takes a second, 2000 requests:");
    println!("  without hedging: p50 {:?}, p99 {:?}", plain.0, plain.1);
    println!(
        "  hedged after the p95 (now {:?}): p50 {:?}, p99 {:?}; {} hedges sent ({:.1}% of requests), {} answered first",
        hedge.delay(),
        with_hedges.0,
        with_hedges.1,
        figures.hedged,
        100.0 * figures.hedged as f64 / figures.requests as f64,
        figures.hedge_won,
    );
    Ok(())
}

async fn percentiles<S>(service: S, requests: u64) -> Result<(Duration, Duration), S::Error>
where
    S: Service<u64> + Clone,
{
    let mut latencies = Vec::new();
    for n in 0..requests {
        let started = Instant::now();
        service.clone().oneshot(n).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok((at(0.5), at(0.99)))
}
