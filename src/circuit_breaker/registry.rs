//! One breaker per key (per host, per tenant, per route), bounded in number.

use std::fmt::{self, Debug};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::config::{Builder, Config};
use super::{BreakerFor, CircuitBreaker, CircuitOpen, Permit};
use crate::error::ConfigError;

/// A bounded set of breakers, one per key, built on demand from one
/// configuration. Cheap to clone; clones share the breakers.
///
/// A breaker is named `"{name}:{key:?}"` after the configuration's name. When
/// the registry is full, the least useful keys are evicted (moka's TinyLFU);
/// a key seen again after eviction gets a fresh, closed breaker.
///
/// ```
/// use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Registry};
/// use tower::{service_fn, Layer};
///
/// struct Request { host: String }
///
/// let registry = Registry::<String>::builder(CircuitBreaker::builder().name("upstream"))
///     .max_keys(1_000)
///     .build()?;
/// let layer = CircuitBreakerLayer::new(registry.keyed(|req: &Request| req.host.clone()));
/// let service = layer.layer(service_fn(|_: Request| async { Ok::<_, std::io::Error>(()) }));
///
/// registry.get("db-1".to_owned()).force_open(); // only db-1's calls are refused
/// # drop(service);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
pub struct Registry<K> {
    breakers: Cache<K, CircuitBreaker>,
    config: Arc<Config>,
}

impl<K> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Registry {
            breakers: self.breakers.clone(),
            config: self.config.clone(),
        }
    }
}

/// Builds a [`Registry`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct RegistryBuilder<K> {
    breaker: Builder,
    max_keys: u64,
    idle_timeout: Option<Duration>,
    key: PhantomData<fn(K)>,
}

impl<K> Debug for RegistryBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("breaker", &self.breaker)
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl<K> RegistryBuilder<K>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    /// At most this many breakers are kept. Default 10,000.
    pub fn max_keys(mut self, keys: u64) -> Self {
        self.max_keys = keys;
        self
    }

    /// Forgets a key's breaker once no call used it for this long. Off by
    /// default.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Checks the breaker configuration and the bounds.
    pub fn build(self) -> Result<Registry<K>, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", 0, "must be at least 1"));
        }
        if self.idle_timeout.is_some_and(|idle| idle.is_zero()) {
            return Err(ConfigError::new(
                "idle_timeout",
                Duration::ZERO,
                "must be longer than zero",
            ));
        }
        if let Some(long) = self.idle_timeout.filter(|d| *d > crate::MAX_CACHE_DURATION) {
            return Err(ConfigError::new(
                "idle_timeout",
                long,
                "must be at most 1000 years (moka's limit)",
            ));
        }
        let config = Arc::new(self.breaker.validate()?);
        let mut breakers = Cache::builder().max_capacity(self.max_keys);
        if let Some(idle) = self.idle_timeout {
            breakers = breakers.time_to_idle(idle);
        }
        Ok(Registry {
            breakers: breakers.build(),
            config,
        })
    }
}

impl<K> Registry<K>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
{
    /// A registry whose breakers are built from `breaker`.
    pub fn builder(breaker: Builder) -> RegistryBuilder<K> {
        RegistryBuilder {
            breaker,
            max_keys: 10_000,
            idle_timeout: None,
            key: PhantomData,
        }
    }

    /// The key's breaker, built now if the key has none.
    pub fn get(&self, key: K) -> CircuitBreaker {
        self.breakers.get_with_by_ref(&key, || {
            let mut config = (*self.config).clone();
            config.name = format!("{}:{key:?}", config.name).into();
            CircuitBreaker::from_config(config)
        })
    }

    /// The key's breaker, if it has one.
    pub fn get_if_present(&self, key: &K) -> Option<CircuitBreaker> {
        self.breakers.get(key)
    }

    /// Forgets the key's breaker.
    pub fn remove(&self, key: &K) {
        self.breakers.invalidate(key);
    }

    /// How many breakers are kept (eventually consistent: evictions run in
    /// the background of later calls).
    pub fn len(&self) -> u64 {
        self.breakers.run_pending_tasks();
        self.breakers.entry_count()
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Selects each request's breaker by the key `key_of` derives from it,
    /// for [`CircuitBreakerLayer::new`](super::CircuitBreakerLayer::new).
    pub fn keyed<F>(&self, key_of: F) -> Keyed<K, F> {
        Keyed {
            registry: self.clone(),
            key_of,
        }
    }
}

impl<K> Debug for Registry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.config.name)
            .field("keys", &self.breakers.entry_count())
            .finish_non_exhaustive()
    }
}

/// A per-key breaker selection: a [`Registry`] and a function from request
/// to key.
#[derive(Clone)]
pub struct Keyed<K, F> {
    registry: Registry<K>,
    key_of: F,
}

impl<K, F, Req> BreakerFor<Req> for Keyed<K, F>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    F: Fn(&Req) -> K,
{
    fn acquire(&self, request: &Req) -> Result<Permit, CircuitOpen> {
        self.registry.get((self.key_of)(request)).try_acquire()
    }
}

impl<K, F> Debug for Keyed<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}
