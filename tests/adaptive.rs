//! Adaptive bulkhead limits in paused time, against a simulated dependency
//! whose capacity changes (30 calls at once, then 10, then 50): the limit
//! settles near each capacity within a bounded number of windows, latency
//! stays bounded, and every call is counted once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::bulkhead::{AdaptiveLimit, Bulkhead};
use seawall::policy::Policy;
use seawall::{Error, Leaf, Refusal};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

const CAPACITIES: [usize; 3] = [30, 10, 50];
const PHASE: Duration = Duration::from_secs(8);
const CALLERS: usize = 100;

#[derive(Debug)]
struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("overloaded")
    }
}

impl Leaf for Busy {
    fn refusal(&self) -> Option<Refusal> {
        Some(Refusal::Overloaded)
    }
}

struct Leaving(Arc<AtomicUsize>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

struct Phase {
    capacity: usize,
    /// The limit every 100 ms through the phase.
    limits: Vec<usize>,
    p99: Duration,
}

struct Run {
    phases: Vec<Phase>,
    requests: u64,
    outcomes: u64,
    policy_calls: u64,
    admitted: u64,
    refused: u64,
    windows: u64,
    samples: u64,
}

/// `CALLERS` callers in a loop through a Policy (50 ms timeout) and an
/// adaptive bulkhead, against a dependency that serves `capacity` calls at
/// once in 10 ms, slows in proportion past that, and refuses past twice it.
async fn run(adaptive: AdaptiveLimit) -> Run {
    let capacity = Arc::new(AtomicUsize::new(CAPACITIES[0]));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (cap, busy) = (Arc::clone(&capacity), Arc::clone(&in_flight));
    let dependency = service_fn(move |n: u64| {
        let now = busy.fetch_add(1, SeqCst) + 1;
        let capacity = cap.load(SeqCst);
        let leaving = Leaving(Arc::clone(&busy));
        async move {
            if now > 2 * capacity {
                drop(leaving);
                return Err(Busy);
            }
            let slowdown = (now as f64 / capacity as f64).max(1.0);
            tokio::time::sleep(Duration::from_micros((10_000.0 * slowdown) as u64)).await;
            drop(leaving);
            Ok(n)
        }
    });
    let bulkhead = Bulkhead::builder()
        .max_concurrent(20)
        .adaptive(adaptive)
        .build()
        .unwrap();
    let policy = Policy::builder()
        .timeout(Duration::from_millis(50))
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap();
    let service = policy.layer(dependency);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let (requests, outcomes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS as u64)
        .map(|caller| {
            let service = service.clone();
            let (latencies, requests, outcomes, stop) = (
                Arc::clone(&latencies),
                Arc::clone(&requests),
                Arc::clone(&outcomes),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut n = caller;
                while !stop.load(SeqCst) {
                    requests.fetch_add(1, SeqCst);
                    let started = Instant::now();
                    let result = service.clone().oneshot(n).await;
                    outcomes.fetch_add(1, SeqCst);
                    match result {
                        Ok(_) => latencies.lock().unwrap().push(started.elapsed()),
                        Err(Error::BulkheadFull(_) | Error::Inner(Busy) | Error::Timeout(_)) => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        Err(other) => panic!("{other:?}"),
                    }
                    n += CALLERS as u64;
                }
            })
        })
        .collect();
    let mut phases = Vec::new();
    for capacity_now in CAPACITIES {
        capacity.store(capacity_now, SeqCst);
        let mut limits = Vec::new();
        for tenth in 0..PHASE.as_millis() / 100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            limits.push(bulkhead.figures().max_concurrent);
            if tenth == PHASE.as_millis() / 200 {
                latencies.lock().unwrap().clear();
            }
        }
        let mut answered = std::mem::take(&mut *latencies.lock().unwrap());
        answered.sort();
        phases.push(Phase {
            capacity: capacity_now,
            limits,
            p99: answered
                .get(answered.len() * 99 / 100)
                .copied()
                .unwrap_or(Duration::MAX),
        });
    }
    stop.store(true, SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    let counts = policy.breaker().lifetime_counts();
    let figures = bulkhead.figures();
    Run {
        phases,
        requests: requests.load(SeqCst),
        outcomes: outcomes.load(SeqCst),
        policy_calls: counts.success + counts.failure + counts.timeout + counts.rejected,
        admitted: figures.admitted,
        refused: figures.rejected,
        windows: figures.adaptive.unwrap().windows,
        samples: figures.adaptive.unwrap().samples,
    }
}

/// The first 100 ms tick from which the limit stays within `band` of the
/// capacity to the phase's end (the limit keeps probing: within, not at).
fn settled_after(phase: &Phase, band: (f64, f64)) -> Option<usize> {
    let within = |limit: &usize| {
        let ratio = *limit as f64 / phase.capacity as f64;
        ratio >= band.0 && ratio <= band.1
    };
    let last_outside = phase.limits.iter().rposition(|limit| !within(limit));
    match last_outside {
        None => Some(0),
        Some(tick) if tick + 1 < phase.limits.len() => Some(tick + 1),
        Some(_) => None,
    }
}

fn check(run: &Run, name: &str, band: (f64, f64), within_ticks: usize) {
    for phase in &run.phases {
        let settled = settled_after(phase, band);
        assert!(
            settled.is_some_and(|tick| tick <= within_ticks),
            "{name}: capacity {}: settled at tick {settled:?} (limits {:?})",
            phase.capacity,
            phase.limits
        );
        // Answered calls never waited for a timeout: the limit kept the
        // dependency out of deep overload.
        assert!(
            phase.p99 <= Duration::from_millis(25),
            "{name}: capacity {}: p99 {:?}",
            phase.capacity,
            phase.p99
        );
    }
    // Every call is counted once: by its caller, by the policy, and by the
    // bulkhead (let in or refused).
    assert_eq!(run.requests, run.outcomes, "{name}");
    assert_eq!(run.policy_calls, run.requests, "{name}");
    assert_eq!(run.admitted + run.refused, run.requests, "{name}");
    // And every call let in is one sample for the limit: its latency, or a
    // drop.
    assert_eq!(run.samples, run.admitted, "{name}");
    assert!(run.windows > 0);
}

