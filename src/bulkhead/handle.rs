//! The shared bulkhead handle, its modes, and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::limiter::{Acquire, Limiter, Permit};
use super::BulkheadLayer;
use crate::error::{BulkheadFull, ConfigError, Isolation};
use crate::stripe::Laned;

/// When full, refuse at once (Hystrix's semaphore isolation). The default
/// mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reject;

/// When full, a call waits in line in its response future, first in first
/// out, at most `max_wait`; then it is refused (resilience4j's
/// `maxWaitDuration`, with a bound on the line). The guarded service must be
/// `Clone`: the waiting call takes a clone along, to call once room comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Queue {
    /// How many calls may wait at once; more are refused at once.
    pub max_queue: usize,
    /// How long a call may wait for room.
    pub max_wait: Duration,
}

/// When full, `poll_ready` waits (tower's `ConcurrencyLimit` style), with
/// the same bounds as [`Queue`]; after `max_wait` the service turns ready
/// and its next call is refused, rather than `poll_ready` failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backpressure {
    /// How many services may wait in `poll_ready` at once.
    pub max_queue: usize,
    /// How long `poll_ready` may wait for room.
    pub max_wait: Duration,
}

/// What a bulkhead's mode is made of, for its builder.
pub trait Mode: fmt::Debug + Clone + Send + Sync + 'static {
    /// How many calls may wait: zero for one that never waits.
    fn max_queue(&self) -> usize;

    /// Checks the mode's settings.
    fn validate(&self) -> Result<(), ConfigError>;
}

impl Mode for Reject {
    fn max_queue(&self) -> usize {
        0
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

fn check_wait(max_queue: usize, max_wait: Duration) -> Result<(), ConfigError> {
    if max_queue == 0 {
        return Err(ConfigError::new(
            "max_queue",
            0,
            "must be at least 1 (or reject when full)",
        ));
    }
    if max_wait.is_zero() {
        return Err(ConfigError::new(
            "max_wait",
            max_wait,
            "must be longer than zero (or reject when full)",
        ));
    }
    Ok(())
}

impl Mode for Queue {
    fn max_queue(&self) -> usize {
        self.max_queue
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_wait(self.max_queue, self.max_wait)
    }
}

impl Mode for Backpressure {
    fn max_queue(&self) -> usize {
        self.max_queue
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_wait(self.max_queue, self.max_wait)
    }
}

/// The live figures of a bulkhead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkheadFigures {
    /// The limit on calls in flight.
    pub max_concurrent: usize,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Calls waiting for room now.
    pub queued: usize,
    /// The most calls in flight at once, as the bulkhead can tell without
    /// a count every call writes: the most permits it handed out at once.
    /// Each thread keeps the permits its calls give back, for its next
    /// calls, so this is never less than the most calls ever in flight at
    /// once, and never more than the limit. It runs ahead of the calls
    /// when threads take turns at their peaks, and when calls end on
    /// other threads than they started on (their permits are kept by the
    /// threads that end them).
    pub max_in_flight_seen: usize,
    /// Calls admitted so far, at once or after waiting (monotonic; wraps
    /// after 2^43, 8.8 trillion).
    pub admitted: u64,
    /// Calls refused so far.
    pub rejected: u64,
    /// What an [adaptive](BulkheadBuilder::adaptive) bulkhead measured and
    /// decided; `max_concurrent` is its limit now.
    pub adaptive: Option<super::AdaptiveFigures>,
}

/// A limit on calls in flight, shared by every service it guards and every
/// clone of them (Hystrix's semaphore isolation, resilience4j's
/// `maxConcurrentCalls`). Cheap to clone.
///
/// Its mode, what a call does when it is full, is part of its type:
/// [`Reject`] (the default), [`Queue`] or [`Backpressure`], chosen by the
/// builder. Only a queueing bulkhead needs the service it guards to be
/// `Clone`.
///
/// ```
/// use std::time::Duration;
/// use seawall::bulkhead::{Bulkhead, Queue};
///
/// let bulkhead: Bulkhead<Queue> = Bulkhead::builder()
///     .name("db")
///     .max_concurrent(32)
///     .queue(64, Duration::from_millis(50))
///     .build()?;
/// assert_eq!(bulkhead.figures().in_flight, 0);
/// bulkhead.set_max_concurrent(16)?; // at runtime; calls in flight finish
/// # Ok::<(), seawall::ConfigError>(())
/// ```
pub struct Bulkhead<M = Reject> {
    limiter: Laned<Limiter>,
    mode: M,
    name: Arc<str>,
}

impl<M: Clone> Clone for Bulkhead<M> {
    fn clone(&self) -> Self {
        Bulkhead {
            limiter: self.limiter.clone(),
            mode: self.mode.clone(),
            name: Arc::clone(&self.name),
        }
    }
}

/// A call's share of a bulkhead's limit, taken at once: give it back with
/// [`Bulkhead::give_back`] when the call is over. The token the bulkhead's
/// own future and the [`Policy`](crate::policy::Policy) both hold.
#[derive(Debug)]
#[must_use = "a slot is given back with Bulkhead::give_back"]
pub(crate) struct Slot(());

impl Bulkhead {
    /// A builder: 10 calls in flight (Hystrix's default), refusing more.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder {
            name: Arc::from("bulkhead"),
            named: false,
            max_concurrent: 10,
            mode: Reject,
            adaptive: None,
        }
    }
}

