//! A real axum server on 127.0.0.1, called by a real HTTP client. Real time:
//! a paused clock would jump past every deadline while the sockets work.
//! Nothing asserts a duration; the deadlines are far apart from the waits.
#![cfg(all(feature = "axum", feature = "registry"))]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Registry};
use seawall::fallback::Fallback;
use seawall::integration::axum::{server_errors, ErrorResponseLayer, Refused};
use seawall::policy::Policy;
use tokio::sync::Notify;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// Serves `app` on a free loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

async fn get_from(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).send().await.unwrap()
}

async fn never() -> &'static str {
    std::future::pending().await
}

#[tokio::test]
async fn a_timeout_is_a_504() {
    let policy = Policy::builder()
        .name("slow")
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let app = Router::new().route("/slow", get(never)).route_layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(policy),
    );
    let base = serve(app).await;
    let response = get_from(&format!("{base}/slow")).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    // Terse: the reason phrase, nothing of seawall's internals.
    assert_eq!(response.text().await.unwrap(), "Gateway Timeout");
}

#[tokio::test]
async fn a_full_bulkhead_is_a_503_or_a_429() {
    let release = Arc::new(Notify::new());
    let held = release.clone();
    for (status, layer) in [
        (StatusCode::SERVICE_UNAVAILABLE, ErrorResponseLayer::new()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            ErrorResponseLayer::new().bulkhead_status(StatusCode::TOO_MANY_REQUESTS),
        ),
    ] {
        let policy = Policy::builder()
            .name("one-at-a-time")
            .bulkhead(Bulkhead::builder().max_concurrent(1))
            .build()
            .unwrap();
        let held = held.clone();
        let app = Router::new()
            .route(
                "/hold",
                get(move || {
                    let held = held.clone();
                    async move {
                        held.notified().await;
                        "released"
                    }
                }),
            )
            .route_layer(ServiceBuilder::new().layer(layer).layer(policy.clone()));
        let base = serve(app).await;
        let url = format!("{base}/hold");
        let first = tokio::spawn(async move { get_from(&url).await.text().await.unwrap() });
        while policy.bulkhead().unwrap().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        let refused = get_from(&format!("{base}/hold")).await;
        assert_eq!(refused.status(), status);
        assert_eq!(
            refused.text().await.unwrap(),
            status.canonical_reason().unwrap()
        );
        release.notify_one();
        assert_eq!(first.await.unwrap(), "released");
    }
}

#[tokio::test]
async fn an_open_circuit_is_a_503_with_retry_after_and_5xx_answers_trip_it() {
    let policy = Policy::builder()
        .name("flaky")
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(2)
                .disable_error_threshold(),
        )
        .classify(server_errors())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/flaky",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "oops") }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(policy.clone()),
        );
    let base = serve(app).await;
    for _ in 0..2 {
        assert_eq!(
            get_from(&format!("{base}/flaky")).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let refused = get_from(&format!("{base}/flaky")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "5");
    // The timing is in the header; the body says no more than the status.
    assert_eq!(refused.text().await.unwrap(), "Service Unavailable");
    assert_eq!(policy.breaker().counts().short_circuited, 1);
}

#[tokio::test]
async fn refusals_can_have_a_body_of_your_own_and_fallbacks_answer_too() {
    let policy = Policy::builder()
        .name("with-fallback")
        .timeout(Duration::from_millis(50))
        .fallback(
            Fallback::builder().function(|_: &(), _: &seawall::Error<Infallible>| {
                Ok::<_, Infallible>((StatusCode::OK, "from the fallback").into_response())
            }),
        )
        .build()
        .unwrap();
    let forced_open = Policy::builder()
        .name("down")
        .circuit_breaker(CircuitBreaker::builder())
        .build()
        .unwrap();
    forced_open.breaker().force_open();
    let json = ErrorResponseLayer::new().response(|refusal: &Refused<'_>| {
        let mut response = refusal.default_response(StatusCode::SERVICE_UNAVAILABLE);
        *response.body_mut() = axum::body::Body::from(r#"{"error":"unavailable"}"#);
        response
    });
    let app = Router::new()
        .route(
            "/slow",
            get(never).route_layer(
                ServiceBuilder::new()
                    .layer(ErrorResponseLayer::new())
                    .layer(policy),
            ),
        )
        .route(
            "/down",
            get(never).route_layer(ServiceBuilder::new().layer(json).layer(forced_open)),
        );
    let base = serve(app).await;
    assert_eq!(
        get_from(&format!("{base}/slow"))
            .await
            .text()
            .await
            .unwrap(),
        "from the fallback"
    );
    let down = get_from(&format!("{base}/down")).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.text().await.unwrap(), r#"{"error":"unavailable"}"#);
}

#[tokio::test]
async fn each_tenant_has_its_own_breaker() {
    let registry = Registry::<String>::builder(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .disable_error_threshold(),
    )
    .max_keys(100)
    .build()
    .unwrap();
    let tenant_of = |request: &Request| {
        request
            .headers()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .to_owned()
    };
    let per_tenant = CircuitBreakerLayer::new(registry.keyed(tenant_of)).classify(server_errors());
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route_layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(per_tenant),
        );
    let base = serve(app).await;
    registry.get("acme".to_owned()).force_open();
    let client = reqwest::Client::new();
    let as_tenant = |tenant: &'static str| client.get(&base).header("x-tenant", tenant).send();
    assert_eq!(
        as_tenant("acme").await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(as_tenant("globex").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn handlers_use_question_mark_on_a_guarded_client() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .disable_error_threshold()
        .build()
        .unwrap();
    let upstream = ServiceBuilder::new()
        .layer(breaker.layer())
        .service(service_fn(|fail: bool| async move {
            if fail {
                Err(std::io::Error::other("secret upstream detail"))
            } else {
                Ok("upstream says hi")
            }
        }));
    let handler = move |fail: bool| {
        let upstream = upstream.clone();
        async move {
            let answer = upstream.oneshot(fail).await?;
            Ok::<_, seawall::Error<std::io::Error>>(answer)
        }
    };
    let (ok, fail) = (handler.clone(), handler);
    let app = Router::new()
        .route("/ok", get(move || ok(false)))
        .route("/fail", get(move || fail(true)));
    let base = serve(app).await;
    assert_eq!(
        get_from(&format!("{base}/ok")).await.text().await.unwrap(),
        "upstream says hi"
    );
    let failed = get_from(&format!("{base}/fail")).await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    assert!(
        !failed.text().await.unwrap().contains("secret"),
        "upstream details stay inside"
    );
    let refused = get_from(&format!("{base}/ok")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
}
