//! axum: seawall's refusals as HTTP responses (feature `axum`).
//!
//! Use this module when a seawall layer guards an axum route, or when a
//! handler calls a client that seawall guards: a refusal then reaches the
//! client as the status that says what happened, not as a dropped
//! connection or a bare 500.
//!
//! | seawall error | response |
//! |---|---|
//! | circuit open | `503 Service Unavailable` + `Retry-After` (seconds, when known) |
//! | bulkhead full | `503`, or `429 Too Many Requests` ([`ErrorResponseLayer::bulkhead_status`]) |
//! | timeout | `504 Gateway Timeout` (with `seawall-caller-deadline: 1` when it was the caller's [budget](crate::budget)) |
//! | inner error | the inner error's own response ([`ErrorResponseLayer`]) or `502 Bad Gateway` (`?` in a handler) |
//!
//! Two ways in:
//!
//! - **Server side**: [`ErrorResponseLayer`] turns a seawall service whose
//!   error is a [`seawall::Error`](crate::Error) into one whose error is
//!   `Infallible`, as `Router::layer` and `route_layer` want. Put a
//!   [`Policy`](crate::policy::Policy) (or any seawall layer) under it;
//!   classify with [`server_errors()`](server_errors), tower-http's
//!   `ServerErrorsAsFailures` as a named type (`Http<ServerErrorsAsFailures>`),
//!   so that 5xx answers count as failures.
//! - **In handlers**: [`Error`] implements `IntoResponse`, so a
//!   handler calling a seawall-wrapped client can use `?`. The inner error is
//!   logged (`WARN`, target `seawall::axum`) and answered with a bare `502`:
//!   upstream details do not leak to clients.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use seawall::bulkhead::Bulkhead;
//! use seawall::circuit_breaker::CircuitBreaker;
//! use seawall::integration::axum::{server_errors, ErrorResponseLayer};
//! use seawall::policy::Policy;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), seawall::ConfigError> {
//! let reports = Policy::builder().name("reports")
//!     .timeout(Duration::from_secs(2))
//!     .bulkhead(Bulkhead::builder().max_concurrent(8))
//!     .circuit_breaker(CircuitBreaker::builder())
//!     .classify(server_errors())
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/reports", get(|| async { "the report" }))
//!     .route_layer(ServiceBuilder::new().layer(ErrorResponseLayer::new()).layer(reports));
//! # drop(app);
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use axum_core::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::bulkhead::BulkheadFull;
use crate::circuit_breaker::CircuitOpen;
use crate::classify::Http;
use crate::error::{Error, Leaf, Refusal};
use crate::timeout::Elapsed;
use tower_http::classify::ServerErrorsAsFailures;

