//! The one-stop layer: fallback, circuit breaker, bulkhead and timeout, in
//! Hystrix's order, in one future, with one error and one set of statistics.
//!
//! ```text
//! request ─► fallback ─► circuit breaker ─► bulkhead ─► timeout ─► inner service
//! ```
//!
//! A [`Policy`] is a `Layer` built from optional stage configurations, all
//! checked by [`PolicyBuilder::build`]. Its service runs every stage in a
//! single hand-written future (no future per stage, no boxing, no
//! allocation while the call is healthy) and returns a single-level
//! [`Error<E>`](crate::Error).
//!
//! - **Order.** An open breaker refuses before the bulkhead is asked, so a
//!   refused call never takes a permit or reaches the service. A call the
//!   bulkhead refuses never starts its timeout.
//! - **One window, Hystrix-style.** Every outcome goes into the breaker's
//!   rolling window: successes and failures (as classified), timeouts and
//!   bulkhead refusals (counted as failures by default; see
//!   [`PolicyBuilder::timeouts_count`], [`PolicyBuilder::rejections_count`]),
//!   short-circuits, and the fallback's outcomes. Without a breaker
//!   configured, the policy keeps its statistics in a breaker that is forced
//!   closed: it records, never trips.
//! - **A name.** The Hystrix command key: the breaker's name in events, in
//!   `tracing` (target `seawall::policy`) and in figures.
//! - **Fallback.** Triggered by the causes it was given, for errors: an
//!   inner error classified as a failure, a timeout, a refusal. An `Ok`
//!   response classified as a failure is counted but passed through; turn it
//!   into an `Err` in the service (`error_for_status()`, say) to fall back
//!   on it.
//!
//! The bulkhead either refuses at once or queues in the response future; its
//! backpressure mode (waiting in `poll_ready`) is for the standalone layer.
//!
//! # Any async client
//!
//! A client that is not a tower `Service` (a struct with an
//! `async fn send(&self, ...)`: a database pool, a cache client, an SDK)
//! becomes one with `tower::service_fn` and an `Arc`: each call clones the
//! `Arc` into its future, so the future owns what it borrows and the service
//! stays `Clone`, as a Policy's bulkhead queue and axum need.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use seawall::policy::Policy;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! struct KvClient { /* a connection pool, say */ }
//!
//! impl KvClient {
//!     async fn get(&self, key: &str) -> Result<Option<String>, std::io::Error> {
//!         Ok(Some(format!("value of {key}")))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kv = Arc::new(KvClient {});
//! let get = service_fn(move |key: String| {
//!     let kv = Arc::clone(&kv);
//!     async move { kv.get(&key).await }
//! });
//! let policy = Policy::builder("kv").timeout(Duration::from_millis(50)).build()?;
//! let kv_get = ServiceBuilder::new().layer(policy).service(get);
//! assert_eq!(kv_get.oneshot("user:1".to_owned()).await?, Some("value of user:1".to_owned()));
//! # Ok(())
//! # }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use seawall::policy::Policy;
//! use seawall::bulkhead::Bulkhead;
//! use seawall::circuit_breaker::CircuitBreaker;
//! use seawall::fallback::Fallback;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Policy::builder("inventory")
//!     .circuit_breaker(CircuitBreaker::builder().minimum_calls(20))
//!     .bulkhead(Bulkhead::builder().max_concurrent(32))
//!     .timeout(Duration::from_millis(250))
//!     .fallback(Fallback::builder().value(0u32))
//!     .build()?;
//! let stock = ServiceBuilder::new().layer(policy.clone()).service(service_fn(|_sku: u32| async {
//!     tokio::time::sleep(Duration::from_secs(5)).await; // stuck
//!     Ok::<u32, std::io::Error>(7)
//! }));
//! assert_eq!(stock.oneshot(42).await?, 0, "timed out after 250 ms: the fallback answered");
//! let counts = policy.breaker().counts();
//! assert_eq!((counts.timeout, counts.fallback_success), (1, 1));
//! # Ok(())
//! # }
//! ```

