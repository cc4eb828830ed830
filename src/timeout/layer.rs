//! The layer that gives every call a deadline.

use std::time::Duration;

use tower_layer::Layer;

use super::{NoDeadline, Timeout};
use crate::clock::Clock;

/// Gives every call of the services it makes a deadline: `timeout`, or the
/// request's own shorter deadline when [`per_request_deadline`](Self::per_request_deadline)
/// reads one.
///
/// ```
/// use std::time::Duration;
/// use seawall::timeout::TimeoutLayer;
///
/// struct Job { budget: Option<Duration> }
///
/// // At most 2 s, less if the request says so.
/// let layer = TimeoutLayer::new(Duration::from_secs(2)).per_request_deadline(|job: &Job| job.budget);
/// # drop(layer);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer<D = NoDeadline> {
    timeout: Duration,
    deadline: D,
    budget_margin: Duration,
    clock: Clock,
}

impl TimeoutLayer {
    /// Calls get at most `timeout`. A zero timeout fails every call whose
    /// future is not ready on its first poll.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer {
            timeout,
            deadline: NoDeadline,
            budget_margin: Duration::ZERO,
            clock: Clock::default(),
        }
    }
}

impl<D> TimeoutLayer<D> {
    /// Also reads a deadline from each request (a `grpc-timeout` header, a
    /// field of a message); the shorter of it and the layer's timeout
    /// applies. See [`DeadlineOf`](super::DeadlineOf).
    pub fn per_request_deadline<D2>(self, deadline: D2) -> TimeoutLayer<D2> {
        TimeoutLayer {
            timeout: self.timeout,
            deadline,
            budget_margin: self.budget_margin,
            clock: self.clock,
        }
    }

    /// Keeps `margin` of the current [budget](crate::budget) for the caller
    /// to answer with: calls get what is left of it less `margin`. Default
    /// zero.
    pub fn budget_margin(mut self, margin: Duration) -> Self {
        self.budget_margin = margin;
        self
    }

    /// The clock that dates each call's start. Default [`Clock::default`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

impl<S, D: Clone> Layer<S> for TimeoutLayer<D> {
    type Service = Timeout<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            budget_margin: self.budget_margin,
            ..Timeout::new(inner, self.timeout, self.deadline.clone(), self.clock)
        }
    }
}
