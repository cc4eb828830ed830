//! What a breaker tells the world when it changes its mind.

use std::fmt;
use std::sync::Arc;

pub use crate::error::State;
use crate::window::Counts;

/// Why a breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The error percentage over the window reached the threshold.
    ErrorRate,
    /// The slow-call percentage over the window reached the threshold.
    SlowCallRate,
    /// The configured number of failures in a row happened.
    ConsecutiveFailures,
    /// The open duration elapsed: probes may go through.
    OpenDurationElapsed,
    /// Every probe succeeded (or few enough failed).
    ProbesSucceeded,
    /// Too many probes failed.
    ProbesFailed,
    /// [`CircuitBreaker::force_open`](super::CircuitBreaker::force_open).
    ForcedOpen,
    /// [`CircuitBreaker::force_closed`](super::CircuitBreaker::force_closed).
    ForcedClosed,
    /// [`CircuitBreaker::reset`](super::CircuitBreaker::reset).
    Reset,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::ErrorRate => "error percentage reached the threshold",
            Reason::SlowCallRate => "slow-call percentage reached the threshold",
            Reason::ConsecutiveFailures => "too many failures in a row",
            Reason::OpenDurationElapsed => "open duration elapsed",
            Reason::ProbesSucceeded => "probe calls succeeded",
            Reason::ProbesFailed => "probe calls failed",
            Reason::ForcedOpen => "forced open",
            Reason::ForcedClosed => "forced closed",
            Reason::Reset => "reset",
        })
    }
}

/// One change of state, as sent to [`subscribers`](super::CircuitBreaker::subscribe)
/// and written as a `tracing` event (target `seawall::circuit_breaker`; `WARN`
/// when opening, `INFO` otherwise).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state it left.
    pub from: State,
    /// The state it entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// The window's counts when it decided.
    pub counts: Counts,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "breaker {:?}: {} -> {} ({})",
            self.name, self.from, self.to, self.reason
        )
    }
}
