//! The named parts of a process, for exporters and health checks to walk.

use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::blocking::{BlockingPool, PoolFigures};
use crate::bulkhead::{Bulkhead, BulkheadFigures, Mode};
use crate::circuit_breaker::{CircuitBreaker, History, Settings, State};
use crate::hedge::{Hedge, HedgeFigures};
use crate::retry::{BudgetFigures, Retry, RetryBudget, RetryFigures};
use crate::window::{Counts, Snapshot};

/// The parts of a process that want to be seen (breakers, registries of
/// breakers, bulkheads, blocking pools, policies), for an exporter, a
/// dashboard stream or a health check to walk. Cheap to clone; clones share
/// one list.
///
/// Parts are added explicitly: a process decides what it exports. A
/// catalogue holds handles, so what it lists lives as long as it does.
/// [`report`](Self::report) reads every part's figures without blocking any
/// call.
///
/// A registry can hold millions of keys; a report names only the
/// [`top_keys`](Self::top_keys) keys with the most calls (20 by default) and
/// sums the rest, so that metric labels stay bounded.
///
/// ```
/// use seawall::bulkhead::Bulkhead;
/// use seawall::circuit_breaker::{CircuitBreaker, State};
/// use seawall::observe::Catalogue;
///
/// let breaker = CircuitBreaker::builder().name("payments").build()?;
/// let bulkhead = Bulkhead::builder().name("db").max_concurrent(8).build()?;
/// let catalogue = Catalogue::new();
/// catalogue.add(&breaker).add(&bulkhead);
///
/// breaker.force_open();
/// let report = catalogue.report();
/// assert_eq!(report.breakers[0].name, "payments");
/// assert_eq!(report.breakers[0].state, State::ForcedOpen);
/// assert_eq!(report.bulkheads[0].figures.max_concurrent, 8);
/// assert!(!catalogue.health().is_healthy());
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Catalogue {
    shared: Arc<Shared>,
}

struct Shared {
    parts: RwLock<Vec<Box<dyn Catalogued>>>,
    top_keys: std::sync::atomic::AtomicUsize,
}

impl Default for Catalogue {
    fn default() -> Catalogue {
        Catalogue::new()
    }
}

impl fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalogue")
            .field("parts", &self.len())
            .finish()
    }
}

/// Registry keys named in a report unless [`Catalogue::top_keys`] says
/// otherwise.
const DEFAULT_TOP_KEYS: usize = 20;

impl Catalogue {
    /// An empty catalogue.
    pub fn new() -> Catalogue {
        Catalogue {
            shared: Arc::new(Shared {
                parts: RwLock::new(Vec::new()),
                top_keys: DEFAULT_TOP_KEYS.into(),
            }),
        }
    }

