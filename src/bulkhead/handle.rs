//! The shared bulkhead handle and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::limiter::{Acquire, Limiter, Permit};
use super::{BulkheadFull, BulkheadLayer, Isolation};
use crate::error::ConfigError;

/// What a call does when the bulkhead is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Refuse it at once (Hystrix's semaphore isolation). The default.
    Reject,
    /// Wait in the response future, first in first out, at most `max_wait`,
    /// with at most `max_queue` calls waiting; then refuse it
    /// (resilience4j's `maxWaitDuration`, with a bound on the queue).
    Queue {
        /// How many calls may wait at once; more are refused at once.
        max_queue: usize,
        /// How long a call may wait for room.
        max_wait: Duration,
    },
    /// Wait in `poll_ready` (tower's `ConcurrencyLimit` style), with the
    /// same bounds; after `max_wait` the service turns ready and its next
    /// call is refused, rather than `poll_ready` failing.
    Backpressure {
        /// How many services may wait in `poll_ready` at once.
        max_queue: usize,
        /// How long `poll_ready` may wait for room.
        max_wait: Duration,
    },
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
    /// The most calls ever in flight at once.
    pub max_in_flight_seen: usize,
    /// Calls refused so far.
    pub rejected: u64,
}

/// A limit on calls in flight, shared by every service it guards and every
/// clone of them (Hystrix's semaphore isolation, resilience4j's
/// `maxConcurrentCalls`). Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use seawall::bulkhead::Bulkhead;
///
/// let bulkhead = Bulkhead::builder()
///     .name("db")
///     .max_concurrent(32)
///     .queue(64, Duration::from_millis(50))
///     .build()?;
/// assert_eq!(bulkhead.figures().in_flight, 0);
/// bulkhead.set_max_concurrent(16)?; // at runtime; calls in flight finish
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) when_full: WhenFull,
    name: Arc<str>,
}

impl Bulkhead {
    /// A builder: 10 calls in flight (Hystrix's default), refusing more.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder {
            name: Arc::from("bulkhead"),
            max_concurrent: 10,
            when_full: WhenFull::Reject,
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What a call does when the bulkhead is full.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// The live figures.
    pub fn figures(&self) -> BulkheadFigures {
        BulkheadFigures {
            max_concurrent: self.limiter.limit(),
            in_flight: self.limiter.in_flight(),
            queued: self.limiter.queued(),
            max_in_flight_seen: self.limiter.max_in_flight(),
            rejected: self.limiter.rejected(),
        }
    }

    /// Raises or lowers the limit now. Raising it lets waiting calls in at
    /// once; lowering it lets the calls in flight finish, and starts no new
    /// call until fewer than `max_concurrent` are in flight.
    pub fn set_max_concurrent(&self, max_concurrent: usize) -> Result<(), ConfigError> {
        check_max_concurrent(max_concurrent)?;
        self.limiter.set_limit(max_concurrent);
        Ok(())
    }

    /// A layer that guards services with this bulkhead.
    pub fn layer(&self) -> BulkheadLayer {
        BulkheadLayer::new(self.clone())
    }

    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<Permit> {
        self.limiter.try_acquire()
    }

    /// Takes a permit to give back with [`give_back`](Self::give_back), for
    /// a holder that keeps the bulkhead already.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        self.limiter.try_take()
    }

    #[inline]
    pub(crate) fn give_back(&self) {
        self.limiter.release();
    }

    /// Joins the queue, or builds the refusal if it is full.
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

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.name)
            .field("when_full", &self.when_full)
            .field("figures", &self.figures())
            .finish()
    }
}

/// Builds a [`Bulkhead`]; [`build`](Self::build) checks every setting.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BulkheadBuilder {
    name: Arc<str>,
    max_concurrent: usize,
    when_full: WhenFull,
}

impl BulkheadBuilder {
    /// The name in figures and errors. Default `"bulkhead"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// How many calls may be in flight at once. Default 10 (Hystrix's
    /// `maxConcurrentRequests`).
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent;
        self
    }

    /// Refuse calls at once when full. The default.
    pub fn reject_when_full(mut self) -> Self {
        self.when_full = WhenFull::Reject;
        self
    }

    /// When full, calls wait in line in their response future: at most
    /// `max_queue` of them, each at most `max_wait`.
    pub fn queue(mut self, max_queue: usize, max_wait: Duration) -> Self {
        self.when_full = WhenFull::Queue {
            max_queue,
            max_wait,
        };
        self
    }

    /// When full, `poll_ready` waits: at most `max_queue` services at once,
    /// each at most `max_wait`.
    pub fn backpressure(mut self, max_queue: usize, max_wait: Duration) -> Self {
        self.when_full = WhenFull::Backpressure {
            max_queue,
            max_wait,
        };
        self
    }

    /// Checks the settings and builds the bulkhead.
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        check_max_concurrent(self.max_concurrent)?;
        let max_queue = match self.when_full {
            WhenFull::Reject => 0,
            WhenFull::Queue {
                max_queue,
                max_wait,
            }
            | WhenFull::Backpressure {
                max_queue,
                max_wait,
            } => {
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
                max_queue
            }
        };
        Ok(Bulkhead {
            limiter: Arc::new(Limiter::new(self.max_concurrent, max_queue)),
            when_full: self.when_full,
            name: self.name,
        })
    }
}

fn check_max_concurrent(max_concurrent: usize) -> Result<(), ConfigError> {
    if max_concurrent == 0 {
        return Err(ConfigError::new("max_concurrent", 0, "must be at least 1"));
    }
    Ok(())
}
