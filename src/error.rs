//! The crate's error types: [`Error`], the one enum every seawall service
//! returns, and [`ConfigError`], what a builder returns for a bad setting.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;

use crate::bulkhead::BulkheadFull;
use crate::circuit_breaker::CircuitOpen;
use crate::timeout::Elapsed;

/// The error of every seawall service: either the inner service's own error,
/// or the reason seawall refused or stopped the call.
///
/// It is generic over the inner error, so a caller can `match` it without
/// downcasting, and it converts into [`BoxError`](crate::BoxError) for tower,
/// axum and tonic. New variants are added as new middleware lands, hence
/// `#[non_exhaustive]`.
///
/// ```
/// use seawall::Error;
///
/// fn describe(err: &Error<std::io::Error>) -> String {
///     match err {
///         Error::Inner(io) => format!("the service failed: {io}"),
///         Error::CircuitOpen(open) => format!("not called: {open}"),
///         Error::BulkheadFull(full) => format!("no room: {full}"),
///         Error::Timeout(elapsed) => format!("gave up after {:?}", elapsed.after()),
///         other => other.to_string(),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The inner service was called and returned this error.
    Inner(E),
    /// The circuit breaker refused the call; the inner service was not called.
    CircuitOpen(CircuitOpen),
    /// A bulkhead or a blocking pool had no room for the call (and, if it
    /// queued, no room came in time); the inner service was not called.
    BulkheadFull(BulkheadFull),
    /// The call did not finish before its deadline and was dropped.
    Timeout(Elapsed),
}

impl<E> Error<E> {
    /// The inner service's error, if that is what this is.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// Takes the inner service's error out, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// Whether an open (or half-open and full) circuit refused the call.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Error::CircuitOpen(_))
    }

    /// Whether a full bulkhead or blocking pool refused the call.
    pub fn is_bulkhead_full(&self) -> bool {
        matches!(self, Error::BulkheadFull(_))
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }
}

impl<E> Error<Error<E>> {
    /// One level of error from two stacked seawall layers: the outer
    /// layer's refusal, or whatever the inner seawall layer returned.
    ///
    /// ```
    /// use seawall::Error;
    ///
    /// let stacked: Error<Error<std::io::Error>> = Error::Inner(Error::Inner(std::io::ErrorKind::Other.into()));
    /// assert!(matches!(stacked.flatten(), Error::Inner(_)));
    /// ```
    pub fn flatten(self) -> Error<E> {
        match self {
            Error::Inner(inner) => inner,
            Error::CircuitOpen(open) => Error::CircuitOpen(open),
            Error::BulkheadFull(full) => Error::BulkheadFull(full),
            Error::Timeout(elapsed) => Error::Timeout(elapsed),
        }
    }
}

impl<E> From<CircuitOpen> for Error<E> {
    fn from(open: CircuitOpen) -> Self {
        Error::CircuitOpen(open)
    }
}

impl<E> From<BulkheadFull> for Error<E> {
    fn from(full: BulkheadFull) -> Self {
        Error::BulkheadFull(full)
    }
}

impl<E> From<Elapsed> for Error<E> {
    fn from(elapsed: Elapsed) -> Self {
        Error::Timeout(elapsed)
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Transparent: the inner error already says what went wrong.
            Error::Inner(e) => e.fmt(f),
            Error::CircuitOpen(open) => open.fmt(f),
            Error::BulkheadFull(full) => full.fmt(f),
            Error::Timeout(elapsed) => elapsed.fmt(f),
        }
    }
}

// Written by hand rather than with thiserror's `#[error(transparent)]`,
// which needs `E: std::error::Error`: the inner error is often tower's
// `BoxError`, which is not one itself, and `Error<BoxError>` must still
// convert into a `BoxError`. Coherence does not allow one impl for both
// (std could one day implement `Error` for `Box<dyn Error>`), so the chain is
// continued through the boxed forms only.
impl<E: fmt::Debug + fmt::Display + 'static> StdError for Error<E> {
    /// Transparent like `Display`: for an inner error, that error's own
    /// source when it is a boxed error (`BoxError`); match
    /// [`Error::Inner`] to reach any other inner error itself.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Inner(inner) => source_of_boxed(inner),
            Error::CircuitOpen(_) | Error::BulkheadFull(_) | Error::Timeout(_) => None,
        }
    }
}

fn source_of_boxed(inner: &dyn Any) -> Option<&(dyn StdError + 'static)> {
    if let Some(boxed) = inner.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
        return boxed.source();
    }
    if let Some(boxed) = inner.downcast_ref::<Box<dyn StdError + Send>>() {
        return boxed.source();
    }
    inner
        .downcast_ref::<Box<dyn StdError>>()
        .and_then(|boxed| boxed.source())
}

/// A builder was given a value it cannot use. Names the field and the value.
///
/// ```
/// use seawall::circuit_breaker::CircuitBreaker;
///
/// let err = CircuitBreaker::builder().error_threshold(150.0).build().unwrap_err();
/// assert_eq!(err.field(), "error_threshold");
/// assert_eq!(err.value(), "150");
/// assert_eq!(err.to_string(), "invalid error_threshold = 150: must be a percentage in 0..=100");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} = {value}: {reason}")]
pub struct ConfigError {
    field: &'static str,
    value: String,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, value: impl fmt::Debug, reason: &'static str) -> Self {
        ConfigError {
            field,
            value: format!("{value:?}"),
            reason,
        }
    }

    /// The builder field that was rejected, as named by its setter.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, as written by `Debug`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}