#[tokio::test(start_paused = true)]
async fn vegas_settles_near_each_capacity_from_latency() {
    let run = run(AdaptiveLimit::vegas().limits(1, 500)).await;
    // Within 10 windows (1 s) of a change, between the capacity and twice
    // it (measured: 2 to 5 windows, settling at 1.1 to 1.7 times it).
    check(&run, "vegas", (1.0, 2.0), 10);
}

#[tokio::test(start_paused = true)]
async fn aimd_settles_below_where_the_dependency_drops() {
    let run = run(AdaptiveLimit::aimd(0.9).limits(1, 500)).await;
    // The dependency refuses past twice its capacity: AIMD saws just below,
    // within 40 windows of a change (measured: 8 to 30).
    check(&run, "aimd", (1.0, 2.2), 40);
}

/// The bulkhead's own layer samples its calls too: a dependency that times
/// out under a fixed load drives an AIMD limit down.
#[tokio::test(start_paused = true)]
async fn a_standalone_adaptive_bulkhead_lowers_its_limit_on_drops() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(40)
        .adaptive(AdaptiveLimit::aimd(0.5).limits(5, 40))
        .build()
        .unwrap();
    let hung = service_fn(|_: u64| std::future::pending::<Result<u64, Busy>>());
    let service = bulkhead
        .layer()
        .layer(seawall::timeout::TimeoutLayer::new(Duration::from_millis(20)).layer(hung));
    let callers: Vec<_> = (0..40u64)
        .map(|n| {
            let service = service.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let _ = service.clone().oneshot(n).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let figures = bulkhead.figures();
    // Halved at each window with drops: 40, 20, 10.
    let adaptive = figures.adaptive.unwrap();
    assert_eq!(
        figures.max_concurrent,
        40 >> adaptive.decreases,
        "{figures:?}"
    );
    assert!(
        adaptive.decreases >= 2 && adaptive.drops > 0,
        "{adaptive:?}"
    );
    assert_eq!(adaptive.increases, 0);
}

#[test]
fn settings_outside_their_range_name_the_field() {
    let refused = |adaptive: AdaptiveLimit, start: usize| {
        Bulkhead::builder()
            .max_concurrent(start)
            .adaptive(adaptive)
            .build()
            .unwrap_err()
    };
    assert_eq!(refused(AdaptiveLimit::aimd(1.5), 10).field(), "adaptive");
    assert_eq!(
        refused(AdaptiveLimit::vegas().limits(20, 10), 10).field(),
        "adaptive"
    );
    assert_eq!(
        refused(AdaptiveLimit::vegas().limits(1, 5), 10).field(),
        "max_concurrent"
    );
    assert_eq!(
        refused(AdaptiveLimit::vegas().smoothing(0.0), 10).field(),
        "adaptive"
    );
}

/// On an axum server's routes, an adaptive bulkhead sheds what the server
/// cannot take: its handler serves 10 requests at once in 10 ms and slows
/// in proportion past that, under a 30 ms timeout; 60 clients in a loop.
/// The limit falls from 60 to between the handler's capacity and where its
/// requests time out, and the shed requests are 503s.
#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn an_axum_route_sheds_load_with_an_adaptive_limit() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use seawall::integration::axum::ErrorResponseLayer;
    use tower::ServiceBuilder;

    let in_flight = Arc::new(AtomicUsize::new(0));
    let busy = Arc::clone(&in_flight);
    let bulkhead = Bulkhead::builder()
        .max_concurrent(60)
        .adaptive(AdaptiveLimit::vegas().limits(1, 200))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/work",
            get(move || {
                let now = busy.fetch_add(1, SeqCst) + 1;
                let leaving = Leaving(Arc::clone(&busy));
                async move {
                    let slowdown = (now as f64 / 10.0).max(1.0);
                    tokio::time::sleep(Duration::from_micros((10_000.0 * slowdown) as u64)).await;
                    drop(leaving);
                    "done"
                }
            }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(bulkhead.layer())
                .layer(seawall::timeout::TimeoutLayer::new(Duration::from_millis(
                    30,
                ))),
        );
    let shed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..60)
        .map(|_| {
            let (app, shed) = (app.clone(), Arc::clone(&shed));
            tokio::spawn(async move {
                for _ in 0..200 {
                    let request = Request::get("/work").body(Body::empty()).unwrap();
                    let response = app.clone().oneshot(request).await.unwrap();
                    match response.status() {
                        StatusCode::OK => {}
                        StatusCode::GATEWAY_TIMEOUT => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            shed.fetch_add(1, SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        other => panic!("{other}"),
                    }
                }
            })
        })
        .collect();
    // The limit while every client is still calling.
    let mut limits = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        limits.push(bulkhead.figures().max_concurrent);
    }
    for client in clients {
        client.await.unwrap();
    }
    let figures = bulkhead.figures();
    // After a second, the limit stays between the handler's capacity and
    // where its requests start timing out (30 at once).
    assert!(
        limits[10..].iter().all(|limit| (10..=35).contains(limit)),
        "{limits:?}"
    );
    assert!(shed.load(SeqCst) > 0);
    assert_eq!(figures.rejected, shed.load(SeqCst));
}
