//! One breaker per key (per host, per tenant, per route), bounded in number.

use std::collections::hash_map::RandomState;
use std::fmt::{self, Debug};
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::HashTable;

use super::breaker::KeptBreaker;
use super::config::{CircuitBreakerBuilder, Config};
use super::{BreakerFor, CircuitBreaker, CircuitOpen, Permit, Ticket};
use crate::clock::Clock;
use crate::error::ConfigError;

/// A bounded set of breakers, one per key, built on demand from one
/// configuration. Cheap to clone; clones share the breakers.
///
/// A breaker is named `"{name}:{key:?}"` after the configuration's name (the
/// key's part cut at 64 bytes). When the registry is full, the least
/// recently used keys of one shard (about a sixteenth of it) are evicted; a
/// key seen again after eviction gets a fresh, closed breaker. Looking a key
/// up takes a shard's read lock and allocates nothing; a key's first call
/// builds its breaker.
///
/// # Memory
///
/// Keys are bounded in number, and each key's breaker in bytes, so a
/// registry fed any number of distinct keys (one per tenant a client makes
/// up, say) stays within [`worst_case_bytes`](Registry::worst_case_bytes):
/// `max_keys` times a bound per key that depends on the window, checked
/// against [`max_memory`](RegistryBuilder::max_memory) when the registry is
/// built. Per key, beside what the key itself owns on the heap (bound the
/// keys too: a tenant id, not a request body), on x86-64, including half as
/// much again for what the allocator keeps while keys come and go:
///
/// | window | worst case per key |
/// |---|---|
/// | time, 10 buckets (the default) | 2.9 KiB |
/// | time, 10 buckets, with latency | 41 KiB |
/// | time, 60 buckets | 10.5 KiB |
/// | count, 100 calls | 1.9 KiB |
/// | count, 1,000,000 calls, with latency | 4.3 MiB |
///
/// That is a breaker that has changed state (which makes its history) and
/// whose window holds calls of several buckets. With the defaults (10,000
/// keys) that is under 28 MiB. A window's storage is made when it first
/// needs it, for a time window when a bucket that saw calls ends or a
/// call is slow or neither a success nor a failure (a timeout, a refusal:
/// a registry's window keeps only successes and failures in its newest
/// bucket), and a breaker's history by its first change of state. Keys
/// that were only looked up, or whose calls succeeded or failed within one
/// bucket (one second of the default window), take under 256 bytes (245 a
/// key in a million, with names of up to 23 bytes, which are kept inline).
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
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Registry {
            shared: self.shared.clone(),
        }
    }
}

/// The shards and the settings every clone of a registry shares.
///
/// Keys are spread over shards by hash, each a hash table behind its own
/// read-write lock: a lookup takes one shard's read lock (readers never wait
/// for each other), and only a key's first call, an eviction or a removal
/// writes. A shard's table holds the key, the breaker (its shared state's
/// `Arc`: half a handle) and when the key was last used, nothing more:
/// moka's per-entry bookkeeping (its deques, frequency sketch and read
/// buffer) cost more than a breaker and most of a lookup.
struct Shared<K> {
    shards: Box<[RwLock<Shard<K>>]>,
    hasher: RandomState,
    /// Keys kept, over all shards.
    keys: AtomicU64,
    max_keys: u64,
    idle_millis: Option<u64>,
    clock: Clock,
    /// The worst case of one key's memory (see [`bytes_per_key`]).
    per_key: u64,
    /// The template, shared by every breaker of the registry.
    config: Arc<Config>,
}

struct Shard<K> {
    table: HashTable<Slot<K>>,
    /// When (registry milliseconds) this shard is next swept of idle keys.
    next_sweep: u64,
}

struct Slot<K> {
    key: K,
    breaker: KeptBreaker,
    /// When the key was last used, in registry milliseconds. Written at most
    /// once a millisecond, so that two threads on one key do not fight over
    /// its cache line on every call.
    used: AtomicU64,
}

/// Shards for `max_keys` keys: enough that threads inserting different keys
/// rarely meet, few enough that a small registry's shards are not empty.
fn shard_count(max_keys: u64) -> usize {
    let wanted = usize::try_from(max_keys / 64).unwrap_or(usize::MAX);
    wanted.clamp(1, 64).next_power_of_two()
}

