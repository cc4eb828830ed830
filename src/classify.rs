//! Deciding whether a call's result counts as a success, a failure, or
//! neither.
//!
//! Use a classifier of your own when the default gets a dependency's health
//! wrong: when some errors are the caller's fault (a `404`, a validation
//! error) and must not trip the breaker, or when some `Ok` answers are
//! failures (a `503` response, an error body). Give it to the breaker's
//! layer, the [`Policy`](crate::policy::Policy) or the
//! [`FallbackLayer`](crate::fallback::FallbackLayer) with their `classify`
//! method.
//!
//! A breaker should open when its dependency is unhealthy, not when callers
//! send bad requests. A classifier looks at the whole result, as the layer
//! returns it (`Result<Res, Error<E>>`: a response, the service's own
//! error, or a timeout or refusal from a seawall layer below), and returns a
//! [`Verdict`]. A `200` can carry an error body, a `404` or a validation
//! error is the caller's fault.
//!
//! [`ByKind`], the default everywhere (the standalone breaker, the
//! [`Policy`](crate::policy::Policy), the [fallback](crate::fallback)), is
//! the one rule seawall has for what an error means:
//!
//! | result | verdict |
//! |---|---|
//! | `Ok` | success |
//! | a timeout (seawall's, or tower's `Elapsed` below) | timeout |
//! | the caller's own deadline ([`Elapsed::is_callers_deadline`](crate::error::Elapsed::is_callers_deadline)) | caller deadline |
//! | a full bulkhead or pool (or tower's `Overloaded`) | rejected |
//! | a breaker below that refused | rejected |
//! | an [`Invalid`](crate::Invalid) request (a poison message): never the dependency's fault | ignored |
//! | any other error of the service | failure |
//!
//! Any `Fn(&Result<Res, Error<E>>) -> Verdict` is a classifier too (write
//! the argument's type out, as below); HTTP and gRPC responses are
//! classified by tower-http's classifiers through [`Http`] (feature
//! `tower-http`).
//!
//! ```
//! use seawall::classify::{ByKind, Classify, Verdict};
//! use seawall::Error;
//!
//! #[derive(Debug)]
//! enum ApiError { NotFound, Unavailable }
//! seawall::leaf_error!(ApiError);
//! # impl std::fmt::Display for ApiError {
//! #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
//! # }
//! # impl std::error::Error for ApiError {}
//!
//! // A missing record is not the dependency's fault: ignore it.
//! let classify = |result: &Result<String, Error<ApiError>>| match result {
//!     Err(Error::Inner(ApiError::NotFound)) => Verdict::Ignore,
//!     other => ByKind.classify(other),
//! };
//! assert_eq!(classify(&Err(Error::Inner(ApiError::NotFound))), Verdict::Ignore);
//! assert_eq!(classify(&Err(Error::Inner(ApiError::Unavailable))), Verdict::Failure);
//! ```

use crate::error::{Error, Leaf, Refusal};
use crate::window::Outcome;

/// How one call's result counts in the rolling statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// Neither: counted as [ignored](crate::window::Counts::ignored), not in
    /// the error percentage; a half-open probe slot it held is given back,
    /// and a fallback does not answer for it.
    Ignore,
    /// The caller's deadline passed (see [`budget`](crate::budget)): like
    /// [`Ignore`](Self::Ignore), but counted apart, as
    /// [`caller_deadline`](crate::window::Counts::caller_deadline), so that
    /// callers who give up early are seen and never blamed on the
    /// dependency.
    CallerDeadline,
}

impl Verdict {
    /// Whether the verdict counts against the error percentage.
    pub fn is_error(self) -> bool {
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
            Verdict::CallerDeadline => Outcome::CallerDeadline,
        }
    }
}

/// Decides how a call's result counts. Implemented by every
/// `Fn(&Result<Res, Error<E>>) -> Verdict`; keep it cheap to clone (a
/// closure without captures, or one capturing an `Arc`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not classify a `Result<{Res}, seawall::Error<{E}>>`",
    label = "not a classifier of this service's results",
    note = "a closure classifier takes `&Result<Response, seawall::Error<InnerError>>`; write that type out on its argument, since a layer is built before it knows its service's types"
)]
pub trait Classify<Res, E> {
    /// The verdict on one call's result.
    fn classify(&self, result: &Result<Res, Error<E>>) -> Verdict;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, Error<E>>) -> Verdict,
{
    #[inline]
    fn classify(&self, result: &Result<Res, Error<E>>) -> Verdict {
        self(result)
    }
}

/// The default classifier: every `Ok` a success, every error by its kind
/// (the table in the [module's notes](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct ByKind;

impl<Res, E: Leaf> Classify<Res, E> for ByKind {
    #[inline]
    fn classify(&self, result: &Result<Res, Error<E>>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(error) => ByKind::error(error),
        }
    }
}

impl ByKind {
    /// The verdict on an error, by its kind.
    #[inline]
    pub fn error<E: Leaf>(error: &Error<E>) -> Verdict {
        match error {
            Error::Timeout(elapsed) if elapsed.is_callers_deadline() => Verdict::CallerDeadline,
            error => match error.refusal() {
                Some(Refusal::Timeout) => Verdict::Timeout,
                Some(Refusal::Overloaded | Refusal::CircuitOpen) => Verdict::Rejected,
                Some(Refusal::Invalid) => Verdict::Ignore,
                None => Verdict::Failure,
            },
        }
    }
}

#[cfg(feature = "tower-http")]
pub use http::Http;

#[cfg(feature = "tower-http")]
mod http {
    use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

    use super::{ByKind, Classify, Verdict};
    use crate::error::{Error, Leaf};

    /// One of tower-http's response classifiers as a seawall classifier
    /// (feature `tower-http`): `ServerErrorsAsFailures`,
    /// `StatusInRangeAsFailures`, `GrpcErrorsAsFailures`, or your own.
    ///
    /// A response tower-http calls a failure is a failure; one it can judge
    /// only at the end of the stream (a gRPC status in trailers) is a
    /// success here, since the breaker judges a call when its response
    /// arrives: a trailers-only gRPC error (the usual way a server refuses)
    /// carries its status in the headers, and is judged. Errors are judged
    /// by [`ByKind`].
    ///
    /// ```
    /// use seawall::classify::{Classify, Http, Verdict};
    /// use tower_http::classify::ServerErrorsAsFailures;
    ///
    /// let classify = Http::new(ServerErrorsAsFailures::new());
    /// let response = http::Response::builder().status(503).body(()).unwrap();
    /// let verdict = Classify::<_, std::io::Error>::classify(&classify, &Ok(response));
    /// assert_eq!(verdict, Verdict::Failure);
    /// ```
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Http<C>(C);

    impl<C> Http<C> {
        /// Classifies responses with `classifier`.
        pub fn new(classifier: C) -> Self {
            Http(classifier)
        }
    }

    impl<C, B, E> Classify<http::Response<B>, E> for Http<C>
    where
        C: ClassifyResponse + Clone,
        E: Leaf,
    {
        fn classify(&self, result: &Result<http::Response<B>, Error<E>>) -> Verdict {
            match result {
                Ok(response) => match self.0.clone().classify_response(response) {
                    ClassifiedResponse::Ready(Ok(())) => Verdict::Success,
                    ClassifiedResponse::Ready(Err(_)) => Verdict::Failure,
                    ClassifiedResponse::RequiresEos(_) => Verdict::Success,
                },
                Err(error) => ByKind::error(error),
            }
        }
    }
}
