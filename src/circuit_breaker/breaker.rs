//! The shared state machine behind every clone of a breaker.
//!
//! The state lives in one atomic word: the state's code, the half-open probe
//! counters and a generation that every change of state increments. Admitting
//! a call in the closed state is one load of that word; so is checking, when
//! the call ends, that its outcome still belongs to the state that admitted
//! it (a call admitted before the breaker last changed its mind is not
//! counted). Changes of state are rare and take a mutex, so two threads that
//! both see a reason to trip make one transition between them.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU64;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use once_cell::race::OnceBox;
use smol_str::SmolStr;
use tokio::sync::broadcast;

use super::config::{CircuitBreakerBuilder, Config, DroppedCall};
use super::CallEvent;
use super::{CircuitBreakerLayer, CircuitOpen, History, Reason, State, Transition};
use crate::classify::Verdict;
use crate::stripe::{Local, Striped};
use crate::sync::{lock, model_point, AtomicU32, AtomicU64, Mutex};
use crate::window::{Counts, Outcome, RollingWindow, Snapshot};

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;

const CODE_MASK: u64 = 0b111;
const FIELD_MASK: u64 = 0x3ff;
const PROBES_SHIFT: u32 = 3;
const SUCCESSES_SHIFT: u32 = 13;
const FAILURES_SHIFT: u32 = 23;
const GEN_SHIFT: u32 = 33;

fn code(word: u64) -> u64 {
    word & CODE_MASK
}

fn generation(word: u64) -> u64 {
    word >> GEN_SHIFT
}

fn field(word: u64, shift: u32) -> u64 {
    (word >> shift) & FIELD_MASK
}

fn state_of(word: u64) -> State {
    match code(word) {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        _ => State::ForcedClosed,
    }
}

fn code_of(state: State) -> u64 {
    match state {
        State::Closed => CLOSED,
        State::Open => OPEN,
        State::HalfOpen => HALF_OPEN,
        State::ForcedOpen => FORCED_OPEN,
        State::ForcedClosed => FORCED_CLOSED,
    }
}

/// A circuit breaker: a cheap handle (one `Arc`) to state shared by every
/// clone, every service it guards and every `Layer::layer` call of its layer.
///
/// It guards a tower service through [`layer`](CircuitBreaker::layer), or any
/// code through [`try_acquire`](CircuitBreaker::try_acquire). It reads its
/// state and statistics, and an operator can force it open or closed, or
/// reset it, at runtime.
///
/// ```
/// use seawall::circuit_breaker::{CircuitBreaker, State};
/// use seawall::classify::Verdict;
///
/// let breaker = CircuitBreaker::builder().name("inventory").build()?;
///
/// // Guarding any code, not only a tower service:
/// match breaker.try_acquire() {
///     Ok(permit) => {
///         let ok = true; // ... call the dependency ...
///         permit.record(if ok { Verdict::Success } else { Verdict::Failure });
///     }
///     Err(open) => println!("not calling: {open}"),
/// }
/// assert_eq!(breaker.state(), State::Closed);
/// assert_eq!(breaker.counts().success, 1);
///
/// breaker.force_open();
/// assert!(breaker.try_acquire().is_err());
/// breaker.reset();
/// assert_eq!(breaker.state(), State::Closed);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    /// Striped, so that calls on two cores keep the state alive through
    /// different counts (a registry's breakers are not: see
    /// [`from_config`](CircuitBreaker::from_config)).
    shared: Striped<Shared>,
}

/// A registry's breaker as its table keeps it: the shared state's `Arc`
/// alone, 8 bytes where a handle is 16 (a registry's breakers have no
/// lanes), in every slot of a table of a million keys.
#[cfg(feature = "registry")]
pub(crate) struct KeptBreaker(Arc<Shared>);

#[cfg(feature = "registry")]
impl KeptBreaker {
    /// A handle on the kept breaker.
    #[inline]
    pub(crate) fn handle(&self) -> CircuitBreaker {
        CircuitBreaker {
            shared: Striped::from_unstriped(Arc::clone(&self.0)),
        }
    }
}

/// Not padded: the state word is written only by changes of state, and a
/// standalone breaker's tally, which every call writes, has cache lines of
/// its own, its window's stripes. Padding cost a registry of a million
/// breakers a quarter of a gigabyte.
struct Shared {
    state: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Whether calls are timed: for the slow-call rule or for percentiles.
    measure_latency: bool,
    /// When the open state ends, in the window clock's nanoseconds. Written
    /// before the state word turns open, read after it is seen open.
    open_until: AtomicU64,
    window: RollingWindow,
    /// Inline up to 23 bytes: a registry's breakers are named after their
    /// keys, and a name of its own on the heap cost each 48 bytes.
    name: SmolStr,
    config: Arc<Config>,
    /// When the breaker was made (window clock nanoseconds): when it
    /// entered its first state.
    made: u64,
    /// Made by the first change of state, subscriber or refusal: most
    /// breakers of a big registry see none, and it is a third of a
    /// kilobyte, most of it the history. A `OnceBox` is one word, where
    /// std's `OnceLock` of a box is two.
    cold: OnceBox<Cold>,
}