/// The share of a shard one eviction frees, so that inserting into a full
/// registry scans a shard once per that many inserts, not once each.
const EVICTION_BATCH_DIVISOR: usize = 16;

/// Builds a [`Registry`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct RegistryBuilder<K> {
    breaker: CircuitBreakerBuilder,
    max_keys: u64,
    max_memory: u64,
    idle_timeout: Option<Duration>,
    key: PhantomData<fn(K)>,
}

impl<K> Debug for RegistryBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("breaker", &self.breaker)
            .field("max_keys", &self.max_keys)
            .field("max_memory", &self.max_memory)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl<K> RegistryBuilder<K>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    /// At most this many breakers are kept (a few more for a moment while
    /// several threads add keys at once). Default 10,000.
    pub fn max_keys(mut self, keys: u64) -> Self {
        self.max_keys = keys;
        self
    }

    /// The most memory the registry may take with every key's breaker in
    /// use (see [Memory](Registry#memory)): `build` refuses a `max_keys`
    /// whose worst case exceeds it. Default 1 GiB.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Forgets a key's breaker once no call used it for this long (to the
    /// millisecond). Off by default.
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
        let config = self.breaker.validate()?;
        let per_key = bytes_per_key::<K>(&config);
        if self.max_keys.saturating_mul(per_key) > self.max_memory {
            return Err(ConfigError::new(
                "max_keys",
                self.max_keys,
                "at the window's worst case per key, the registry could outgrow max_memory: lower max_keys, shrink the window, or raise max_memory",
            ));
        }
        // Breakers built from a template with an explicit clock share it;
        // the registry's idle times follow the same time.
        let clock = config.clock.unwrap_or_default();
        let idle_millis = self.idle_timeout.map(|idle| {
            u64::try_from(idle.as_nanos().div_ceil(NANOS_PER_MILLI)).unwrap_or(u64::MAX)
        });
        let shards = (0..shard_count(self.max_keys))
            .map(|_| {
                RwLock::new(Shard {
                    table: HashTable::new(),
                    next_sweep: 0,
                })
            })
            .collect();
        Ok(Registry {
            shared: Arc::new(Shared {
                shards,
                hasher: RandomState::new(),
                keys: AtomicU64::new(0),
                max_keys: self.max_keys,
                idle_millis,
                clock,
                per_key,
                config: Arc::new(config),
            }),
        })
    }
}

/// A bound on the name's part that comes from the key, in bytes.
const MAX_KEY_NAME: usize = 64;

/// The worst case of one key's memory, beside what the key owns: its entry
/// in a table that may have just doubled, its breaker, its name; and half
/// as much again for what the allocator holds on to while keys come and go
/// (measured: a third more, after a million keys through ten thousand).
fn bytes_per_key<K>(config: &Config) -> u64 {
    // A table grows by doubling once 7/8 full: at worst 16/7 entries' room
    // (and a control byte each) per key.
    let entry = (std::mem::size_of::<Slot<K>>() + 1) * 16 / 7 + 1;
    let name = (config.name.len() + 1 + MAX_KEY_NAME + 3 + 2 * std::mem::size_of::<usize>())
        .next_multiple_of(16)
        + 16;
    let live = entry + CircuitBreaker::heap_bytes(config) + name;
    (live + live / 2) as u64
}

const NANOS_PER_MILLI: u128 = 1_000_000;

impl<K> Registry<K>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
{
    /// A registry whose breakers are built from `breaker`.
    pub fn builder(breaker: CircuitBreakerBuilder) -> RegistryBuilder<K> {
        RegistryBuilder {
            breaker,
            max_keys: 10_000,
            max_memory: 1 << 30,
            idle_timeout: None,
            key: PhantomData,
        }
    }

    /// The most memory the registry can take: `max_keys` times the worst
    /// case per key (see [Memory](Registry#memory)), beside what the keys
    /// themselves own.
    pub fn worst_case_bytes(&self) -> u64 {
        self.shared.max_keys.saturating_mul(self.shared.per_key)
    }

    /// The key's breaker, built now if the key has none.
    pub fn get(&self, key: K) -> CircuitBreaker {
        self.with(key, |breaker| breaker)
    }

