//! A service that users can watch: two policies (`checkout`, with a
//! timeout, a bulkhead and a breaker; `search`, with a fallback) and a
//! per-tenant registry, under generated load with a failure schedule
//! (checkout's payment provider goes down for a while; one tenant's
//! backend is always down). It serves, on loopback:
//!
//! - `/metrics`: Prometheus text (seawall's figures through the `metrics`
//!   facade, with call-duration histograms);
//! - `/hystrix.stream`: the Hystrix dashboard's event stream;
//! - `/health`: healthy, degraded or down, as JSON.
//!
//! ```text
//! cargo run --example metrics_dashboard --features metrics,hystrix-stream,registry
//! ```
//!
//! It runs until stopped (Ctrl-C), the failure schedule repeating. With
//! `--ci` it runs one cycle, prints a summary and exits.

mod service;

use std::sync::atomic::Ordering::Relaxed;

use service::Service;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let once = std::env::args().any(|arg| arg == "--ci");
    let metrics = service::install_recorder();
    let service = std::sync::Arc::new(Service::new()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = service.router(metrics.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("Prometheus text:  http://{address}/metrics");
    println!("Hystrix stream:   http://{address}/hystrix.stream");
    println!("health:           http://{address}/health");
    println!("(generating load: checkout's provider fails for the middle third of every 6 s)");

    loop {
        service.load(300).await;
        let seen = &service.seen;
        println!(
            "checkout so far: {} calls: {} succeeded, {} failed, {} timed out, {} short-circuited, {} rejected; health: {}",
            seen.total(),
            seen.success.load(Relaxed),
            seen.failure.load(Relaxed),
            seen.timeout.load(Relaxed),
            seen.short_circuited.load(Relaxed),
            seen.rejected.load(Relaxed),
            service.catalogue.health().status,
        );
        if once {
            break;
        }
    }
    let scraped = reqwest::get(format!("http://{address}/metrics"))
        .await?
        .text()
        .await?;
    let lines = scraped
        .lines()
        .filter(|line| {
            line.starts_with("seawall_breaker_calls_total{") && line.contains("checkout")
        })
        .filter(|line| !line.ends_with(" 0"));
    println!("\n/metrics says:");
    for line in lines {
        println!("  {line}");
    }
    let health = reqwest::get(format!("http://{address}/health"))
        .await?
        .text()
        .await?;
    println!("\n/health says: {health}");
    Ok(())
}
