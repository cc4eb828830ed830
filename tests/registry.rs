//! One breaker per key, bounded (feature `registry`).
#![cfg(feature = "registry")]

use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Registry, State};
use seawall::classify::Verdict;
use seawall::window::Window;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use seawall::Clock;
use tower::{service_fn, Layer, Service, ServiceExt};

/// Counts the bytes each thread holds on the heap, so that the registry's
/// bytes per key are the allocator's figures, not the process's resident
/// pages (which other tests and the allocator's own caching blur).
struct Counting;

thread_local! {
    static HELD: Cell<i64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-local may be gone while a thread exits.
        let _ = HELD.try_with(|n| n.set(n.get() + layout.size() as i64));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = HELD.try_with(|n| n.set(n.get() - layout.size() as i64));
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn held() -> i64 {
    HELD.with(Cell::get)
}

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

/// A registry that could outgrow its memory bound is refused when built,
/// not discovered when the keys arrive: a million-call count window with
/// latency is about 3 MiB a key.
#[test]
fn a_registry_whose_worst_case_exceeds_its_memory_is_refused() {
    let huge = || {
        CircuitBreaker::builder()
            .window(Window::count(1_000_000))
            .track_latency(true)
    };
    let err = Registry::<u32>::builder(huge()).build().unwrap_err();
    assert_eq!((err.field(), err.value()), ("max_keys", "10000"));
    let small = Registry::<u32>::builder(huge())
        .max_keys(100)
        .build()
        .unwrap();
    assert!(small.worst_case_bytes() <= 1 << 30);
    let allowed = Registry::<u32>::builder(huge())
        .max_memory(64 << 30)
        .build()
        .unwrap();
    assert!(allowed.worst_case_bytes() > 1 << 30);
    let default = Registry::<u32>::builder(CircuitBreaker::builder())
        .build()
        .unwrap();
    assert!(
        default.worst_case_bytes() <= 28 << 20,
        "{}",
        default.worst_case_bytes()
    );
}

/// Looking a key up makes no window storage: a million-call ring is made
/// by the key's first call.
#[test]
fn a_looked_up_key_costs_no_window() {
    let registry =
        Registry::<u32>::builder(CircuitBreaker::builder().window(Window::count(1_000_000)))
            .max_keys(100)
            .build()
            .unwrap();
    let before = resident_bytes();
    for key in 0..100 {
        let _ = registry.get(key);
    }
    let looked_up = resident_bytes().saturating_sub(before);
    assert!(looked_up < 4 << 20, "{looked_up} bytes for 100 lookups");
}

/// What a key of the default registry (a time window of 10 buckets) holds,
/// counted by the allocator: its breaker, its name, its share of the
/// shards' tables (the allocator's own bookkeeping comes on top). A key
/// called once holds no window storage; one called in a second bucket
/// holds its ring (ten buckets and the retired totals, 13 counters each,
/// and the reset floor: 1,152 bytes) in one allocation.
#[tokio::test(start_paused = true)]
async fn a_called_key_holds_few_bytes() {
    const KEYS: u64 = 10_000;
    let before = held();
    let registry = Registry::<u64>::builder(
        CircuitBreaker::builder()
            .name("upstream")
            .clock(Clock::tokio()),
    )
    .max_keys(KEYS)
    .build()
    .unwrap();
    let call = |key| {
        let permit = registry.get(key).try_acquire().unwrap();
        permit.record(Verdict::Success);
    };
    (0..KEYS).for_each(call);
    let called = (held() - before) / KEYS as i64;
    tokio::time::advance(Duration::from_secs(1)).await;
    (0..KEYS).for_each(call);
    let ringed = (held() - before) / KEYS as i64;
    assert_eq!(registry.len(), KEYS);
    assert!(called <= 232, "{called} bytes a key called once");
    assert!(
        ringed - called <= 1_152 + 16,
        "{ringed} bytes a key called in two buckets"
    );
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_forgotten() {
    let registry = Registry::<u32>::builder(CircuitBreaker::builder().clock(Clock::tokio()))
        .idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let first = registry.get(1);
    let _ = registry.get(2);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(registry.get_if_present(&1).is_some(), "used 6 s ago");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(registry.get_if_present(&2).is_none(), "idle for 12 s");
    assert_eq!(registry.len(), 1, "only key 1 was used within 10 s");
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(
        !registry.get(1).same_as(&first),
        "an idle key comes back with a fresh breaker"
    );
    assert_eq!(registry.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_registry_evicts_the_least_recently_used_keys() {
    let registry = Registry::<u32>::builder(CircuitBreaker::builder().clock(Clock::tokio()))
        .max_keys(64)
        .build()
        .unwrap();
    for key in 0..64 {
        let _ = registry.get(key);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    for key in 0..32 {
        let _ = registry.get(key);
    }
    for key in 100..116 {
        let _ = registry.get(key);
    }
    assert!(registry.len() <= 64, "{} breakers kept", registry.len());
    for key in 0..32 {
        assert!(
            registry.get_if_present(&key).is_some(),
            "recently used key {key} evicted"
        );
    }
}

#[test]
fn removed_keys_get_fresh_breakers() {
    let registry = Registry::<u32>::builder(CircuitBreaker::builder())
        .build()
        .unwrap();
    let first = registry.get(7);
    first.force_open();
    registry.remove(&7);
    assert!(registry.is_empty());
    assert_eq!(registry.get(7).state(), State::Closed);
    assert_eq!(registry.len(), 1);
}