    /// The key's breaker, if it has one.
    pub fn get_if_present(&self, key: &K) -> Option<CircuitBreaker> {
        let shared = &*self.shared;
        let hash = shared.hasher.hash_one(key);
        shared.lookup(hash, key, shared.now(), |breaker| breaker)
    }

    /// Forgets the key's breaker.
    pub fn remove(&self, key: &K) {
        let shared = &*self.shared;
        let hash = shared.hasher.hash_one(key);
        let mut shard = shared.write(hash);
        if let Ok(entry) = shard.table.find_entry(hash, |slot| slot.key == *key) {
            entry.remove();
            shared.keys.fetch_sub(1, Relaxed);
        }
    }

    /// How many breakers are kept. Counting first forgets the keys idle for
    /// longer than the idle timeout, which takes a pass over every key.
    pub fn len(&self) -> u64 {
        let shared = &*self.shared;
        if shared.idle_millis.is_some() {
            let now = shared.now();
            for shard in shared.shards.iter() {
                shared.sweep(&mut lock_write(shard), now);
            }
        }
        shared.keys.load(Relaxed)
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registry's name: the name its breakers' builder was given.
    /// (Each breaker is named after its key.)
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Runs `f` on every key's breaker (those idle past the idle timeout
    /// left out), one shard at a time under its read lock: lookups go on,
    /// and a new key of the shard being read waits for it.
    pub fn for_each_breaker(&self, mut f: impl FnMut(&CircuitBreaker)) {
        let shared = &*self.shared;
        let now = shared.now();
        for shard in shared.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for slot in shard.table.iter() {
                if !shared.expired(slot, now) {
                    f(&slot.breaker.handle());
                }
            }
        }
    }

    /// Selects each request's breaker by the key `key_of` derives from it,
    /// for [`CircuitBreakerLayer::new`](super::CircuitBreakerLayer::new).
    pub fn keyed<F>(&self, key_of: F) -> Keyed<K, F> {
        Keyed {
            registry: self.clone(),
            key_of,
        }
    }

    /// Runs `f` on a handle of the key's breaker, built now if the key has
    /// none.
    #[inline]
    fn with<R>(&self, key: K, f: impl Fn(CircuitBreaker) -> R) -> R {
        let shared = &*self.shared;
        let hash = shared.hasher.hash_one(&key);
        let now = shared.now();
        match shared.lookup(hash, &key, now, &f) {
            Some(result) => result,
            None => f(shared.insert(hash, key, now)),
        }
    }
}