    /// The process's catalogue, for code that has no handle to pass around.
    /// Nothing is added to it unless code adds it.
    pub fn global() -> &'static Catalogue {
        static GLOBAL: OnceLock<Catalogue> = OnceLock::new();
        GLOBAL.get_or_init(Catalogue::new)
    }

    /// How many keys of each registry a report names, the busiest by
    /// lifetime calls; the others are summed. Default 20.
    pub fn top_keys(&self, keys: usize) -> &Catalogue {
        self.shared
            .top_keys
            .store(keys, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Adds a part (a handle to it: the part keeps working for everyone
    /// else as before).
    pub fn add(&self, part: &(impl Catalogued + Clone)) -> &Catalogue {
        self.shared
            .parts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(part.clone()));
        self
    }

    /// How many parts were added.
    pub fn len(&self) -> usize {
        self.parts().len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn parts(&self) -> std::sync::RwLockReadGuard<'_, Vec<Box<dyn Catalogued>>> {
        self.shared
            .parts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every part's figures now.
    pub fn report(&self) -> Report {
        let top_keys = self
            .shared
            .top_keys
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut report = Report::default();
        for part in self.parts().iter() {
            part.report_into(&mut report, top_keys);
        }
        report
    }

    /// Whether the parts are healthy, degraded or down, and why.
    pub fn health(&self) -> super::Health {
        super::Health::of(&self.report())
    }
}

/// A part a [`Catalogue`] can list: it adds its figures to a [`Report`].
pub trait Catalogued: Send + Sync + 'static {
    /// Adds this part's figures to `report`, naming at most `top_keys` keys
    /// of any registry.
    fn report_into(&self, report: &mut Report, top_keys: usize);
}

/// The figures of every part of a [`Catalogue`] at one moment.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// Single breakers, and policies' breakers.
    pub breakers: Vec<BreakerReport>,
    /// Registries of per-key breakers.
    pub registries: Vec<RegistryReport>,
    /// Bulkheads, and policies' bulkheads.
    pub bulkheads: Vec<BulkheadReport>,
    /// Blocking pools.
    pub pools: Vec<PoolReport>,
    /// Retry rules, and policies' retries.
    pub retries: Vec<RetryReport>,
    /// Hedging rules.
    pub hedges: Vec<HedgeReport>,
    /// Fallback caches.
    #[cfg(feature = "cache")]
    pub caches: Vec<CacheReport>,
}

/// One breaker's figures.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BreakerReport {
    /// The breaker's name (a registry's breaker: its key).
    pub name: String,
    /// The policy it belongs to, if any.
    pub policy: Option<String>,
    /// Its state.
    pub state: State,
    /// Counts (and latency, if tracked) over the rolling window.
    pub window: Snapshot,
    /// Every call since it was made: monotonic.
    pub lifetime: Snapshot,
    /// Its changes of state and time in each state: monotonic.
    pub history: History,
    /// What it was built with.
    pub settings: Settings,
}

impl BreakerReport {
    fn of(breaker: &CircuitBreaker) -> BreakerReport {
        BreakerReport {
            name: breaker.name().to_owned(),
            policy: None,
            state: breaker.state(),
            window: breaker.snapshot(),
            lifetime: breaker.lifetime(),
            history: breaker.history(),
            settings: breaker.settings(),
        }
    }
}

/// A registry of per-key breakers: its busiest keys one by one, the rest
/// summed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegistryReport {
    /// The registry's name (its breakers' template's name).
    pub name: String,
    /// The policy it belongs to, if any.
    pub policy: Option<String>,
    /// Keys held now.
    pub keys: u64,
    /// Keys whose breaker refuses calls now (open or forced open).
    pub open_keys: u64,
    /// The keys with the most lifetime calls, busiest first.
    pub top: Vec<BreakerReport>,
    /// The window counts of every other key, summed.
    pub others_window: Counts,
    /// The lifetime counts of every other key held now, summed (keys
    /// evicted or removed take theirs with them).
    pub others_lifetime: Counts,
}

/// One bulkhead's figures.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BulkheadReport {
    /// The bulkhead's name.
    pub name: String,
    /// The policy it belongs to, if any.
    pub policy: Option<String>,
    /// Its figures.
    pub figures: BulkheadFigures,
}

/// One retry rule's figures.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetryReport {
    /// The rule's name.
    pub name: String,
    /// The policy it belongs to, if any.
    pub policy: Option<String>,
    /// Its figures.
    pub figures: RetryFigures,
    /// Its budget's figures, if it has one.
    pub budget: Option<BudgetFigures>,
}

/// One hedging rule's figures.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HedgeReport {
    /// The rule's name.
    pub name: String,
    /// Its figures.
    pub figures: HedgeFigures,
    /// Its budget's figures, if it has one.
    pub budget: Option<BudgetFigures>,
}

/// One blocking pool's figures.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PoolReport {
    /// The pool's name.
    pub name: String,
    /// Its figures.
    pub figures: PoolFigures,
}

