//! tonic: seawall's refusals as gRPC statuses, and `grpc-timeout` as a
//! per-request deadline (feature `tonic`).
//!
//! Use this module when seawall guards a tonic client's channel or a tonic
//! server: refusals reach the caller as the gRPC codes that say what
//! happened (not `UNKNOWN` or a reset stream), a server honours the
//! caller's own deadline, and [`server_errors()`](server_errors) counts the
//! statuses that blame the server as failures.
//!
//! | seawall error | gRPC status |
//! |---|---|
//! | circuit open | `UNAVAILABLE` (with `retry-after` metadata in seconds, and gRPC's `grpc-retry-pushback-ms`, when known) |
//! | bulkhead full | `RESOURCE_EXHAUSTED` |
//! | timeout | `DEADLINE_EXCEEDED` (with `seawall-caller-deadline: 1` when it was the caller's [budget](crate::budget)) |
//! | inner error | tonic's own reading of it (`Status::from_error`) |
//!
//! tonic turns a middleware error into a status by looking for a
//! `tonic::Status` in it; anything else becomes `UNKNOWN` on a client, or
//! resets the stream (`INTERNAL`) on a server. [`StatusLayer`] puts the
//! status there: stack it above a [`Policy`](crate::policy::Policy) (or any
//! stack of seawall layers), on either side.
//!
//! **Client:** the generated client type does not change.
//!
//! ```ignore
//! let policy = Policy::builder().name("echo").timeout(Duration::from_secs(1)).build()?;
//! let channel = ServiceBuilder::new().layer(StatusLayer::new()).layer(policy).service(channel);
//! let mut client = EchoClient::new(channel);
//! ```
//!
//! **Server:** shed load and time out before the handler runs, honouring the
//! caller's `grpc-timeout` ([`GrpcTimeout`]) capped by the policy's timeout.
//!
//! ```ignore
//! let policy = Policy::builder().name("echo-server")
//!     .bulkhead(Bulkhead::builder().max_concurrent(64))
//!     .timeout(Duration::from_secs(5))
//!     .per_request_deadline(GrpcTimeout)
//!     .build()?;
//! Server::builder()
//!     .layer(ServiceBuilder::new().layer(StatusLayer::new()).layer(policy))
//!     .add_service(EchoServer::new(MyEcho))
//!     .serve(address)
//!     .await?;
//! ```
//!
//! To pass the caller's deadline on to whatever the handler calls, put a
//! [`BudgetLayer`](crate::budget::BudgetLayer) under the `StatusLayer`
//! instead of (or beside) `per_request_deadline(GrpcTimeout)`: the handler
//! then runs with the caller's [budget](crate::budget) current, and every
//! Policy it calls through honours it (`examples/deadlines.rs`).
//!
//! (Both are compiled and run in `examples/tonic_client.rs` and
//! `examples/tonic_server.rs`.) In a handler, `?` on a seawall-wrapped
//! client's result gives the same statuses: `Error` converts into `Status`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tonic::metadata::MetadataValue;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::Http;
use crate::error::{Error, IntoError, Leaf, Refusal};
use crate::timeout::DeadlineOf;
use crate::BoxError;
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};

impl<E: Into<BoxError> + Leaf> From<Error<E>> for Status {
    fn from(error: Error<E>) -> Status {
        match error.refusal() {
            Some(Refusal::Timeout) if matches!(error, Error::Inner(_)) => {
                return Status::deadline_exceeded(error.to_string());
            }
            Some(Refusal::Overloaded) if matches!(error, Error::Inner(_)) => {
                return Status::resource_exhausted(error.to_string());
            }
            _ => {}
        }
        match error {
            Error::CircuitOpen(open) => {
                let mut status = Status::unavailable(open.to_string());
                if let Some(after) = open.retry_after() {
                    // Rounded up: never invite a retry too soon.
                    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                    let millis = after.as_nanos().div_ceil(1_000_000);
                    let metadata = status.metadata_mut();
                    metadata.insert("retry-after", MetadataValue::from(seconds));
                    // gRPC's own pushback, which its retry policies obey.
                    let millis = u64::try_from(millis).unwrap_or(u64::MAX);
                    metadata.insert("grpc-retry-pushback-ms", MetadataValue::from(millis));
                }
                status
            }
            Error::BulkheadFull(full) => Status::resource_exhausted(full.to_string()),
            Error::Timeout(elapsed) => {
                let mut status = Status::deadline_exceeded(elapsed.to_string());
                if elapsed.is_callers_deadline() {
                    // The caller's own budget ran out: its client must not
                    // blame this server (see `budget::PropagateBudgetLayer`).
                    let marker = crate::budget::CALLER_DEADLINE;
                    status
                        .metadata_mut()
                        .insert(marker, MetadataValue::from_static("1"));
                }
                status
            }
            Error::Inner(inner) => Status::from_error(inner.into()),
        }
    }
}

