//! Where fallback answers come from, behind trait objects: they are only
//! reached when a call failed, so a virtual call and a boxed future cost
//! nothing on the healthy path, and keep `Fallback`'s type short.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tower_service::Service;

use crate::error::Error;
use crate::BoxError;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A source of fallback answers.
pub(crate) trait Source<K, Res, E>: Send + Sync {
    fn answer(&self, key: &K, error: &Error<E>) -> BoxFuture<Result<Res, BoxError>>;
}

/// A store of good answers.
pub(crate) trait Lookup<K, Res>: Send + Sync {
    /// Keeps `response` as the last good answer for `key`.
    fn store(&self, key: K, response: &Res);
    /// The last good answer for `key` and its age, if fresh enough.
    fn lookup(&self, key: &K) -> Option<(Res, Duration)>;
}

pub(crate) struct Value<Res>(pub(crate) Res);

impl<K, Res: Clone + Send + Sync + 'static, E> Source<K, Res, E> for Value<Res> {
    fn answer(&self, _: &K, _: &Error<E>) -> BoxFuture<Result<Res, BoxError>> {
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

pub(crate) struct Function<F>(pub(crate) F);

impl<K, Res, E, F, Fe> Source<K, Res, E> for Function<F>
where
    F: Fn(&K, &Error<E>) -> Result<Res, Fe> + Send + Sync,
    Res: Send + 'static,
    Fe: Into<BoxError>,
{
    fn answer(&self, key: &K, error: &Error<E>) -> BoxFuture<Result<Res, BoxError>> {
        Box::pin(std::future::ready((self.0)(key, error).map_err(Into::into)))
    }
}

pub(crate) struct AsyncFunction<F>(pub(crate) F);

impl<K, Res, E, F, Fut, Fe> Source<K, Res, E> for AsyncFunction<F>
where
    F: Fn(&K, &Error<E>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Res, Fe>> + Send + 'static,
    Fe: Into<BoxError>,
{
    fn answer(&self, key: &K, error: &Error<E>) -> BoxFuture<Result<Res, BoxError>> {
        let future = (self.0)(key, error);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

pub(crate) struct Secondary<S>(pub(crate) S);

impl<K, Res, E, S> Source<K, Res, E> for Secondary<S>
where
    S: Service<K, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    K: Clone + Send + 'static,
{
    fn answer(&self, key: &K, _: &Error<E>) -> BoxFuture<Result<Res, BoxError>> {
        let (mut service, key) = (self.0.clone(), key.clone());
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            service.call(key).await.map_err(Into::into)
        })
    }
}
