//! The bulkhead's refusal.

use std::fmt;
use std::time::Duration;

/// A bulkhead (or a blocking pool) had no room for the call; the inner
/// service was not called.
///
/// Says what refused it, and whether and how long the call waited first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{isolation} full ({limit} in flight){}", Waited(*.waited))]
pub struct BulkheadFull {
    isolation: Isolation,
    limit: usize,
    waited: Option<Duration>,
}

/// What kind of isolation refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isolation {
    /// A [`Bulkhead`](super::Bulkhead): a limit on calls in flight
    /// (Hystrix's semaphore isolation).
    Bulkhead,
    /// A [`BlockingPool`](crate::blocking::BlockingPool): its threads were
    /// busy and its queue full (Hystrix's thread-pool isolation).
    ThreadPool,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Bulkhead => "bulkhead",
            Isolation::ThreadPool => "blocking pool",
        })
    }
}

struct Waited(Option<Duration>);

impl fmt::Display for Waited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(waited) => write!(f, " after waiting {waited:?}"),
            None => Ok(()),
        }
    }
}

impl BulkheadFull {
    pub(crate) fn new(
        isolation: Isolation,
        limit: usize,
        waited: Option<Duration>,
    ) -> BulkheadFull {
        BulkheadFull {
            isolation,
            limit,
            waited,
        }
    }

    /// What refused the call.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The limit that was reached: calls in flight for a bulkhead, threads
    /// for a blocking pool.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How long the call waited for room before it was refused; `None` if
    /// it was refused at once.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }
}
