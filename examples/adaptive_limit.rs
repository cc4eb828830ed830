//! A bulkhead limit that finds itself, in virtual time (the run takes a
//! few seconds).
//!
//! A simulated dependency serves `capacity` calls at once in 10 ms; past
//! that, every call slows in proportion (they share its threads), and past
//! twice its capacity it refuses calls as overloaded. Its capacity changes:
//! 50 for 20 s, then 10, then 80. 200 callers call it in a loop through a
//! Policy with a 50 ms timeout and a bulkhead that is fixed at 50, AIMD, or
//! Vegas. The table shows, for each phase, calls answered per second, the
//! p99 latency of those, calls dropped below (timed out, or refused by the
//! overloaded dependency), calls the bulkhead refused (shed before they
//! reached it), and where the limit settled (its mean over the phase's
//! last 5 seconds).
//!
//! ```text
//! cargo run --example adaptive_limit
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::bulkhead::{AdaptiveLimit, Bulkhead};
use seawall::policy::Policy;
use seawall::{Error, Leaf, Refusal};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

const PHASES: [(usize, u64); 3] = [(50, 20), (10, 20), (80, 20)];
const CALLERS: usize = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::pause();
    println!("capacity 50, then 10, then 80 (20 s each); 200 callers; 50 ms timeout\n");
    println!(
        "{:<9} {:>8} {:>10} {:>9} {:>10} {:>10} {:>8}",
        "limit", "capacity", "answered/s", "p99", "dropped/s", "refused/s", "settled"
    );
    for (name, adaptive) in [
        ("fixed 50", None),
        ("AIMD", Some(AdaptiveLimit::aimd(0.9).limits(1, 500))),
        ("Vegas", Some(AdaptiveLimit::vegas().limits(1, 500))),
    ] {
        for phase in run(adaptive).await? {
            println!(
                "{:<9} {:>8} {:>10.0} {:>9.1?} {:>10.0} {:>10.0} {:>8.1}",
                name,
                phase.capacity,
                phase.answered_per_second,
                phase.p99,
                phase.dropped_per_second,
                phase.refused_per_second,
                phase.settled
            );
        }
    }
    Ok(())
}

/// The dependency's refusal when it is overloaded: a drop, for AIMD.
#[derive(Debug)]
struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("overloaded")
    }
}

impl Leaf for Busy {
    fn refusal(&self) -> Option<Refusal> {
        Some(Refusal::Overloaded)
    }
}

struct Leaving(Arc<AtomicUsize>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct Phase {
    capacity: usize,
    answered_per_second: f64,
    p99: Duration,
    dropped_per_second: f64,
    refused_per_second: f64,
    settled: f64,
}

async fn run(adaptive: Option<AdaptiveLimit>) -> Result<Vec<Phase>, Box<dyn std::error::Error>> {
    let capacity = Arc::new(AtomicUsize::new(PHASES[0].0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (cap, busy) = (Arc::clone(&capacity), Arc::clone(&in_flight));
    let dependency = service_fn(move |n: u64| {
        let now = busy.fetch_add(1, Relaxed) + 1;
        let capacity = cap.load(Relaxed);
        let slowdown = (now as f64 / capacity as f64).max(1.0);
        // Leaves when the call ends, or is dropped by the timeout above.
        let leaving = Leaving(Arc::clone(&busy));
        async move {
            if now > 2 * capacity {
                drop(leaving);
                return Err(Busy);
            }
            tokio::time::sleep(Duration::from_micros((10_000.0 * slowdown) as u64)).await;
            drop(leaving);
            Ok(n)
        }
    });
    let mut bulkhead = Bulkhead::builder().max_concurrent(50);
    if let Some(adaptive) = adaptive {
        bulkhead = bulkhead.adaptive(adaptive);
    }
    let bulkhead = bulkhead.build()?;
    let policy = Policy::builder()
        .timeout(Duration::from_millis(50))
        .bulkhead(bulkhead.clone())
        .build()?;
    let service = policy.layer(dependency);

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (service, latencies, refused, dropped, stop) = (
                service.clone(),
                Arc::clone(&latencies),
                Arc::clone(&refused),
                Arc::clone(&dropped),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut n = caller as u64;
                while !stop.load(Relaxed) {
                    let started = Instant::now();
                    match service.clone().oneshot(n).await {
                        Ok(_) => latencies.lock().unwrap().push(started.elapsed()),
                        Err(error) => {
                            match error {
                                Error::BulkheadFull(_) => refused.fetch_add(1, Relaxed),
                                _ => dropped.fetch_add(1, Relaxed),
                            };
                            // A refused caller waits a little before the next
                            // call, as a client's backoff would.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    n += CALLERS as u64;
                }
            })
        })
        .collect();

    let mut phases = Vec::new();
    for (phase_capacity, seconds) in PHASES {
        capacity.store(phase_capacity, Relaxed);
        latencies.lock().unwrap().clear();
        let refused_before = refused.load(Relaxed);
        let dropped_before = dropped.load(Relaxed);
        let mut limits = Vec::new();
        for tenth in 0..seconds * 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tenth >= (seconds - 5) * 10 {
                limits.push(bulkhead.figures().max_concurrent as f64);
            }
        }
        let mut answered = std::mem::take(&mut *latencies.lock().unwrap());
        answered.sort();
        phases.push(Phase {
            capacity: phase_capacity,
            answered_per_second: answered.len() as f64 / seconds as f64,
            p99: answered
                .get(answered.len() * 99 / 100)
                .copied()
                .unwrap_or_default(),
            dropped_per_second: (dropped.load(Relaxed) - dropped_before) as f64 / seconds as f64,
            refused_per_second: (refused.load(Relaxed) - refused_before) as f64 / seconds as f64,
            settled: limits.iter().sum::<f64>() / limits.len() as f64,
        });
    }
    stop.store(true, Relaxed);
    for caller in callers {
        caller.await?;
    }
    Ok(phases)
}
