//! What becomes of a call once its result and verdict are known: the types
//! the fallback layer's future and the Policy's share.

use std::task::{Context, Poll};

use super::source::BoxFuture;
use crate::BoxError;

/// What the fallback's rule made of a call's error. The caller keeps the
/// error meanwhile (it is the answer unless the fallback gives one), so it
/// is never moved on the way.
pub enum After<Res> {
    /// The fallback answered (from its cache or a quick source).
    Answered(Res),
    /// The fallback does not answer: the caller gets the error.
    Unanswered,
    /// A fallback source is working on an answer; the error is the caller's
    /// if it fails.
    Running(Running<Res>),
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
