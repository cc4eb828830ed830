//! The crate's errors: [`Error`], the one enum every seawall service
//! returns however many seawall layers are stacked, the refusals it
//! carries, and [`ConfigError`], what a builder returns for a bad setting.
//!
//! Come here when you handle a seawall service's error: `match` on
//! [`Error`] (or ask [`Error::is_circuit_open`], [`is_bulkhead_full`](Error::is_bulkhead_full),
//! [`is_timeout`](Error::is_timeout)) to tell the dependency's own failure
//! from seawall's refusals, read a refusal's details ([`CircuitOpen::retry_after`],
//! [`BulkheadFull::waited`], [`Elapsed::after`]), or make an error type of
//! your own fit under seawall's layers ([`leaf_error!`](crate::leaf_error)).
//!
//! This module depends on no other of the crate's: every layer depends on
//! it, never the other way round.
//!
//! # One error, however many layers
//!
//! A seawall layer over another seawall layer does not wrap its error again:
//! a circuit breaker over a bulkhead over a timeout over a client whose
//! error is `io::Error` returns `Error<io::Error>`, and the breaker sees the
//! timeout as a timeout. What makes this work is [`IntoError`], implemented
//! for `Error<E>` (it is already one) and for every [`Leaf`]: an error of the
//! service at the bottom of a stack. Leaf is implemented for the usual ones
//! (`io::Error`, `BoxError`, tower's `Elapsed` and `Overloaded`, `Infallible`,
//! `String`, `&'static str`, and with their features `tonic::Status`,
//! `http::Error`, `reqwest::Error`, `anyhow::Error`); for an error type of
//! your own, one line:
//!
//! ```
//! #[derive(Debug, thiserror::Error)]
//! #[error("the inventory service said no")]
//! struct InventoryError;
//!
//! seawall::leaf_error!(InventoryError);
//! ```
//!
//! Another crate's error type that seawall does not know: convert it into a
//! `BoxError` (`ServiceExt::map_err(Into::into)`) below the first seawall
//! layer.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;

use crate::BoxError;
use std::time::Duration;

/// The error of every seawall service: either the inner service's own error,
/// or the reason seawall refused or stopped the call.
///
/// It is generic over the error of the service at the bottom of the stack,
/// so a caller can `match` it without downcasting; stacked seawall layers
/// keep one level (see the [module's notes](self)). It implements
/// `std::error::Error`, transparently for the inner error (its `Display`
/// and its `source` chain), so `?` takes it into `BoxError`, `anyhow` or an
/// error enum of your own. New variants may come with new middleware, hence
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
    /// A circuit breaker refused the call; the inner service was not called.
    CircuitOpen(CircuitOpen),
    /// A bulkhead or a blocking pool had no room for the call (and, if it
    /// queued, no room came in time); the inner service was not called.
    BulkheadFull(BulkheadFull),
    /// The call did not finish before its deadline and was dropped.
    Timeout(Elapsed),
}

/// What a refusal or a timeout that reached seawall as an inner error (from
/// tower's own layers, or a seawall error boxed on the way) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The call timed out: tower's `Elapsed`, a boxed seawall timeout.
    Timeout,
    /// No room: tower's `Overloaded`, a boxed full bulkhead.
    Overloaded,
    /// A circuit breaker refused the call (a boxed seawall refusal).
    CircuitOpen,
    /// The request can never succeed, whoever serves it: an [`Invalid`]
    /// (a poison message, a request that fails validation). Judged neither
    /// for nor against the dependency, and never retried.
    Invalid,
}

/// An error that says the request itself can never succeed, whoever
/// serves it: a malformed message (poison), a request that fails
/// validation. Not the dependency's fault, so the default classifier
/// ([`ByKind`](crate::classify::ByKind)) ignores it and the breaker stays
/// closed however many arrive; retries never repeat it; a messaging
/// [`Consumer`](crate::messaging::Consumer) dead-letters it at once instead
/// of delivering it again.
///
/// Return it from a handler, as its error or boxed:
///
/// ```
/// use seawall::classify::{ByKind, Classify, Verdict};
/// use seawall::{BoxError, Error, Invalid};
///
/// fn parse(payload: &[u8]) -> Result<u64, BoxError> {
///     let text = std::str::from_utf8(payload).map_err(Invalid::new)?;
///     Ok(text.parse::<u64>().map_err(Invalid::new)?)
/// }
///
/// let malformed: Result<u64, Error<BoxError>> = parse(b"forty-two").map_err(Error::Inner);
/// assert_eq!(ByKind.classify(&malformed), Verdict::Ignore);
/// ```
#[derive(Debug)]
pub struct Invalid(BoxError);

