//! The edge: a server reads each request's budget, refuses what is already
//! spent, and runs its handler with the budget current.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderName;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use super::{header, Budget};
use crate::error::{Elapsed, Error, IntoError};
use crate::ConfigError;

/// Reads the budget of each request a server receives (see the
/// [module's notes](super)), answers at once when it is already spent, and
/// runs the handler with it current, stopped when it runs out. The error
/// for both is a [timeout](Error::Timeout): the caller's own when the
/// budget the caller sent was what ran out, this server's when its own
/// default or maximum was.
///
/// The budget bounds the handler's future, up to the response's head: a
/// streaming body goes on after it.
///
/// Put it outermost on a router or a tonic server, under
/// [`ErrorResponseLayer`](crate::integration::axum::ErrorResponseLayer) or
/// [`StatusLayer`](crate::integration::tonic::StatusLayer), which turn the
/// timeout into `504` or `DEADLINE_EXCEEDED`.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use seawall::budget::{Budget, BudgetLayer};
/// use seawall::integration::axum::ErrorResponseLayer;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), seawall::ConfigError> {
/// // A request that says nothing gets 2 s; none gets more than 10 s.
/// let budgets = BudgetLayer::builder()
///     .default_budget(Duration::from_secs(2))
///     .max_budget(Duration::from_secs(10))
///     .build()?;
/// let app: Router = Router::new()
///     .route("/", get(|| async {
///         let left = Budget::current().map(|budget| budget.remaining());
///         format!("{left:?} left")
///     }))
///     .layer(ServiceBuilder::new().layer(ErrorResponseLayer::new()).layer(budgets));
/// # drop(app);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    header: HeaderName,
    default: Option<Duration>,
    max: Option<Duration>,
}

impl BudgetLayer {
    /// Reads `grpc-timeout` or [`HEADER`](super::HEADER); a request that
    /// carries neither has no budget, and none is capped.
    pub fn new() -> BudgetLayer {
        BudgetLayer {
            header: HeaderName::from_static(super::HEADER),
            default: None,
            max: None,
        }
    }

    /// A layer with a default, a maximum or another header.
    pub fn builder() -> BudgetLayerBuilder {
        BudgetLayerBuilder {
            layer: BudgetLayer::new(),
        }
    }

    /// The budget of a request that carries `carried`: the default when it
    /// carries none, capped by the maximum.
    fn budget_of(&self, carried: Option<Duration>) -> Option<Duration> {
        let budget = carried.or(self.default)?;
        Some(self.max.map_or(budget, |max| budget.min(max)))
    }
}

impl Default for BudgetLayer {
    fn default() -> Self {
        BudgetLayer::new()
    }
}

/// Builds a [`BudgetLayer`].
#[derive(Clone, Debug)]
pub struct BudgetLayerBuilder {
    layer: BudgetLayer,
}

impl BudgetLayerBuilder {
    /// The budget of a request that carries none. Default: none (such a
    /// request runs without a deadline from this layer).
    pub fn default_budget(mut self, budget: Duration) -> Self {
        self.layer.default = Some(budget);
        self
    }

    /// The longest budget any request gets, whatever it carries: a client
    /// cannot ask this server to keep working for an hour.
    pub fn max_budget(mut self, budget: Duration) -> Self {
        self.layer.max = Some(budget);
        self
    }

    /// The header plain HTTP requests carry their budget in (whole
    /// milliseconds). Default [`HEADER`](super::HEADER). gRPC requests'
    /// `grpc-timeout` is read whatever this says.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.layer.header = header;
        self
    }

    /// The layer, or the setting that cannot work.
    pub fn build(self) -> Result<BudgetLayer, ConfigError> {
        let layer = self.layer;
        for (field, budget) in [("default_budget", layer.default), ("max_budget", layer.max)] {
            if budget == Some(Duration::ZERO) {
                return Err(ConfigError::new(
                    field,
                    Duration::ZERO,
                    "must be longer than zero (every request would be refused)",
                ));
            }
        }
        if let (Some(default), Some(max)) = (layer.default, layer.max) {
            if default > max {
                return Err(ConfigError::new(
                    "default_budget",
                    default,
                    "must not be longer than max_budget",
                ));
            }
        }
        Ok(layer)
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A server whose requests run within their budgets. Made by
/// [`BudgetLayer`].
#[derive(Clone, Debug)]
pub struct BudgetService<S> {
    inner: S,
    layer: BudgetLayer,
}

impl<S, B> Service<http::Request<B>> for BudgetService<S>
where
    S: Service<http::Request<B>>,
    S::Error: IntoError,
{
    type Response = S::Response;
    type Error = Error<<S::Error as IntoError>::Inner>;
    type Future = BudgetFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(IntoError::into_error)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let carried = header::read(request.headers(), &self.layer.header);
        let Some(remaining) = self.layer.budget_of(carried) else {
            return BudgetFuture {
                state: State::Unbudgeted {
                    inner: self.inner.call(request),
                },
            };
        };
        let own = Budget::new(remaining);
        let outer = Budget::current();
        let budget = own.scoped_in(outer);
        // The caller's deadline only when the caller's budget binds: what
        // it sent (not this server's default, nor cut by its maximum), or a
        // shorter one already current. Otherwise running out is this
        // server's own timeout, and its answer must not tell the caller's
        // client otherwise.
        let callers = carried == Some(remaining) || outer.is_some_and(|outer| outer <= own);
        let told = Elapsed::new(budget.remaining(), callers);
        if budget.is_spent() {
            return BudgetFuture {
                state: State::Spent { told: Some(told) },
            };
        }
        request.extensions_mut().insert(budget);
        let inner = budget.enter(|| self.inner.call(request));
        BudgetFuture {
            state: State::Running {
                inner,
                timer: tokio::time::sleep_until(budget.deadline()),
                budget,
                told,
            },
        }
    }
}

pin_project! {
    /// The future of a [`BudgetService`] call.
    pub struct BudgetFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            timer: Sleep,
            budget: Budget,
            // The error once the budget runs out.
            told: Elapsed,
        },
        Unbudgeted {
            #[pin]
            inner: F,
        },
        Spent {
            told: Option<Elapsed>,
        },
    }
}

impl<F, T, E> Future for BudgetFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: IntoError,
{
    type Output = Result<T, Error<E::Inner>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running {
                inner,
                timer,
                budget,
                told,
            } => {
                if let Poll::Ready(result) = budget.enter(|| inner.poll(cx)) {
                    // Failed as the budget ran out (by a timer of its own
                    // for it, below): the caller's deadline.
                    return Poll::Ready(result.map_err(|error| {
                        if budget.has_run_out() {
                            Error::Timeout(*told)
                        } else {
                            error.into_error()
                        }
                    }));
                }
                timer.poll(cx).map(|()| Err(Error::Timeout(*told)))
            }
            StateProj::Unbudgeted { inner } => inner.poll(cx).map_err(IntoError::into_error),
            StateProj::Spent { told } => Poll::Ready(Err(Error::Timeout(
                told.take().expect("budget future polled after completion"),
            ))),
        }
    }
}

impl<F> fmt::Debug for BudgetFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetFuture").finish_non_exhaustive()
    }
}