impl<K> Shared<K>
where
    K: Hash + Eq + Debug,
{
    /// Registry time in milliseconds: coarse enough that last-used stamps
    /// rarely need writing.
    #[inline]
    fn now(&self) -> u64 {
        self.clock.now() / 1_000_000
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard<K>> {
        // Bits the tables use for neither the bucket (low) nor the tag (top).
        let index = (hash >> 40) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard<K>> {
        lock_write(self.shard(hash))
    }

    fn expired(&self, slot: &Slot<K>, now: u64) -> bool {
        self.idle_millis
            .is_some_and(|idle| now.saturating_sub(slot.used.load(Relaxed)) >= idle)
    }

    #[inline]
    fn lookup<R>(
        &self,
        hash: u64,
        key: &K,
        now: u64,
        f: impl FnOnce(CircuitBreaker) -> R,
    ) -> Option<R> {
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = shard.table.find(hash, |slot| slot.key == *key)?;
        if self.expired(slot, now) {
            return None;
        }
        if slot.used.load(Relaxed) != now {
            slot.used.store(now, Relaxed);
        }
        Some(f(slot.breaker.handle()))
    }

    /// Adds the key's breaker (unless another thread just did), making room
    /// first if the registry is full.
    #[cold]
    fn insert(&self, hash: u64, key: K, now: u64) -> CircuitBreaker {
        if self.keys.load(Relaxed) >= self.max_keys {
            self.make_room(hash, now);
        }
        let mut shard = self.write(hash);
        if self.idle_millis.is_some() && now >= shard.next_sweep {
            self.sweep(&mut shard, now);
        }
        if let Some(slot) = shard.table.find_mut(hash, |slot| slot.key == key) {
            if self.expired(slot, now) {
                slot.breaker = self.build(&slot.key);
            }
            slot.used.store(now, Relaxed);
            return slot.breaker.handle();
        }
        let breaker = self.build(&key);
        let handle = breaker.handle();
        shard.table.insert_unique(
            hash,
            Slot {
                key,
                breaker,
                used: AtomicU64::new(now),
            },
            |slot| self.hasher.hash_one(&slot.key),
        );
        self.keys.fetch_add(1, Relaxed);
        handle
    }

    fn build(&self, key: &K) -> KeptBreaker {
        let mut key = format!("{key:?}");
        if key.len() > MAX_KEY_NAME {
            let mut cut = MAX_KEY_NAME;
            while !key.is_char_boundary(cut) {
                cut -= 1;
            }
            key.truncate(cut);
            key.push('…');
        }
        let name = smol_str::format_smolstr!("{}:{key}", self.config.name);
        CircuitBreaker::kept(self.config.clone(), name)
    }

    /// Evicts a batch of the least recently used keys of the first shard,
    /// from the key's own, that has any.
    fn make_room(&self, hash: u64, now: u64) {
        let first = (hash >> 40) as usize;
        let count = self.shards.len();
        for step in 0..count {
            let shard = &self.shards[(first + step) & (count - 1)];
            let mut shard = lock_write(shard);
            if self.idle_millis.is_some() {
                self.sweep(&mut shard, now);
            }
            if self.keys.load(Relaxed) < self.max_keys || self.evict_batch(&mut shard) > 0 {
                return;
            }
        }
    }

    /// Evicts about a sixteenth of the shard, least recently used first.
    fn evict_batch(&self, shard: &mut Shard<K>) -> usize {
        let len = shard.table.len();
        if len == 0 {
            return 0;
        }
        let batch = (len / EVICTION_BATCH_DIVISOR).max(1);
        let mut stamps: Vec<u64> = shard
            .table
            .iter()
            .map(|slot| slot.used.load(Relaxed))
            .collect();
        let cutoff = *stamps.select_nth_unstable(batch - 1).1;
        let mut evicted = 0;
        shard.table.retain(|slot| {
            let evict = evicted < batch && slot.used.load(Relaxed) <= cutoff;
            evicted += usize::from(evict);
            !evict
        });
        self.keys.fetch_sub(evicted as u64, Relaxed);
        evicted
    }

    /// Forgets the shard's idle keys.
    fn sweep(&self, shard: &mut Shard<K>, now: u64) {
        let Some(idle) = self.idle_millis else {
            return;
        };
        let before = shard.table.len();
        shard
            .table
            .retain(|slot| now.saturating_sub(slot.used.load(Relaxed)) < idle);
        self.keys
            .fetch_sub((before - shard.table.len()) as u64, Relaxed);
        // Half the idle timeout: an idle key is gone within 1.5 times it.
        shard.next_sweep = now.saturating_add((idle / 2).max(1));
    }
}

fn lock_write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    // A user's `Hash` or `Eq` that panicked left the table whole: it only
    // panics inside lookups, never halfway through changing a slot.
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl<K> Debug for Registry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.shared.config.name)
            .field("keys", &self.shared.keys.load(Relaxed))
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

impl<K, F> Keyed<K, F> {
    /// The registry each key's breaker comes from: its breakers' states,
    /// counts and transitions, per key.
    pub fn registry(&self) -> &Registry<K> {
        &self.registry
    }
}

impl<K, F, Req> BreakerFor<Req> for Keyed<K, F>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    F: Fn(&Req) -> K,
{
    type Held = CircuitBreaker;

    #[inline]
    fn admit(&self, request: &Req) -> (CircuitBreaker, Result<Ticket, CircuitOpen>) {
        self.registry.with((self.key_of)(request), |breaker| {
            let admitted = breaker.admit();
            (breaker, admitted)
        })
    }

    #[inline]
    fn breaker<'a>(&'a self, held: &'a CircuitBreaker) -> &'a CircuitBreaker {
        held
    }

    #[inline]
    fn permit(&self, held: CircuitBreaker, ticket: Ticket) -> Permit {
        held.into_permit(ticket)
    }
}

impl<K, F> Debug for Keyed<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}
