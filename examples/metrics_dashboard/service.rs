//! The metrics dashboard example's service: two policies and a per-tenant
//! registry in one catalogue, served as Prometheus text, the Hystrix stream
//! and a health check, under generated load with a failure schedule.
//! `tests/prometheus.rs` scrapes it with a real Prometheus server.

use std::future::ready;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, Registry};
use seawall::fallback::Fallback;
use seawall::observe::metrics::{publish, MetricsListener};
use seawall::observe::{health_handler, hystrix, Catalogue};
use seawall::policy::Policy;
use seawall::window::Window;
use tower::{service_fn, Layer, ServiceExt};

/// The latency histogram's buckets, in seconds.
pub const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// How long the checkout dependency takes when healthy.
pub const CHECKOUT_LATENCY: Duration = Duration::from_millis(15);
/// The tenant whose backend is always down.
pub const BROKEN_TENANT: u32 = 7;

/// A Prometheus recorder installed for the process, with histograms (not
/// summaries) for call durations, so Prometheus can aggregate them.
pub fn install_recorder() -> PrometheusHandle {
    PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .expect("buckets are not empty")
        .install_recorder()
        .expect("no recorder is installed yet")
}

/// What the load generator saw of the checkout policy's calls, by outcome.
#[derive(Debug, Default)]
pub struct Seen {
    pub success: AtomicU64,
    pub failure: AtomicU64,
    pub timeout: AtomicU64,
    pub short_circuited: AtomicU64,
    pub rejected: AtomicU64,
}

impl Seen {
    pub fn total(&self) -> u64 {
        [
            &self.success,
            &self.failure,
            &self.timeout,
            &self.short_circuited,
            &self.rejected,
        ]
        .iter()
        .map(|count| count.load(Relaxed))
        .sum()
    }
}

/// The parts of the service.
pub struct Service {
    pub catalogue: Catalogue,
    checkout: Policy,
    search: Policy<
        CircuitBreaker,
        seawall::classify::ByKind,
        Fallback<u32, Vec<String>, std::io::Error>,
    >,
    tenants: Policy<PerTenant>,
    checkout_down: Arc<AtomicBool>,
    pub seen: Seen,
}

/// One breaker per tenant, the request being the tenant's id.
type PerTenant = seawall::circuit_breaker::Keyed<u32, fn(&u32) -> u32>;

fn tenant_of(tenant: &u32) -> u32 {
    *tenant
}

impl Service {
    /// Builds the parts; the `metrics` recorder must be installed first, for
    /// the latency listeners to record into it.
    pub fn new() -> Result<Service, seawall::ConfigError> {
        let checkout = Policy::builder()
            .name("checkout")
            .timeout(Duration::from_millis(100))
            .bulkhead(Bulkhead::builder().max_concurrent(16))
            .circuit_breaker(
                CircuitBreaker::builder()
                    .window(Window::time(Duration::from_secs(2), 4))
                    .minimum_calls(20)
                    .error_threshold(50.0)
                    .open_duration(OpenDuration::Fixed(Duration::from_millis(500)))
                    .track_latency(true)
                    .listener(MetricsListener::new("checkout")),
            )
            .build()?;
        let search = Policy::builder()
            .name("search")
            .timeout(Duration::from_millis(30))
            .circuit_breaker(
                CircuitBreaker::builder()
                    .track_latency(true)
                    .listener(MetricsListener::new("search")),
            )
            .fallback(Fallback::builder().value(Vec::new()))
            .build()?;
        let registry = Registry::<u32>::builder(
            CircuitBreaker::builder()
                .name("tenants")
                .minimum_calls(5)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(2))),
        )
        .max_keys(10_000)
        .build()?;
        let tenants = Policy::builder()
            .name("tenants")
            .circuit_breaker(registry.keyed(tenant_of as fn(&u32) -> u32))
            .build()?;
        let catalogue = Catalogue::new();
        catalogue
            .top_keys(5)
            .add(&checkout)
            .add(&search)
            .add(&tenants);
        Ok(Service {
            catalogue,
            checkout,
            search,
            tenants,
            checkout_down: Arc::new(AtomicBool::new(false)),
            seen: Seen::default(),
        })
    }

    /// `/metrics` (Prometheus text), `/hystrix.stream` and `/health`.
    pub fn router(&self, metrics: PrometheusHandle) -> Router {
        let catalogue = self.catalogue.clone();
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    publish(&catalogue.report());
                    ready(metrics.render())
                }),
            )
            .route(
                "/hystrix.stream",
                get(hystrix::stream(self.catalogue.clone())),
            )
            .route("/health", get(health_handler(self.catalogue.clone())))
    }

    /// `ticks` rounds of traffic, 20 ms apart: 4 checkout calls, 4 searches
    /// and 2 tenant calls each. Checkout's dependency is down for the
    /// middle third of the run; search's is slow on every fifth call; one
    /// tenant's backend is always down.
    pub async fn load(&self, ticks: u32) {
        let checkout = self.checkout.layer(service_fn({
            let down = self.checkout_down.clone();
            move |order: u32| {
                let down = down.load(Relaxed);
                async move {
                    tokio::time::sleep(CHECKOUT_LATENCY).await;
                    if down {
                        Err(std::io::Error::other("payment provider unreachable"))
                    } else {
                        Ok(order)
                    }
                }
            }
        }));
        let search = self.search.layer(service_fn(|query: u32| async move {
            let latency = if query.is_multiple_of(5) { 50 } else { 2 };
            tokio::time::sleep(Duration::from_millis(latency)).await;
            Ok::<_, std::io::Error>(vec![format!("result for {query}")])
        }));
        let tenants = self.tenants.layer(service_fn(|tenant: u32| async move {
            if tenant == BROKEN_TENANT {
                Err(std::io::Error::other("tenant backend down"))
            } else {
                Ok(tenant)
            }
        }));
        let mut every = tokio::time::interval(Duration::from_millis(20));
        let mut calls = tokio::task::JoinSet::new();
        // Searches and tenant calls: awaited only so the load ends with them.
        let mut others = tokio::task::JoinSet::new();
        for tick in 0..ticks {
            every.tick().await;
            self.checkout_down
                .store((ticks / 3..2 * ticks / 3).contains(&tick), Relaxed);
            for n in 0..4 {
                calls.spawn(checkout.clone().oneshot(tick * 4 + n));
                let search = search.clone().oneshot(tick * 4 + n);
                others.spawn(async move { search.await.map(drop) });
            }
            for n in 0..2 {
                let tenant = tenants.clone().oneshot((tick * 2 + n) % 10);
                others.spawn(async move { tenant.await.map(drop) });
            }
            while let Some(result) = calls.try_join_next() {
                self.tally(result.expect("a checkout call panicked"));
            }
        }
        while let Some(result) = calls.join_next().await {
            self.tally(result.expect("a checkout call panicked"));
        }
        while let Some(result) = others.join_next().await {
            let _failed_or_refused = result.expect("a call panicked");
        }
    }

    fn tally(&self, result: Result<u32, seawall::Error<std::io::Error>>) {
        let seen = &self.seen;
        let count = match result {
            Ok(_) => &seen.success,
            Err(error) if error.is_circuit_open() => &seen.short_circuited,
            Err(error) if error.is_timeout() => &seen.timeout,
            Err(error) if error.is_bulkhead_full() => &seen.rejected,
            Err(_) => &seen.failure,
        };
        count.fetch_add(1, Relaxed);
    }
}