impl<M: Mode> Bulkhead<M> {
    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What a call does when the bulkhead is full.
    pub fn mode(&self) -> &M {
        &self.mode
    }

    /// The live figures.
    pub fn figures(&self) -> BulkheadFigures {
        BulkheadFigures {
            max_concurrent: self.limiter.limit(),
            in_flight: self.limiter.in_flight(),
            queued: self.limiter.queued(),
            max_in_flight_seen: self.limiter.max_in_flight(),
            admitted: self.limiter.admitted(),
            rejected: self.limiter.rejected(),
            adaptive: self.limiter.adaptive_figures(),
        }
    }

    /// Raises or lowers the limit now. Raising it lets waiting calls in at
    /// once; lowering it lets the calls in flight finish, and starts no new
    /// call until fewer than `max_concurrent` are in flight. An
    /// [adaptive](BulkheadBuilder::adaptive) bulkhead moves on from the
    /// limit set, back within its own limits at its next window.
    pub fn set_max_concurrent(&self, max_concurrent: usize) -> Result<(), ConfigError> {
        check_max_concurrent(max_concurrent)?;
        self.limiter.set_limit(max_concurrent);
        Ok(())
    }

    /// A layer that guards services with this bulkhead.
    pub fn layer(&self) -> BulkheadLayer<M> {
        BulkheadLayer::new(self.clone())
    }

    /// Takes a free slot, unless someone is already waiting for one.
    #[inline]
    pub(crate) fn try_take(&self) -> Option<Slot> {
        self.limiter.try_take().then_some(Slot(()))
    }

    /// When a call starts, if the limit adapts (zero otherwise).
    #[inline(always)]
    pub(crate) fn start(&self) -> u64 {
        self.limiter.start()
    }

    /// A call that started at `started` is over: a sample for an adaptive
    /// limit (nothing for a fixed one). Before its slot goes back.
    #[inline(always)]
    pub(crate) fn sample(&self, started: u64, dropped: bool) {
        self.limiter.sample(started, dropped);
    }

    /// Gives a slot back: the call that held it is over.
    #[inline]
    pub(crate) fn give_back(&self, slot: Slot) {
        let Slot(()) = slot;
        self.limiter.release();
    }

    /// A free slot as a permit that gives itself back when dropped.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<Permit> {
        self.limiter.try_acquire()
    }

    /// Joins the line, waiting at most `max_wait`, or builds the refusal if
    /// the line is full.
    pub(crate) fn wait(&self, max_wait: Duration) -> Result<Acquire, BulkheadFull> {
        match self.limiter.enqueue() {
            Some(ticket) => Ok(Acquire::new(ticket, max_wait)),
            None => Err(self.refuse(None)),
        }
    }

    /// Counts a refusal and builds its error.
    pub(crate) fn refuse(&self, waited: Option<Duration>) -> BulkheadFull {
        self.limiter.count_rejection();
        BulkheadFull::new(Isolation::Bulkhead, self.limiter.limit(), waited)
    }
}

