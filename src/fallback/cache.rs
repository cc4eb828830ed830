//! The cache of last good answers, on moka.

use std::cell::Cell;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::recent::{young, Recent};
use super::source::Lookup;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::stripe::{stripe, STRIPES};

/// The last good answer per key, bounded, for a [`Fallback`](super::Fallback)
/// to serve when a call fails. Cheap to clone; clones share the entries.
///
/// Built on [moka](https://docs.rs/moka)'s synchronous cache, which a
/// response future can fill and read within a poll, without an extra future
/// per call. Bounded by entries (or by a weight of your choosing), with
/// optional time-to-live and time-to-idle (moka's, by the wall clock); an
/// answer older than [`max_stale`](FallbackCacheBuilder::max_stale) (by the
/// seawall clock, so paused-time tests can drive it) is not served.
///
/// A good answer replaces the kept one only when that one is older than
/// [`refresh_after`](FallbackCacheBuilder::refresh_after) (1 s by default),
/// as an HTTP cache serving `stale-if-error` refreshes only what has
/// expired. Between refreshes a successful call neither writes the cache
/// (moka's entry, node and key: five allocations) nor, mostly, reads it: a
/// table of up to 1,024 slots (8 KiB) holding the cache's own entries kept
/// lately tells it, from the key itself, that the kept answer is young
/// enough. An answer served is thus up to `refresh_after` older than the
/// newest good one, and its age says so
/// ([`Provenance::Cache`](super::Provenance::Cache)).
///
/// Without [`time_to_live`](FallbackCacheBuilder::time_to_live) or
/// [`time_to_idle`](FallbackCacheBuilder::time_to_idle), the table serves
/// answers too: calls answered from the cache on many cores at once (an
/// outage) then write no line another core writes, where moka's reads
/// write the entry's reference count and moka's read log. One answer in 64
/// (per thread) is still read from moka, so that its eviction policy sees
/// which keys are served. The table forgets an entry as moka drops it (and
/// checks, after taking one, that moka had not dropped it already), so it
/// serves none that the cache no longer has. Serving allocates nothing of
/// seawall's; moka's housekeeping, which its reads run now and then, hands
/// crossbeam-epoch a 2 KiB bag of garbage about once in 8,000 answers
/// served.
///
/// ```
/// use std::time::Duration;
/// use seawall::fallback::FallbackCache;
///
/// let cache = FallbackCache::<(String, String), String>::builder()
///     .max_entries(10_000)
///     .max_stale(Duration::from_secs(300))
///     .refresh_after(Duration::from_secs(5))
///     .build()?;
/// # drop(cache);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
pub struct FallbackCache<K, Res> {
    entries: Cache<Key<K>, Arc<Entry<K, Res>>>,
    max_stale: Option<u64>,
    refresh_after: u64,
    recent: Arc<Recent<K, Res>>,
    /// Whether lookups take answers from `recent` (no time-to-live or
    /// time-to-idle, which only moka's reads keep).
    serves_recent: bool,
    clock: Clock,
    name: Arc<str>,
    tallies: Arc<[Tally; STRIPES]>,
}

impl<K, Res> Clone for FallbackCache<K, Res> {
    fn clone(&self) -> Self {
        FallbackCache {
            entries: self.entries.clone(),
            max_stale: self.max_stale,
            refresh_after: self.refresh_after,
            recent: Arc::clone(&self.recent),
            serves_recent: self.serves_recent,
            clock: self.clock,
            name: Arc::clone(&self.name),
            tallies: Arc::clone(&self.tallies),
        }
    }
}

/// What a cache did, since it was made, one copy a stripe on lines of its
/// own (summed by readers): calls served on two cores write different
/// lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Tally {
    stored: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    stale_refused: AtomicU64,
}

