//! A flaky in-process dependency behind a circuit breaker, in real time.
//!
//! The dependency is healthy for 4 seconds, down for 7, then healthy again.
//! A client sends 50 calls a second through the breaker. Every second the
//! demo prints what the callers saw and what the breaker decided, and each
//! change of state as it happens, with its reason.
//!
//! Run it with `cargo run -p seawall-demo` from the repository root.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::window::Window;
use seawall::Error;
use tokio::time::{interval, sleep, Instant};
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// The thresholds, small enough to watch: a 5 s window in 1 s buckets, at
/// least 10 calls in it, half of them failing, trips the breaker; it then
/// stays open 1 s, 2 s, 4 s... (capped at 8 s) while its probes keep failing.
fn breaker() -> Result<CircuitBreaker, seawall::ConfigError> {
    CircuitBreaker::builder()
        .name("inventory")
        .window(Window::time(Duration::from_secs(5), 5))
        .minimum_calls(10)
        .error_threshold(50.0)
        .open_duration(OpenDuration::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(8),
            jitter: 0.0,
        })
        .build()
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
}

impl Tally {
    fn take(&self) -> [u64; 3] {
        [&self.ok, &self.failed, &self.refused].map(|n| n.swap(0, Relaxed))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let breaker = breaker()?;

    // The dependency: 5 ms per answer while up (one call in 25 fails anyway),
    // a 20 ms error while down.
    let up = Arc::new(AtomicBool::new(true));
    let calls_seen = Arc::new(AtomicU64::new(0));
    let dependency = {
        let (up, calls_seen) = (up.clone(), calls_seen.clone());
        service_fn(move |_request: u64| {
            let (up, n) = (up.load(Relaxed), calls_seen.fetch_add(1, Relaxed));
            async move {
                if up && n % 25 != 0 {
                    sleep(Duration::from_millis(5)).await;
                    Ok("42 widgets in stock")
                } else {
                    sleep(Duration::from_millis(20)).await;
                    Err("inventory service unavailable")
                }
            }
        })
    };
    let client = ServiceBuilder::new()
        .layer(breaker.layer())
        .service(dependency);

    // Every change of state, as it happens.
    let mut transitions = breaker.subscribe();
    tokio::spawn(async move {
        while let Some(t) = transitions.recv().await {
            println!(
                "        -> {} to {}: {} (window: {} calls, {} errors)",
                t.from,
                t.to,
                t.reason,
                t.counts.calls(),
                t.counts.errors()
            );
        }
    });

    // The callers: 50 calls a second, each on its own task.
    let tally = Arc::new(Tally::default());
    let load = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut tick = interval(Duration::from_millis(20));
            for request in 0.. {
                tick.tick().await;
                let (client, tally) = (client.clone(), tally.clone());
                tokio::spawn(async move {
                    let counter = match client.oneshot(request).await {
                        Ok(_) => &tally.ok,
                        Err(Error::CircuitOpen(_)) => &tally.refused,
                        Err(_) => &tally.failed,
                    };
                    counter.fetch_add(1, Relaxed);
                });
            }
        })
    };

    println!("second  dependency  ok  failed  refused  reached it  breaker        window error %");
    let start = Instant::now();
    let mut reached_before = 0;
    for second in 1..=16u64 {
        match second {
            5 => up.store(false, Relaxed),
            12 => up.store(true, Relaxed),
            _ => {}
        }
        sleep((start + Duration::from_secs(second)).saturating_duration_since(Instant::now()))
            .await;
        let [ok, failed, refused] = tally.take();
        let reached = calls_seen.load(Relaxed);
        let error_percentage = breaker
            .counts()
            .error_percentage()
            .map_or("-".to_owned(), |p| format!("{p:.0}"));
        println!(
            "{second:>6}  {:<10}  {ok:>2}  {failed:>6}  {refused:>7}  {:>10}  {:<13}  {error_percentage:>14}",
            if second <= 4 || second > 11 { "up" } else { "down" },
            reached - reached_before,
            breaker.state().to_string(),
        );
        reached_before = reached;
    }
    load.abort();
    println!(
        "\nWhile the dependency was down, the breaker refused most calls at once instead of \
         letting each wait 20 ms for an error, and let one probe through after each open period."
    );
    Ok(())
}
