//! Resilience middleware for [tower]: circuit breakers with rolling
//! statistics, bulkheads, timeouts and fallbacks, the defences Hystrix gave
//! the JVM, as layers for any `tower::Service`.
//!
//! Put seawall between a caller and what it calls (an HTTP or gRPC client,
//! an axum or tonic stack, a blocking client, a message broker) and a
//! dependency that is slow, overloaded or down fails fast, or is answered
//! for, instead of taking its callers down with it.
//!
//! ```toml
//! [dependencies]
//! seawall = { version = "0.2", features = ["registry", "cache"] }
//! ```
//!
//! No feature is on by default; [the table below](#feature-flags) says
//! what each adds.
//!
//! # Example
//!
//! A client with an `async fn` (an SDK, a database pool) becomes a tower
//! service with `tower::service_fn`, and one [`Policy`](policy::Policy)
//! guards it with every stage:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use seawall::bulkhead::Bulkhead;
//! use seawall::circuit_breaker::CircuitBreaker;
//! use seawall::fallback::Fallback;
//! use seawall::policy::Policy;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! struct Inventory;
//!
//! impl Inventory {
//!     async fn stock(&self, sku: u32) -> Result<u32, std::io::Error> {
//!         Ok(sku * 2)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inventory = Arc::new(Inventory);
//! // Each call clones the `Arc` into its future, so the future owns what it
//! // uses and the service stays `Clone`.
//! let client = service_fn(move |sku: u32| {
//!     let inventory = Arc::clone(&inventory);
//!     async move { inventory.stock(sku).await }
//! });
//!
//! let policy = Policy::builder()
//!     .name("inventory")
//!     .circuit_breaker(CircuitBreaker::builder()) // Hystrix's defaults
//!     .bulkhead(Bulkhead::builder().max_concurrent(32))
//!     .timeout(Duration::from_millis(250))
//!     .fallback(Fallback::builder().value(0u32)) // "none in stock" beats an error page
//!     .build()?;
//! let stock = ServiceBuilder::new().layer(policy.clone()).service(client);
//!
//! // The error is `seawall::Error<io::Error>`; `?` takes it into `Box<dyn Error>`.
//! assert_eq!(stock.oneshot(21).await?, 42);
//! assert_eq!(policy.breaker().counts().success, 1);
//! # Ok(())
//! # }
//! ```
//!
//! The same stages are layers of their own, for stacks you compose
//! yourself. [`ResilienceExt`] adds them to tower's `ServiceBuilder`, beside
//! tower's own methods, and however many are stacked the error stays one
//! level deep:
//!
//! ```
//! use std::time::Duration;
//! use seawall::bulkhead::Bulkhead;
//! use seawall::circuit_breaker::CircuitBreaker;
//! use seawall::{Error, ResilienceExt};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder().name("search").build()?;
//! let bulkhead = Bulkhead::builder().name("search").max_concurrent(32).build()?;
//! let search = ServiceBuilder::new()
//!     .circuit_breaker(&breaker) // clones of `search` share the breaker...
//!     .bulkhead(&bulkhead) // ...and the bulkhead
//!     .call_timeout(Duration::from_secs(1))
//!     .service(service_fn(|query: String| async move {
//!         if query.is_empty() {
//!             tokio::time::sleep(Duration::from_secs(60)).await; // hangs
//!         }
//!         Ok::<_, std::io::Error>(query.len())
//!     }));
//!
//! // Three layers, one error: `Error<io::Error>`.
//! let hung: Result<usize, Error<std::io::Error>> = search.clone().oneshot(String::new()).await;
//! assert!(hung.unwrap_err().is_timeout());
//! // The timeout sits under the breaker, so the breaker saw a timeout.
//! assert_eq!(breaker.counts().timeout, 1);
//! assert_eq!(search.oneshot("rust".to_owned()).await?, 4);
//! # Ok(())
//! # }
//! ```
//!
//! # Concepts
//!
//! ## The layers
//!
//! | layer | module | what it does |
//! |---|---|---|
//! | circuit breaker | [`circuit_breaker`] | watches outcomes over a rolling [window] (time-bucketed or the last N calls) and, when the dependency looks unhealthy, refuses calls at once for a while, then lets a few probes through; one breaker, or one per key with a [`Registry`](circuit_breaker::Registry) |
//! | bulkhead | [`bulkhead`] | caps the calls in flight to one dependency; beyond it, refuses, or lets calls wait in line for a bounded time; the cap can [adapt](bulkhead::AdaptiveLimit) to the dependency's latency and drops |
//! | timeout | [`timeout`] | fails a call that has not answered in time, with a typed error; honours a request's own shorter deadline |
//! | fallback | [`fallback`] | answers in place of a failed or refused call: a value, a function, another service, or the last good answer from a [cache](fallback::FallbackCache) |
//! | retry | [`retry`] | sends a failed or timed-out call again, with backoff, while the breaker is closed, the deadline can fit another attempt and a [budget](retry::RetryBudget) pays for it |
//! | hedge | [`hedge`] | sends a second attempt of a call slower than most (a fixed delay, or a measured percentile) and takes the first answer, within a budget |
//! | policy | [`policy`] | fallback, retry, breaker, bulkhead and timeout in one layer, in that order, with one future and one set of statistics |
//! | blocking pool | [`blocking`] | runs a synchronous client on dedicated threads of its own and makes it a `Service` (Hystrix's thread-pool isolation) |
//!
//! Each handle ([`CircuitBreaker`](circuit_breaker::CircuitBreaker),
//! [`Bulkhead`](bulkhead::Bulkhead), [`BlockingPool`](blocking::BlockingPool),
//! [`Policy`](policy::Policy)) is cheap to clone and shared by every
//! service made from it, and by every clone of those: axum clones a
//! service per request, and the clones must count against the same limits.
//! Builders check their settings and return a [`ConfigError`] naming the
//! field and the value; nothing panics on a bad setting.
//!
//! ## One error, which never nests
//!
//! Every seawall service returns [`Error<E>`](Error), where `E` is the
//! error of the service at the bottom of the stack:
//! [`Inner`](Error::Inner) when that service failed, or why seawall refused
//! or stopped the call ([`CircuitOpen`](Error::CircuitOpen),
//! [`BulkheadFull`](Error::BulkheadFull), [`Timeout`](Error::Timeout)).
//! Stack seawall layers in any order and the error stays `Error<E>`: a
//! layer over another seawall layer passes its error on rather than
//! wrapping it again, so a caller matches one enum, without downcasting.
//!
//! - The bottom service's error must be a [`Leaf`]. The usual ones are:
//!   `io::Error`, `BoxError`, `String`, `Infallible`, tower's `Elapsed` and
//!   `Overloaded`, and with their features `tonic::Status`,
//!   `reqwest::Error`, `redis::RedisError`, `anyhow::Error`. For your own
//!   error type, one line: [`leaf_error!`]. [`IntoError`] is what the layers
//!   require of the error below them; implement `Leaf`, never `IntoError`.
//! - `Error<E>` implements `std::error::Error + Send + Sync + 'static`
//!   (when `E` does), so `?` takes it into `BoxError`, `anyhow::Error` or an
//!   error enum of your own.
//! - It is transparent: it displays as the inner error, and its `source()`
//!   is the inner error's own source, so a report walks the inner error's
//!   whole chain.
//!
//! ```
//! use seawall::circuit_breaker::CircuitBreaker;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("inventory lookup failed")]
//! struct LookupFailed(#[source] std::io::Error);
//!
//! seawall::leaf_error!(LookupFailed);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seawall::ConfigError> {
//! let breaker = CircuitBreaker::builder().build()?;
//! let lookup = breaker.layer().layer(service_fn(|_sku: u32| async {
//!     let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//!     Err::<u32, _>(LookupFailed(refused))
//! }));
//!
//! let report = async { anyhow::Ok(lookup.oneshot(7).await?) }.await.unwrap_err();
//! assert_eq!(format!("{report:#}"), "inventory lookup failed: connection refused");
//! # Ok(())
//! # }
//! ```
//!
//! tower's own middleware below a seawall layer is understood too: tower's
//! `Elapsed` (from its `Timeout`) counts as a timeout and its `Overloaded`
//! (from `LoadShed`) as a refusal, also when they arrive boxed in a
//! `BoxError`, and so does a seawall error that a layer in between boxed.
//! [`Error::is_timeout`], [`Error::is_bulkhead_full`] and
//! [`Error::is_circuit_open`] say so, the [classifiers](classify) count
//! them so, and the axum and tonic integrations answer them as they answer
//! seawall's own (a timeout with 504 or `DEADLINE_EXCEEDED`, an overload
//! with 503 or `RESOURCE_EXHAUSTED`).
//!
//! ## Classification
//!
//! A breaker should open when the dependency is unhealthy, not when callers
//! send bad requests. A [classifier](classify) looks at each call's whole
//! result, `Result<Res, Error<E>>`, and gives a [`Verdict`](classify::Verdict):
//! success, failure, timeout, rejected, or ignore (neither: not in the
//! error percentage, and no fallback for it). The breaker and the fallback
//! both follow it.
//!
//! - [`classify::ByKind`], the default: every `Ok` a success; timeouts,
//!   refusals and other errors by their kind; a call cut short by the
//!   caller's own deadline ignored.
//! - Any closure `Fn(&Result<Res, Error<E>>) -> Verdict`: ignore a
//!   `NotFound`, call a `200` with an error body a failure. Write the
//!   argument's type out (`|result: &Result<Page, Error<io::Error>>|`), or
//!   the closure is not inferred to take a reference of any lifetime.
//! - [`classify::Http`] (feature `tower-http`) takes tower-http's response
//!   classifiers as they are: `ServerErrorsAsFailures`,
//!   `StatusInRangeAsFailures`, `GrpcErrorsAsFailures`, or your own
//!   `ClassifyResponse`. The axum and tonic integrations' `server_errors()`
//!   are such classifiers, ready-made.
//!
//! ## Seeing it work
//!
//! Every breaker keeps, beside its rolling window, totals that never reset
//! ([`lifetime`](circuit_breaker::CircuitBreaker::lifetime), and a
//! [`history`](circuit_breaker::CircuitBreaker::history) of its changes of
//! state and time in each); bulkheads and pools keep theirs in their
//! figures. [`observe`] turns them into what operators run:
//!
//! - a [`Catalogue`](observe::Catalogue) of the parts a process exports,
//!   with one [`Report`](observe::Report) of all their figures, read
//!   without blocking any call;
//! - [`Health`](observe::Health): healthy, degraded or down, with reasons
//!   (and an axum handler, feature `axum`);
//! - Prometheus and any other exporter through the `metrics` facade
//!   (feature `metrics`; the names are listed in one table), and the
//!   Hystrix dashboard's stream (feature `hystrix-stream`);
//! - a [`Listener`](observe::Listener) told of every call, to log, sample
//!   or export as you like;
//! - `tracing`: changes of state (`WARN` when opening), refusals as bursts
//!   (one line a second at most, with the count), fallbacks, and a `TRACE`
//!   span per Policy call (`seawall.call`, with the policy and the outcome;
//!   while a subscriber takes it, the call's future keeps it in a box: one
//!   allocation a call, which spares every other call 32 bytes of future).
//!
//! ## Deadlines that travel
//!
//! A request's time budget is the one fact every hop should share. gRPC
//! defines `grpc-timeout` ("Timeout" in gRPC over HTTP/2): the time the
//! caller will wait, relative, at most 8 digits and a unit, which each
//! server reads as its own deadline and each client sends on, shortened by
//! the time spent. seawall does the same across HTTP and messages
//! ([`budget`]):
//!
//! - at the edge, a [`BudgetLayer`](budget::BudgetLayer) reads
//!   `grpc-timeout`, or `seawall-budget-ms` (whole milliseconds, relative
//!   like `grpc-timeout`) on plain HTTP, with a default for requests that
//!   carry none and a maximum; a spent budget is answered at once (`504`,
//!   `DEADLINE_EXCEEDED`) without calling the handler;
//! - the handler runs with the budget current
//!   ([`Budget::current`](budget::Budget::current)): every Policy and
//!   timeout caps its calls by what is left (less a
//!   [margin](policy::PolicyBuilder::budget_margin), zero by default) and
//!   makes no call once it is spent;
//! - [`PropagateBudgetLayer`](budget::PropagateBudgetLayer) writes what is
//!   left into outgoing requests (less a margin the caller keeps to
//!   answer with), and every messaging style stamps it on the messages it
//!   sends, as a time (`Seawall-Deadline`, Unix milliseconds), since
//!   the time a message waits in a queue counts; a
//!   [`Consumer`](messaging::Consumer) drops what expired there;
//! - a call that ends because the caller's budget ran out is counted as
//!   [`caller_deadline`](window::Counts::caller_deadline), never as a
//!   failure or a timeout of the dependency, whichever timer fired first:
//!   callers with short deadlines cannot open a healthy server's breaker.
//!
//! `examples/deadlines.rs` runs the chain: an axum edge, a tonic service, a
//! worker behind a broker.
//!
//! ## Faults on demand
//!
//! Nobody trusts a breaker they have never seen trip. A
//! [`FaultLayer`](fault::FaultLayer) under a Policy injects errors (or
//! responses of your own), latency, aborted and hung calls with the
//! probabilities of its [`Faults`](fault::Faults) handle, switched at
//! runtime and seeded so that a scenario replays exactly
//! (`examples/fault_injection.rs`).
//!
//! # When to use what
//!
//! ## Limiting concurrency
//!
//! | you have | use | because |
//! |---|---|---|
//! | an async client, and want a cap per dependency that refuses when full (or lets calls wait, bounded in time and number) | [`Bulkhead`](bulkhead::Bulkhead) | a refusal is fast and typed ([`Error::BulkheadFull`]), the breaker above counts it, [figures](bulkhead::Bulkhead::figures) say how full it is, and [the limit changes at runtime](bulkhead::Bulkhead::set_max_concurrent) |
//! | a synchronous (blocking) client | [`BlockingPool`](blocking::BlockingPool) with a [`BlockingService`](blocking::BlockingService) | its calls run on threads of its own, never on tokio's workers; sized per dependency, it refuses when its threads and queue are full, and counts calls its callers gave up on (Hystrix's thread-pool isolation) |
//! | an async service that should only wait for room, never refuse | tower's `ConcurrencyLimit` | backpressure in `poll_ready` with no bound on the wait, no refusal and no figures; a [`Backpressure`](bulkhead::Backpressure) bulkhead waits the same way, with bounds |
//! | an occasional blocking task (a file read, a hash) | `tokio::task::spawn_blocking` | one large pool shared by the whole process with an unbounded queue: fine for work of your own, not for a dependency that can hang, which would take every thread of it |
//!
//! ## A Policy or separate layers
//!
//! A [`Policy`](policy::Policy) runs fallback, breaker, bulkhead and
//! timeout in Hystrix's order in **one future**, and counts **everything**
//! in one window: successes, failures, timeouts, bulkhead refusals,
//! short-circuits, fallback outcomes, cache hits and misses. One classifier
//! judges for the breaker and the fallback alike. It takes each stage built
//! (a shared [`CircuitBreaker`](circuit_breaker::CircuitBreaker), a
//! [`Registry`](circuit_breaker::Registry) keyed per tenant or host, a
//! [`Bulkhead`](bulkhead::Bulkhead), a [`Fallback`](fallback::Fallback)) or
//! as its builder, and a bulkhead that could only work in another order
//! (one that waits in `poll_ready`) does not compile in it. Use it by
//! default.
//!
//! Use separate layers when you need another order (a retry between two
//! stages, a timeout that also bounds the wait for a bulkhead), a
//! [`Backpressure`](bulkhead::Backpressure) bulkhead, or only one stage.
//! They follow the same rules (the Policy is built from the same pieces):
//! give a [`FallbackLayer`](fallback::FallbackLayer) the same classifier as
//! the breaker below it, and [`stats`](fallback::FallbackLayer::stats) to
//! count its outcomes in the breaker's window.
//!
//! # Ordering, and why
//!
//! ```text
//! request ─► fallback ─► circuit breaker ─► bulkhead ─► timeout ─► service
//! ```
//!
//! This is Hystrix's order, the [`Policy`](policy::Policy)'s, and the one
//! to follow with separate layers (outermost first in a `ServiceBuilder`):
//!
//! - **Fallback outermost**, so that it answers for everything below: a
//!   failure, a timeout, and also a refusal by the breaker or the bulkhead.
//!   Under the breaker it could not answer for an open circuit.
//! - **Circuit breaker above the bulkhead**, so that a call the breaker
//!   refuses never takes a permit: while the dependency is down, refused
//!   calls cost nothing and leave room for the probes. A bulkhead refusal
//!   reaches the breaker as an error and counts against the dependency, as
//!   Hystrix counts its rejections: a dependency so slow that its
//!   bulkhead stays full is unhealthy.
//! - **Bulkhead above the timeout**, so that the timeout measures the call
//!   itself, not the wait for room (a queueing bulkhead bounds that wait
//!   with its own `max_wait`), and a hung call holds its permit only until
//!   its timeout.
//! - **Timeout under the breaker**, so that the breaker sees the timeout as
//!   an outcome. A timeout above the breaker would drop the breaker's
//!   future instead: a cancelled call, which it does not count by
//!   [default](circuit_breaker::DroppedCall), and a hanging dependency
//!   would never trip it.
//!
//! **Retries** ([`retry`]) go between the fallback and the breaker, and a
//! Policy given one ([`PolicyBuilder::retry`](policy::PolicyBuilder::retry))
//! runs them there:
//!
//! ```text
//! request ─► fallback ─► retry ─► circuit breaker ─► bulkhead ─► timeout ─► service
//!                        └────── total timeout (the request's budget) ───────┘
//! ```
//!
//! - Under the fallback, so that it answers once the retries have given
//!   up, not after the first failure.
//! - Above the breaker, so that each attempt is a call the breaker counts: a
//!   retry storm against a failing dependency trips it sooner rather than
//!   hiding behind it, and an open breaker stops the retries at once.
//! - Above the bulkhead, so that each attempt takes a slot and a retry
//!   waiting out its backoff holds none.
//! - Above the per-attempt timeout, so that a slow attempt is cut and
//!   retried; the request's [budget] (or the rule's total timeout)
//!   bounds all attempts together, and no retry starts that it could not
//!   fit.
//!
//! A [`RetryBudget`](retry::RetryBudget) bounds what retries add to the
//! dependency's load (10% of the requests, say), however many callers fail
//! at once. [Hedged requests](hedge) go above a Policy: each attempt is
//! then admitted by its breaker and bulkhead.
//!
//! **Rate limits** go outermost: tower's `RateLimit` (behind a `Buffer`
//! where the service must be `Clone`, as in axum). A
//! [`Registry`](circuit_breaker::Registry) of breakers keyed per tenant is
//! not a rate limit: it keeps one tenant's failing calls from opening the
//! circuit for the others, and lets a healthy tenant call as often as it
//! likes. For a quota per tenant, use a keyed rate limiter.
//!
//! # Defaults, beside Hystrix's and resilience4j's
//!
//! seawall's defaults follow Hystrix's where it has one. Each is documented
//! on the builder method that changes it.
//!
//! | setting | seawall | Hystrix | resilience4j |
//! |---|---|---|---|
//! | rolling window | 10 s in 10 buckets ([`window`](circuit_breaker::CircuitBreakerBuilder::window); [`Window::count`](window::Window::count) for the last N calls) | `metrics.rollingStats.timeInMilliseconds` 10000, `metrics.rollingStats.numBuckets` 10 | `slidingWindowType` COUNT_BASED, `slidingWindowSize` 100 |
//! | calls in the window before it may trip | 20 ([`minimum_calls`](circuit_breaker::CircuitBreakerBuilder::minimum_calls)) | `circuitBreaker.requestVolumeThreshold` 20 | `minimumNumberOfCalls` 100 |
//! | error threshold | 50% ([`error_threshold`](circuit_breaker::CircuitBreakerBuilder::error_threshold)) | `circuitBreaker.errorThresholdPercentage` 50 | `failureRateThreshold` 50 |
//! | open duration | 5 s, fixed ([`open_duration`](circuit_breaker::CircuitBreakerBuilder::open_duration); [`OpenDuration::exponential`](circuit_breaker::OpenDuration::exponential) for backoff) | `circuitBreaker.sleepWindowInMilliseconds` 5000 | `waitDurationInOpenState` 60 s |
//! | half-open probes | 1 ([`half_open_probes`](circuit_breaker::CircuitBreakerBuilder::half_open_probes)) | 1 (a single test request, fixed) | `permittedNumberOfCallsInHalfOpenState` 10 |
//! | slow-call rule | off ([`slow_calls`](circuit_breaker::CircuitBreakerBuilder::slow_calls)) | none | `slowCallRateThreshold` 100, `slowCallDurationThreshold` 60 s |
//! | failures in a row | off ([`consecutive_failures`](circuit_breaker::CircuitBreakerBuilder::consecutive_failures)) | none | none |
//! | a cancelled call counts as | nothing ([`dropped_calls`](circuit_breaker::CircuitBreakerBuilder::dropped_calls)) | nothing | – |
//! | latency percentiles | off ([`track_latency`](circuit_breaker::CircuitBreakerBuilder::track_latency)) | `metrics.rollingPercentile.enabled` true | – |
//! | forced states | [`force_open`](circuit_breaker::CircuitBreaker::force_open), [`force_closed`](circuit_breaker::CircuitBreaker::force_closed) | `circuitBreaker.forceOpen`, `circuitBreaker.forceClosed` (false) | `transitionToForcedOpenState`, `transitionToDisabledState` |
//! | timeout | none until given ([`TimeoutLayer::new`](timeout::TimeoutLayer::new), [`PolicyBuilder::timeout`](policy::PolicyBuilder::timeout)) | `execution.isolation.thread.timeoutInMilliseconds` 1000 | TimeLimiter `timeoutDuration` 1 s |
//! | bulkhead limit | 10 ([`max_concurrent`](bulkhead::BulkheadBuilder::max_concurrent)) | `execution.isolation.semaphore.maxConcurrentRequests` 10 | `maxConcurrentCalls` 25 |
//! | bulkhead wait when full | none: refused ([`Reject`](bulkhead::Reject); [`queue`](bulkhead::BulkheadBuilder::queue) to wait) | none | `maxWaitDuration` 0 |
//! | blocking pool threads | 10 ([`threads`](blocking::BlockingPoolBuilder::threads)) | thread pool `coreSize` 10 | `maxThreadPoolSize`: the number of CPUs |
//! | blocking pool queue | none ([`queue`](blocking::BlockingPoolBuilder::queue)) | thread pool `maxQueueSize` -1 (none) | `queueCapacity` 100 |
//! | fallbacks running at once | 10 ([`max_concurrent`](fallback::FallbackBuilder::max_concurrent)) | `fallback.isolation.semaphore.maxConcurrentRequests` 10 | – |
//! | fallback time limit | none ([`timeout`](fallback::FallbackBuilder::timeout)) | – | – |
//!
//! A timeout has no default because no duration fits every dependency: a
//! guessed one either cuts healthy slow calls or waits far too long.
//!
//! # Tuning a breaker
//!
//! A breaker's settings fit a rate of calls and a kind of trouble; the
//! defaults (Hystrix's) fit a service of a few calls a second and more.
//! Three tools:
//!
//! - [`CircuitBreakerBuilder::check`](circuit_breaker::CircuitBreakerBuilder::check)
//!   names what cannot work at the rate you expect: a minimum of calls the
//!   window never holds (Hystrix's 20 in 10 s, below 2 calls a second: it
//!   never trips), so few calls judged that one moves the error share by
//!   more than 10 points, a count window that takes minutes to fill.
//! - [`Preset`](circuit_breaker::Preset)s for low-rate RPC, high-rate APIs
//!   and consumers, each with the lab's numbers on its traffic beside
//!   Hystrix's and resilience4j's defaults.
//! - The lab, `cargo run --example tune_thresholds`: it replays failure
//!   profiles (an outage, a brownout, a slow spell, a low-rate service, a
//!   flaky background; or yours, from a CSV of per-second rate, error share
//!   and latency) through dozens of settings in virtual time, and ranks
//!   them by seconds to detect the trouble plus seconds to recover after
//!   it, plus one second per call refused while the dependency was healthy
//!   (`--csv`, `--svg` write the table and a chart).
//!
//! Reading it: *detect* is how long callers wait on a broken dependency
//! (shorter with a small window, a low minimum, consecutive failures or a
//! slow-call rule); *recover* is how long they are refused after it healed
//! (shorter with a short, fixed open period); *false* counts refusals of
//! a healthy dependency (more with a small window, a low threshold, or
//! consecutive failures at high rates). Every gain on one costs on another:
//! pick the profile closest to your service, then the best setting that
//! has no false trips on your background errors.
//!
//! # What the runtime must provide
//!
//! - **tokio, with its timer.** Queueing bulkheads, fallback time limits
//!   and the messaging services sleep on tokio's timer, and so do
//!   timeouts whenever seawall's own alarms cannot keep their deadline
//!   (with the tokio clock, or while the coarse clock's thread is waking;
//!   see [`timeout`]): run them in a tokio runtime built with time enabled
//!   (`#[tokio::main]` does; `Builder::enable_time` or `enable_all` for a
//!   runtime built by hand).
//!   A breaker, a bulkhead that refuses and a blocking pool need no timer.
//! - **Paused time in tests.** Under `tokio::time::pause()` or
//!   `#[tokio::test(start_paused = true)]` (tokio's `test-util` feature)
//!   every duration seawall measures follows `tokio::time::advance`, so
//!   tests of open durations and windows are exact and instant. A
//!   [`Clock::default`] made inside a paused runtime follows it by itself;
//!   give parts built outside it [`Clock::tokio`] through their builders'
//!   `clock` method.
//! - **seawall's clock thread.** Reading the precise time on every call
//!   would cost more than everything else a closed breaker does, so by
//!   default ([`Clock::coarse`]) seawall reads a coarse time that one
//!   process-wide thread, `seawall-clock`, keeps up to date. It starts with
//!   the first read, parks after about 100 ms without reads (an idle
//!   process has no wakeups), and wakes with the next read. A read is never
//!   more than about a millisecond stale. If the thread cannot start (a
//!   process at its limit of threads), reads take the precise time and a
//!   start is retried each second; if the time it keeps stops moving (in a
//!   child after `fork`), the windows notice within a few calls and have
//!   the thread replaced. Latencies, for slow-call rules and percentiles,
//!   are always measured with a precise clock. [`Clock::tokio`] reads
//!   tokio's time instead, for paused tests.
//! - **Blocking pool threads.** A [`BlockingPool`](blocking::BlockingPool)
//!   starts its threads when it is built, and they exit once the last
//!   handle to the pool is dropped and its queue has drained.
//!
//! # Feature flags
//!
//! None is on by default.
//!
//! | feature | adds |
//! |---|---|
//! | `registry` | [`circuit_breaker::Registry`]: one breaker per key (per tenant, per host), bounded in keys and memory |
//! | `cache` | [`fallback::FallbackCache`]: the last good answer per key, for fallbacks, on `moka` |
//! | `tower-retry` | [`retry::RetryBudget`] as tower's `retry::budget::Budget`, for tower's own `Retry` |
//! | `tower-http` | [`classify::Http`]: tower-http's response classifiers as seawall classifiers |
//! | `axum` | [`integration::axum`]: refusals as HTTP responses (503 + `Retry-After`, 429, 504), a layer for `Router::layer`, `IntoResponse` for `?` in handlers, a 5xx classifier; `observe::health_handler` (implies `tower-http` and `json`) |
//! | `tonic` | [`integration::tonic`]: refusals as gRPC statuses, a layer for clients and servers, `grpc-timeout` as a per-request deadline, a status classifier; `Leaf` for `tonic::Status` (implies `tower-http`) |
//! | `reqwest` | `Leaf` for `reqwest::Error`: a reqwest client under seawall's layers, its timeouts seen as timeouts and its causes reported |
//! | `redis` | `Leaf` for `redis::RedisError`, its timeouts seen as timeouts |
//! | `anyhow` | `Leaf` for `anyhow::Error`, for services that fail with one (`?` from seawall's `Error` into `anyhow` needs no feature) |
//! | `json` | `observe::Health::to_json`, on serde_json |
//! | `metrics` | `observe::metrics`: every figure through the `metrics` facade, for any exporter (Prometheus among them), and a latency-histogram listener |
//! | `hystrix-stream` | `observe::hystrix`: the Hystrix dashboard's event stream as an axum handler (implies `axum`) |
//! | `messaging` | [`messaging`]: notification, request/async response, publish/subscribe and scatter-gather as services over a small `Transport` trait, with an in-memory broker for tests |
//! | `nats` | `messaging::nats`: the NATS transport, with JetStream (implies `messaging`) |
//! | `amqp` | `messaging::amqp`: the AMQP 0-9-1 (RabbitMQ) transport (implies `messaging`) |
//! | `durable-outbox` | `messaging::Outbox::open`: an outbox on disk, in a redb database, that keeps diverted notifications through a crash (implies `messaging`) |
//!
//! (`tonic-examples` builds the gRPC code of the crate's own tests and
//! examples; it is not for use by other crates.)
//!
//! # Stacks and their examples
//!
//! The repository's `examples/` directory has a running program for each
//! common stack (`cargo run --example NAME --features ...`; its README
//! lists every command):
//!
//! | stack | example | features |
//! |---|---|---|
//! | a full Policy against a dependency that is slow, failing, down and recovering, live (`cargo run -p seawall-demo`) | `demo` | |
//! | a blocking TCP client on a `BlockingPool`, under breaker, bulkhead and timeout as separate layers | `sync_client` | |
//! | a Policy over a blocking client on a `BlockingPool` | `policy_blocking` | |
//! | a Policy over a keyed `Registry`: one breaker per tenant | `policy_per_tenant` | `registry` |
//! | a reqwest client behind a Policy with a cached fallback | `cached_fallback` | `cache`, `reqwest` |
//! | an axum server: per-route policies, per-tenant breakers, status codes | `axum_server` | `axum`, `registry` |
//! | an axum handler calling a flaky upstream, cached fallback, `?` | `axum_client` | `axum`, `cache`, `reqwest` |
//! | a service to watch: Prometheus text, the Hystrix stream and health, under load with failures | `metrics_dashboard` | `metrics`, `hystrix-stream`, `registry` |
//! | a tonic server shedding load and honouring `grpc-timeout` | `tonic_server` | `tonic-examples` |
//! | a generated tonic client behind a Policy | `tonic_client` | `tonic-examples` |
//! | a redis client behind a Policy, falling back to the origin | `redis_cache` | `redis` |
//! | every messaging style over NATS, with an outbox on disk | `messaging_nats` | `nats`, `durable-outbox` |
//! | notification, consumer and request/reply over RabbitMQ | `messaging_amqp` | `amqp` |
//! | a blocking publisher on its own pool, with an outbox | `messaging_sync` | `messaging` |
//! | a retry storm against a failing dependency, with and without a retry budget; hedging a slow tail | `retry_budget` | |
//! | a fixed bulkhead limit against AIMD and Vegas on a dependency whose capacity changes | `adaptive_limit` | |
//! | the threshold-tuning lab: failure profiles replayed through breaker settings, ranked | `tune_thresholds` | |
//!
//! What each part costs per call, beside tower's own middleware and other
//! crates, is in the repository's `BENCHMARKS.md`; the changes from release
//! to release, with migration notes, in its `CHANGELOG.md`.
//!
//! [tower]: https://docs.rs/tower
//! [window]: crate::window
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod alarm;
pub mod blocking;
pub mod budget;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod classify;
mod clock;
mod coop;
mod draw;
pub mod error;
mod ext;
pub mod fallback;
pub mod fault;
pub mod hedge;
pub mod integration;
#[cfg(feature = "messaging")]
pub mod messaging;
pub mod observe;
pub mod policy;
pub mod retry;
mod select;
mod stripe;
mod sync;
pub mod timeout;
pub mod window;

pub use clock::Clock;
pub use error::{ConfigError, Error, IntoError, Invalid, Leaf, Refusal};
pub use ext::ResilienceExt;
pub use select::{Every, Selects};

/// moka refuses (by panicking) time-to-live and time-to-idle settings longer
/// than this; builders refuse them with a `ConfigError` instead.
#[cfg(feature = "cache")]
const MAX_CACHE_DURATION: std::time::Duration =
    std::time::Duration::from_secs(1000 * 365 * 24 * 3600);

/// The boxed error tower, axum and tonic pass around; every seawall
/// [`Error`] converts into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The README's code, compiled and run as doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