impl Invalid {
    /// An invalid request, for `reason`.
    pub fn new(reason: impl Into<BoxError>) -> Invalid {
        Invalid(reason.into())
    }

    /// Why the request is invalid.
    pub fn reason(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid request: {}", self.0)
    }
}

impl StdError for Invalid {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

impl Leaf for Invalid {
    fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }

    fn refusal(&self) -> Option<Refusal> {
        Some(Refusal::Invalid)
    }
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

    /// The same error with the inner error mapped.
    pub fn map_inner<E2>(self, f: impl FnOnce(E) -> E2) -> Error<E2> {
        match self {
            Error::Inner(e) => Error::Inner(f(e)),
            Error::CircuitOpen(open) => Error::CircuitOpen(open),
            Error::BulkheadFull(full) => Error::BulkheadFull(full),
            Error::Timeout(elapsed) => Error::Timeout(elapsed),
        }
    }
}

impl<E: Leaf> Error<E> {
    /// What the error says, if it is a refusal or a timeout: seawall's own,
    /// or one that came as the inner error (tower's `Elapsed` and
    /// `Overloaded`, a seawall error boxed by a layer in between).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Inner(e) => e.refusal(),
            Error::CircuitOpen(_) => Some(Refusal::CircuitOpen),
            Error::BulkheadFull(_) => Some(Refusal::Overloaded),
            Error::Timeout(_) => Some(Refusal::Timeout),
        }
    }

    /// Whether a circuit breaker refused the call.
    pub fn is_circuit_open(&self) -> bool {
        self.refusal() == Some(Refusal::CircuitOpen)
    }

    /// Whether a full bulkhead or blocking pool (or tower's `LoadShed`)
    /// refused the call.
    pub fn is_bulkhead_full(&self) -> bool {
        self.refusal() == Some(Refusal::Overloaded)
    }

    /// Whether the call timed out (here or in a tower `Timeout` below).
    pub fn is_timeout(&self) -> bool {
        self.refusal() == Some(Refusal::Timeout)
    }
}

impl<E> From<E> for Error<E> {
    /// The inner service's error.
    fn from(error: E) -> Self {
        Error::Inner(error)
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

impl<E: Leaf + 'static> StdError for Error<E> {
    /// Transparent like `Display`: the inner error's own source, so that a
    /// report (`anyhow`'s `{:#}`, say) walks the inner error's whole chain.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Inner(inner) => inner.cause(),
            Error::CircuitOpen(_) | Error::BulkheadFull(_) | Error::Timeout(_) => None,
        }
    }
}

/// An error that a seawall layer carries as its inner error: the error of
/// the service at the bottom of a stack of layers.
///
/// Implement it for an error type of your own with [`leaf_error!`]
/// (which also reports the error's `source` chain), or by hand: every
/// method has a default.
///
/// [`leaf_error!`]: crate::leaf_error
pub trait Leaf: fmt::Debug + fmt::Display {
    /// The error's cause, what [`Error`]'s `source` returns for it: its own
    /// `source`, since `Error` displays it already. `None` by default.
    fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        None
    }

    /// Whether the error stands for a refusal or a timeout (tower's own
    /// errors do). `None` by default.
    fn refusal(&self) -> Option<Refusal> {
        None
    }
}

/// The error of a service below a seawall layer, as the one level of
/// [`Error`] the layer returns: an `Error` stays itself, a [`Leaf`] becomes
/// its inner error. Implemented for both; implement [`Leaf`], not this.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an error seawall can carry: it implements neither `seawall::Leaf` nor is a `seawall::Error`",
    label = "the error of the service under a seawall layer",
    note = "for an error type of your own: `seawall::leaf_error!(YourError);`",
    note = "for another crate's error type that seawall does not know: turn it into a `tower::BoxError` below the first seawall layer (`.map_err(Into::into)`)"
)]
pub trait IntoError {
    /// The inner error of the one-level [`Error`].
    type Inner: Leaf;

    /// This error as one level of [`Error`].
    fn into_error(self) -> Error<Self::Inner>;
}

impl<E: Leaf> IntoError for E {
    type Inner = E;

    #[inline]
    fn into_error(self) -> Error<E> {
        Error::Inner(self)
    }
}

impl<E: Leaf> IntoError for Error<E> {
    type Inner = E;

    #[inline]
    fn into_error(self) -> Error<E> {
        self
    }
}

