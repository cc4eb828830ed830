//! A flaky HTTP upstream behind a Policy with a cached fallback.
//!
//! The example starts an axum server on 127.0.0.1 that serves prices, and
//! which it can switch between healthy, failing (503) and slow (1 s). A
//! reqwest client, wrapped as a tower `Service`, calls it through a Policy:
//!
//! - timeout 200 ms;
//! - bulkhead of 16 calls;
//! - breaker: 5 s window in 1 s buckets, at least 8 calls, 50% errors, open
//!   2 s;
//! - fallback: the last good answer kept for the same tenant and symbol
//!   (refreshed once a second), if at most 30 s old, else "price
//!   unavailable".
//!
//! Every second it prints how many answers were fresh, cached (and how
//! old), defaults or errors, and what the breaker did. Run it with
//! `cargo run --example cached_fallback --features cache,reqwest`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::fallback::{Fallback, FallbackCache, Provenance};
use seawall::policy::Policy;
use seawall::window::Window;
use tokio::time::{interval, sleep, Instant};
use tower::{service_fn, ServiceBuilder, ServiceExt};

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const SLOW: u8 = 2;

/// Serves `GET /price/{tenant}/{symbol}` as its `mode` says.
async fn start_upstream(mode: Arc<AtomicU8>) -> std::io::Result<SocketAddr> {
    async fn price(
        State(mode): State<Arc<AtomicU8>>,
        Path((tenant, symbol)): Path<(String, String)>,
    ) -> (StatusCode, String) {
        match mode.load(Relaxed) {
            FAILING => (
                StatusCode::SERVICE_UNAVAILABLE,
                "down for maintenance".into(),
            ),
            m => {
                if m == SLOW {
                    sleep(Duration::from_secs(1)).await;
                }
                let cents = symbol.bytes().map(u64::from).sum::<u64>() * 7 + tenant.len() as u64;
                (
                    StatusCode::OK,
                    format!("{symbol} {}.{:02} for {tenant}", cents / 100, cents % 100),
                )
            }
        }
    }
    let app = Router::new()
        .route("/price/{tenant}/{symbol}", get(price))
        .with_state(mode);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

#[derive(Clone, Debug)]
struct Quote {
    tenant: &'static str,
    symbol: &'static str,
}

/// An answer, marked with where it came from.
#[derive(Clone, Debug)]
struct Price {
    text: String,
    from: From,
}

#[derive(Clone, Copy, Debug)]
enum From {
    Upstream,
    Cache(Duration),
    Default,
}

#[derive(Default)]
struct Tally {
    fresh: AtomicU64,
    cached: AtomicU64,
    oldest_ms: AtomicU64,
    default: AtomicU64,
    errors: AtomicU64,
    /// The latest answer acme got for SWL.
    sample: std::sync::Mutex<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let upstream = start_upstream(mode.clone()).await?;

    // Any async client becomes a Service: share it behind an Arc (reqwest's
    // is one already) and call it from `service_fn`.
    let client = reqwest::Client::new();
    let prices = service_fn(move |quote: Quote| {
        let client = client.clone();
        async move {
            let url = format!("http://{upstream}/price/{}/{}", quote.tenant, quote.symbol);
            // A 5xx is an error here, so the policy counts it and falls back.
            let response = client.get(url).send().await?.error_for_status()?;
            Ok::<_, reqwest::Error>(Price {
                text: response.text().await?,
                from: From::Upstream,
            })
        }
    });

    let policy = Policy::builder()
        .name("prices")
        .timeout(Duration::from_millis(200))
        .bulkhead(Bulkhead::builder().max_concurrent(16))
        .circuit_breaker(
            CircuitBreaker::builder()
                .window(Window::time(Duration::from_secs(5), 5))
                .minimum_calls(8)
                .error_threshold(50.0)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(2))),
        )
        .fallback(
            // Keyed by tenant too: one tenant never sees another's answer.
            Fallback::keyed(|quote: &Quote| (quote.tenant, quote.symbol))
                .cache(
                    FallbackCache::builder()
                        .max_entries(1_000)
                        .max_stale(Duration::from_secs(30))
                        // A good answer replaces the kept one once that
                        // is a second old: between, successes write nothing.
                        .refresh_after(Duration::from_secs(1))
                        .build()?,
                )
                .value(Price {
                    text: "price unavailable".into(),
                    from: From::Default,
                })
                .mark(|price: &mut Price, provenance| {
                    if let Provenance::Cache { age } = provenance {
                        price.from = From::Cache(age);
                    }
                }),
        )
        .build()?;
    let service = ServiceBuilder::new().layer(policy.clone()).service(prices);

    let mut transitions = policy.breaker().subscribe();
    tokio::spawn(async move {
        while let Some(t) = transitions.recv().await {
            println!("        -> breaker {} to {}: {}", t.from, t.to, t.reason);
        }
    });

    // Four quotes every 100 ms: two tenants, two symbols.
    let tally = Arc::new(Tally::default());
    let load = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut tick = interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                for tenant in ["acme", "globex"] {
                    for symbol in ["SWL", "TWR"] {
                        let (service, tally) = (service.clone(), tally.clone());
                        tokio::spawn(async move {
                            let answer = service.oneshot(Quote { tenant, symbol }).await;
                            if let (Ok(price), "acme", "SWL") = (&answer, tenant, symbol) {
                                *tally.sample.lock().unwrap() = price.text.clone();
                            }
                            match answer {
                                Ok(Price {
                                    from: From::Upstream,
                                    ..
                                }) => tally.fresh.fetch_add(1, Relaxed),
                                Ok(Price {
                                    from: From::Default,
                                    ..
                                }) => tally.default.fetch_add(1, Relaxed),
                                Ok(Price {
                                    from: From::Cache(age),
                                    ..
                                }) => {
                                    tally.oldest_ms.fetch_max(age.as_millis() as u64, Relaxed);
                                    tally.cached.fetch_add(1, Relaxed)
                                }
                                Err(_) => tally.errors.fetch_add(1, Relaxed),
                            };
                        });
                    }
                }
            }
        })
    };

    println!("second  upstream  fresh  cached (oldest)  default  errors  breaker  acme's SWL");
    let start = Instant::now();
    for second in 1..=12u64 {
        let (label, next) = match second {
            1..=3 => ("healthy", HEALTHY),
            4..=6 => ("503s", FAILING),
            7..=9 => ("slow", SLOW),
            _ => ("healthy", HEALTHY),
        };
        mode.store(next, Relaxed);
        sleep((start + Duration::from_secs(second)).saturating_duration_since(Instant::now()))
            .await;
        let take = |n: &AtomicU64| n.swap(0, Relaxed);
        let cached = take(&tally.cached);
        let oldest = take(&tally.oldest_ms);
        println!(
            "{second:>6}  {label:<8}  {:>5}  {cached:>6} {:>8}  {:>7}  {:>6}  {:<7}  {}",
            take(&tally.fresh),
            if cached > 0 {
                format!("({:.1}s)", oldest as f64 / 1000.0)
            } else {
                String::new()
            },
            take(&tally.default),
            take(&tally.errors),
            policy.breaker().state().to_string(),
            tally.sample.lock().unwrap(),
        );
    }
    load.abort();
    Ok(())
}