/// A cache's lifetime figures: monotonic, from [`FallbackCache::figures`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheFigures {
    /// Answers kept now.
    pub entries: u64,
    /// Good answers stored (or refreshed).
    pub stored: u64,
    /// Lookups that found an answer fresh enough, and served it.
    pub hits: u64,
    /// Lookups that found no answer for the key.
    pub misses: u64,
    /// Lookups that found an answer older than
    /// [`max_stale`](FallbackCacheBuilder::max_stale), and did not serve it.
    pub stale_refused: u64,
}

/// A key as moka keeps it: the same `Arc` as its entry's, through which
/// [`Recent`] compares keys, since `K` need not be `Clone`.
struct Key<K>(Arc<K>);

impl<K: Hash> Hash for Key<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<K: PartialEq> PartialEq for Key<K> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Eq> Eq for Key<K> {}

impl<K> std::borrow::Borrow<K> for Key<K> {
    fn borrow(&self) -> &K {
        &self.0
    }
}

/// A good answer kept, moka's value and what [`Recent`] holds.
pub(super) struct Entry<K, Res> {
    pub(super) key: Arc<K>,
    pub(super) response: Res,
    /// When it was fresh, by the cache's clock.
    pub(super) at: u64,
}

impl<K, Res> FallbackCache<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Clone + Send + Sync + 'static,
{
    /// A builder: at most 10,000 entries, served however old.
    pub fn builder() -> FallbackCacheBuilder<K, Res> {
        FallbackCacheBuilder {
            max_entries: 10_000,
            weigher: None,
            time_to_live: None,
            time_to_idle: None,
            max_stale: None,
            refresh_after: None,
            clock: None,
            name: Arc::from("fallback_cache"),
        }
    }

    /// The cache's name, in reports and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the cache has done since it was made: lookups by result, and
    /// answers stored. Monotonic; reading them blocks nothing.
    pub fn figures(&self) -> CacheFigures {
        let sum = |count: fn(&Tally) -> &AtomicU64| {
            self.tallies.iter().map(|t| count(t).load(Relaxed)).sum()
        };
        CacheFigures {
            entries: self.entries.entry_count(),
            stored: sum(|t| &t.stored),
            hits: sum(|t| &t.hits),
            misses: sum(|t| &t.misses),
            stale_refused: sum(|t| &t.stale_refused),
        }
    }

    /// How many answers are kept (after pending evictions run).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tally(&self) -> &Tally {
        &self.tallies[stripe()]
    }

    /// Puts `entry`, which moka held a moment ago, in the table, and takes
    /// it out again if moka no longer holds its key: moka may have dropped
    /// it, and told the table, before it was put there. Nothing to do if
    /// the table holds it already: were it dropped, moka's listener takes
    /// it out (and writing it again would only pull the slot's line from
    /// the other cores that read it).
    fn hold(&self, entry: Arc<Entry<K, Res>>) {
        if self.recent.holds(&entry) {
            return;
        }
        self.recent.mark(Arc::clone(&entry));
        if !self.entries.contains_key(&*entry.key) {
            self.recent.forget(&entry);
        }
    }

    /// Forgets every answer.
    pub fn clear(&self) {
        // Entries first: the other way round, an answer kept between the
        // two would be dropped while the table still called it fresh.
        self.entries.invalidate_all();
        self.recent.clear();
    }
}

impl<K, Res> Lookup<K, Res> for FallbackCache<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Clone + Send + Sync + 'static,
{
    fn store(&self, key: K, response: &Res) {
        let now = self.clock.now();
        let refreshing = self.refresh_after > 0;
        if refreshing {
            if self.recent.fresh(&key, now) {
                return;
            }
            if let Some(kept) = self.entries.get(&key) {
                if young(kept.at, now, self.refresh_after) {
                    self.hold(kept);
                    return;
                }
            }
        }
        let key = Arc::new(key);
        let entry = Arc::new(Entry {
            key: Arc::clone(&key),
            response: response.clone(),
            at: now,
        });
        self.entries.insert(Key(key), Arc::clone(&entry));
        if refreshing {
            self.hold(entry);
        }
        self.tally().stored.fetch_add(1, Relaxed);
    }

