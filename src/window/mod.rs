//! Rolling statistics: how many calls succeeded, failed, timed out, were
//! rejected or short-circuited, and how long they took, over a sliding window.
//!
//! Most users meet a window through a breaker: choose its shape with
//! [`CircuitBreakerBuilder::window`](crate::circuit_breaker::CircuitBreakerBuilder::window)
//! and read it with [`CircuitBreaker::counts`](crate::circuit_breaker::CircuitBreaker::counts)
//! or [`snapshot`](crate::circuit_breaker::CircuitBreaker::snapshot) (a
//! [`Policy`](crate::policy::Policy)'s breaker holds the whole policy's
//! statistics). Use a [`RollingWindow`] directly for rolling statistics of
//! your own.
//!
//! Two shapes of window, chosen with [`Window`]:
//!
//! - [`Window::time`]: the calls of the last `span`, in `buckets` steps
//!   (Hystrix's default is 10 s in 10 buckets). A bucket older than the span
//!   drops out whole, also after the window sat idle for a long time.
//! - [`Window::count`]: the last `calls` calls, whatever their age
//!   (resilience4j's count-based window). It really slides: after 10,000
//!   successes, 50 failures make half of a window of 100.
//!
//! Recording is lock-free and allocation-free: a few atomic operations,
//! exact under any interleaving of threads (each part has a loom model).
//! Reading a [`Snapshot`] costs O(buckets), never O(calls). A window's
//! storage is made when it is first needed: a count window's by its first
//! call, a time window's ring when a bucket that saw calls ends (sooner
//! for one that times calls).
//! Besides the window, each keeps its [`lifetime`](RollingWindow::lifetime)
//! totals, which a reset does not clear.
//!
//! This module knows nothing about circuit breakers: the breaker records
//! into it, and so does a [`Policy`](crate::policy::Policy) (through its
//! breaker) for every stage's outcomes.
//!
//! ```
//! use std::time::Duration;
//! use seawall::Clock;
//! use seawall::window::{Outcome, RollingWindow, Window};
//!
//! let window = RollingWindow::new(Window::count(100), Clock::default(), false).unwrap();
//! for _ in 0..10_000 {
//!     window.record(Outcome::Success, None, false);
//! }
//! for _ in 0..50 {
//!     window.record(Outcome::Failure, None, false);
//! }
//! let counts = window.counts();
//! assert_eq!((counts.success, counts.failure), (50, 50));
//! assert_eq!(counts.error_percentage(), Some(50.0));
//! ```

mod count;
mod latency;
mod tally;
mod time;

use std::time::Duration;

pub use latency::LatencySnapshot;

use crate::clock::Clock;
use crate::error::ConfigError;

/// What happened to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The call succeeded.
    Success = 0,
    /// The call failed.
    Failure = 1,
    /// The call did not finish in time.
    Timeout = 2,
    /// The call was refused for lack of capacity (a full bulkhead or pool).
    Rejected = 3,
    /// The call was refused by an open circuit; the service was not called.
    ShortCircuited = 4,
    /// A fallback answered in place of the call.
    FallbackSuccess = 5,
    /// A fallback was tried and failed (or took too long).
    FallbackFailure = 6,
    /// A fallback was not tried: too many fallbacks were running already.
    FallbackRejected = 7,
    /// A cached earlier answer was served in place of the call.
    CacheHit = 8,
    /// A cached answer was looked for and none (fresh enough) was there.
    CacheMiss = 9,
    /// The call reached a verdict its classifier ignores (a caller's bad
    /// request, say): neither a success nor an error.
    Ignored = 10,
    /// The call ended because its caller's deadline passed (its
    /// [budget](crate::budget) ran out, or its own `grpc-timeout`): it
    /// says nothing of the dependency, and is neither a success nor an
    /// error.
    CallerDeadline = 11,
}