/// The classifier for gRPC responses (on a client's channel or a server's
/// router): a call that ended with a status that blames the server
/// (`UNKNOWN`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`,
/// `UNAVAILABLE`, `DATA_LOSS`, ...) is a failure; a caller's mistake
/// (`INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`,
/// `UNAUTHENTICATED`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`,
/// `CANCELLED`) is not. tower-http's [`GrpcErrorsAsFailures`] through
/// [`Http`]: a named type for a policy kept in a field.
///
/// It reads the status a server sends at once, in the response headers
/// (which tonic does for every unary error); a status sent later in
/// trailers is past the point where a tower layer sees the response.
pub fn server_errors() -> Http<GrpcErrorsAsFailures> {
    Http::new(
        GrpcErrorsAsFailures::new()
            .with_success(GrpcCode::InvalidArgument)
            .with_success(GrpcCode::NotFound)
            .with_success(GrpcCode::AlreadyExists)
            .with_success(GrpcCode::PermissionDenied)
            .with_success(GrpcCode::Unauthenticated)
            .with_success(GrpcCode::FailedPrecondition)
            .with_success(GrpcCode::OutOfRange)
            .with_success(GrpcCode::Cancelled),
    )
}

/// Reads the request's `grpc-timeout` header as its deadline: for
/// [`PolicyBuilder::per_request_deadline`](crate::policy::PolicyBuilder::per_request_deadline)
/// or [`TimeoutLayer::per_request_deadline`](crate::timeout::TimeoutLayer::per_request_deadline)
/// on a server. A header that is absent or malformed gives no deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcTimeout;

impl<B> DeadlineOf<http::Request<B>> for GrpcTimeout {
    fn deadline_of(&self, request: &http::Request<B>) -> Option<Duration> {
        crate::budget::header::parse_grpc_timeout(request.headers().get("grpc-timeout")?)
    }
}

/// Turns a seawall service's errors into boxed `tonic::Status`es that
/// tonic passes on as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusLayer;

impl StatusLayer {
    /// The layer.
    pub fn new() -> Self {
        StatusLayer
    }
}

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusService { inner }
    }
}

/// A service whose seawall errors are `tonic::Status`es (boxed). Made by
/// [`StatusLayer`].
#[derive(Clone, Debug)]
pub struct StatusService<S> {
    inner: S,
}

fn boxed_status<E: IntoError>(error: E) -> BoxError
where
    E::Inner: Into<BoxError>,
{
    Box::new(Status::from(error.into_error()))
}

impl<S, Req> Service<Req> for StatusService<S>
where
    S: Service<Req>,
    S::Error: IntoError,
    <S::Error as IntoError>::Inner: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = StatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(boxed_status)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        StatusFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The future of a [`StatusService`] call.
    pub struct StatusFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for StatusFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: IntoError,
    E::Inner: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(boxed_status))
    }
}

impl<F> fmt::Debug for StatusFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_a_requests_own_deadline() {
        let request = http::Request::builder()
            .header("grpc-timeout", "250m")
            .body(())
            .unwrap();
        assert_eq!(
            GrpcTimeout.deadline_of(&request),
            Some(Duration::from_millis(250))
        );
        assert_eq!(GrpcTimeout.deadline_of(&http::Request::new(())), None);
    }
}
