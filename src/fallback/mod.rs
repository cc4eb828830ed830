//! What to answer when a call cannot be answered: a fixed value, a function
//! of the request and the error, another service, or the last good answer
//! from a cache.
//!
//! Use a fallback when a degraded answer serves the caller better than an
//! error: a default ("price unavailable"), a value computed from the
//! request, a secondary backend, or the last good answer for the same key
//! (feature `cache`, [`FallbackCache`]). Give it to a
//! [`Policy`](crate::policy::Policy), or stack a [`FallbackLayer`] above
//! the other layers so that it answers for their refusals too.
//!
//! A [`Fallback`] answers for a call whose error counts against the
//! dependency (by the [classifier](crate::classify): a failure, a timeout, a
//! refusal; not an ignored error) and whose cause is among the [`Causes`] it
//! is given. It tries, in order, its cache (feature `cache`: the last good
//! answer kept for the request's key, if not too old; a good answer replaces
//! the kept one once that is older than
//! [`refresh_after`](FallbackCacheBuilder::refresh_after)) and then its
//! source. If nothing answers, or the fallback itself fails, is too slow, or
//! too many fallbacks are running already (Hystrix bounds them too), **the
//! caller gets the original error**, never the fallback's.
//!
//! The cache keeps a response only when the classifier calls it a success:
//! a response it calls a failure (a 5xx, say) is passed on, never kept and
//! never served later. The [`FallbackLayer`] and the
//! [`Policy`](crate::policy::Policy) follow this one rule alike.
//!
//! # Telling a fallback answer from a fresh one
//!
//! The response type does not change, so a fallback fits any stack. To mark
//! answers, give [`FallbackBuilder::mark`] a function that writes the
//! [`Provenance`] into the response: an `http::Response` extension or
//! header, a field of your own type. Counts of fallback outcomes go to the
//! rolling window of the breaker given to [`FallbackLayer::stats`] (the
//! [`Policy`](crate::policy) counts them in its own).
//!
//! # Where fallbacks do not answer
//!
//! A messaging [`Notifier`](crate::messaging::Notifier) and
//! [`Consumer`](crate::messaging::Consumer) withhold fallbacks from the
//! calls they make: a substitute answer would report a message the broker
//! never took as published, or acknowledge a message whose handler failed,
//! so the broker forgets it. They see the error instead, and divert the
//! message to the outbox or requeue it. A consumer whose handler's fallback
//! answer is a real outcome says so with
//! [`Consumer::accept_fallbacks`](crate::messaging::Consumer::accept_fallbacks).
//!
//! # Keys
//!
//! [`Fallback::keyed`] takes a key function, [`Fallback::builder`] gives
//! every request the same key. The key function sees the whole request, so
//! a cached answer is never served to a request that should not see it:
//! key by tenant (and whatever else makes an answer differ), not just by
//! path.
//!
//! The key function runs on every call, the healthy ones too (the request
//! is gone by the time the answer comes back). A key of owned `String`s
//! cloned from the request allocates each call; fields already shared
//! (`Arc<str>`), numbers, or the request's own ids keep the healthy path
//! free of allocations, as seawall's own stages are.
//!
//! ```
//! use std::time::Duration;
//! use seawall::fallback::{Fallback, FallbackLayer};
//! use seawall::timeout::TimeoutLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! struct Quote { tenant: String, symbol: String }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let fallback = Fallback::keyed(|quote: &Quote| (quote.tenant.clone(), quote.symbol.clone()))
//!     .function(|(tenant, symbol): &(String, String), _error: &seawall::Error<std::io::Error>| {
//!         Ok::<_, std::io::Error>(format!("{symbol} for {tenant}: price unavailable"))
//!     })
//!     .build()
//!     .unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(fallback))
//!     .layer(TimeoutLayer::new(Duration::from_millis(100)))
//!     .service(service_fn(|_: Quote| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await; // too slow
//!         Ok::<String, std::io::Error>("fresh".into())
//!     }));
//! let answer = service.oneshot(Quote { tenant: "acme".into(), symbol: "SWL".into() }).await.unwrap();
//! assert_eq!(answer, "SWL for acme: price unavailable");
//! # }
//! ```

pub(crate) mod after;
#[cfg(feature = "cache")]
mod cache;
mod future;
mod layer;
#[cfg(feature = "cache")]
mod recent;
mod source;
pub(crate) mod withhold;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "cache")]
pub use cache::{CacheFigures, FallbackCache, FallbackCacheBuilder};
pub use future::ResponseFuture;
pub use layer::{FallbackLayer, FallbackService};