impl Outcome {
    /// Whether the outcome counts against the error percentage.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::Failure | Outcome::Timeout | Outcome::Rejected
        )
    }

    /// Whether the outcome is a call's own (it reached a verdict on the
    /// dependency, or was refused by an isolation layer), as opposed to what
    /// the breaker or a fallback did about it.
    pub fn is_call(self) -> bool {
        matches!(
            self,
            Outcome::Success | Outcome::Failure | Outcome::Timeout | Outcome::Rejected
        )
    }

    /// Whether the breaker judges the dependency by it: every outcome of a
    /// call but [`Ignored`](Self::Ignored) and
    /// [`CallerDeadline`](Self::CallerDeadline).
    #[inline]
    pub(crate) fn is_judged(self) -> bool {
        !matches!(self, Outcome::Ignored | Outcome::CallerDeadline)
    }

    /// The outcome in snake case, as metric labels and JSON spell it
    /// (`"short_circuited"`, `"cache_hit"`, ...): the name of its field in
    /// [`Counts`].
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Rejected => "rejected",
            Outcome::ShortCircuited => "short_circuited",
            Outcome::FallbackSuccess => "fallback_success",
            Outcome::FallbackFailure => "fallback_failure",
            Outcome::FallbackRejected => "fallback_rejected",
            Outcome::CacheHit => "cache_hit",
            Outcome::CacheMiss => "cache_miss",
            Outcome::Ignored => "ignored",
            Outcome::CallerDeadline => "caller_deadline",
        }
    }

    /// Every outcome, in the order of [`Counts`]' fields.
    pub const ALL: [Outcome; 12] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Timeout,
        Outcome::Rejected,
        Outcome::ShortCircuited,
        Outcome::FallbackSuccess,
        Outcome::FallbackFailure,
        Outcome::FallbackRejected,
        Outcome::CacheHit,
        Outcome::CacheMiss,
        Outcome::Ignored,
        Outcome::CallerDeadline,
    ];
}

/// The index of the slow-call counter, after one counter per outcome.
const SLOW: usize = Outcome::ALL.len();
/// How many counters a tally keeps.
const SLOTS: usize = SLOW + 1;

/// Outcome totals over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Calls that succeeded.
    pub success: u64,
    /// Calls that failed.
    pub failure: u64,
    /// Calls that timed out.
    pub timeout: u64,
    /// Calls refused for lack of capacity.
    pub rejected: u64,
    /// Calls refused by an open circuit.
    pub short_circuited: u64,
    /// Fallbacks that answered.
    pub fallback_success: u64,
    /// Fallbacks that failed or took too long.
    pub fallback_failure: u64,
    /// Fallbacks not tried: too many were running.
    pub fallback_rejected: u64,
    /// Cached answers served in place of a call.
    pub cache_hit: u64,
    /// Cached answers looked for and not found (or too old).
    pub cache_miss: u64,
    /// Calls whose verdict was ignored: neither successes nor errors.
    pub ignored: u64,
    /// Calls that ended because their caller's deadline passed.
    pub caller_deadline: u64,
    /// Calls, of any outcome, slower than the slow-call threshold.
    pub slow: u64,
}

impl Counts {
    fn from_slots(slots: [u64; SLOTS]) -> Counts {
        Counts {
            success: slots[Outcome::Success as usize],
            failure: slots[Outcome::Failure as usize],
            timeout: slots[Outcome::Timeout as usize],
            rejected: slots[Outcome::Rejected as usize],
            short_circuited: slots[Outcome::ShortCircuited as usize],
            fallback_success: slots[Outcome::FallbackSuccess as usize],
            fallback_failure: slots[Outcome::FallbackFailure as usize],
            fallback_rejected: slots[Outcome::FallbackRejected as usize],
            cache_hit: slots[Outcome::CacheHit as usize],
            cache_miss: slots[Outcome::CacheMiss as usize],
            ignored: slots[Outcome::Ignored as usize],
            caller_deadline: slots[Outcome::CallerDeadline as usize],
            slow: slots[SLOW],
        }
    }

    /// The counters in a tally's order: [`from_slots`](Self::from_slots)
    /// undone.
    fn slots(&self) -> [u64; SLOTS] {
        std::array::from_fn(|i| match Outcome::ALL.get(i) {
            Some(&outcome) => self.of(outcome),
            None => self.slow,
        })
    }

