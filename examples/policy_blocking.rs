//! A Policy over a blocking client on a pool of its own threads.
//!
//! `Ledger` is a synchronous client (a database driver, say): each call
//! blocks its thread. It runs on a `BlockingPool` of 4 threads with room
//! for 4 more calls in line, never on tokio's threads. A Policy guards it:
//! a timeout of 50 ms, a breaker, and a fallback answering "unknown".
//!
//! Three phases: healthy (5 ms a call), slow (200 ms: calls time out, the
//! threads stay busy with calls nobody waits for, the pool fills and
//! refuses, the breaker opens), healthy again. Each phase prints what the
//! callers saw, the breaker's counts and the pool's figures.
//!
//! Run it with `cargo run --example policy_blocking`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use seawall::blocking::{BlockingPool, BlockingService};
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use seawall::window::Window;
use tower::{Layer, ServiceExt};

/// A blocking client whose calls take `delay_ms`.
struct Ledger {
    delay_ms: AtomicU64,
}

impl Ledger {
    fn balance(&self, account: u32) -> std::io::Result<String> {
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Relaxed)));
        Ok(format!("account {account}: 100.00"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ledger = Arc::new(Ledger {
        delay_ms: AtomicU64::new(5),
    });
    let pool = BlockingPool::builder()
        .name("ledger")
        .threads(4)
        .queue(4)
        .build()?;
    let client = BlockingService::new(pool.clone(), {
        let ledger = ledger.clone();
        move |account: u32| ledger.balance(account)
    });

    let policy = Policy::builder()
        .name("ledger")
        .circuit_breaker(
            CircuitBreaker::builder()
                .window(Window::count(20))
                .minimum_calls(10)
                .error_threshold(50.0)
                .open_duration(OpenDuration::Fixed(Duration::from_millis(500))),
        )
        .timeout(Duration::from_millis(50))
        .fallback(Fallback::builder().value("unknown".to_owned()))
        .build()?;
    // One level of error, `seawall::Error<std::io::Error>`, whatever is
    // stacked: the pool's refusals are `Error::BulkheadFull`.
    let balances = policy.layer(client);

    for (phase, delay_ms) in [("healthy", 5), ("slow", 200), ("healthy again", 5)] {
        ledger.delay_ms.store(delay_ms, Relaxed);
        if phase == "healthy again" {
            // Let the breaker's open duration pass and the threads finish.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        // 40 callers, 8 at a time.
        let (mut answered, mut fallback) = (0, 0);
        for round in 0..5u32 {
            let calls: Vec<_> = (0..8)
                .map(|n| tokio::spawn(balances.clone().oneshot(round * 8 + n)))
                .collect();
            for call in calls {
                match call.await?? {
                    answer if answer == "unknown" => fallback += 1,
                    _ => answered += 1,
                }
            }
        }
        let counts = policy.breaker().counts();
        let pool = pool.figures();
        println!("{phase}: {answered} answered, {fallback} from the fallback");
        println!(
            "  breaker {}: {} ok, {} timed out, {} refused by the pool, {} short-circuited",
            policy.breaker().state(),
            counts.success,
            counts.timeout,
            counts.rejected,
            counts.short_circuited
        );
        println!(
            "  pool: {} busy, {} queued, {} refused so far, {} threads still running calls nobody waits for",
            pool.busy, pool.queued, pool.rejected, pool.abandoned_running
        );
    }
    Ok(())
}