/// What only changes of state, subscribers and refusals touch.
struct Cold {
    transitions: Mutex<Trips>,
    /// Made by the first subscriber: a channel's buffer is kilobytes.
    events: OnceLock<broadcast::Sender<Transition>>,
    /// When refusals were last logged (window clock nanoseconds; `NEVER`
    /// before the first), and the lifetime refusal count then: refusals
    /// are logged once per `REFUSALS_LOGGED_EVERY` as a burst, not one line
    /// each.
    refusals_logged_at: AtomicU64,
    refusals_at_log: AtomicU64,
}

impl Cold {
    /// The cold state of a breaker that entered its state at `entered`.
    fn new(entered: u64) -> Cold {
        Cold {
            transitions: Mutex::new(Trips {
                in_a_row: 0,
                rng: RandomState::new().build_hasher().finish(),
                entered,
                history: History::default(),
            }),
            events: OnceLock::new(),
            refusals_logged_at: AtomicU64::new(NEVER),
            refusals_at_log: AtomicU64::new(0),
        }
    }
}

const NEVER: u64 = u64::MAX;
const REFUSALS_LOGGED_EVERY: u64 = 1_000_000_000;

/// What only changes of state touch.
struct Trips {
    /// Trips in a row without closing, for exponential open durations.
    in_a_row: u32,
    rng: u64,
    /// When the current state was entered, in the window clock's nanoseconds.
    entered: u64,
    /// The changes of state so far, and the time spent in each state
    /// before the current one.
    history: History,
}

impl Trips {
    /// Uniform in `0..1` (splitmix64): jitter needs spread, not security.
    fn next_random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Subscribers that fall further behind than this miss the oldest events
/// (and are told so by the receiver).
const EVENT_CAPACITY: usize = 64;

impl CircuitBreaker {
    /// A builder with Hystrix's defaults.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    /// The most heap an unstriped breaker of `config` (a registry's) takes
    /// once it has seen calls and changed state, beside its name and its
    /// `Arc` (inline in the registry's table): its shared state, its
    /// window's storage (up to three allocations) and its cold state, each
    /// with the allocator's bookkeeping (a header, and the state's
    /// alignment's worth of padding). A subscriber's channel is not
    /// counted: kilobytes, made only by `subscribe`.
    #[cfg(feature = "registry")]
    pub(crate) fn heap_bytes(config: &Config) -> usize {
        use std::mem::size_of;
        const HEADER: usize = 16;
        let align = std::mem::align_of::<Shared>();
        let shared =
            (2 * size_of::<usize>() + size_of::<Shared>()).next_multiple_of(align) + align + HEADER;
        let window = RollingWindow::storage_bytes(config.window, config.track_latency) + 3 * HEADER;
        let cold = size_of::<Cold>() + HEADER;
        shared + window + cold
    }

    /// A registry's breaker named `name`, on the registry's settings, as
    /// the registry keeps it.
    #[cfg(feature = "registry")]
    pub(crate) fn kept(config: Arc<Config>, name: SmolStr) -> KeptBreaker {
        KeptBreaker(Arc::clone(
            Self::from_config(config, name, false).shared.arc(),
        ))
    }

