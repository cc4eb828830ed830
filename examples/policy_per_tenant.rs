//! One Policy, one circuit breaker per tenant: a keyed `Registry`.
//!
//! A pricing service answers for two tenants. From the second second on,
//! acme's data store fails every call; globex's keeps working. The Policy
//! selects each request's breaker by tenant, so acme's breaker opens and
//! its callers get the fallback at once, while globex's calls go through
//! untouched. Every 500 ms the example prints what each tenant saw and its
//! breaker's state.
//!
//! Run it with `cargo run --example policy_per_tenant --features registry`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, Registry};
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use seawall::window::Window;
use tower::{service_fn, ServiceExt};

#[derive(Clone, Debug)]
struct PriceRequest {
    tenant: &'static str,
    sku: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every tenant's breaker is built from this: a 2 s window, at least 5
    // calls, half failing trips it; it stays open 1 s at a time.
    let tenants = Registry::<&'static str>::builder(
        CircuitBreaker::builder()
            .name("pricing")
            .window(Window::time(Duration::from_secs(2), 4))
            .minimum_calls(5)
            .error_threshold(50.0)
            .open_duration(OpenDuration::Fixed(Duration::from_secs(1))),
    )
    .max_keys(10_000)
    .build()?;

    let policy = Policy::builder()
        .name("pricing")
        .circuit_breaker(tenants.keyed(|request: &PriceRequest| request.tenant))
        .timeout(Duration::from_millis(100))
        .fallback(Fallback::builder().value("price unavailable".to_owned()))
        .build()?;

    let acme_store_down = Arc::new(AtomicBool::new(false));
    let store = {
        let acme_store_down = acme_store_down.clone();
        service_fn(move |request: PriceRequest| {
            let down = request.tenant == "acme" && acme_store_down.load(Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if down {
                    Err(std::io::Error::other("acme's store is down"))
                } else {
                    Ok(format!("{}: sku {} costs 42", request.tenant, request.sku))
                }
            }
        })
    };
    let prices = tower::Layer::layer(&policy, store);

    let start = tokio::time::Instant::now();
    println!("time   tenant  answer                        breaker");
    for tick in 0..8u32 {
        if tick == 2 {
            acme_store_down.store(true, Relaxed);
            println!("       -- acme's store goes down --");
        }
        // Traffic: both tenants, every 100 ms.
        for _ in 0..5 {
            for tenant in ["acme", "globex"] {
                prices
                    .clone()
                    .oneshot(PriceRequest { tenant, sku: tick })
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for tenant in ["acme", "globex"] {
            let answer = prices
                .clone()
                .oneshot(PriceRequest { tenant, sku: tick })
                .await?;
            let breaker = policy.breakers().registry().get(tenant);
            let counts = breaker.counts();
            println!(
                "{:>4.1}s  {tenant:<6}  {answer:<28}  {} ({} ok, {} failed, {} short-circuited)",
                start.elapsed().as_secs_f64(),
                breaker.state(),
                counts.success,
                counts.failure,
                counts.short_circuited,
            );
        }
    }
    Ok(())
}