impl Bulkhead<Queue> {
    /// Joins the line for a call whose `service` is ready: the ready
    /// service goes with the call, and a fresh clone takes its place, to be
    /// made ready by the next `poll_ready`.
    pub(crate) fn join_line<S: Clone>(
        &self,
        service: &mut S,
    ) -> Result<(Acquire, S), BulkheadFull> {
        let acquire = self.wait(self.mode().max_wait)?;
        let clone = service.clone();
        Ok((acquire, std::mem::replace(service, clone)))
    }
}

impl<M: Mode> fmt::Debug for Bulkhead<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("figures", &self.figures())
            .finish()
    }
}

/// Builds a [`Bulkhead`]; [`build`](Self::build) checks every setting.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BulkheadBuilder<M = Reject> {
    name: Arc<str>,
    /// Whether `name` was called: a Policy names an unnamed bulkhead after
    /// itself.
    named: bool,
    max_concurrent: usize,
    mode: M,
    adaptive: Option<super::AdaptiveLimit>,
}

impl<M: Mode> BulkheadBuilder<M> {
    /// The name in figures and errors. Default `"bulkhead"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self.named = true;
        self
    }

    /// A Policy's default name for the bulkhead it builds, unless the
    /// bulkhead was given its own.
    pub(crate) fn default_name(mut self, name: &Arc<str>) -> Self {
        if !self.named {
            self.name = Arc::clone(name);
        }
        self
    }

    /// How many calls may be in flight at once. Default 10 (Hystrix's
    /// `maxConcurrentRequests`).
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent;
        self
    }

    fn mode<M2>(self, mode: M2) -> BulkheadBuilder<M2> {
        BulkheadBuilder {
            name: self.name,
            named: self.named,
            max_concurrent: self.max_concurrent,
            mode,
            adaptive: self.adaptive,
        }
    }

    /// Moves the limit by what the dependency can take, from `max_concurrent`
    /// within the limits of `adaptive` (see [`AdaptiveLimit`](super::AdaptiveLimit)).
    /// Calls are timed when they start, and sampled when they end.
    pub fn adaptive(mut self, adaptive: super::AdaptiveLimit) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Refuse calls at once when full. The default.
    pub fn reject_when_full(self) -> BulkheadBuilder<Reject> {
        self.mode(Reject)
    }

    /// When full, calls wait in line in their response future: at most
    /// `max_queue` of them, each at most `max_wait`. See [`Queue`].
    pub fn queue(self, max_queue: usize, max_wait: Duration) -> BulkheadBuilder<Queue> {
        self.mode(Queue {
            max_queue,
            max_wait,
        })
    }

    /// When full, `poll_ready` waits: at most `max_queue` services at once,
    /// each at most `max_wait`. See [`Backpressure`].
    pub fn backpressure(
        self,
        max_queue: usize,
        max_wait: Duration,
    ) -> BulkheadBuilder<Backpressure> {
        self.mode(Backpressure {
            max_queue,
            max_wait,
        })
    }

    /// Checks the settings and builds the bulkhead.
    pub fn build(self) -> Result<Bulkhead<M>, ConfigError> {
        check_max_concurrent(self.max_concurrent)?;
        self.mode.validate()?;
        let mut limiter = Limiter::new(self.max_concurrent, self.mode.max_queue());
        if let Some(adaptive) = self.adaptive {
            adaptive.validate(self.max_concurrent)?;
            limiter = limiter.adaptive(super::adaptive::Controller::new(
                adaptive,
                self.max_concurrent,
            ));
        }
        Ok(Bulkhead {
            limiter: Laned::new(limiter),
            mode: self.mode,
            name: self.name,
        })
    }
}

fn check_max_concurrent(max_concurrent: usize) -> Result<(), ConfigError> {
    if max_concurrent == 0 {
        return Err(ConfigError::new("max_concurrent", 0, "must be at least 1"));
    }
    if max_concurrent > super::limiter::MAX_LIMIT {
        return Err(ConfigError::new(
            "max_concurrent",
            max_concurrent,
            "must be at most 1048575",
        ));
    }
    Ok(())
}