    /// A breaker named `name`, on settings that breakers of one registry
    /// share rather than copy. `striped` for one that may be called from
    /// several cores at once; a registry's breakers are not (a key is
    /// rarely that hot, and a registry keeps thousands: see
    /// [`Striped::unstriped`]).
    pub(crate) fn from_config(config: Arc<Config>, name: SmolStr, striped: bool) -> CircuitBreaker {
        let clock = config.clock.unwrap_or_default();
        let measure_latency =
            config.slow_call.is_some() || config.track_latency || config.listener.is_some();
        let window = RollingWindow::validated(config.window, clock, config.track_latency, striped);
        let made = window.clock().now();
        let shared = Shared {
            state: AtomicU64::new(code_of(config.resting)),
            consecutive_failures: AtomicU32::new(0),
            measure_latency,
            open_until: AtomicU64::new(0),
            window,
            name,
            config,
            made,
            cold: OnceBox::new(),
        };
        // loom cannot see the synchronization of `OnceBox`'s std atomics:
        // under its models the cold state is made at once.
        #[cfg(seawall_loom)]
        shared.cold();
        CircuitBreaker {
            shared: if striped {
                Striped::new(shared)
            } else {
                Striped::unstriped(shared)
            },
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What the breaker was built with.
    pub fn settings(&self) -> super::Settings {
        self.shared.config.settings()
    }

    /// The current state.
    ///
    /// An open breaker whose open duration has elapsed reports `Open` until
    /// the next call asks to go through, which moves it to half-open.
    pub fn state(&self) -> State {
        state_of(self.shared.state.load(Acquire))
    }

    /// The outcome counts over the window, O(buckets).
    pub fn counts(&self) -> Counts {
        self.shared.window.counts()
    }

    /// Counts and, with [`track_latency`](CircuitBreakerBuilder::track_latency), latency
    /// percentiles over the window.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.window.snapshot()
    }

    /// Every call since the breaker was made, by outcome (and latency, when
    /// tracked): never reset, not by closing nor by [`reset`](Self::reset),
    /// and counting the calls whose verdict came after the breaker changed
    /// state (which the window leaves out). For monotonic counters.
    pub fn lifetime(&self) -> Snapshot {
        self.shared.window.lifetime()
    }

    /// How often the breaker changed state, from which to which, and how
    /// long it has spent in each state: never reset. Takes the lock that
    /// changes of state take (calls never take it).
    ///
    /// ```
    /// use seawall::circuit_breaker::{CircuitBreaker, State};
    ///
    /// let breaker = CircuitBreaker::builder().build()?;
    /// breaker.force_open();
    /// breaker.reset();
    /// let history = breaker.history();
    /// assert_eq!(history.transitions(State::Closed, State::ForcedOpen), 1);
    /// assert_eq!(history.transitions(State::ForcedOpen, State::Closed), 1);
    /// assert_eq!(history.total_transitions(), 2);
    /// # Ok::<(), seawall::ConfigError>(())
    /// ```
    pub fn history(&self) -> History {
        let shared = &*self.shared;
        let now = shared.window.clock().now();
        // A breaker that never changed state has no cold state to make.
        let Some(cold) = shared.cold.get() else {
            let mut history = History::default();
            history.add_time(self.state(), now.saturating_sub(shared.made));
            return history;
        };
        let trips = lock(&cold.transitions);
        let mut history = trips.history.clone();
        history.add_time(self.state(), now.saturating_sub(trips.entered));
        history
    }

    /// The counts of [`lifetime`](Self::lifetime), without latencies: read
    /// without allocating, so an exporter may call it per scrape.
    pub fn lifetime_counts(&self) -> Counts {
        self.shared.window.lifetime_counts()
    }

    /// Counts an outcome that is not a call's own (a fallback's, a cache's)
    /// in the window.
    pub(crate) fn record_outcome(&self, outcome: Outcome) {
        self.shared.window.record_nanos(outcome, None, false);
        self.shared.tell(outcome, None, false, false);
    }

    /// Asks to make one call. `Ok` carries a [`Permit`]: make the call, then
    /// [`record`](Permit::record) its verdict (dropping it unrecorded counts
    /// as configured by [`dropped_calls`](CircuitBreakerBuilder::dropped_calls)). `Err`
    /// says the breaker refused; do not call.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        self.admit().map(|ticket| self.permit(ticket))
    }

    /// Admits a call, or refuses it: a permit without a handle, for a
    /// future that holds the breaker already.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Ticket, CircuitOpen> {
        let word = self.shared.state.load(Acquire);
        if matches!(code(word), CLOSED | FORCED_CLOSED) {
            return Ok(self.ticket(word, false));
        }
        self.admit_unless_closed(word)
    }

    /// [`admit`](Self::admit) for a breaker that was not closed at the
    /// first look. Out of line: the healthy call's code stays a load and
    /// a test.
    #[inline(never)]
    fn admit_unless_closed(&self, word: u64) -> Result<Ticket, CircuitOpen> {
        if let Some((state, retry_after, now)) = self.refusing(word) {
            return Err(self.shared.short_circuit(state, retry_after, now));
        }
        self.admit_otherwise(word)
    }

    /// Whether an open or forced-open breaker refuses: as what, for how
    /// long, and when it looked. Not if the breaker is neither, or its
    /// open time is up. The refusal itself is built where it is returned:
    /// built here and moved, it cost a refusal a dozen instructions.
    #[inline(always)]
    fn refusing(&self, word: u64) -> Option<(State, Option<u64>, u64)> {
        let shared = &*self.shared;
        match code(word) {
            OPEN => {
                let now = shared.window.clock().now();
                let until = shared.open_until.load(Acquire);
                (now < until).then(|| (State::Open, Some(until - now), now))
            }
            FORCED_OPEN => Some((State::ForcedOpen, None, shared.window.clock().now())),
            _ => None,
        }
    }

    /// Every admission but a closed breaker's and a refusal's: a probe's,
    /// and an open breaker's whose time is up. Kept out of the refusals'
    /// function, which then saves fewer registers (about a dozen
    /// instructions a refusal).
    #[inline(never)]
    fn admit_otherwise(&self, mut word: u64) -> Result<Ticket, CircuitOpen> {
        let shared = &*self.shared;
        loop {
            match code(word) {
                CLOSED | FORCED_CLOSED => return Ok(self.ticket(word, false)),
                HALF_OPEN => {
                    if field(word, PROBES_SHIFT) >= u64::from(shared.config.half_open_probes) {
                        let now = shared.window.clock().now();
                        return Err(shared.short_circuit(State::HalfOpen, None, now));
                    }
                    let taken = word + (1 << PROBES_SHIFT);
                    model_point();
                    match shared
                        .state
                        .compare_exchange_weak(word, taken, AcqRel, Acquire)
                    {
                        Ok(_) => return Ok(self.ticket(word, true)),
                        Err(actual) => word = actual,
                    }
                }
                _ => {
                    if let Some((state, retry_after, now)) = self.refusing(word) {
                        return Err(shared.short_circuit(state, retry_after, now));
                    }
                    shared.transition(
                        Some(generation(word)),
                        State::HalfOpen,
                        Reason::OpenDurationElapsed,
                    );
                    word = shared.state.load(Acquire);
                }
            }
        }
    }

