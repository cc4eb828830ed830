//! Deciding whether a call's result counts as a success, a failure, or
//! neither.
//!
//! A breaker should open when its dependency is unhealthy, not when callers
//! send bad requests. A classifier looks at the whole `Result` (a `200` can
//! carry an error body, a `404` or a validation error is the caller's fault)
//! and returns a [`Verdict`]. Any `Fn(&Result<Res, E>) -> Verdict` is a
//! classifier; [`AnyError`] (the default) calls every `Err` a failure.
//!
//! ```
//! use seawall::classify::Verdict;
//!
//! #[derive(Debug)]
//! enum ApiError { NotFound, Unavailable }
//!
//! // A missing record is not the dependency's fault: ignore it.
//! let classify = |result: &Result<String, ApiError>| match result {
//!     Ok(_) => Verdict::Success,
//!     Err(ApiError::NotFound) => Verdict::Ignore,
//!     Err(ApiError::Unavailable) => Verdict::Failure,
//! };
//! assert_eq!(classify(&Err(ApiError::NotFound)), Verdict::Ignore);
//! ```

use crate::window::Outcome;

/// How one call's result counts in the rolling statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The dependency did its job.
    Success,
    /// The dependency failed.
    Failure,
    /// The dependency did not answer in time (counts as a failure).
    Timeout,
    /// The dependency, or an isolation layer below, refused the call
    /// (counts as a failure).
    Rejected,
    /// Neither: the call is counted as [ignored](crate::window::Counts::ignored),
    /// not in the error percentage, and a half-open probe slot it held is
    /// given back.
    Ignore,
}

impl Verdict {
    /// Whether the verdict counts against the error percentage.
    pub(crate) fn counts_as_error(self) -> bool {
        matches!(
            self,
            Verdict::Failure | Verdict::Timeout | Verdict::Rejected
        )
    }

    /// The outcome this verdict records.
    pub(crate) fn outcome(self) -> Outcome {
        match self {
            Verdict::Success => Outcome::Success,
            Verdict::Failure => Outcome::Failure,
            Verdict::Timeout => Outcome::Timeout,
            Verdict::Rejected => Outcome::Rejected,
            Verdict::Ignore => Outcome::Ignored,
        }
    }
}

/// Decides how a call's result counts. Implemented by every
/// `Fn(&Result<Res, E>) -> Verdict`; it is cloned once per call, so keep it
/// cheap to clone (a closure without captures, or one capturing an `Arc`).
pub trait Classify<Res, E> {
    /// The verdict on one call's result.
    fn classify(&self, result: &Result<Res, E>) -> Verdict;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Verdict,
{
    fn classify(&self, result: &Result<Res, E>) -> Verdict {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, every `Err` a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyError;

impl<Res, E> Classify<Res, E> for AnyError {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(_) => Verdict::Failure,
        }
    }
}

/// For a breaker stacked above other seawall layers: a
/// [timeout](crate::Error::Timeout) counts as a timeout (unless it was the
/// caller's own shorter deadline: then it is ignored), a
/// [full bulkhead](crate::Error::BulkheadFull) as a rejection, any other
/// error as a failure. Both still count against the error percentage, but
/// each under its own name in the window.
///
/// ```
/// use std::time::Duration;
/// use seawall::circuit_breaker::CircuitBreaker;
/// use seawall::classify::ByErrorKind;
/// use seawall::timeout::TimeoutLayer;
/// use tower::ServiceBuilder;
///
/// let breaker = CircuitBreaker::builder().build()?;
/// let stack = ServiceBuilder::new()
///     .layer(breaker.layer().classify(ByErrorKind))
///     .layer(TimeoutLayer::new(Duration::from_secs(1)));
/// # drop(stack);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByErrorKind;

impl<Res, E> Classify<Res, crate::Error<E>> for ByErrorKind {
    #[inline]
    fn classify(&self, result: &Result<Res, crate::Error<E>>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(crate::Error::Timeout(elapsed)) if elapsed.is_callers_deadline() => Verdict::Ignore,
            Err(crate::Error::Timeout(_)) => Verdict::Timeout,
            Err(crate::Error::BulkheadFull(_)) => Verdict::Rejected,
            Err(_) => Verdict::Failure,
        }
    }
}