use crate::bulkhead::Bulkhead;
use crate::circuit_breaker::CircuitBreaker;
use crate::classify::Verdict;
use crate::error::{ConfigError, Error, Leaf, Refusal};
use crate::window::Outcome;
use crate::BoxError;
use after::{After, Running};
use source::{Lookup, Source};

/// Why a call needs a fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// The inner service failed (as its classifier says).
    Failure,
    /// The call timed out.
    Timeout,
    /// A bulkhead or blocking pool had no room.
    BulkheadFull,
    /// The circuit breaker refused the call.
    CircuitOpen,
}

impl Cause {
    /// Every cause.
    const ALL: [Cause; 4] = [
        Cause::Failure,
        Cause::Timeout,
        Cause::BulkheadFull,
        Cause::CircuitOpen,
    ];

    /// The cause an error stands for (a refusal that came as the inner
    /// error, tower's `Elapsed` say, stands for its kind).
    pub fn of<E: Leaf>(error: &Error<E>) -> Cause {
        match error.refusal() {
            Some(Refusal::Timeout) => Cause::Timeout,
            Some(Refusal::Overloaded) => Cause::BulkheadFull,
            Some(Refusal::CircuitOpen) => Cause::CircuitOpen,
            Some(Refusal::Invalid) | None => Cause::Failure,
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Cause`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Causes(u8);

impl Causes {
    /// Every cause (the default).
    pub const ALL: Causes = {
        let mut set = 0;
        let mut i = 0;
        while i < Cause::ALL.len() {
            set |= 1 << Cause::ALL[i] as u8;
            i += 1;
        }
        Causes(set)
    };

    /// Only these causes.
    pub fn only(causes: &[Cause]) -> Causes {
        Causes(causes.iter().fold(0, |set, cause| set | cause.bit()))
    }

    /// This set without `cause`.
    pub fn without(self, cause: Cause) -> Causes {
        Causes(self.0 & !cause.bit())
    }

    /// Whether `cause` is in the set.
    pub fn contains(self, cause: Cause) -> bool {
        self.0 & cause.bit() != 0
    }
}

impl fmt::Debug for Causes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Cause::ALL.iter().filter(|c| self.contains(**c)))
            .finish()
    }
}

/// Where an answer given in place of a call came from, for
/// [`FallbackBuilder::mark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provenance {
    /// The fallback's source (a value, a function, another service).
    Fallback,
    /// The cache: the good answer kept for the request's key, this old.
    Cache {
        /// How long ago the answer was fresh.
        age: Duration,
    },
}

/// A fallback: its key function, cache, source, causes and bounds. Cheap to
/// clone. Build one with [`Fallback::builder`] (one key for every request)
/// or [`Fallback::keyed`].
pub struct Fallback<Req, Res, E, K = ()> {
    shared: Arc<Shared<Req, Res, E, K>>,
}

impl<Req, Res, E, K> Clone for Fallback<Req, Res, E, K> {
    fn clone(&self) -> Self {
        Fallback {
            shared: Arc::clone(&self.shared),
        }
    }
}

type KeyOf<Req, K> = Box<dyn Fn(&Req) -> K + Send + Sync>;
type Mark<Res> = Box<dyn Fn(&mut Res, Provenance) + Send + Sync>;

struct Shared<Req, Res, E, K> {
    key_of: KeyOf<Req, K>,
    cache: Option<Box<dyn Lookup<K, Res>>>,
    source: Option<Box<dyn Source<K, Res, E>>>,
    causes: Causes,
    limit: Bulkhead,
    timeout: Option<Duration>,
    mark: Option<Mark<Res>>,
}

impl<Req, Res: Send + 'static, E: Leaf, K> Fallback<Req, Res, E, K> {
    /// The request's key, taken before the request goes to the service.
    #[inline]
    pub(crate) fn key(&self, request: &Req) -> K {
        (self.shared.key_of)(request)
    }

    /// The rule for a response: one the classifier calls a success is kept
    /// (with a cache) and answered; any other is answered as it is, never
    /// kept.
    #[inline]
    pub(crate) fn keep(&self, key: K, response: &Res, verdict: Verdict) {
        if verdict == Verdict::Success {
            if let Some(cache) = &self.shared.cache {
                cache.store(key, response);
            }
        }
    }

    /// The rule for an error: one that counts against the dependency, of a
    /// cause the fallback handles, is answered from the cache or the source
    /// if they can; any other is the caller's. Fallback outcomes are
    /// counted in `stats`.
    #[inline]
    pub(crate) fn recover(
        &self,
        key: K,
        error: &Error<E>,
        verdict: Verdict,
        stats: Option<&CircuitBreaker>,
    ) -> After<Res> {
        if verdict.is_error() && self.shared.causes.contains(Cause::of(error)) {
            self.attempt(key, error, stats)
        } else {
            After::Unanswered
        }
    }

    /// Tries the cache, then the source.
    #[cold]
    fn attempt(&self, key: K, error: &Error<E>, stats: Option<&CircuitBreaker>) -> After<Res> {
        if withhold::is_withheld() {
            tracing::debug!(target: "seawall::fallback", breaker = name(stats), "withheld: the caller must see the error");
            return After::Unanswered;
        }
        let count = |outcome| {
            if let Some(breaker) = stats {
                breaker.record_outcome(outcome);
            }
        };
        if let Some(cache) = &self.shared.cache {
            match cache.lookup(&key) {
                Some((mut answer, age)) => {
                    count(Outcome::CacheHit);
                    self.mark(&mut answer, Provenance::Cache { age });
                    tracing::debug!(target: "seawall::fallback", breaker = name(stats), ?age, "served a cached answer");
                    return After::Answered(answer);
                }
                None => count(Outcome::CacheMiss),
            }
        }
        let Some(source) = &self.shared.source else {
            return After::Unanswered;
        };
        let Some(permit) = self.shared.limit.try_acquire() else {
            count(Outcome::FallbackRejected);
            tracing::debug!(target: "seawall::fallback", breaker = name(stats), "too many fallbacks running: not tried");
            return After::Unanswered;
        };
        let future = source.answer(&key, error);
        let future = match self.shared.timeout {
            Some(limit) => Box::pin(async move {
                match tokio::time::timeout(limit, future).await {
                    Ok(answer) => answer,
                    Err(elapsed) => Err(BoxError::from(elapsed)),
                }
            }),
            None => future,
        };
        After::Running(Running::new(future, permit))
    }

    /// Books a source's answer: marked and counted, or counted as failed
    /// (the caller then gets `error`).
    pub(crate) fn finish(
        &self,
        answer: Result<Res, BoxError>,
        error: Error<E>,
        stats: Option<&CircuitBreaker>,
    ) -> Result<Res, Error<E>> {
        let count = |outcome| {
            if let Some(breaker) = stats {
                breaker.record_outcome(outcome);
            }
        };
        match answer {
            Ok(mut answer) => {
                count(Outcome::FallbackSuccess);
                self.mark(&mut answer, Provenance::Fallback);
                Ok(answer)
            }
            Err(cause) => {
                count(Outcome::FallbackFailure);
                tracing::debug!(target: "seawall::fallback", breaker = name(stats), error = %cause, "the fallback failed");
                Err(error)
            }
        }
    }

    fn mark(&self, answer: &mut Res, provenance: Provenance) {
        if let Some(mark) = &self.shared.mark {
            mark(answer, provenance);
        }
    }
}

impl<Req, Res, E, K> fmt::Debug for Fallback<Req, Res, E, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("causes", &self.shared.causes)
            .field("cache", &self.shared.cache.is_some())
            .field("source", &self.shared.source.is_some())
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl<Req, Res, E> Fallback<Req, Res, E, ()> {
    /// A builder with one key for every request (no cache worth having:
    /// use [`keyed`](Self::keyed) for one): no source yet; every cause; at
    /// most 10 fallbacks running at once (Hystrix's default); no time
    /// limit.
    pub fn builder() -> FallbackBuilder<Req, Res, E, ()> {
        Fallback::keyed(|_: &Req| ())
    }
}

impl<Req, Res, E, K> Fallback<Req, Res, E, K> {
    /// A builder keying each request with `key_of`, for the cache (and
    /// given to the source). It sees the whole request: key by tenant (and
    /// whatever else makes an answer differ), so that a cached answer is
    /// never served to a request that should not see it.
    pub fn keyed<F>(key_of: F) -> FallbackBuilder<Req, Res, E, K>
    where
        F: Fn(&Req) -> K + Send + Sync + 'static,
    {
        FallbackBuilder {
            key_of: Box::new(key_of),
            cache: None,
            source: None,
            causes: Causes::ALL,
            max_concurrent: 10,
            timeout: None,
            mark: None,
        }
    }
}

/// Builds a [`Fallback`]; [`build`](Self::build) checks the settings.
#[must_use = "a builder does nothing until `build` is called"]
pub struct FallbackBuilder<Req, Res, E, K> {
    key_of: KeyOf<Req, K>,
    cache: Option<Box<dyn Lookup<K, Res>>>,
    source: Option<Box<dyn Source<K, Res, E>>>,
    causes: Causes,
    max_concurrent: usize,
    timeout: Option<Duration>,
    mark: Option<Mark<Res>>,
}

impl<Req, Res, E, K> FallbackBuilder<Req, Res, E, K>
where
    Req: 'static,
    Res: Send + 'static,
    E: 'static,
    K: Send + Sync + 'static,
{
    /// Answers with a clone of `value`.
    pub fn value(mut self, value: Res) -> Self
    where
        Res: Clone + Sync,
    {
        self.source = Some(Box::new(source::Value(value)));
        self
    }

    /// Answers with `f(key, error)`, run at once on the caller's task (keep
    /// it quick; use [`function_async`](Self::function_async) for I/O).
    pub fn function<F, Fe>(mut self, f: F) -> Self
    where
        F: Fn(&K, &Error<E>) -> Result<Res, Fe> + Send + Sync + 'static,
        Fe: Into<BoxError>,
    {
        self.source = Some(Box::new(source::Function(f)));
        self
    }

    /// Answers with the future `f(key, error)` returns.
    pub fn function_async<F, Fut, Fe>(mut self, f: F) -> Self
    where
        F: Fn(&K, &Error<E>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Res, Fe>> + Send + 'static,
        Fe: Into<BoxError>,
    {
        self.source = Some(Box::new(source::AsyncFunction(f)));
        self
    }

    /// Asks another service (a secondary backend), with the request's key as
    /// its request: make the key the whole request (cloned) if the backend
    /// needs it.
    pub fn service<S>(mut self, service: S) -> Self
    where
        S: tower_service::Service<K, Response = Res> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        K: Clone,
    {
        self.source = Some(Box::new(source::Secondary(service)));
        self
    }

    /// Keeps every good answer under its request's key, and serves the last
    /// one (if fresh enough) before asking the source.
    #[cfg(feature = "cache")]
    pub fn cache(mut self, cache: FallbackCache<K, Res>) -> Self
    where
        K: std::hash::Hash + Eq,
        Res: Clone + Sync,
    {
        self.cache = Some(Box::new(cache));
        self
    }

    /// Which causes trigger the fallback. Default: all of them.
    pub fn on(mut self, causes: Causes) -> Self {
        self.causes = causes;
        self
    }

    /// At most this many fallbacks run at once; more get the original error.
    /// Default 10 (Hystrix's `fallback.isolation.semaphore.maxConcurrentRequests`).
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent;
        self
    }

    /// A fallback slower than this fails (the caller gets the original
    /// error). Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Marks every answer given in place of a call with where it came from.
    pub fn mark<F>(mut self, mark: F) -> Self
    where
        F: Fn(&mut Res, Provenance) + Send + Sync + 'static,
    {
        self.mark = Some(Box::new(mark));
        self
    }

    /// Checks the settings and builds the fallback.
    pub fn build(self) -> Result<Fallback<Req, Res, E, K>, ConfigError> {
        if self.cache.is_none() && self.source.is_none() {
            return Err(ConfigError::new(
                "source",
                "none",
                "give a value, function, service or cache",
            ));
        }
        if self.causes.0 == 0 {
            return Err(ConfigError::new(
                "on",
                self.causes,
                "must contain at least one cause",
            ));
        }
        if let Some(timeout) = self.timeout.filter(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "timeout",
                timeout,
                "must be longer than zero",
            ));
        }
        let limit = Bulkhead::builder()
            .name("fallback")
            .max_concurrent(self.max_concurrent)
            // Its errors name `max_concurrent`, as this builder's setting is named.
            .build()?;
        Ok(Fallback {
            shared: Arc::new(Shared {
                key_of: self.key_of,
                cache: self.cache,
                source: self.source,
                causes: self.causes,
                limit,
                timeout: self.timeout,
                mark: self.mark,
            }),
        })
    }
}

/// The name log lines give: the breaker whose calls the fallback answers
/// for (a Policy's breaker is named after the policy).
fn name(stats: Option<&CircuitBreaker>) -> &str {
    stats.map_or("", CircuitBreaker::name)
}
