//! The breaker's refusal.

use std::time::Duration;

use super::State;

/// The circuit breaker refused a call; the inner service was not called.
///
/// Says which state refused it and, when the breaker is open on a timer, how
/// long until it lets a probe through (for a `Retry-After` header, say).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(*.state, *.retry_after))]
pub struct CircuitOpen {
    state: State,
    retry_after: Option<Duration>,
}

fn describe(state: State, retry_after: Option<Duration>) -> String {
    match (state, retry_after) {
        (State::HalfOpen, _) => "circuit half-open: every probe slot is taken".to_owned(),
        (_, Some(after)) => format!("circuit open: may let a probe through in {after:?}"),
        (state, None) => format!("circuit {state}"),
    }
}

impl CircuitOpen {
    pub(crate) fn new(state: State, retry_after: Option<Duration>) -> CircuitOpen {
        CircuitOpen { state, retry_after }
    }

    /// The state that refused the call: open, half-open (probe slots taken)
    /// or forced open.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker may let a probe through; `None` when forced
    /// open (only an operator can release it) or half-open (a probe is
    /// already out: retry soon).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}
