//! One breaker per key, bounded (feature `registry`).
#![cfg(feature = "registry")]

use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Registry, State};
use tower::{service_fn, Layer, Service, ServiceExt};

#[derive(Clone, Debug)]
struct Request {
    tenant: &'static str,
    fail: bool,
}

#[tokio::test(start_paused = true)]
async fn each_key_trips_alone() {
    let registry = Registry::<&'static str>::builder(
        CircuitBreaker::builder()
            .name("api")
            .consecutive_failures(2),
    )
    .build()
    .unwrap();
    let layer = CircuitBreakerLayer::new(registry.keyed(|req: &Request| req.tenant));
    let mut service = layer.layer(service_fn(|req: Request| async move {
        if req.fail {
            Err("boom")
        } else {
            Ok(req.tenant)
        }
    }));
    for _ in 0..2 {
        let _ = service
            .ready()
            .await
            .unwrap()
            .call(Request {
                tenant: "acme",
                fail: true,
            })
            .await;
    }
    let acme = registry.get_if_present(&"acme").unwrap();
    assert_eq!(acme.state(), State::Open);
    assert_eq!(acme.name(), "api:\"acme\"");
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(Request {
            tenant: "acme",
            fail: false,
        })
        .await;
    assert!(refused.unwrap_err().is_circuit_open());
    let other = service
        .ready()
        .await
        .unwrap()
        .call(Request {
            tenant: "globex",
            fail: false,
        })
        .await;
    assert_eq!(other.unwrap(), "globex");
    assert!(
        registry.get("acme").same_as(&acme),
        "one breaker per key, shared"
    );
}

#[test]
fn the_registry_is_bounded() {
    let registry = Registry::<u32>::builder(CircuitBreaker::builder())
        .max_keys(100)
        .build()
        .unwrap();
    for key in 0..10_000 {
        let _ = registry.get(key);
    }
    assert!(registry.len() <= 100, "{} breakers kept", registry.len());
}

#[test]
fn a_bad_template_or_bound_is_refused() {
    let err = Registry::<u32>::builder(CircuitBreaker::builder().half_open_probes(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "half_open_probes");
    let err = Registry::<u32>::builder(CircuitBreaker::builder())
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!((err.field(), err.value()), ("max_keys", "0"));
}