    /// The count of one outcome.
    pub fn of(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Success => self.success,
            Outcome::Failure => self.failure,
            Outcome::Timeout => self.timeout,
            Outcome::Rejected => self.rejected,
            Outcome::ShortCircuited => self.short_circuited,
            Outcome::FallbackSuccess => self.fallback_success,
            Outcome::FallbackFailure => self.fallback_failure,
            Outcome::FallbackRejected => self.fallback_rejected,
            Outcome::CacheHit => self.cache_hit,
            Outcome::CacheMiss => self.cache_miss,
            Outcome::Ignored => self.ignored,
            Outcome::CallerDeadline => self.caller_deadline,
        }
    }

    /// Calls that reached a verdict: successes and errors. Short-circuited
    /// calls are not among them: they say nothing about the dependency.
    pub fn calls(&self) -> u64 {
        self.success + self.errors()
    }

    /// Failures, timeouts and rejections.
    pub fn errors(&self) -> u64 {
        self.failure + self.timeout + self.rejected
    }

    /// Errors as a percentage of [`calls`](Self::calls); `None` with no calls.
    pub fn error_percentage(&self) -> Option<f64> {
        percentage(self.errors(), self.calls())
    }

    /// Slow calls as a percentage of [`calls`](Self::calls); `None` with no
    /// calls.
    pub fn slow_percentage(&self) -> Option<f64> {
        percentage(self.slow, self.calls())
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        let (mine, theirs) = (self.slots(), other.slots());
        *self = Counts::from_slots(std::array::from_fn(|i| mine[i].saturating_add(theirs[i])));
    }
}

fn percentage(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// The counts and, if tracked, the latencies over a window.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// Outcome totals.
    pub counts: Counts,
    /// Latency percentiles, when the window tracks latency.
    pub latency: Option<LatencySnapshot>,
}

/// The shape of a rolling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The calls of the last `span`, kept in `buckets` steps.
    Time {
        /// How far back the window reaches.
        span: Duration,
        /// How many steps the span is cut into: the window slides one bucket
        /// (`span / buckets`) at a time.
        buckets: u32,
    },
    /// The last `calls` calls.
    Count {
        /// How many calls the window holds.
        calls: u32,
    },
}

impl Window {
    /// The calls of the last `span`, in `buckets` steps.
    ///
    /// A call is counted in the bucket current when its count lands (one
    /// that read the clock just before a bucket ended may land in the next).
    /// A bucket holds, per outcome, a quarter of a call per nanosecond of
    /// its length (262,144 calls in a 1 ms bucket): more than real time
    /// allows, but a test in paused time can record more; those go to the
    /// [lifetime](RollingWindow::lifetime) totals only.
    pub fn time(span: Duration, buckets: u32) -> Window {
        Window::Time { span, buckets }
    }

    /// The last `calls` calls.
    pub fn count(calls: u32) -> Window {
        Window::Count { calls }
    }

    /// Checks the shape; `field` names the builder setting for errors.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Window::Time { span, buckets } => {
                if buckets == 0 || buckets > time::MAX_BUCKETS {
                    return Err(ConfigError::new(
                        "window.buckets",
                        buckets,
                        "must be in 1..=1000",
                    ));
                }
                if span.is_zero() {
                    return Err(ConfigError::new(
                        "window.span",
                        span,
                        "must be longer than zero",
                    ));
                }
                if span.as_nanos() % u128::from(buckets) != 0 {
                    return Err(ConfigError::new(
                        "window.span",
                        span,
                        "must divide into a whole number of nanoseconds per bucket",
                    ));
                }
                if span / buckets < Duration::from_millis(1) {
                    return Err(ConfigError::new(
                        "window.span",
                        span,
                        "must give each bucket at least 1 ms",
                    ));
                }
                Ok(())
            }
            Window::Count { calls } => {
                if calls == 0 || calls > count::MAX_CALLS {
                    return Err(ConfigError::new(
                        "window.calls",
                        calls,
                        "must be in 1..=1000000",
                    ));
                }
                Ok(())
            }
        }
    }
}