    fn lookup(&self, key: &K) -> Option<(Res, Duration)> {
        let recent = if self.serves_recent && !moka_reads_this_one() {
            self.recent.answer(key)
        } else {
            None
        };
        let (response, at) = match recent {
            Some(kept) => kept,
            None => {
                let Some(entry) = self.entries.get(key) else {
                    self.tally().misses.fetch_add(1, Relaxed);
                    return None;
                };
                let kept = (entry.response.clone(), entry.at);
                if self.serves_recent {
                    self.hold(entry);
                }
                kept
            }
        };
        let age = self.clock.now().saturating_sub(at);
        if self.max_stale.is_some_and(|max| age > max) {
            self.tally().stale_refused.fetch_add(1, Relaxed);
            return None;
        }
        self.tally().hits.fetch_add(1, Relaxed);
        Some((response, Duration::from_nanos(age)))
    }
}

/// One answer in this many that the table could serve, per thread, is read
/// from moka instead, which records the read for its eviction policy.
const MOKA_READS_ONE_IN: u32 = 64;

fn moka_reads_this_one() -> bool {
    thread_local! {
        static SERVED: Cell<u32> = const { Cell::new(0) };
    }
    SERVED.with(|served| {
        let n = served.get().wrapping_add(1);
        served.set(n);
        n.is_multiple_of(MOKA_READS_ONE_IN)
    })
}

/// How old a kept answer must be before a good one replaces it, by default.
const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

type Weigher<K, Res> = Box<dyn Fn(&K, &Res) -> u32 + Send + Sync>;

/// Builds a [`FallbackCache`]; [`build`](Self::build) checks the settings.
#[must_use = "a builder does nothing until `build` is called"]
pub struct FallbackCacheBuilder<K, Res> {
    max_entries: u64,
    weigher: Option<Weigher<K, Res>>,
    time_to_live: Option<Duration>,
    time_to_idle: Option<Duration>,
    max_stale: Option<Duration>,
    refresh_after: Option<Duration>,
    clock: Option<Clock>,
    name: Arc<str>,
}

impl<K, Res> FallbackCacheBuilder<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Clone + Send + Sync + 'static,
{
    /// At most this many answers (or, with a [`weigher`](Self::weigher), this
    /// much total weight). Default 10,000.
    pub fn max_entries(mut self, max: u64) -> Self {
        self.max_entries = max;
        self
    }

    /// Bounds the cache by the sum of `weigher(key, answer)` (bytes, say)
    /// instead of the number of entries.
    pub fn weigher<F>(mut self, weigher: F) -> Self
    where
        F: Fn(&K, &Res) -> u32 + Send + Sync + 'static,
    {
        self.weigher = Some(Box::new(weigher));
        self
    }

