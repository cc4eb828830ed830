//! An axum server whose routes are guarded by seawall, each tuned for what
//! it does, answering refusals with the right status codes.
//!
//! - `/report`: slow work; a Policy with a 100 ms timeout -> `504`.
//! - `/search`: popular; a bulkhead of 2 calls -> `429` beyond that.
//! - `/orders`: its database fails; a breaker that counts 5xx answers trips
//!   after 3 failures in a row -> `503` with `Retry-After`.
//! - `/profile`: one breaker per tenant (`x-tenant` header), from a bounded
//!   registry: one tenant's outage does not refuse the others.
//!
//! The example serves on 127.0.0.1, calls each route with reqwest and
//! prints what came back. Run it with
//! `cargo run --example axum_server --features axum,registry`.

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Registry};
use seawall::integration::axum::{server_errors, ErrorResponseLayer};
use seawall::policy::Policy;
use tower::ServiceBuilder;

fn tenant_of(request: &Request) -> String {
    let tenant = request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok());
    tenant.unwrap_or("anonymous").to_owned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = Policy::builder()
        .name("report")
        .timeout(Duration::from_millis(100))
        .build()?;
    let search = Policy::builder()
        .name("search")
        .bulkhead(Bulkhead::builder().max_concurrent(2))
        .build()?;
    let orders = Policy::builder()
        .name("orders")
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(3)
                .disable_error_threshold(),
        )
        .classify(server_errors())
        .build()?;
    let profiles = Registry::<String>::builder(
        CircuitBreaker::builder()
            .name("profile")
            .consecutive_failures(2)
            .disable_error_threshold(),
    )
    .max_keys(10_000)
    .idle_timeout(Duration::from_secs(600))
    .build()?;

    let app = Router::new()
        .route(
            "/report",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "the report"
            })
            .route_layer(
                ServiceBuilder::new()
                    .layer(ErrorResponseLayer::new())
                    .layer(report),
            ),
        )
        .route(
            "/search",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "results"
            })
            .route_layer(
                ServiceBuilder::new()
                    .layer(ErrorResponseLayer::new().bulkhead_status(StatusCode::TOO_MANY_REQUESTS))
                    .layer(search),
            ),
        )
        .route(
            "/orders",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable") })
                .route_layer(
                    ServiceBuilder::new()
                        .layer(ErrorResponseLayer::new())
                        .layer(orders),
                ),
        )
        .route(
            "/profile",
            get(|request: Request| async move {
                if tenant_of(&request) == "acme" {
                    (
                        StatusCode::BAD_GATEWAY,
                        "acme's profile store is down".to_owned(),
                    )
                } else {
                    (
                        StatusCode::OK,
                        format!("profile of {}", tenant_of(&request)),
                    )
                }
            })
            .route_layer(
                ServiceBuilder::new()
                    .layer(ErrorResponseLayer::new())
                    .layer(
                        CircuitBreakerLayer::new(profiles.keyed(tenant_of))
                            .classify(server_errors()),
                    ),
            ),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving on {base}\n");

    let client = reqwest::Client::new();
    let show = |label: &str, response: reqwest::Response| {
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| format!(" (Retry-After: {})", v.to_str().unwrap_or("?")))
            .unwrap_or_default();
        println!("{label:<34} {}{retry}", response.status());
    };

    show(
        "GET /report",
        client.get(format!("{base}/report")).send().await?,
    );

    let searches: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client.get(format!("{base}/search")).send()))
        .collect();
    for (n, search) in searches.into_iter().enumerate() {
        show(&format!("GET /search (4 at once, #{n})"), search.await??);
    }

    for n in 1..=4 {
        show(
            &format!("GET /orders (#{n})"),
            client.get(format!("{base}/orders")).send().await?,
        );
    }

    for tenant in ["acme", "acme", "acme", "globex"] {
        let response = client
            .get(format!("{base}/profile"))
            .header("x-tenant", tenant)
            .send()
            .await?;
        show(&format!("GET /profile as {tenant}"), response);
    }
    Ok(())
}