/// Implements [`Leaf`] for error types of your own that implement
/// `std::error::Error`, reporting their `source` chain, so that services
/// returning them can go under seawall's layers.
///
/// ```
/// #[derive(Debug)]
/// struct Unavailable;
///
/// impl std::fmt::Display for Unavailable {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("unavailable")
///     }
/// }
///
/// impl std::error::Error for Unavailable {}
///
/// seawall::leaf_error!(Unavailable);
/// ```
#[macro_export]
macro_rules! leaf_error {
    ($($error:ty),+ $(,)?) => {
        $(
            impl $crate::Leaf for $error {
                fn cause(&self) -> ::core::option::Option<&(dyn ::std::error::Error + 'static)> {
                    ::std::error::Error::source(self)
                }
            }
        )+
    };
}

impl Leaf for std::io::Error {
    fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        StdError::source(self)
    }

    fn refusal(&self) -> Option<Refusal> {
        (self.kind() == std::io::ErrorKind::TimedOut).then_some(Refusal::Timeout)
    }
}

impl Leaf for Infallible {}
impl Leaf for String {}
impl Leaf for &str {}
impl Leaf for fmt::Error {}

impl Leaf for tower::timeout::error::Elapsed {
    fn refusal(&self) -> Option<Refusal> {
        Some(Refusal::Timeout)
    }
}

impl Leaf for tower::load_shed::error::Overloaded {
    fn refusal(&self) -> Option<Refusal> {
        Some(Refusal::Overloaded)
    }
}

macro_rules! boxed_leaf {
    ($($boxed:ty),+) => {
        $(
            impl Leaf for $boxed {
                fn cause(&self) -> Option<&(dyn StdError + 'static)> {
                    (**self).source()
                }

                fn refusal(&self) -> Option<Refusal> {
                    refusal_in(&**self)
                }
            }
        )+
    };
}

boxed_leaf!(
    Box<dyn StdError + Send + Sync>,
    Box<dyn StdError + Send>,
    Box<dyn StdError>
);

/// A refusal or timeout that reached a seawall layer boxed: tower's own, a
/// seawall detail, or a whole seawall [`Error`] of one of the common inner
/// error types (a boxed error is opaque: its type must be named to be
/// looked into).
fn refusal_in(error: &(dyn StdError + 'static)) -> Option<Refusal> {
    if error.is::<tower::timeout::error::Elapsed>() || error.is::<Elapsed>() {
        return Some(Refusal::Timeout);
    }
    if error.is::<tower::load_shed::error::Overloaded>() || error.is::<BulkheadFull>() {
        return Some(Refusal::Overloaded);
    }
    if error.is::<CircuitOpen>() {
        return Some(Refusal::CircuitOpen);
    }
    if error.is::<Invalid>() {
        return Some(Refusal::Invalid);
    }
    macro_rules! seawall_error_of {
        ($($inner:ty),+ $(,)?) => {
            $(
                if let Some(seawall) = error.downcast_ref::<Error<$inner>>() {
                    return seawall.refusal();
                }
            )+
        };
    }
    seawall_error_of!(
        Box<dyn StdError + Send + Sync>,
        Box<dyn StdError + Send>,
        Box<dyn StdError>,
        std::io::Error,
        Infallible,
        String,
        &'static str,
    );
    #[cfg(feature = "tonic")]
    seawall_error_of!(tonic::Status, tonic::transport::Error);
    #[cfg(feature = "reqwest")]
    seawall_error_of!(reqwest::Error);
    #[cfg(feature = "redis")]
    seawall_error_of!(redis::RedisError);
    None
}

#[cfg(any(feature = "axum", feature = "tonic"))]
impl Leaf for http::Error {
    fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        StdError::source(self)
    }
}

#[cfg(feature = "tonic")]
impl Leaf for tonic::Status {
    fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        StdError::source(self)
    }
}

#[cfg(feature = "tonic")]
impl Leaf for tonic::transport::Error {
    fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        StdError::source(self)
    }
}