mod future;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

pub use future::ResponseFuture;

use crate::bulkhead::{Bulkhead, BulkheadBuilder, BulkheadFull, WhenFull};
use crate::circuit_breaker::{self, CircuitBreaker};
use crate::classify::{AnyError, Classify, Verdict};
use crate::clock::Clock;
use crate::error::{ConfigError, Error};
use crate::fallback::{Fallback, FallbackBuilder};
use crate::timeout::future::Deadline;
use future::Held;

/// The one-stop layer. Cheap to clone; every service it makes, and every
/// clone of them, shares its breaker, bulkhead, fallback and statistics.
/// Build one with [`Policy::builder`].
pub struct Policy<Req, Res, E, K = (), C = AnyError> {
    shared: Arc<Shared<Req, Res, E, K, C>>,
}

impl<Req, Res, E, K, C> Clone for Policy<Req, Res, E, K, C> {
    fn clone(&self) -> Self {
        Policy {
            shared: Arc::clone(&self.shared),
        }
    }
}

type DeadlineOf<Req> = Box<dyn Fn(&Req) -> Option<Duration> + Send + Sync>;

pub(crate) struct Shared<Req, Res, E, K, C> {
    name: Arc<str>,
    breaker: CircuitBreaker,
    bulkhead: Option<Bulkhead>,
    timeout: Option<Duration>,
    deadline_of: Option<DeadlineOf<Req>>,
    clock: Clock,
    fallback: Option<Fallback<Req, Res, E, K>>,
    classifier: C,
    timeouts_count: bool,
    rejections_count: bool,
}

impl<Req, Res, E, K, C> Shared<Req, Res, E, K, C> {
    /// The time a request is given: the policy's timeout, or the request's
    /// own deadline if it is shorter (then flagged as the caller's).
    #[inline]
    fn timeout_for(&self, request: &Req) -> Option<(Duration, bool)> {
        let own = self
            .deadline_of
            .as_ref()
            .and_then(|deadline_of| deadline_of(request));
        match (self.timeout, own) {
            (Some(cap), Some(own)) if own < cap => Some((own, true)),
            (Some(cap), _) => Some((cap, false)),
            (None, own) => own.map(|own| (own, true)),
        }
    }

    #[inline]
    fn deadline(&self, timeout: Option<(Duration, bool)>) -> Deadline {
        match timeout {
            Some((timeout, callers)) => Deadline::new(timeout, self.clock, callers),
            None => Deadline::never(),
        }
    }

    fn refuse(&self, waited: Option<Duration>) -> BulkheadFull {
        let bulkhead = self
            .bulkhead
            .as_ref()
            .expect("only a policy with a bulkhead refuses");
        tracing::debug!(target: "seawall::policy", policy = %self.name, ?waited, "bulkhead full");
        bulkhead.refuse(waited)
    }

    fn verdict_on_timeout(&self, elapsed: &crate::timeout::Elapsed) -> Verdict {
        // A caller's own short deadline says nothing about the dependency.
        if self.timeouts_count && !elapsed.is_callers_deadline() {
            Verdict::Timeout
        } else {
            Verdict::Ignore
        }
    }

    fn verdict_on_rejection(&self) -> Verdict {
        if self.rejections_count {
            Verdict::Rejected
        } else {
            Verdict::Ignore
        }
    }

    fn store(&self, key: Option<K>, response: &Res) {
        if let (Some(fallback), Some(key)) = (&self.fallback, key) {
            fallback.store(key, response);
        }
    }
}

impl<Req, Res, E> Policy<Req, Res, E> {
    /// A builder for the policy named `name` (Hystrix's command key), with
    /// no stage configured yet.
    pub fn builder(name: impl Into<Arc<str>>) -> PolicyBuilder<Req, Res, E, (), AnyError> {
        PolicyBuilder {
            name: name.into(),
            breaker: None,
            bulkhead: None,
            timeout: None,
            deadline_of: None,
            fallback: None,
            classifier: AnyError,
            timeouts_count: true,
            rejections_count: true,
            clock: None,
        }
    }
}