impl Default for Window {
    /// Hystrix's window: 10 seconds in 10 buckets.
    fn default() -> Window {
        Window::time(Duration::from_secs(10), 10)
    }
}

/// A rolling window of call outcomes, shared by reference.
pub struct RollingWindow {
    kind: Kind,
    clock: Clock,
}

impl std::fmt::Debug for RollingWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollingWindow")
            .field("kind", &self.kind)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The time window inline: boxed, every call would load its address first.
#[derive(Debug)]
enum Kind {
    Time(time::TimeWindow),
    Count(CountBox),
}

/// A count window, boxed: inline, its tallies and ring would make every
/// window, of either kind, that large.
#[derive(Debug)]
enum CountBox {
    /// On cache lines of its own (a breaker of its own): every call writes
    /// its cursor and tallies, and the padding keeps other allocations (the
    /// breaker's state, which every call reads, among them) off them.
    Padded(Box<Padded<count::CountWindow>>),
    /// Packed (a registry's): a key is rarely called from two cores at
    /// once, and padding would cost each of a registry's breakers a few
    /// hundred bytes.
    Packed(Box<count::CountWindow>),
}

#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

impl std::ops::Deref for CountBox {
    type Target = count::CountWindow;

    #[inline(always)]
    fn deref(&self) -> &count::CountWindow {
        match self {
            CountBox::Padded(padded) => &padded.0,
            CountBox::Packed(packed) => packed,
        }
    }
}

/// Every this many calls of one outcome (and at the first of each time
/// bucket) a window checks that its clock still moves: see
/// [`Clock`]'s notes on the coarse clock. A mask, so the check costs a test
/// of a count the call has in hand already.
const CLOCK_CHECK_EVERY: u64 = 64 - 1;

impl RollingWindow {
    /// A window of the given shape, reading `clock`, with a latency histogram
    /// if `track_latency`.
    pub fn new(
        window: Window,
        clock: Clock,
        track_latency: bool,
    ) -> Result<RollingWindow, ConfigError> {
        window.validate()?;
        Ok(RollingWindow::validated(window, clock, track_latency, true))
    }

    /// A window whose shape was validated already; `striped` unless few
    /// calls come from two cores at once and many windows are kept (a
    /// registry's), which then count every thread in one copy of the hot
    /// bucket (see [`crate::stripe`]).
    pub(crate) fn validated(
        window: Window,
        clock: Clock,
        track_latency: bool,
        striped: bool,
    ) -> RollingWindow {
        let kind = match window {
            Window::Time { span, buckets } => {
                Kind::Time(time::TimeWindow::new(span, buckets, track_latency, striped))
            }
            Window::Count { calls } => {
                let window = count::CountWindow::new(calls, track_latency);
                Kind::Count(if striped {
                    CountBox::Padded(Box::new(Padded(window)))
                } else {
                    CountBox::Packed(Box::new(window))
                })
            }
        };
        RollingWindow { kind, clock }
    }

    /// The heap bytes a window of this shape takes once it has seen calls,
    /// beyond its own size (which is what it takes before).
    #[cfg(feature = "registry")]
    pub(crate) fn storage_bytes(window: Window, track_latency: bool) -> usize {
        match window {
            Window::Time { buckets, .. } => time::TimeWindow::storage_bytes(buckets, track_latency),
            Window::Count { calls } => {
                // Boxed, packed (a registry's).
                std::mem::size_of::<count::CountWindow>()
                    + count::CountWindow::storage_bytes(calls, track_latency)
            }
        }
    }

    /// The clock this window reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Records one call: its outcome, how long it took (if measured), and
    /// whether it was slow.
    pub fn record(&self, outcome: Outcome, latency: Option<Duration>, slow: bool) {
        let nanos = latency.map(|l| u64::try_from(l.as_nanos()).unwrap_or(u64::MAX));
        self.record_nanos(outcome, nanos, slow);
    }

