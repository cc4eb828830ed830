//! Healthy, degraded or down: what a catalogue's parts say together.

use std::fmt;

use super::Report;

/// How a process's resilience parts stand, for a health or readiness check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Status {
    /// Every breaker closed, no bulkhead or pool full.
    Healthy,
    /// Some breakers refuse calls (open, forced open, or probing), or a
    /// bulkhead or pool is full: the process serves, less well.
    Degraded,
    /// Every breaker refuses calls, or a pool has no thread left to run a
    /// call: nothing that depends on them can be served.
    Down,
}

impl Status {
    /// `"healthy"`, `"degraded"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`Status`] and the reasons for it, one per part that is not well, from
/// [`Catalogue::health`](super::Catalogue::health).
///
/// ```
/// use seawall::circuit_breaker::CircuitBreaker;
/// use seawall::observe::{Catalogue, Status};
///
/// let (a, b) = (
///     CircuitBreaker::builder().name("a").build()?,
///     CircuitBreaker::builder().name("b").build()?,
/// );
/// let catalogue = Catalogue::new();
/// catalogue.add(&a).add(&b);
/// assert_eq!(catalogue.health().status, Status::Healthy);
///
/// a.force_open();
/// let health = catalogue.health();
/// assert_eq!(health.status, Status::Degraded);
/// assert_eq!(health.reasons[0].to_string(), "breaker a: forced open");
///
/// b.force_open();
/// assert_eq!(catalogue.health().status, Status::Down);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The verdict.
    pub status: Status,
    /// Why it is not healthy: each part that is not well, and how.
    pub reasons: Vec<Concern>,
}

/// One part that is not well.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Concern {
    /// What kind of part: `"breaker"`, `"registry"`, `"bulkhead"` or `"pool"`.
    pub kind: &'static str,
    /// Its name.
    pub part: String,
    /// What is wrong, in a few words.
    pub detail: String,
}

impl fmt::Display for Concern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.part, self.detail)
    }
}

impl Health {
    /// Judges a report.
    pub fn of(report: &Report) -> Health {
        let mut reasons = Vec::new();
        let mut concern = |kind, part: &str, detail: String| {
            reasons.push(Concern {
                kind,
                part: part.to_owned(),
                detail,
            });
        };
        let (mut breakers, mut refusing) = (0, 0);
        let mut down = false;
        for breaker in &report.breakers {
            breakers += 1;
            refusing += usize::from(breaker.state.refuses_calls());
            if breaker.state.refuses_calls()
                || breaker.state == crate::circuit_breaker::State::HalfOpen
            {
                concern("breaker", &breaker.name, breaker.state.to_string());
            }
        }
        // A registry with keys counts as one breaker, refusing when all its
        // keys refuse.
        for registry in report.registries.iter().filter(|r| r.keys > 0) {
            breakers += 1;
            refusing += usize::from(registry.open_keys == registry.keys);
            if registry.open_keys > 0 {
                concern(
                    "registry",
                    &registry.name,
                    format!("{} of {} keys open", registry.open_keys, registry.keys),
                );
            }
        }
        for bulkhead in &report.bulkheads {
            let figures = &bulkhead.figures;
            if figures.in_flight >= figures.max_concurrent {
                concern(
                    "bulkhead",
                    &bulkhead.name,
                    format!(
                        "full ({} in flight, {} queued)",
                        figures.in_flight, figures.queued
                    ),
                );
            }
        }
        for pool in &report.pools {
            let figures = &pool.figures;
            if figures.threads_alive == 0 || figures.abandoned_running >= figures.threads {
                down = true;
                concern(
                    "pool",
                    &pool.name,
                    format!(
                        "no thread free for good ({} alive, {} held by abandoned calls)",
                        figures.threads_alive, figures.abandoned_running
                    ),
                );
            } else if figures.busy >= figures.threads {
                concern(
                    "pool",
                    &pool.name,
                    format!("every thread busy ({} queued)", figures.queued),
                );
            }
        }
        let status = if down || (breakers > 0 && refusing == breakers) {
            Status::Down
        } else if reasons.is_empty() {
            Status::Healthy
        } else {
            Status::Degraded
        };
        Health { status, reasons }
    }

    /// Whether the status is [`Healthy`](Status::Healthy).
    pub fn is_healthy(&self) -> bool {
        self.status == Status::Healthy
    }

    /// The health as JSON:
    /// `{"status":"degraded","reasons":[{"kind":"breaker","part":"a","detail":"open"}]}`.
    #[cfg(feature = "json")]
    pub fn to_json(&self) -> String {
        let reasons: Vec<_> = self
            .reasons
            .iter()
            .map(|concern| {
                serde_json::json!({
                    "kind": concern.kind,
                    "part": concern.part,
                    "detail": concern.detail,
                })
            })
            .collect();
        serde_json::json!({ "status": self.status.as_str(), "reasons": reasons }).to_string()
    }
}

/// An axum handler answering with the catalogue's [`Health`] as JSON:
/// `200 OK` when healthy or degraded (the process still serves), `503
/// Service Unavailable` when down, for a load balancer's or orchestrator's
/// readiness check.
///
/// ```
/// use axum::{routing::get, Router};
/// use seawall::observe::{health_handler, Catalogue};
///
/// let app: Router = Router::new().route("/health", get(health_handler(Catalogue::new())));
/// # drop(app);
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub fn health_handler(
    catalogue: super::Catalogue,
) -> impl Fn() -> std::future::Ready<axum_core::response::Response> + Clone + Send + Sync + 'static
{
    use http::{header, HeaderValue, StatusCode};
    move || {
        let health = catalogue.health();
        let mut response = axum_core::response::Response::new(health.to_json().into());
        if health.status == Status::Down {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        std::future::ready(response)
    }
}