impl<Req, Res, E, K, C> Policy<Req, Res, E, K, C> {
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The breaker: its state, its window (the whole policy's statistics),
    /// forcing and resetting.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.shared.breaker
    }

    /// The bulkhead, if the policy has one: its figures and its limit.
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.shared.bulkhead.as_ref()
    }
}

impl<Req, Res, E, K, C> fmt::Debug for Policy<Req, Res, E, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.shared.name)
            .field("breaker", &self.shared.breaker)
            .field("bulkhead", &self.shared.bulkhead)
            .field("timeout", &self.shared.timeout)
            .field("fallback", &self.shared.fallback)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Policy`]; [`build`](Self::build) checks every stage.
#[must_use = "a builder does nothing until `build` is called"]
pub struct PolicyBuilder<Req, Res, E, K, C> {
    name: Arc<str>,
    breaker: Option<circuit_breaker::Builder>,
    bulkhead: Option<BulkheadBuilder>,
    timeout: Option<Duration>,
    deadline_of: Option<DeadlineOf<Req>>,
    fallback: Option<FallbackBuilder<Req, Res, E, K>>,
    classifier: C,
    timeouts_count: bool,
    rejections_count: bool,
    clock: Option<Clock>,
}

impl<Req, Res, E, K, C> PolicyBuilder<Req, Res, E, K, C>
where
    Req: 'static,
    Res: Send + 'static,
    E: 'static,
    K: Send + Sync + 'static,
{
    /// A circuit breaker (named after the policy). Without one, the policy
    /// keeps statistics but never trips.
    pub fn circuit_breaker(mut self, breaker: circuit_breaker::Builder) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// A bulkhead. It must reject or queue (not backpressure).
    pub fn bulkhead(mut self, bulkhead: BulkheadBuilder) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// A deadline on each call to the inner service.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Reads a request's own deadline (a gRPC `grpc-timeout` header, a field
    /// of a message); the policy's [`timeout`](Self::timeout), if any, caps it.
    pub fn per_request_deadline<F>(mut self, deadline_of: F) -> Self
    where
        F: Fn(&Req) -> Option<Duration> + Send + Sync + 'static,
    {
        self.deadline_of = Some(Box::new(deadline_of));
        self
    }

    /// A fallback. Its outcomes are counted in the policy's window.
    pub fn fallback<K2>(
        self,
        fallback: FallbackBuilder<Req, Res, E, K2>,
    ) -> PolicyBuilder<Req, Res, E, K2, C> {
        PolicyBuilder {
            name: self.name,
            breaker: self.breaker,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            deadline_of: self.deadline_of,
            fallback: Some(fallback),
            classifier: self.classifier,
            timeouts_count: self.timeouts_count,
            rejections_count: self.rejections_count,
            clock: self.clock,
        }
    }

    /// Decides which inner results are failures (see
    /// [`classify`](crate::classify)). Default: every `Err`.
    pub fn classify<C2>(self, classifier: C2) -> PolicyBuilder<Req, Res, E, K, C2> {
        PolicyBuilder {
            name: self.name,
            breaker: self.breaker,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            deadline_of: self.deadline_of,
            fallback: self.fallback,
            classifier,
            timeouts_count: self.timeouts_count,
            rejections_count: self.rejections_count,
            clock: self.clock,
        }
    }

    /// Whether timeouts count as failures for the breaker. Default `true`
    /// (Hystrix); with `false` they are not recorded at all.
    pub fn timeouts_count(mut self, count: bool) -> Self {
        self.timeouts_count = count;
        self
    }

    /// Whether bulkhead refusals count as failures for the breaker. Default
    /// `true` (Hystrix); with `false` they are not recorded at all.
    pub fn rejections_count(mut self, count: bool) -> Self {
        self.rejections_count = count;
        self
    }

    /// The clock every stage reads. Default [`Clock::default`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks every stage and builds the policy.
    pub fn build(self) -> Result<Policy<Req, Res, E, K, C>, ConfigError> {
        let clock = self.clock.unwrap_or_default();
        let breaker = match self.breaker {
            Some(builder) => builder.name(self.name.clone()).clock(clock).build()?,
            None => CircuitBreaker::builder()
                .name(self.name.clone())
                .clock(clock)
                .statistics_only()
                .build()?,
        };
        let bulkhead = self
            .bulkhead
            .map(|b| b.name(self.name.clone()).build())
            .transpose()?;
        if let Some(bulkhead) = &bulkhead {
            if let WhenFull::Backpressure { .. } = bulkhead.when_full() {
                return Err(ConfigError::new(
                    "bulkhead",
                    "backpressure",
                    "a policy rejects or queues in its future: use reject_when_full or queue",
                ));
            }
        }
        if let Some(zero) = self.timeout.filter(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "timeout",
                zero,
                "must be longer than zero",
            ));
        }
        let fallback = self
            .fallback
            .map(|f| f.stats(&breaker).build())
            .transpose()?;
        Ok(Policy {
            shared: Arc::new(Shared {
                name: self.name,
                breaker,
                bulkhead,
                timeout: self.timeout,
                deadline_of: self.deadline_of,
                clock,
                fallback,
                classifier: self.classifier,
                timeouts_count: self.timeouts_count,
                rejections_count: self.rejections_count,
            }),
        })
    }
}

impl<S, Req, Res, E, K, C> Layer<S> for Policy<Req, Res, E, K, C> {
    type Service = PolicyService<S, Req, Res, E, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A service run through a [`Policy`]. Made by the policy as a `Layer`.
pub struct PolicyService<S, Req, Res, E, K, C> {
    inner: S,
    shared: Arc<Shared<Req, Res, E, K, C>>,
}

impl<S: Clone, Req, Res, E, K, C> Clone for PolicyService<S, Req, Res, E, K, C> {
    fn clone(&self) -> Self {
        PolicyService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, Req, Res, E, K, C> fmt::Debug for PolicyService<S, Req, Res, E, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyService")
            .field("inner", &self.inner)
            .field("policy", &self.shared.name)
            .finish()
    }
}

impl<S, Req, Res, E, K, C> Service<Req> for PolicyService<S, Req, Res, E, K, C>
where
    S: Service<Req, Response = Res, Error = E> + Clone,
    C: Classify<Res, E>,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = Error<E>;
    type Future = ResponseFuture<S::Future, S, Req, Res, E, K, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let shared = &self.shared;
        let key = shared
            .fallback
            .as_ref()
            .map(|fallback| fallback.key(&request));
        let timeout = shared.timeout_for(&request);
        let ticket = match shared.breaker.admit() {
            Ok(ticket) => ticket,
            Err(open) => {
                tracing::debug!(target: "seawall::policy", policy = %shared.name, %open, "short-circuited");
                let held = Held::new(Arc::clone(shared), None);
                return ResponseFuture::refused(held, Error::CircuitOpen(open), key);
            }
        };
        let mut held = Held::new(Arc::clone(shared), Some(ticket));
        if let Some(bulkhead) = &shared.bulkhead {
            if bulkhead.try_take() {
                held.took_bulkhead_permit();
            } else {
                let full = match bulkhead.when_full() {
                    WhenFull::Queue { max_wait, .. } => match bulkhead.wait(max_wait) {
                        Ok(acquire) => {
                            // The ready service goes with the request; a
                            // fresh clone takes its place.
                            let clone = self.inner.clone();
                            let ready = std::mem::replace(&mut self.inner, clone);
                            return ResponseFuture::queued(
                                held, acquire, ready, request, timeout, key,
                            );
                        }
                        Err(full) => full,
                    },
                    _ => shared.refuse(None),
                };
                let verdict = shared.verdict_on_rejection();
                held.settle_now(verdict);
                return ResponseFuture::refused(held, Error::BulkheadFull(full), key);
            }
        }
        ResponseFuture::calling(
            held,
            self.inner.call(request),
            shared.deadline(timeout),
            key,
        )
    }
}