/// Clients whose errors say whether they were a timeout.
macro_rules! leaf_knowing_timeouts {
    ($($(#[$cfg:meta])* $error:ty),+ $(,)?) => {
        $(
            $(#[$cfg])*
            impl Leaf for $error {
                fn cause(&self) -> Option<&(dyn StdError + 'static)> {
                    StdError::source(self)
                }

                fn refusal(&self) -> Option<Refusal> {
                    self.is_timeout().then_some(Refusal::Timeout)
                }
            }
        )+
    };
}

leaf_knowing_timeouts!(
    #[cfg(feature = "reqwest")]
    reqwest::Error,
    #[cfg(feature = "redis")]
    redis::RedisError,
);

#[cfg(feature = "anyhow")]
impl Leaf for anyhow::Error {
    fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        let error: &(dyn StdError + 'static) = self.as_ref();
        error.source()
    }

    fn refusal(&self) -> Option<Refusal> {
        refusal_in(self.as_ref())
    }
}

/// A circuit breaker refused a call; the inner service was not called.
///
/// Says which state refused it and, when the breaker is open on a timer, how
/// long until it lets a probe through (for a `Retry-After` header, say).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_open(self.state(), self.retry_after()))]
pub struct CircuitOpen {
    // The refusing state's index in the top `STATE_BITS`, the nanoseconds
    // until a probe in the rest (`NO_RETRY_AFTER` for none): one word, so
    // that an admission's `Result<Ticket, CircuitOpen>` is two words,
    // written and read a word at a time. Wider, it was stored a field at a
    // time and loaded whole, which the CPU cannot forward: a stall a
    // refusal.
    word: u64,
}

const STATE_BITS: u32 = 3;
const RETRY_AFTER_BITS: u32 = u64::BITS - STATE_BITS;
/// Also the longest wait it can say, less a nanosecond: 73 years.
const NO_RETRY_AFTER: u64 = (1 << RETRY_AFTER_BITS) - 1;

fn describe_open(state: State, retry_after: Option<Duration>) -> String {
    match (state, retry_after) {
        (State::HalfOpen, _) => "circuit half-open: every probe slot is taken".to_owned(),
        (_, Some(after)) => format!("circuit open: may let a probe through in {after:?}"),
        (state, None) => format!("circuit {state}"),
    }
}

impl CircuitOpen {
    /// `retry_after` in nanoseconds.
    #[inline]
    pub(crate) fn new(state: State, retry_after: Option<u64>) -> CircuitOpen {
        let retry_after = retry_after.map_or(NO_RETRY_AFTER, |nanos| nanos.min(NO_RETRY_AFTER - 1));
        CircuitOpen {
            word: (state.index() as u64) << RETRY_AFTER_BITS | retry_after,
        }
    }

    /// The state that refused the call: open, half-open (probe slots taken)
    /// or forced open.
    pub fn state(&self) -> State {
        State::ALL[(self.word >> RETRY_AFTER_BITS) as usize]
    }

    /// How long until the breaker may let a probe through; `None` when forced
    /// open (only an operator can release it) or half-open (a probe is
    /// already out: retry soon).
    pub fn retry_after(&self) -> Option<Duration> {
        let nanos = self.word & NO_RETRY_AFTER;
        (nanos != NO_RETRY_AFTER).then(|| Duration::from_nanos(nanos))
    }
}

impl std::fmt::Debug for CircuitOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitOpen")
            .field("state", &self.state())
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls go through; outcomes are recorded and may trip the breaker.
    Closed,
    /// Calls are refused until the open duration has elapsed.
    Open,
    /// A limited number of probe calls go through; their outcomes decide
    /// between closed and open.
    HalfOpen,
    /// Forced open by an operator: every call is refused until released.
    ForcedOpen,
    /// Forced closed (disabled) by an operator: outcomes are recorded, the
    /// breaker never trips.
    ForcedClosed,
}

impl State {
    /// Every state.
    pub const ALL: [State; 5] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::ForcedClosed,
    ];

    /// The state in snake case, as metric labels and JSON spell it
    /// (`"half_open"`, `"forced_open"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
        }
    }

    /// Whether calls are refused (open or forced open; half-open lets
    /// probes through).
    pub fn refuses_calls(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced open",
            State::ForcedClosed => "forced closed",
        })
    }
}

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
    /// A bulkhead: a limit on calls in flight (Hystrix's semaphore
    /// isolation).
    Bulkhead,
    /// A blocking pool: its threads were busy and its queue full (Hystrix's
    /// thread-pool isolation).
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

/// A call did not finish within its deadline; its future was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?}")]
pub struct Elapsed {
    after: Duration,
    callers: bool,
}

impl Elapsed {
    pub(crate) fn new(after: Duration, callers: bool) -> Elapsed {
        Elapsed { after, callers }
    }

    /// Whether the deadline that passed was the caller's own (read from the
    /// request, and shorter than the layer's timeout). Such a timeout says
    /// nothing about the dependency: a breaker should not count it (a client
    /// sending `grpc-timeout: 1n` must not trip a breaker every client
    /// shares), and the default classifier does not.
    pub fn is_callers_deadline(&self) -> bool {
        self.callers
    }

    /// How long the call was given: the layer's timeout, or the request's
    /// own shorter deadline.
    pub fn after(&self) -> Duration {
        self.after
    }
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
