//! An axum handler that calls a flaky upstream through a seawall-wrapped
//! HTTP client, with a cached fallback, and uses `?` on the result.
//!
//! - The upstream: an axum server on 127.0.0.1 serving `GET /stock/{sku}`,
//!   healthy, then failing (503), then slow, then healthy.
//! - The client: reqwest behind a Policy: 150 ms timeout, 16 calls at most,
//!   a breaker (50% of at least 6 calls in a 5 s window, open 2 s), and the
//!   last good answer per (tenant, sku) if at most 60 s old.
//! - The front server: `GET /page/{sku}` with an `x-tenant` header calls
//!   the upstream and renders a line. With `?`, a refusal the fallback
//!   could not cover becomes a `503`/`504`, an upstream error a `502`.
//!
//! Every second the example prints what the front server's callers saw.
//! Run it with `cargo run --example axum_client --features axum,cache,reqwest`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::fallback::{Fallback, FallbackCache, Provenance};
use seawall::policy::Policy;
use seawall::window::Window;
use tokio::time::{interval, sleep, Instant};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, ServiceBuilder, ServiceExt};

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const SLOW: u8 = 2;

async fn start(app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

/// What the front server asks the upstream.
#[derive(Clone, Debug)]
struct StockQuery {
    tenant: String,
    sku: u32,
}

/// The upstream's answer, and whether it came from the cache.
#[derive(Clone, Debug)]
struct Stock {
    units: String,
    cached_for: Option<Duration>,
}

type StockClient = BoxCloneSyncService<StockQuery, Stock, seawall::Error<reqwest::Error>>;

/// The front server's handler: `?` turns seawall's errors into responses.
async fn page(
    State(stock): State<StockClient>,
    Path(sku): Path<u32>,
    headers: HeaderMap,
) -> Result<String, seawall::Error<reqwest::Error>> {
    let tenant = headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    let stock = stock.oneshot(StockQuery { tenant, sku }).await?;
    Ok(match stock.cached_for {
        None => format!("sku {sku}: {} units", stock.units),
        Some(age) => format!(
            "sku {sku}: {} units (as of {:.1}s ago)",
            stock.units,
            age.as_secs_f64()
        ),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let upstream = start(Router::new().route(
        "/stock/{sku}",
        get({
            let mode = mode.clone();
            move |Path(sku): Path<u32>| {
                let mode = mode.load(Relaxed);
                async move {
                    match mode {
                        FAILING => Err(StatusCode::SERVICE_UNAVAILABLE),
                        SLOW => {
                            sleep(Duration::from_secs(1)).await;
                            Ok((sku * 3).to_string())
                        }
                        _ => Ok((sku * 3).to_string()),
                    }
                }
            }
        }),
    ))
    .await?;

    let http = reqwest::Client::new();
    let fetch = service_fn(move |query: StockQuery| {
        let http = http.clone();
        async move {
            let url = format!("http://{upstream}/stock/{}", query.sku);
            let response = http.get(url).send().await?.error_for_status()?;
            Ok::<_, reqwest::Error>(Stock {
                units: response.text().await?,
                cached_for: None,
            })
        }
    });
    let policy = Policy::builder()
        .name("stock")
        .timeout(Duration::from_millis(150))
        .bulkhead(Bulkhead::builder().max_concurrent(16))
        .circuit_breaker(
            CircuitBreaker::builder()
                .window(Window::time(Duration::from_secs(5), 5))
                .minimum_calls(6)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(2))),
        )
        .fallback(
            Fallback::keyed(|query: &StockQuery| (query.tenant.clone(), query.sku))
                .cache(
                    FallbackCache::builder()
                        .max_entries(10_000)
                        .max_stale(Duration::from_secs(60))
                        .build()?,
                )
                .mark(|stock: &mut Stock, provenance| {
                    if let Provenance::Cache { age } = provenance {
                        stock.cached_for = Some(age);
                    }
                }),
        )
        .build()?;
    let client = ServiceBuilder::new().layer(policy.clone()).service(fetch);
    let front = start(
        Router::new()
            .route("/page/{sku}", get(page))
            .with_state(StockClient::new(client)),
    )
    .await?;

    let mut transitions = policy.breaker().subscribe();
    tokio::spawn(async move {
        while let Some(t) = transitions.recv().await {
            println!("        -> breaker {} to {}: {}", t.from, t.to, t.reason);
        }
    });

    // Visitors: a page view every 100 ms, two tenants on sku 7; from the
    // fifth second acme also views sku 8, which nobody viewed while the
    // upstream was up: no cached answer to fall back on, so `?` answers 502
    // (the upstream failed) or 503 (the breaker refused).
    let seen = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    let visitors = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let browser = reqwest::Client::new();
            let mut tick = interval(Duration::from_millis(100));
            for n in 0u64.. {
                tick.tick().await;
                let (browser, seen) = (browser.clone(), seen.clone());
                let (tenant, sku) = [
                    ("acme", 7),
                    ("globex", 7),
                    ("acme", 7),
                    ("globex", 7),
                    ("acme", 8),
                ][(n % 5) as usize];
                if sku == 8 && n < 40 {
                    continue;
                }
                tokio::spawn(async move {
                    let url = format!("http://{front}/page/{sku}");
                    let outcome = match browser.get(url).header("x-tenant", tenant).send().await {
                        Ok(r) if r.status().is_success() => {
                            let body = r.text().await.unwrap_or_default();
                            if body.contains("ago") {
                                "200 cached"
                            } else {
                                "200 fresh"
                            }
                            .to_owned()
                        }
                        Ok(r) => r.status().as_u16().to_string(),
                        Err(_) => "no answer".to_owned(),
                    };
                    *seen.lock().unwrap().entry(outcome).or_default() += 1;
                });
            }
        })
    };

    let start_time = Instant::now();
    for second in 1..=12u64 {
        let (label, next) = match second {
            1..=3 => ("healthy", HEALTHY),
            4..=6 => ("503s", FAILING),
            7..=8 => ("slow", SLOW),
            _ => ("healthy", HEALTHY),
        };
        mode.store(next, Relaxed);
        sleep((start_time + Duration::from_secs(second)).saturating_duration_since(Instant::now()))
            .await;
        let outcomes = std::mem::take(&mut *seen.lock().unwrap());
        let outcomes: Vec<_> = outcomes
            .iter()
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        println!("{second:>3}s  upstream {label:<8} {}", outcomes.join(", "));
    }
    visitors.abort();
    Ok(())
}