    #[inline]
    fn ticket(&self, word: u64, probe: bool) -> Ticket {
        let started = if self.shared.measure_latency {
            self.shared.window.clock().start()
        } else {
            0
        };
        Ticket::new(generation(word), probe, started)
    }

    /// Records how an admitted call went.
    #[inline]
    pub(crate) fn settle(&self, ticket: Ticket, verdict: Verdict) {
        self.shared.settle(ticket, verdict);
    }

    /// An admitted call was dropped before its verdict.
    pub(crate) fn abandon(&self, ticket: Ticket) {
        self.shared.abandon(ticket);
    }

    /// A permit for a call `ticket` admitted, which owns the breaker's
    /// state through this thread's stripe.
    #[inline]
    pub(crate) fn permit(&self, ticket: Ticket) -> Permit {
        Permit::new(self.shared.local(), ticket)
    }

    /// A permit that owns the breaker's state through this handle.
    #[cfg(feature = "registry")]
    pub(crate) fn into_permit(self, ticket: Ticket) -> Permit {
        Permit::new(self.shared.into(), ticket)
    }

    /// Refuses every call until [`force_closed`](Self::force_closed) or
    /// [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.shared
            .transition(None, State::ForcedOpen, Reason::ForcedOpen);
    }

    /// Lets every call through and never trips (statistics are still kept)
    /// until [`force_open`](Self::force_open) or [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.shared
            .transition(None, State::ForcedClosed, Reason::ForcedClosed);
    }

    /// Back to closed with an empty window, from any state. (A breaker that
    /// only keeps statistics, as in a [`Policy`](crate::policy::Policy)
    /// without one, goes back to forced closed.)
    pub fn reset(&self) {
        let resting = self.shared.config.resting;
        self.shared.transition(None, resting, Reason::Reset);
    }

    /// Every change of state from now on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use seawall::circuit_breaker::{CircuitBreaker, Reason, State};
    ///
    /// let breaker = CircuitBreaker::builder().build().unwrap();
    /// let mut transitions = breaker.subscribe();
    /// breaker.force_open();
    /// let transition = transitions.recv().await.unwrap();
    /// assert_eq!((transition.from, transition.to), (State::Closed, State::ForcedOpen));
    /// assert_eq!(transition.reason, Reason::ForcedOpen);
    /// # }
    /// ```
    pub fn subscribe(&self) -> Transitions {
        Transitions {
            receiver: self
                .shared
                .cold()
                .events
                .get_or_init(|| broadcast::channel(EVENT_CAPACITY).0)
                .subscribe(),
            missed: 0,
        }
    }

    /// A layer that guards services with this breaker.
    pub fn layer(&self) -> CircuitBreakerLayer {
        CircuitBreakerLayer::new(self.clone())
    }

    /// Whether two handles share one breaker.
    pub fn same_as(&self, other: &CircuitBreaker) -> bool {
        self.shared.ptr_eq(&other.shared)
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The cold state, made by the first that needs it.
    #[inline]
    fn cold(&self) -> &Cold {
        self.cold.get_or_init(|| Box::new(Cold::new(self.made)))
    }

    /// Books an admitted call's verdict, through the function made for
    /// whether this breaker times its calls. Chosen here, in the caller,
    /// so that each verdict makes one call.
    #[inline(always)]
    fn settle(&self, ticket: Ticket, verdict: Verdict) {
        if self.measure_latency {
            self.settle_as::<true>(ticket, verdict);
        } else {
            self.settle_as::<false>(ticket, verdict);
        }
    }

    /// Most verdicts: a success in the closed state that admitted it, not
    /// slow. This does for it what [`on_result`](Self::on_result) would
    /// (the success counted, told if timed, the failures in a row reset)
    /// and leaves every other verdict to [`book`](Self::book): apart from
    /// the rest of the booking, the common case keeps half the registers
    /// and makes no call when untimed, a fifth of a closed breaker's
    /// instructions and two fifths of a count window's (BENCHMARKS.md,
    /// Round 16).
    #[inline(never)]
    fn settle_as<const TIMED: bool>(&self, ticket: Ticket, verdict: Verdict) {
        let latency = TIMED.then(|| self.window.clock().nanos_since(ticket.started));
        // A probe's ticket is of a half-open generation, never of a closed
        // one: the generation's test leaves every probe to `book`.
        if matches!(verdict, Verdict::Success) && !self.is_slow(latency) {
            let word = self.state.load(Acquire);
            let code = code(word);
            if (code == CLOSED || code == FORCED_CLOSED) && generation(word) == ticket.generation()
            {
                // Before the count, where `judge_closed` resets after it:
                // two relaxed writes whose order no other thread can rely
                // on, and the count's rare paths are then the last call.
                if code == CLOSED && self.config.consecutive_failures.is_some() {
                    self.end_failures_in_a_row();
                }
                self.window.record_nanos(Outcome::Success, latency, false);
                if TIMED {
                    self.tell(Outcome::Success, latency, false, false);
                }
                return;
            }
        }
        self.book(ticket, verdict, latency);
    }

    /// Books any verdict (see [`on_result`](Self::on_result)).
    #[inline(never)]
    fn book(&self, ticket: Ticket, verdict: Verdict, latency: Option<u64>) {
        self.on_result(ticket, Some(verdict.outcome()), latency);
    }

    fn abandon(&self, ticket: Ticket) {
        let outcome = match self.config.dropped_call {
            DroppedCall::Ignore => None,
            DroppedCall::CountAsFailure => Some(Outcome::Failure),
        };
        let latency = self
            .measure_latency
            .then(|| self.window.clock().nanos_since(ticket.started));
        self.on_result(ticket, outcome, latency);
    }

    /// Records a refused call and builds its error. Always inlined (into
    /// the refusals' own function and the probes' loop): called, its
    /// prologue and the arguments' moves were a sixth of a refusal.
    #[inline(always)]
    fn short_circuit(&self, state: State, retry_after: Option<u64>, now: u64) -> CircuitOpen {
        self.window
            .record_nanos_at(now, Outcome::ShortCircuited, None, false);
        self.tell(Outcome::ShortCircuited, None, false, false);
        let cold = self.cold();
        let logged_at = cold.refusals_logged_at.load(Relaxed);
        if logged_at == NEVER || now.saturating_sub(logged_at) >= REFUSALS_LOGGED_EVERY {
            self.log_refusals(cold, logged_at, now, state);
        }
        CircuitOpen::new(state, retry_after)
    }

    /// One line for the refusals since the last: the first refusal of a
    /// burst logs at once, the rest at most once a second.
    #[cold]
    #[inline(never)]
    fn log_refusals(&self, cold: &Cold, logged_at: u64, now: u64, state: State) {
        if cold
            .refusals_logged_at
            .compare_exchange(logged_at, now, Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        let total = self.window.lifetime_counts().short_circuited;
        let refused = total.saturating_sub(cold.refusals_at_log.swap(total, Relaxed));
        let since =
            (logged_at != NEVER).then(|| Duration::from_nanos(now.saturating_sub(logged_at)));
        tracing::warn!(
            target: "seawall::circuit_breaker",
            breaker = %self.name,
            %state,
            refused,
            since = ?since,
            "circuit breaker refusing calls"
        );
    }

    /// Tells the listener, if there is one.
    #[inline]
    fn tell(&self, outcome: Outcome, latency: Option<u64>, slow: bool, late: bool) {
        if let Some(listener) = &self.config.listener {
            listener.0.on_call(&CallEvent {
                part: &self.name,
                outcome,
                latency: latency.map(Duration::from_nanos),
                slow,
                late,
            });
        }
    }

    /// Books a call's verdict (`None`: dropped unjudged, and not counted).
    /// Always inlined (into `book` and `abandon`): left to LLVM it stayed
    /// out of line, and its prologue cost the healthy call more than what
    /// it saves in code.
    #[inline(always)]
    fn on_result(&self, ticket: Ticket, outcome: Option<Outcome>, latency: Option<u64>) {
        let (generation_admitted, probe) = (ticket.generation(), ticket.probe());
        let Some(outcome) = outcome else {
            if probe {
                self.release_probe(generation_admitted);
            }
            return;
        };
        let slow = self.is_slow(latency);
        let word = self.state.load(Acquire);
        if generation(word) != generation_admitted {
            return self.book_late(outcome, latency, slow);
        }
        self.window.record_nanos(outcome, latency, slow);
        // A listener makes every call timed: an untimed call has none to
        // tell, and does not look.
        if latency.is_some() {
            self.tell(outcome, latency, slow, false);
        }
        if !outcome.is_judged() {
            if probe {
                self.release_probe(generation_admitted);
            }
            return;
        }
        match code(word) {
            CLOSED => self.judge_closed(generation_admitted, outcome.is_error(), slow),
            HALF_OPEN if probe => self.judge_probe(generation_admitted, outcome.is_error() || slow),
            _ => {}
        }
    }

    /// Whether a call that took `latency` was slow, by the slow-call rule.
    #[inline(always)]
    fn is_slow(&self, latency: Option<u64>) -> bool {
        latency.is_some_and(|nanos| {
            self.config
                .slow_call
                .is_some_and(|slow_call| nanos > slow_call.nanos)
        })
    }

    /// Books the verdict of a call admitted before the breaker last changed
    /// its mind: it is about a state gone by. Out of line, like every path
    /// but a closed breaker's verdict, so that the healthy call's code
    /// stays small.
    #[cold]
    #[inline(never)]
    fn book_late(&self, outcome: Outcome, latency: Option<u64>, slow: bool) {
        self.window.record_lifetime_only(outcome, latency, slow);
        self.tell(outcome, latency, slow, true);
    }

    #[inline]
    fn judge_closed(&self, generation: u64, error: bool, slow: bool) {
        if let Some(limit) = self.config.consecutive_failures {
            let in_a_row = &self.consecutive_failures;
            if error {
                if in_a_row.fetch_add(1, Relaxed).saturating_add(1) >= limit {
                    self.transition(Some(generation), State::Open, Reason::ConsecutiveFailures);
                    return;
                }
            } else {
                self.end_failures_in_a_row();
            }
        }
        if error || slow {
            if let Some(reason) = self.rate_exceeded() {
                self.transition(Some(generation), State::Open, reason);
            }
        }
    }

    /// A call that did not fail ends the run of failures in a row.
    #[inline(always)]
    fn end_failures_in_a_row(&self) {
        // Loaded first: healthy calls must not all write one line.
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Whether the window's percentages say trip, and which.
    #[inline(never)]
    fn rate_exceeded(&self) -> Option<Reason> {
        let counts = self.window.counts();
        if counts.calls() < self.config.minimum_calls {
            return None;
        }
        let over = |threshold: Option<f64>, percent: Option<f64>| matches!((threshold, percent), (Some(t), Some(p)) if p >= t);
        if over(self.config.error_threshold, counts.error_percentage()) {
            return Some(Reason::ErrorRate);
        }
        let slow_threshold = self.config.slow_call.map(|s| s.threshold);
        over(slow_threshold, counts.slow_percentage()).then_some(Reason::SlowCallRate)
    }

    #[cold]
    #[inline(never)]
    fn judge_probe(&self, generation_admitted: u64, failed: bool) {
        let step = 1
            << if failed {
                FAILURES_SHIFT
            } else {
                SUCCESSES_SHIFT
            };
        let mut word = self.state.load(Acquire);
        let word = loop {
            if generation(word) != generation_admitted || code(word) != HALF_OPEN {
                return;
            }
            match self
                .state
                .compare_exchange_weak(word, word + step, AcqRel, Acquire)
            {
                Ok(_) => break word + step,
                Err(actual) => word = actual,
            }
        };
        let probes = u64::from(self.config.half_open_probes);
        let (successes, failures) = (field(word, SUCCESSES_SHIFT), field(word, FAILURES_SHIFT));
        let too_many_failed = failed
            && match self.config.error_threshold {
                Some(threshold) => failures as f64 * 100.0 >= threshold * probes as f64,
                None => true,
            };
        if too_many_failed {
            self.transition(Some(generation_admitted), State::Open, Reason::ProbesFailed);
        } else if successes + failures >= probes {
            self.transition(
                Some(generation_admitted),
                State::Closed,
                Reason::ProbesSucceeded,
            );
        }
    }

    /// Gives back the probe slot of a probe that reached no verdict.
    #[cold]
    #[inline(never)]
    fn release_probe(&self, generation_admitted: u64) {
        let mut word = self.state.load(Acquire);
        loop {
            if generation(word) != generation_admitted
                || code(word) != HALF_OPEN
                || field(word, PROBES_SHIFT) == 0
            {
                return;
            }
            let released = word - (1 << PROBES_SHIFT);
            match self
                .state
                .compare_exchange_weak(word, released, AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Moves to `to`, if the state is still of generation `expected` (or
    /// whatever it is, for `None`). Returns whether it moved.
    #[cold]
    fn transition(&self, expected: Option<u64>, to: State, reason: Reason) -> bool {
        let cold = self.cold();
        let mut trips = lock(&cold.transitions);
        let word = self.state.load(Acquire);
        if expected.is_some_and(|expected| expected != generation(word)) {
            return false;
        }
        let from = state_of(word);
        let counts = self.window.counts();
        let now = self.window.clock().now();
        let stayed = now.saturating_sub(trips.entered);
        trips.history.add_time(from, stayed);
        trips.history.count(from, to);
        trips.entered = now;
        if to == State::Open {
            trips.in_a_row = trips.in_a_row.saturating_add(1);
            let random = trips.next_random();
            let duration = self.config.open_duration.for_trip(trips.in_a_row, random);
            let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
            self.open_until.store(now.saturating_add(nanos), Release);
        }
        if to == State::Closed || reason == Reason::Reset {
            trips.in_a_row = 0;
            self.window.reset();
            self.consecutive_failures.store(0, Relaxed);
        }
        let next = ((generation(word) + 1) << GEN_SHIFT) | code_of(to);
        self.state.store(next, Release);
        let transition = Transition {
            name: self.name.clone().into(),
            from,
            to,
            reason,
            counts,
        };
        self.announce(cold, transition);
        true
    }

    fn announce(&self, cold: &Cold, transition: Transition) {
        let Transition {
            name,
            from,
            to,
            reason,
            counts,
        } = &transition;
        let (calls, errors) = (counts.calls(), counts.errors());
        if matches!(to, State::Open | State::ForcedOpen) {
            tracing::warn!(target: "seawall::circuit_breaker", breaker = %name, %from, %to, %reason, calls, errors, "circuit breaker opened");
        } else {
            tracing::info!(target: "seawall::circuit_breaker", breaker = %name, %from, %to, %reason, calls, errors, "circuit breaker changed state");
        }
        if let Some(events) = cold.events.get() {
            // No subscriber left is fine.
            let _ = events.send(transition);
        }
    }
}

/// Leave to make one call through a [`CircuitBreaker`]: report how it went
/// with [`record`](Permit::record).
///
/// Dropping a permit unrecorded (a cancelled call) gives back the probe slot
/// it may hold, and counts as [`dropped_calls`](CircuitBreakerBuilder::dropped_calls) says.
#[must_use = "a permit records nothing unless its verdict is recorded"]
pub struct Permit {
    breaker: Local<Shared>,
    ticket: Ticket,
    settled: bool,
}

/// The changes of state of a breaker, from [`CircuitBreaker::subscribe`].
///
/// A subscriber that falls more than 64 changes behind misses the oldest:
/// [`missed`](Self::missed) counts them.
#[derive(Debug)]
pub struct Transitions {
    receiver: broadcast::Receiver<Transition>,
    missed: u64,
}

impl Transitions {
    /// The next change of state; `None` once the breaker is gone.
    pub async fn recv(&mut self) -> Option<Transition> {
        loop {
            match self.receiver.recv().await {
                Ok(transition) => return Some(transition),
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next change of state if one came already.
    pub fn try_recv(&mut self) -> Option<Transition> {
        loop {
            match self.receiver.try_recv() {
                Ok(transition) => return Some(transition),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.missed += n,
                Err(_) => return None,
            }
        }
    }

    /// How many changes this subscriber missed by falling behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// Leave to make one call, as a breaker's [`admit`](super::BreakerFor::admit)
/// gives it: settled by the breaker that admitted it (the layer's future
/// and the [`Policy`](crate::policy::Policy) do that).
#[derive(Clone, Copy)]
pub struct Ticket {
    /// The breaker's generation when it admitted the call, shifted left by
    /// two, with bit 1 set for a half-open probe and bit 0 always set, so
    /// that an `Option<Ticket>` needs no word of its own. Two words stay in
    /// registers until stored in the future; three fields were stored
    /// apart and read back as one wide load, which the CPU cannot forward
    /// from pending stores: a stall on every call.
    admitted: NonZeroU64,
    /// When the call started, by [`Clock::start`](crate::Clock), if calls
    /// are timed.
    started: u64,
}

impl Ticket {
    fn new(generation: u64, probe: bool, started: u64) -> Ticket {
        Ticket {
            admitted: NonZeroU64::MIN | (generation << 2 | u64::from(probe) << 1),
            started,
        }
    }

    fn generation(&self) -> u64 {
        self.admitted.get() >> 2
    }

    fn probe(&self) -> bool {
        self.admitted.get() & 2 != 0
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("generation", &self.generation())
            .field("probe", &self.probe())
            .finish_non_exhaustive()
    }
}

impl Permit {
    fn new(breaker: Local<Shared>, ticket: Ticket) -> Permit {
        Permit {
            breaker,
            ticket,
            settled: false,
        }
    }

    /// Records how the call went.
    #[inline]
    pub fn record(mut self, verdict: Verdict) {
        self.settle(verdict);
    }

    /// Records how the call went, once: later verdicts are ignored.
    #[inline]
    pub(crate) fn settle(&mut self, verdict: Verdict) {
        if !std::mem::replace(&mut self.settled, true) {
            self.breaker.settle(self.ticket, verdict);
        }
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe()
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.abandon(self.ticket);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &&*self.breaker.name)
            .field("probe", &self.ticket.probe())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_round_trip() {
        for state in [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::ForcedOpen,
            State::ForcedClosed,
        ] {
            assert_eq!(state_of(code_of(state) | (7 << GEN_SHIFT)), state);
        }
    }

    #[test]
    fn a_ticket_keeps_its_generation_probe_and_start() {
        let newest = u64::MAX >> GEN_SHIFT;
        for generation in [0, 1, 2, newest - 1, newest] {
            for probe in [false, true] {
                let ticket = Ticket::new(generation, probe, 7);
                assert_eq!(
                    (ticket.generation(), ticket.probe(), ticket.started),
                    (generation, probe, 7)
                );
            }
        }
        // A call's future keeps an `Option<Ticket>` (the Policy's): it
        // takes no word beside the ticket's two.
        assert_eq!(std::mem::size_of::<Option<Ticket>>(), 16);
    }

    #[test]
    fn a_refusal_keeps_its_state_and_wait() {
        for state in State::ALL {
            for (nanos, wait) in [
                (None, None),
                (Some(0), Some(Duration::ZERO)),
                (Some(1_500_000_000), Some(Duration::from_millis(1_500))),
                // Beyond what the word holds (73 years): the longest it can say.
                (Some(u64::MAX), Some(Duration::from_nanos((1 << 61) - 2))),
            ] {
                let open = CircuitOpen::new(state, nanos);
                assert_eq!((open.state(), open.retry_after()), (state, wait));
            }
        }
        // An admission's answer is two words, as a ticket is: wider, it
        // went through memory on every refusal.
        assert_eq!(
            std::mem::size_of::<Result<Ticket, CircuitOpen>>(),
            std::mem::size_of::<Ticket>()
        );
    }

    #[test]
    fn probe_fields_do_not_overlap() {
        let word = (5 << GEN_SHIFT)
            | (1000 << FAILURES_SHIFT)
            | (999 << SUCCESSES_SHIFT)
            | (998 << PROBES_SHIFT)
            | HALF_OPEN;
        assert_eq!(
            (
                code(word),
                field(word, PROBES_SHIFT),
                field(word, SUCCESSES_SHIFT),
                field(word, FAILURES_SHIFT),
                generation(word)
            ),
            (HALF_OPEN, 998, 999, 1000, 5)
        );
    }

    #[test]
    fn jitter_is_uniform_enough_and_in_range() {
        let mut trips = Trips {
            in_a_row: 0,
            rng: 1,
            entered: 0,
            history: History::default(),
        };
        let draws: Vec<f64> = (0..10_000).map(|_| trips.next_random()).collect();
        assert!(draws.iter().all(|r| (0.0..1.0).contains(r)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    /// Calls, readings and the history of a breaker that never changed
    /// state make no cold state; its first change of state does, and the
    /// history then counts from when the breaker was made.
    #[tokio::test(start_paused = true)]
    async fn the_cold_state_is_made_by_the_first_change_of_state() {
        // A clock older than the breaker: the history counts from the
        // breaker's making, not from the clock's origin.
        let clock = crate::clock::Clock::tokio();
        tokio::time::advance(Duration::from_secs(5)).await;
        let breaker = CircuitBreaker::builder().clock(clock).build().unwrap();
        breaker.try_acquire().unwrap().record(Verdict::Failure);
        tokio::time::advance(Duration::from_secs(3)).await;
        let _ = (breaker.counts(), breaker.lifetime(), breaker.state());
        let history = breaker.history();
        assert_eq!(history.time_in(State::Closed), Duration::from_secs(3));
        assert!(breaker.shared.cold.get().is_none(), "made by a reading");
        breaker.force_open();
        assert!(breaker.shared.cold.get().is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        let history = breaker.history();
        assert_eq!(history.time_in(State::Closed), Duration::from_secs(3));
        assert_eq!(history.time_in(State::ForcedOpen), Duration::from_secs(2));
        assert_eq!(history.total_transitions(), 1);
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use std::sync::atomic::AtomicU64 as StdAtomicU64;
    use std::time::Duration;

    use loom::thread;

    use super::*;
    use crate::circuit_breaker::OpenDuration;
    use crate::clock::Clock;
    use crate::window::Window;

    const SECOND: u64 = 1_000_000_000;

    /// A breaker on a clock the model sets, tripped by one failure, open
    /// for a second, then `probes` probes.
    fn tripped(probes: u32) -> (CircuitBreaker, &'static StdAtomicU64) {
        let now: &'static StdAtomicU64 = Box::leak(Box::new(StdAtomicU64::new(0)));
        let breaker = CircuitBreaker::builder()
            .window(Window::count(4))
            .minimum_calls(4)
            .consecutive_failures(1)
            .half_open_probes(probes)
            .open_duration(OpenDuration::Fixed(Duration::from_secs(1)))
            .clock(Clock::manual(now))
            .build()
            .unwrap();
        breaker.try_acquire().unwrap().record(Verdict::Failure);
        assert_eq!(breaker.state(), State::Open);
        now.store(2 * SECOND, Relaxed);
        (breaker, now)
    }

    /// Two calls reach a breaker whose open time is over: one moves it to
    /// half-open, and the single probe slot goes to exactly one of them.
    #[test]
    fn one_probe_slot_goes_to_one_of_two_callers() {
        loom::model(|| {
            let (breaker, _) = tripped(1);
            let other = {
                let breaker = breaker.clone();
                thread::spawn(move || breaker.try_acquire().ok())
            };
            let mine = breaker.try_acquire().ok();
            let theirs = other.join().unwrap();
            let probes: Vec<Permit> = mine.into_iter().chain(theirs).collect();
            assert_eq!(probes.len(), 1, "one probe slot");
            assert!(probes[0].is_probe());
            for probe in probes {
                probe.record(Verdict::Success);
            }
            assert_eq!(breaker.state(), State::Closed);
        });
    }

    /// A probe dropped without a verdict gives its slot back, once, while
    /// another call takes the other slot.
    #[test]
    fn a_dropped_probe_gives_its_slot_back_once() {
        loom::model(|| {
            let (breaker, _) = tripped(2);
            let probe = breaker.try_acquire().unwrap();
            let other = {
                let breaker = breaker.clone();
                thread::spawn(move || breaker.try_acquire().ok())
            };
            drop(probe);
            let theirs = other.join().unwrap();
            assert!(theirs.is_some(), "a slot was free");
            let more = [breaker.try_acquire().ok(), breaker.try_acquire().ok()];
            assert_eq!(
                more.iter().flatten().count(),
                1,
                "two slots, one of them held"
            );
            assert_eq!(breaker.state(), State::HalfOpen);
        });
    }

    /// A verdict on a call admitted before a trip lands while the trip
    /// happens: it never reopens or closes anything, the lifetime totals
    /// count it.
    #[test]
    fn a_verdict_racing_a_trip() {
        loom::model(|| {
            let breaker = CircuitBreaker::builder()
                .window(Window::count(4))
                .minimum_calls(4)
                .consecutive_failures(1)
                .clock(Clock::manual(Box::leak(Box::new(StdAtomicU64::new(0)))))
                .build()
                .unwrap();
            let early = breaker.try_acquire().unwrap();
            let tripper = {
                let breaker = breaker.clone();
                thread::spawn(move || breaker.try_acquire().unwrap().record(Verdict::Failure))
            };
            early.record(Verdict::Success);
            tripper.join().unwrap();
            assert_eq!(breaker.state(), State::Open);
            let lifetime = breaker.lifetime().counts;
            assert_eq!((lifetime.success, lifetime.failure), (1, 1));
        });
    }
}