/// One fallback cache's figures.
#[cfg(feature = "cache")]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheReport {
    /// The cache's name.
    pub name: String,
    /// Its figures.
    pub figures: crate::fallback::CacheFigures,
}

#[cfg(feature = "cache")]
impl<K, Res> Catalogued for crate::fallback::FallbackCache<K, Res>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    Res: Clone + Send + Sync + 'static,
{
    fn report_into(&self, report: &mut Report, _: usize) {
        report.caches.push(CacheReport {
            name: self.name().to_owned(),
            figures: self.figures(),
        });
    }
}

impl Catalogued for CircuitBreaker {
    fn report_into(&self, report: &mut Report, _: usize) {
        report.breakers.push(BreakerReport::of(self));
    }
}

impl<M: Mode> Catalogued for Bulkhead<M> {
    fn report_into(&self, report: &mut Report, _: usize) {
        report.bulkheads.push(BulkheadReport {
            name: self.name().to_owned(),
            policy: None,
            figures: self.figures(),
        });
    }
}

impl<P: Send + Sync + 'static> Catalogued for Retry<P> {
    fn report_into(&self, report: &mut Report, _: usize) {
        report.retries.push(RetryReport {
            name: self.name().to_owned(),
            policy: None,
            figures: self.figures(),
            budget: self.budget().map(RetryBudget::figures),
        });
    }
}

impl Catalogued for Hedge {
    fn report_into(&self, report: &mut Report, _: usize) {
        report.hedges.push(HedgeReport {
            name: self.name().to_owned(),
            figures: self.figures(),
            budget: self.budget().map(RetryBudget::figures),
        });
    }
}

impl Catalogued for BlockingPool {
    fn report_into(&self, report: &mut Report, _: usize) {
        report.pools.push(PoolReport {
            name: self.name().to_owned(),
            figures: self.figures(),
        });
    }
}

#[cfg(feature = "registry")]
mod keyed {
    use std::fmt::Debug;
    use std::hash::Hash;

    use super::*;
    use crate::circuit_breaker::{Keyed, Registry};

    impl<K> Catalogued for Registry<K>
    where
        K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
    {
        fn report_into(&self, report: &mut Report, top_keys: usize) {
            // The busiest keys by lifetime calls, kept sorted, busiest
            // first, with the counts read for them; every other key's counts
            // go into the sums. Counts only: a key's latencies are read if it
            // is named, once, at the end.
            let mut top: Vec<(u64, CircuitBreaker, Counts, Counts)> = Vec::new();
            let mut window = Counts::default();
            let mut lifetime = Counts::default();
            let (mut keys, mut open_keys) = (0, 0);
            self.for_each_breaker(|breaker| {
                keys += 1;
                open_keys += u64::from(breaker.state().refuses_calls());
                let counts = breaker.lifetime_counts();
                let entry = (counts.calls(), breaker.clone(), counts, breaker.counts());
                let busier =
                    top.len() < top_keys || top.last().is_some_and(|last| entry.0 > last.0);
                let left_out = if busier {
                    let at = top.partition_point(|named| named.0 >= entry.0);
                    top.insert(at, entry);
                    (top.len() > top_keys).then(|| top.pop()).flatten()
                } else {
                    Some(entry)
                };
                if let Some((_, _, key_lifetime, key_window)) = left_out {
                    lifetime += key_lifetime;
                    window += key_window;
                }
            });
            let top = top
                .iter()
                .map(|(_, breaker, ..)| BreakerReport::of(breaker))
                .collect();
            report.registries.push(RegistryReport {
                name: self.name().to_owned(),
                policy: None,
                keys,
                open_keys,
                top,
                others_window: window,
                others_lifetime: lifetime,
            });
        }
    }

    impl<K, F> Catalogued for Keyed<K, F>
    where
        K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
        F: Send + Sync + 'static,
    {
        fn report_into(&self, report: &mut Report, top_keys: usize) {
            self.registry().report_into(report, top_keys);
        }
    }
}
