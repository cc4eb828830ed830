//! What a breaker tells the world when it changes its mind.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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

/// How often a breaker changed state, from which to which, and how long it
/// has spent in each state since it was made: monotonic, never reset. From
/// [`CircuitBreaker::history`](super::CircuitBreaker::history).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    transitions: [[u64; 5]; 5],
    time_in: [Duration; 5],
}

impl History {
    /// How many times the breaker went from `from` to `to`.
    pub fn transitions(&self, from: State, to: State) -> u64 {
        self.transitions[from.index()][to.index()]
    }

    /// Every change of state so far.
    pub fn total_transitions(&self) -> u64 {
        self.transitions.iter().flatten().sum()
    }

    /// Each `(from, to)` pair that happened, with how many times.
    pub fn each_transition(&self) -> impl Iterator<Item = (State, State, u64)> + '_ {
        State::ALL.into_iter().flat_map(move |from| {
            State::ALL.into_iter().filter_map(move |to| {
                let times = self.transitions(from, to);
                (times > 0).then_some((from, to, times))
            })
        })
    }

    /// How long the breaker has been in `state`, in all (the current stay
    /// up to the moment the history was read included).
    pub fn time_in(&self, state: State) -> Duration {
        self.time_in[state.index()]
    }

    pub(crate) fn count(&mut self, from: State, to: State) {
        self.transitions[from.index()][to.index()] += 1;
    }

    pub(crate) fn add_time(&mut self, state: State, nanos: u64) {
        self.time_in[state.index()] += Duration::from_nanos(nanos);
    }
}
