//! What becomes of a call once its result and verdict are known: the types
//! the fallback layer's future and the Policy's share.

use std::task::{Context, Poll};

use super::source::BoxFuture;
use crate::error::Error;
use crate::BoxError;

/// What became of a call once its result and verdict were known, by the
/// fallback's one rule.
pub enum After<Res, E> {
    /// The caller's answer (a response, the fallback's answer, or an error).
    Done(Result<Res, Error<E>>),
    /// A fallback source is working on an answer; the error is the caller's
    /// if it fails.
    Falling(Running<Res>, Error<E>),
}

/// A source's answer in the making, holding its place among the running
/// fallbacks.
pub struct Running<Res> {
    future: BoxFuture<Result<Res, BoxError>>,
    _permit: crate::bulkhead::Permit,
}

impl<Res> Running<Res> {
    pub(crate) fn new(
        future: BoxFuture<Result<Res, BoxError>>,
        permit: crate::bulkhead::Permit,
    ) -> Self {
        Running {
            future,
            _permit: permit,
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Res, BoxError>> {
        self.future.as_mut().poll(cx)
    }
}
