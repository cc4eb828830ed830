//! A real Prometheus server scrapes the metrics dashboard example's service
//! under generated load; its query API must give the counts the load
//! generator saw, and a latency quantile from the histogram.

#[path = "../examples/metrics_dashboard/service.rs"]
mod service;
mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::prometheus::PrometheusServer;

/// The value of an instant query's single result, or `None` while it has
/// none (or several).
async fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let text = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let response: Value = serde_json::from_str(&text).ok()?;
    let results = response["data"]["result"].as_array()?;
    match results.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Polls `promql` until it gives `expected` (the scrape after the load ended
/// has the final counts), for at most 60 s; returns what it last gave.
async fn settle(prometheus: &str, promql: &str, expected: f64) -> Option<f64> {
    let started = Instant::now();
    loop {
        let value = query(prometheus, promql).await;
        if value == Some(expected) || started.elapsed() > Duration::from_secs(60) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_counts_and_a_latency_quantile() {
    let metrics = service::install_recorder();
    let service = service::Service::new().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = service.router(metrics);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let Some(prometheus) = PrometheusServer::start(&address.to_string()) else {
        return;
    };
    let prometheus = prometheus.url();
    service.load(150).await;
    let seen = &service.seen;
    assert_eq!(seen.total(), 600);
    assert!(
        seen.failure.load(Relaxed) > 0 && seen.short_circuited.load(Relaxed) > 0,
        "{seen:?}"
    );

    let calls = |outcome: &str| {
        format!("seawall_breaker_calls_total{{breaker=\"checkout\",outcome=\"{outcome}\"}}")
    };
    for (outcome, count) in [
        ("success", &seen.success),
        ("failure", &seen.failure),
        ("timeout", &seen.timeout),
        ("short_circuited", &seen.short_circuited),
        ("rejected", &seen.rejected),
    ] {
        let expected = count.load(Relaxed) as f64;
        assert_eq!(
            settle(&prometheus, &calls(outcome), expected).await,
            Some(expected),
            "{outcome}"
        );
    }
    // Every successful checkout call took CHECKOUT_LATENCY (15 ms) and a
    // little more: in the (10 ms, 25 ms] bucket, where Prometheus
    // interpolates its median.
    let median = query(
        &prometheus,
        "histogram_quantile(0.5, seawall_call_duration_seconds_bucket{breaker=\"checkout\",outcome=\"success\"})",
    )
    .await
    .expect("a median");
    assert!((0.010..=0.025).contains(&median), "median {median}");
    // The broken tenant's breaker is open, and only its.
    assert_eq!(
        settle(
            &prometheus,
            "seawall_registry_open_keys{registry=\"tenants\"}",
            1.0
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        query(&prometheus, "seawall_registry_keys{registry=\"tenants\"}").await,
        Some(10.0)
    );
    let health = reqwest::get(format!("http://{address}/health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
}
