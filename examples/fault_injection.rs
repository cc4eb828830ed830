//! Watching a breaker work, by injecting the faults it exists for.
//!
//! A healthy dependency behind a Policy (a 200 ms timeout; the breaker opens
//! after 5 failures in a row, for 1 s). A `FaultLayer` between them injects,
//! two seconds at a time: nothing, errors on 60% of calls, nothing, hung
//! calls on 90%, nothing. Each second prints what the callers got and the
//! breaker's state: it opens under each fault, and closes once the faults
//! stop. The draws are seeded, so every run prints the same.
//! Run it with `cargo run --example fault_injection`.

use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::fault::{FaultKind, FaultLayer, Faults};
use seawall::policy::Policy;
use seawall::{BoxError, Error};
use tower::{service_fn, Layer, Service, ServiceExt};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dependency = service_fn(|n: u64| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, BoxError>(n)
    });
    let faults = Faults::builder()
        .seed(2026)
        .outcome(0.0, || Err("injected failure".into()))
        .disabled()
        .build()?;
    let policy = Policy::builder()
        .name("inventory")
        .timeout(Duration::from_millis(200))
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(5)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(1))),
        )
        .build()?;
    let mut service = policy.layer(FaultLayer::new(faults.clone()).layer(dependency));

    println!("second  faults               ok  failed  timed out  refused  breaker");
    let mut n = 0;
    for second in 0..10 {
        let injecting = match second {
            2 => {
                faults.set_probability(FaultKind::Outcome, 0.6)?;
                faults.set_enabled(true);
                "60% errors"
            }
            4 | 8 => {
                faults.set_enabled(false);
                "none"
            }
            6 => {
                faults.set_probability(FaultKind::Outcome, 0.0)?;
                faults.set_probability(FaultKind::Hang, 0.9)?;
                faults.set_enabled(true);
                "90% hung calls"
            }
            _ if faults.is_enabled() => "(as before)",
            _ => "none",
        };
        let (mut ok, mut failed, mut timed_out, mut refused) = (0, 0, 0, 0);
        let end = tokio::time::Instant::now() + Duration::from_secs(1);
        while tokio::time::Instant::now() < end {
            n += 1;
            match service.ready().await?.call(n).await {
                Ok(_) => ok += 1,
                Err(Error::CircuitOpen(_)) => refused += 1,
                Err(Error::Timeout(_)) => timed_out += 1,
                Err(_) => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "{second:>6}  {injecting:<18} {ok:>4}  {failed:>6}  {timed_out:>9}  {refused:>7}  {:?}",
            policy.breaker().state()
        );
    }
    let seen = faults.figures();
    println!(
        "injected: {} errors, {} hung calls, over {} calls drawn",
        seen.outcomes, seen.hangs, seen.calls
    );
    Ok(())
}
