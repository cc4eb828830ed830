//! A cache client (redis) wrapped as a Service, behind a Policy whose
//! fallback asks the slower origin when the cache is down.
//!
//! The example starts its own `redis-server` on a free loopback port (it
//! needs the binary: `./scripts/test` installs it; `apt-get install
//! redis-server` does too), fills it, then stops it and starts it again,
//! printing for each lookup whether it came from redis, from the origin
//! (the fallback) or was refused, and the breaker's state.
//!
//! Run it with `cargo run --example redis_cache --features redis`.

/// The tests' own broker runners, shared with this example.
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use support::redis::RedisServer;
use tower::{service_fn, Layer, ServiceExt};

/// The cache client, as users write them: a struct with async methods.
struct ProfileCache {
    connection: ConnectionManager,
}

impl ProfileCache {
    async fn get(&self, user: u32) -> redis::RedisResult<Option<String>> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(format!("profile:{user}"))
            .query_async(&mut connection)
            .await
    }
}

/// The origin the cache fronts: slower, but it is the truth.
async fn profile_from_origin(user: u32) -> Result<Option<String>, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(Some(format!("user {user} (from the origin)")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(mut server) = RedisServer::start() else {
        return Ok(());
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(100)))
        .set_response_timeout(Some(Duration::from_millis(100)))
        .set_number_of_retries(1);
    let connection =
        ConnectionManager::new_with_config(redis::Client::open(server.url())?, config).await?;
    for user in 1..=3u32 {
        let _: () = redis::cmd("SET")
            .arg(format!("profile:{user}"))
            .arg(format!("user {user} (from redis)"))
            .query_async(&mut connection.clone())
            .await?;
    }

    // The recipe: an Arc of the client, cloned into each call's future.
    let cache = Arc::new(ProfileCache { connection });
    let lookup = service_fn(move |user: u32| {
        let cache = Arc::clone(&cache);
        async move { cache.get(user).await }
    });
    let policy = Policy::builder()
        .name("profile-cache")
        .timeout(Duration::from_millis(150))
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(3)
                .disable_error_threshold()
                .open_duration(OpenDuration::Fixed(Duration::from_millis(500))),
        )
        .fallback(Fallback::keyed(|user: &u32| *user).function_async(
            |user: &u32, _: &seawall::Error<redis::RedisError>| profile_from_origin(*user),
        ))
        .build()?;
    let profiles = policy.layer(lookup);

    let show = |phase: &str, answer: Result<Option<String>, seawall::Error<redis::RedisError>>| {
        let answer = match answer {
            Ok(Some(profile)) => profile,
            Ok(None) => "not cached".to_owned(),
            Err(error) => format!("error: {error}"),
        };
        println!(
            "{phase:<22} {answer:<32} breaker {}",
            policy.breaker().state()
        );
    };

    for user in 1..=2 {
        show("redis up", profiles.clone().oneshot(user).await);
    }
    server.stop();
    for user in 1..=5 {
        show("redis down", profiles.clone().oneshot(user).await);
    }
    let c = policy.breaker().counts();
    println!(
        "  (while redis was down: {} failed, {} short-circuited without asking it, {} answered by the origin)",
        c.failure, c.short_circuited, c.fallback_success
    );
    server.restart()?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    for user in 1..=2 {
        show("redis back (empty)", profiles.clone().oneshot(user).await);
    }
    Ok(())
}