/// What seawall refused, for a response of your own making
/// ([`ErrorResponseLayer::response`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Refused<'a> {
    /// The circuit breaker refused the call.
    CircuitOpen(&'a CircuitOpen),
    /// A bulkhead had no room.
    BulkheadFull(&'a BulkheadFull),
    /// The call timed out.
    Timeout(&'a Elapsed),
}

impl Refused<'_> {
    /// seawall's own response: the status from the table above, its reason
    /// phrase as the body (`Service Unavailable`: nothing of the server's
    /// internals reaches a client), `Retry-After` for an open circuit, and
    /// [`CALLER_DEADLINE`](crate::budget::CALLER_DEADLINE) on a timeout that
    /// was the caller's.
    /// [`ErrorResponseLayer::response`] makes other bodies; the refusal's
    /// own `Display` says more, for logs.
    pub fn default_response(&self, bulkhead_status: StatusCode) -> Response {
        match self {
            Refused::CircuitOpen(open) => {
                let mut response = terse(StatusCode::SERVICE_UNAVAILABLE);
                if let Some(after) = open.retry_after() {
                    // Whole seconds, rounded up: never invite a retry too soon.
                    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                response
            }
            Refused::BulkheadFull(_) => terse(bulkhead_status),
            Refused::Timeout(elapsed) => {
                let mut response = terse(StatusCode::GATEWAY_TIMEOUT);
                if elapsed.is_callers_deadline() {
                    // The caller's own budget ran out: its client must not
                    // blame this server (see `budget::PropagateBudgetLayer`).
                    response.headers_mut().insert(
                        crate::budget::CALLER_DEADLINE,
                        HeaderValue::from_static("1"),
                    );
                }
                response
            }
        }
    }
}

/// A response whose body is its status's reason phrase.
fn terse(status: StatusCode) -> Response {
    (status, status.canonical_reason().unwrap_or("")).into_response()
}

/// The status of an inner error that is a refusal after all: tower's
/// `Elapsed` or `Overloaded`, or a seawall error that arrived boxed.
fn status_of_refusal(refusal: Refusal, overloaded: StatusCode) -> StatusCode {
    match refusal {
        Refusal::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Refusal::Invalid => StatusCode::BAD_REQUEST,
        _ => overloaded,
    }
}

/// For handlers: `?` on a seawall-wrapped client's result. Refusals get the
/// responses in the table above (also a timeout or an overload from tower's
/// own layers below: 504, 503); an inner error is logged and answered with
/// `502 Bad Gateway`.
impl<E: Leaf> IntoResponse for Error<E> {
    fn into_response(self) -> Response {
        let busy = StatusCode::SERVICE_UNAVAILABLE;
        match self {
            Error::CircuitOpen(open) => Refused::CircuitOpen(&open).default_response(busy),
            Error::BulkheadFull(full) => Refused::BulkheadFull(&full).default_response(busy),
            Error::Timeout(elapsed) => Refused::Timeout(&elapsed).default_response(busy),
            Error::Inner(inner) => match inner.refusal() {
                Some(refusal) => {
                    (status_of_refusal(refusal, busy), "upstream refused").into_response()
                }
                None => {
                    tracing::warn!(target: "seawall::axum", error = %inner, "upstream call failed");
                    (StatusCode::BAD_GATEWAY, "upstream call failed").into_response()
                }
            },
        }
    }
}

/// The classifier for services that answer with HTTP responses: a 5xx is a
/// failure, anything else a success; errors by [`ByKind`](crate::classify::ByKind).
/// tower-http's [`ServerErrorsAsFailures`], through [`Http`]: a named type
/// (`Http<ServerErrorsAsFailures>`) for a policy kept in app state.
pub fn server_errors() -> Http<ServerErrorsAsFailures> {
    Http::new(ServerErrorsAsFailures::new())
}

type MakeResponse = Arc<dyn Fn(&Refused<'_>) -> Response + Send + Sync>;

/// Turns seawall's errors into responses, so the service below fits
/// `Router::layer` and `route_layer` (`Error = Infallible`).
#[derive(Clone)]
pub struct ErrorResponseLayer {
    bulkhead_status: StatusCode,
    response: Option<MakeResponse>,
}

impl ErrorResponseLayer {
    /// The responses in the module's table.
    pub fn new() -> Self {
        ErrorResponseLayer {
            bulkhead_status: StatusCode::SERVICE_UNAVAILABLE,
            response: None,
        }
    }

    /// The status for a full bulkhead: `503` by default, `429` to tell
    /// clients to slow down.
    pub fn bulkhead_status(mut self, status: StatusCode) -> Self {
        self.bulkhead_status = status;
        self
    }

    /// Makes every refusal's response with `response` (a JSON body of your
    /// API's shape, say); [`Refused::default_response`] is there to start
    /// from.
    pub fn response<F>(mut self, response: F) -> Self
    where
        F: Fn(&Refused<'_>) -> Response + Send + Sync + 'static,
    {
        self.response = Some(Arc::new(response));
        self
    }

    fn respond(&self, refusal: &Refused<'_>) -> Response {
        match &self.response {
            Some(response) => response(refusal),
            None => refusal.default_response(self.bulkhead_status),
        }
    }
}

impl Default for ErrorResponseLayer {
    fn default() -> Self {
        ErrorResponseLayer::new()
    }
}

impl fmt::Debug for ErrorResponseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorResponseLayer")
            .field("bulkhead_status", &self.bulkhead_status)
            .field("custom_response", &self.response.is_some())
            .finish()
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse {
            inner,
            responses: self.clone(),
            not_ready: Mutex::new(None),
        }
    }
}

/// A service whose seawall errors are answered as responses. Made by
/// [`ErrorResponseLayer`].
#[derive(Debug)]
pub struct ErrorResponse<S> {
    inner: S,
    responses: ErrorResponseLayer,
    /// A readiness error, answered as the next call's response: `poll_ready`
    /// cannot fail when the error type is `Infallible`. In a mutex only so
    /// the service is `Sync` (as axum wants; a response body is not): it is
    /// reached through `&mut self`, never locked.
    not_ready: Mutex<Option<Response>>,
}

impl<S: Clone> Clone for ErrorResponse<S> {
    /// A clone shares the inner service's state, not a pending readiness
    /// error.
    fn clone(&self) -> Self {
        ErrorResponse {
            inner: self.inner.clone(),
            responses: self.responses.clone(),
            not_ready: Mutex::new(None),
        }
    }
}

impl<S, Req, E> Service<Req> for ErrorResponse<S>
where
    S: Service<Req, Response = Response, Error = Error<E>>,
    E: IntoResponse + Leaf,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let not_ready = self.not_ready.get_mut().unwrap_or_else(|p| p.into_inner());
        if not_ready.is_none() {
            if let Err(error) = ready!(self.inner.poll_ready(cx)) {
                *not_ready = Some(self.responses.answer(error));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let not_ready = self.not_ready.get_mut().unwrap_or_else(|p| p.into_inner());
        match not_ready.take() {
            Some(response) => ResponseFuture {
                state: State::Answered {
                    response: Some(response),
                },
            },
            None => ResponseFuture {
                state: State::Called {
                    future: self.inner.call(request),
                    responses: self.responses.clone(),
                },
            },
        }
    }
}

impl ErrorResponseLayer {
    fn answer<E: IntoResponse + Leaf>(&self, error: Error<E>) -> Response {
        match error {
            Error::CircuitOpen(open) => self.respond(&Refused::CircuitOpen(&open)),
            Error::BulkheadFull(full) => self.respond(&Refused::BulkheadFull(&full)),
            Error::Timeout(elapsed) => self.respond(&Refused::Timeout(&elapsed)),
            Error::Inner(inner) => match inner.refusal() {
                Some(refusal) => status_of_refusal(refusal, self.bulkhead_status).into_response(),
                None => inner.into_response(),
            },
        }
    }
}

pin_project! {
    /// The future of an [`ErrorResponse`] call.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            future: F,
            responses: ErrorResponseLayer,
        },
        Answered {
            response: Option<Response>,
        },
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Error<E>>>,
    E: IntoResponse + Leaf,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future, responses } => {
                Poll::Ready(Ok(match ready!(future.poll(cx)) {
                    Ok(response) => response,
                    Err(error) => responses.answer(error),
                }))
            }
            StateProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
