//! The way out: a client writes what is left of the budget into each
//! request it sends, and sends nothing once it is spent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::HeaderName;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{header, Budget};
use crate::error::{Elapsed, Error, IntoError};

/// Writes what is left of the current [`Budget`] (or of one in the
/// request's extensions) into each outgoing HTTP or gRPC request, less a
/// margin the caller keeps to answer with: `grpc-timeout` for gRPC
/// (shortening one the request has already), the [`HEADER`](super::HEADER)
/// otherwise. A request whose budget is spent is not sent: it fails at once
/// with a [timeout](Error::Timeout) that is the caller's own. A request
/// made with no budget current goes out unchanged.
///
/// An error that arrives once the budget sent has run out (tonic's channel
/// enforces the `grpc-timeout` it carries, and fails the call then), and a
/// deadline answer (`504`, gRPC `DEADLINE_EXCEEDED`, or tonic's `CANCELLED`
/// for its `grpc-timeout` timer) that arrives then or that the server
/// marked with [`CALLER_DEADLINE`](super::CALLER_DEADLINE), become that same
/// error: it is the caller's deadline, and a classifier above must not
/// blame the server for it. Other answers pass as they are. (Only a status sent in
/// the response's headers is seen: tonic sends a unary call's error
/// there.)
///
/// Put it under the client's [`Policy`](crate::policy::Policy), next to
/// the channel or connection, so that what it writes is what is left when
/// the request leaves (after any wait for a bulkhead).
///
/// ```
/// use std::time::Duration;
/// use seawall::budget::{Budget, PropagateBudgetLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // A server that answers with the budget it was told.
/// let server = service_fn(|request: http::Request<()>| async move {
///     let told = request.headers()["seawall-budget-ms"].clone();
///     Ok::<_, std::io::Error>(http::Response::new(told))
/// });
/// let client = PropagateBudgetLayer::new().layer(server);
/// let budget = Budget::new(Duration::from_millis(250));
/// let answer = budget.scope(client.oneshot(http::Request::new(()))).await;
/// assert_eq!(answer.unwrap().into_body(), "250");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PropagateBudgetLayer {
    header: HeaderName,
    margin: Duration,
}

impl PropagateBudgetLayer {
    /// Writes the whole budget left, into `grpc-timeout` or
    /// [`HEADER`](super::HEADER).
    pub fn new() -> Self {
        PropagateBudgetLayer {
            header: HeaderName::from_static(super::HEADER),
            margin: Duration::ZERO,
        }
    }

    /// Keeps `margin` for this hop to answer with after its dependency's
    /// deadline (the network's time back, a fallback): the dependency is
    /// told that much less. Default zero.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The header plain HTTP requests carry the budget in. Default
    /// [`HEADER`](super::HEADER).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }
}

impl Default for PropagateBudgetLayer {
    fn default() -> Self {
        PropagateBudgetLayer::new()
    }
}

impl<S> Layer<S> for PropagateBudgetLayer {
    type Service = PropagateBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateBudget {
            inner,
            layer: self.clone(),
        }
    }
}

/// A client that tells each request's server its budget. Made by
/// [`PropagateBudgetLayer`].
#[derive(Clone, Debug)]
pub struct PropagateBudget<S> {
    inner: S,
    layer: PropagateBudgetLayer,
}

impl<S, B, RB> Service<http::Request<B>> for PropagateBudget<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: IntoError,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = PropagateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let carried = request.extensions().get::<Budget>().copied();
        let budget = carried.map_or(Budget::current(), |own| {
            Some(own.scoped_in(Budget::current()))
        });
        let told = budget.map(|budget| budget.less(self.layer.margin));
        if let Some(told) = told {
            let remaining = told.remaining();
            if remaining.is_zero() {
                return PropagateFuture {
                    state: State::Spent {
                        elapsed: Some(Elapsed::new(remaining, true)),
                    },
                };
            }
            header::write(request.headers_mut(), &self.layer.header, remaining);
        }
        PropagateFuture {
            state: State::Sent {
                inner: self.inner.call(request),
                told: told.map(|told| (told, told.remaining())),
            },
        }
    }
}

pin_project! {
    /// The future of a [`PropagateBudget`] call.
    pub struct PropagateFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Sent {
            #[pin]
            inner: F,
            // The budget the server was told, and how long it was.
            told: Option<(Budget, Duration)>,
        },
        Spent {
            elapsed: Option<Elapsed>,
        },
    }
}

impl<F, RB, E> Future for PropagateFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    E: IntoError,
{
    type Output = Result<http::Response<RB>, Error<E::Inner>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent { inner, told } => {
                let result = ready!(inner.poll(cx));
                let Some((told, after)) = told else {
                    return Poll::Ready(result.map_err(IntoError::into_error));
                };
                // The transport's own timer for the budget sent (tonic's
                // channel enforces `grpc-timeout`) may end the call first.
                let passed = told.has_run_out();
                let callers = match &result {
                    Ok(response) => {
                        header::deadline_answer(response).is_some_and(|marked| marked || passed)
                    }
                    Err(_) => passed,
                };
                if callers {
                    return Poll::Ready(Err(Error::Timeout(Elapsed::new(*after, true))));
                }
                Poll::Ready(result.map_err(IntoError::into_error))
            }
            StateProj::Spent { elapsed } => Poll::Ready(Err(Error::Timeout(
                elapsed
                    .take()
                    .expect("propagate future polled after completion"),
            ))),
        }
    }
}

impl<F> fmt::Debug for PropagateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropagateFuture").finish_non_exhaustive()
    }
}
