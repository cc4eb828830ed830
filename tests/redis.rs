//! The any-async-client recipe on a real cache client: redis, through a
//! Policy, while its server goes away and comes back. Skips (with a reason)
//! without `redis-server`, except in CI.

mod support;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use seawall::circuit_breaker::{CircuitBreaker, State};
use seawall::policy::Policy;
use support::redis::RedisServer;
use tower::{service_fn, Layer, ServiceExt};

/// A cache client as users write them: a struct with async methods.
struct Cache {
    connection: ConnectionManager,
}

impl Cache {
    async fn get(&self, key: &str) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.connection.clone())
            .await
    }
}

#[tokio::test]
async fn a_redis_client_behind_a_policy_fails_fast_while_redis_is_down() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(1);
    let connection = ConnectionManager::new_with_config(client, config)
        .await
        .unwrap();
    let mut seed = connection.clone();
    let _: () = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query_async(&mut seed)
        .await
        .unwrap();

    let cache = Arc::new(Cache { connection });
    let get = service_fn(move |key: String| {
        let cache = Arc::clone(&cache);
        async move { cache.get(&key).await }
    });
    let policy = Policy::builder()
        .name("redis")
        .timeout(Duration::from_millis(500))
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(2)
                .disable_error_threshold()
                .open_duration(seawall::circuit_breaker::OpenDuration::Fixed(
                    Duration::from_millis(300),
                )),
        )
        .build()
        .unwrap();
    let service = policy.layer(get);
    let cached = |key: &str| service.clone().oneshot(key.to_owned());

    assert_eq!(cached("greeting").await.unwrap().as_deref(), Some("hello"));

    server.stop();
    for _ in 0..2 {
        let err = cached("greeting").await.unwrap_err();
        assert!(err.inner().is_some() || err.is_timeout(), "{err:?}");
    }
    assert_eq!(policy.breaker().state(), State::Open);
    assert!(
        cached("greeting").await.unwrap_err().is_circuit_open(),
        "refused without asking redis"
    );

    // Back up, empty (no persistence): a probe after the open duration
    // closes the breaker.
    server.restart().unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(value) = cached("greeting").await {
            assert_eq!(value, None, "a fresh server");
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the breaker never closed again");
    assert_eq!(policy.breaker().state(), State::Closed);
}