    /// Drops an answer this long after it was stored (wall clock).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Drops an answer nobody read or refreshed for this long (wall clock).
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.time_to_idle = Some(tti);
        self
    }

    /// Never serves an answer older than this. Default: any age still kept.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = Some(max_stale);
        self
    }

    /// Replaces a kept answer with a newer good one only once the kept one
    /// is this old. Default: 1 s, or a tenth of the shortest of
    /// [`max_stale`](Self::max_stale), [`time_to_live`](Self::time_to_live)
    /// and [`time_to_idle`](Self::time_to_idle) if that is shorter; it must
    /// be shorter than each of them. `Duration::ZERO` keeps every good
    /// answer (a write to the cache on every successful call).
    pub fn refresh_after(mut self, refresh_after: Duration) -> Self {
        self.refresh_after = Some(refresh_after);
        self
    }

    /// The name in reports and metrics. Default `"fallback_cache"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The clock that dates answers. Default [`Clock::default`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the settings and builds the cache.
    pub fn build(self) -> Result<FallbackCache<K, Res>, ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::new("max_entries", 0, "must be at least 1"));
        }
        for (field, value) in [
            ("time_to_live", self.time_to_live),
            ("time_to_idle", self.time_to_idle),
            ("max_stale", self.max_stale),
        ] {
            if let Some(zero) = value.filter(|d| d.is_zero()) {
                return Err(ConfigError::new(field, zero, "must be longer than zero"));
            }
            if let Some(long) = value.filter(|d| *d > crate::MAX_CACHE_DURATION) {
                return Err(ConfigError::new(
                    field,
                    long,
                    "must be at most 1000 years (moka's limit)",
                ));
            }
        }
        // An answer must be refreshed before it is too old to serve or is
        // dropped, or successes would skip keeping one that is gone.
        let bounds = [
            (self.max_stale, "must be shorter than max_stale"),
            (self.time_to_live, "must be shorter than time_to_live"),
            (self.time_to_idle, "must be shorter than time_to_idle"),
        ];
        let refresh_after = match self.refresh_after {
            Some(refresh) => {
                for (bound, reason) in bounds {
                    if bound.is_some_and(|bound| refresh >= bound) {
                        return Err(ConfigError::new("refresh_after", refresh, reason));
                    }
                }
                refresh
            }
            None => bounds
                .into_iter()
                .filter_map(|(bound, _)| bound)
                .fold(DEFAULT_REFRESH, |refresh, bound| refresh.min(bound / 10)),
        };
        let recent = Arc::new(Recent::new(self.max_entries, nanos(refresh_after)));
        let dropped = Arc::clone(&recent);
        let mut entries = Cache::builder()
            .max_capacity(self.max_entries)
            .eviction_listener(move |_, entry: Arc<Entry<K, Res>>, _| dropped.forget(&entry));
        if let Some(weigher) = self.weigher {
            entries = entries.weigher(move |key: &Key<K>, entry: &Arc<Entry<K, Res>>| {
                weigher(&key.0, &entry.response)
            });
        }
        if let Some(ttl) = self.time_to_live {
            entries = entries.time_to_live(ttl);
        }
        if let Some(tti) = self.time_to_idle {
            entries = entries.time_to_idle(tti);
        }
        Ok(FallbackCache {
            entries: entries.build(),
            max_stale: self.max_stale.map(nanos),
            refresh_after: nanos(refresh_after),
            recent,
            serves_recent: !refresh_after.is_zero()
                && self.time_to_live.is_none()
                && self.time_to_idle.is_none(),
            clock: self.clock.unwrap_or_default(),
            name: self.name,
            tallies: Arc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(builder: FallbackCacheBuilder<u8, &'static str>) -> FallbackCache<u8, &'static str> {
        builder.clock(Clock::tokio()).build().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Asserts that `cache` keeps an answer until it is `refresh` old, and
    /// replaces it with the next good one then.
    async fn replaced_at(cache: FallbackCache<u8, &'static str>, refresh: Duration) {
        cache.store(1, &"first");
        tokio::time::advance(refresh - ms(1)).await;
        cache.store(1, &"second");
        let young = refresh - ms(1);
        assert_eq!(cache.lookup(&1), Some(("first", young)), "{refresh:?}");
        tokio::time::advance(ms(1)).await;
        cache.store(1, &"third");
        assert_eq!(cache.lookup(&1), Some(("third", ms(0))), "{refresh:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_answer_is_replaced_once_refresh_after_old() {
        let builder = FallbackCache::builder;
        for (builder, refresh) in [
            (builder().refresh_after(ms(300)), ms(300)),
            (builder(), ms(1_000)),
            (builder().max_stale(ms(500)), ms(50)),
            (builder().time_to_live(ms(200)), ms(20)),
            (builder().time_to_idle(ms(200)), ms(20)),
        ] {
            replaced_at(cache(builder), refresh).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_answers_kept_are_counted_stored() {
        let cache = cache(FallbackCache::builder());
        cache.store(1, &"first");
        cache.store(1, &"second");
        cache.store(2, &"another key");
        assert_eq!(cache.lookup(&2), Some(("another key", ms(0))));
        assert_eq!(cache.figures().stored, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_after_zero_keeps_every_answer() {
        let cache = cache(FallbackCache::builder().refresh_after(Duration::ZERO));
        cache.store(1, &"first");
        cache.store(1, &"second");
        assert_eq!(cache.lookup(&1), Some(("second", ms(0))));
        assert_eq!(cache.figures().stored, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_dropped_from_the_cache_is_kept_again_at_the_next_success() {
        let cache = cache(FallbackCache::builder());
        cache.store(1, &"first");
        cache.entries.invalidate(&1);
        assert_eq!(cache.lookup(&1), None, "not served once dropped");
        cache.store(1, &"second");
        assert_eq!(cache.lookup(&1), Some(("second", ms(0))));
        cache.clear();
        assert_eq!(cache.lookup(&1), None, "not served once cleared");
        cache.store(1, &"third");
        assert_eq!(cache.lookup(&1), Some(("third", ms(0))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_moka_dropped_before_the_table_held_it_is_not_held() {
        let cache = cache(FallbackCache::builder());
        cache.store(1, &"first");
        let dropped = cache.entries.get(&1).unwrap();
        cache.entries.invalidate(&1);
        cache.hold(dropped);
        assert_eq!(cache.lookup(&1), None);
        assert!(!cache.recent.fresh(&1, 0));
    }

    /// A kept answer is in the table, and is held there again once moka
    /// serves it after the table lost it.
    #[tokio::test(start_paused = true)]
    async fn kept_and_served_answers_are_held_in_the_table() {
        let cache = cache(FallbackCache::builder());
        cache.store(1, &"first");
        assert!(cache.recent.fresh(&1, 0), "held once kept");
        cache.recent.clear();
        assert_eq!(cache.lookup(&1), Some(("first", ms(0))));
        assert!(cache.recent.fresh(&1, 0), "held again once moka served it");
    }

    /// Far more keys than room: whatever moka evicts, every lookup says
    /// what moka holds, never an answer it dropped.
    #[tokio::test(start_paused = true)]
    async fn answers_evicted_for_room_are_not_served() {
        let cache = cache(FallbackCache::builder().max_entries(8));
        for round in 0..20u8 {
            for key in 0..40u8 {
                cache.store(key, &"answer");
                if key % 3 == round % 3 {
                    let _ = cache.lookup(&key);
                }
            }
            cache.entries.run_pending_tasks();
            for key in 0..40u8 {
                assert_eq!(
                    cache.lookup(&key).is_some(),
                    cache.entries.contains_key(&key),
                    "round {round}, key {key}"
                );
            }
        }
    }

    #[test]
    fn refresh_after_must_be_shorter_than_time_to_live_and_time_to_idle() {
        for builder in [
            FallbackCache::<u8, u8>::builder().time_to_live(ms(500)),
            FallbackCache::<u8, u8>::builder().time_to_idle(ms(500)),
        ] {
            let error = builder.refresh_after(ms(500)).build().err().unwrap();
            assert_eq!(error.field(), "refresh_after");
        }
    }

    #[test]
    fn refresh_after_must_be_shorter_than_max_stale() {
        let error = FallbackCache::<u8, u8>::builder()
            .max_stale(ms(500))
            .refresh_after(ms(500))
            .build()
            .err()
            .expect("refresh_after as long as max_stale is refused");
        assert_eq!(error.field(), "refresh_after");
        assert!(error.to_string().contains("500ms"), "{error}");
        FallbackCache::<u8, u8>::builder()
            .max_stale(ms(500))
            .refresh_after(ms(499))
            .build()
            .unwrap();
    }
}
