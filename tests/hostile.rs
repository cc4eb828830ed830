//! Hostile input: more distinct keys than any registry should hold, and
//! keys made to collide. Each bound is checked from outside: the process's
//! resident memory, and the answers callers get.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreaker, Registry};
use seawall::classify::Verdict;
use seawall::fallback::{Fallback, FallbackCache, FallbackLayer};
use seawall::timeout::TimeoutLayer;
use seawall::Clock;
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux's /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident pages");
    pages * 4096
}

/// A million distinct keys, each with a call (a client making up a tenant
/// per request): the registry keeps at most `max_keys`, and the process
/// grows by no more than the registry's documented worst case.
#[test]
fn a_million_distinct_keys_stay_within_the_registrys_bound() {
    let registry = || {
        Registry::<u64>::builder(CircuitBreaker::builder().clock(Clock::coarse()))
            .max_keys(10_000)
            .build()
            .unwrap()
    };
    // Pages the code and the allocator touch once, whatever the keys: paid
    // before measuring.
    let warm_up = registry();
    for key in 0..20_000u64 {
        warm_up
            .get(key)
            .try_acquire()
            .unwrap()
            .record(Verdict::Success);
    }
    drop(warm_up);
    let registry = registry();
    let bound = registry.worst_case_bytes();
    let before = resident_bytes();
    let mut peak = 0;
    for key in 0..1_000_000u64 {
        let verdict = if key.is_multiple_of(3) {
            Verdict::Failure
        } else {
            Verdict::Success
        };
        registry.get(key).try_acquire().unwrap().record(verdict);
        if key % 50_000 == 0 {
            peak = peak.max(resident_bytes().saturating_sub(before));
            assert!(
                registry.len() <= 10_000 + 64,
                "{} keys kept",
                registry.len()
            );
        }
    }
    peak = peak.max(resident_bytes().saturating_sub(before));
    println!(
        "1,000,000 keys through a registry of 10,000: {} keys kept, resident growth {} KiB, bound {} KiB",
        registry.len(),
        peak / 1024,
        bound / 1024
    );
    assert!(registry.len() <= 10_000);
    assert!(
        peak <= bound,
        "the process grew by {peak} bytes, beyond the bound of {bound}"
    );
}

/// Every tenant's key hashes alike: the cache must still tell them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Colliding {
    tenant: u32,
    item: u32,
}

impl Hash for Colliding {
    fn hash<H: Hasher>(&self, state: &mut H) {
        0u8.hash(state);
    }
}

#[derive(Clone, Debug)]
struct Request {
    tenant: u32,
    item: u32,
    fail: bool,
}

/// Keys that all collide, a thousand tenants: when calls fail, each tenant
/// is answered from its own last good answer, never another's.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cached_fallback_never_answers_a_tenant_with_anothers_data() {
    let cache = FallbackCache::<Colliding, String>::builder()
        .max_entries(10_000)
        .build()
        .unwrap();
    let fallback = Fallback::keyed(|r: &Request| Colliding {
        tenant: r.tenant,
        item: r.item,
    })
    .cache(cache)
    .build()
    .unwrap();
    let service = ServiceBuilder::new()
        .layer(FallbackLayer::new(fallback))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(service_fn(|r: Request| async move {
            if r.fail {
                Err(std::io::Error::other("down"))
            } else {
                Ok(format!("tenant {} item {}", r.tenant, r.item))
            }
        }));
    for tenant in 0..1_000 {
        for item in 0..3 {
            let fresh = service
                .clone()
                .oneshot(Request {
                    tenant,
                    item,
                    fail: false,
                })
                .await
                .unwrap();
            assert_eq!(fresh, format!("tenant {tenant} item {item}"));
        }
    }
    for tenant in (0..1_000).rev() {
        for item in 0..3 {
            let cached = service
                .clone()
                .oneshot(Request {
                    tenant,
                    item,
                    fail: true,
                })
                .await
                .unwrap();
            assert_eq!(cached, format!("tenant {tenant} item {item}"));
        }
    }
    let unknown = service
        .clone()
        .oneshot(Request {
            tenant: 5_000,
            item: 0,
            fail: true,
        })
        .await;
    assert!(
        unknown.is_err(),
        "no answer of its own: the error, not another's"
    );
}