    /// Inlined into the breaker's verdict: out of line, its call cost a
    /// tenth of a closed breaker's instructions.
    #[inline(always)]
    pub(crate) fn record_nanos(&self, outcome: Outcome, latency: Option<u64>, slow: bool) {
        // Only a time window reads the clock, in the one look at the kind.
        self.record_with(|| self.clock.now(), outcome, latency, slow);
    }

    /// [`record_nanos`](Self::record_nanos) at `now`, a reading of this
    /// window's clock the caller has already.
    #[inline(always)]
    pub(crate) fn record_nanos_at(
        &self,
        now: u64,
        outcome: Outcome,
        latency: Option<u64>,
        slow: bool,
    ) {
        self.record_with(|| now, outcome, latency, slow);
    }

    #[inline(always)]
    fn record_with(
        &self,
        now: impl FnOnce() -> u64,
        outcome: Outcome,
        latency: Option<u64>,
        slow: bool,
    ) {
        let bucket = latency.map(latency::bucket_of);
        let prior = match &self.kind {
            Kind::Time(w) => w.record(now(), outcome, slow, bucket),
            Kind::Count(w) => w.record(outcome, slow, bucket),
        };
        if prior & CLOCK_CHECK_EVERY == 0 {
            self.clock.check_moving();
        }
    }

    /// Records a call in the [`lifetime`](Self::lifetime) totals only: one
    /// whose verdict no longer belongs in the window.
    pub(crate) fn record_lifetime_only(&self, outcome: Outcome, latency: Option<u64>, slow: bool) {
        let bucket = latency.map(latency::bucket_of);
        match &self.kind {
            Kind::Time(w) => w.record_retired(outcome, slow, bucket),
            Kind::Count(w) => w.record_retired(outcome, slow, bucket),
        }
    }

    /// The outcome totals over the window.
    pub fn counts(&self) -> Counts {
        Counts::from_slots(match &self.kind {
            Kind::Time(w) => w.counts(self.clock.now()),
            Kind::Count(w) => w.counts(),
        })
    }

    /// Totals and latency percentiles over the window.
    pub fn snapshot(&self) -> Snapshot {
        let (slots, latency) = match &self.kind {
            Kind::Time(w) => w.snapshot(self.clock.now()),
            Kind::Count(w) => w.snapshot(),
        };
        Snapshot {
            counts: Counts::from_slots(slots),
            latency: latency.map(LatencySnapshot::from_counts),
        }
    }

    /// Every call recorded since the window was made: never reset, and
    /// including calls that landed after their time bucket had left the
    /// window. Monotonic, for exporting as counters.
    pub fn lifetime(&self) -> Snapshot {
        let (slots, latency) = match &self.kind {
            Kind::Time(w) => w.totals(),
            Kind::Count(w) => w.totals(),
        };
        Snapshot {
            counts: Counts::from_slots(slots),
            latency: latency.map(LatencySnapshot::from_counts),
        }
    }

    /// The counts of [`lifetime`](Self::lifetime), without latencies: read
    /// without allocating.
    pub fn lifetime_counts(&self) -> Counts {
        Counts::from_slots(match &self.kind {
            Kind::Time(w) => w.total_counts(),
            Kind::Count(w) => w.total_counts(),
        })
    }

    /// Forgets every call recorded so far (not in [`lifetime`](Self::lifetime)).
    pub fn reset(&self) {
        match &self.kind {
            Kind::Time(w) => w.reset(self.clock.now()),
            Kind::Count(w) => w.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_slot_by_slot_and_saturate() {
        let slots: [u64; SLOTS] = std::array::from_fn(|i| i as u64 + 1);
        let counts = Counts::from_slots(slots);
        assert_eq!(counts.slots(), slots, "slots undo from_slots");
        let mut sum = counts;
        sum += counts;
        assert_eq!(sum.slots(), slots.map(|n| 2 * n));
        assert_eq!(
            (sum.success, sum.ignored, sum.caller_deadline, sum.slow),
            (2, 22, 24, 26)
        );
        let mut full = Counts::from_slots([u64::MAX; SLOTS]);
        full += counts;
        assert_eq!(full.slots(), [u64::MAX; SLOTS]);
    }
}
