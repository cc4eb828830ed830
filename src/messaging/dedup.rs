//! The idempotent consumer: a handler that skips a message it has already
//! handled, by the message's id.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::Message;
use crate::ConfigError;

/// Makes a handler idempotent over an at-least-once transport: a message
/// whose [id](Message::id) is among the last `capacity` handled ids is
/// answered `Ok(None)` without calling the handler, so a
/// [`Consumer`](super::Consumer) acknowledges it and it is gone. A message
/// without an id is always handled.
///
/// An id is remembered once its handler succeeded, not before: a message
/// whose handling failed is handled again when it comes back. Two copies
/// of one message that arrive while neither has finished are both handled
/// (the set cannot know the first will succeed); run the consumer with a
/// [`concurrency`](super::Consumer::concurrency) of one where that matters.
/// The set lives in this process's memory: after a restart, a message
/// handled just before it may be handled again. It keeps a 64-bit hash of
/// each id (keyed at random per process), so its memory is bounded by
/// `capacity` whatever the ids' length; two different ids share a hash
/// with a chance of about `capacity` in 2^64.
///
/// ```
/// use seawall::messaging::{DeduplicateLayer, Message};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = DeduplicateLayer::new(10_000)?;
/// let handler = layer.layer(service_fn(|_: Message| async { Ok::<_, std::io::Error>("handled") }));
/// let order = Message::new("orders", "42").with_id("order-42");
/// assert_eq!(handler.clone().oneshot(order.clone()).await?, Some("handled"));
/// assert_eq!(handler.oneshot(order).await?, None);
/// assert_eq!(layer.figures().duplicates, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DeduplicateLayer {
    seen: Arc<Seen>,
}

struct Seen {
    capacity: usize,
    hasher: RandomState,
    ids: Mutex<Ids>,
    duplicates: AtomicU64,
}

#[derive(Default)]
struct Ids {
    set: HashSet<u64>,
    // Oldest first: the one to forget when the set is full.
    order: VecDeque<u64>,
}

/// What a [`DeduplicateLayer`] has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeduplicateFigures {
    /// Ids remembered now.
    pub remembered: usize,
    /// Messages skipped as repeats.
    pub duplicates: u64,
}

impl DeduplicateLayer {
    /// Remembers the last `capacity` ids handled (at least one).
    pub fn new(capacity: usize) -> Result<DeduplicateLayer, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::new(
                "capacity",
                capacity,
                "must remember at least one id",
            ));
        }
        Ok(DeduplicateLayer {
            seen: Arc::new(Seen {
                capacity,
                hasher: RandomState::new(),
                ids: Mutex::new(Ids::default()),
                duplicates: AtomicU64::new(0),
            }),
        })
    }

    /// What it has seen, shared by every service it made.
    pub fn figures(&self) -> DeduplicateFigures {
        DeduplicateFigures {
            remembered: self.seen.ids().set.len(),
            duplicates: self.seen.duplicates.load(Relaxed),
        }
    }
}

impl Seen {
    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        // The set is left whole by every holder: a panic elsewhere while it
        // was held does not make it wrong.
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn key(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn contains(&self, key: u64) -> bool {
        self.ids().set.contains(&key)
    }

    fn remember(&self, key: u64) {
        let mut ids = self.ids();
        if !ids.set.insert(key) {
            return;
        }
        ids.order.push_back(key);
        if ids.order.len() > self.capacity {
            if let Some(oldest) = ids.order.pop_front() {
                ids.set.remove(&oldest);
            }
        }
    }
}

impl fmt::Debug for DeduplicateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeduplicateLayer")
            .field("capacity", &self.seen.capacity)
            .field("figures", &self.figures())
            .finish()
    }
}

impl<S> Layer<S> for DeduplicateLayer {
    type Service = Deduplicate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deduplicate {
            inner,
            seen: Arc::clone(&self.seen),
        }
    }
}

/// A handler that skips messages it has handled. Made by
/// [`DeduplicateLayer`].
#[derive(Clone)]
pub struct Deduplicate<S> {
    inner: S,
    seen: Arc<Seen>,
}

impl<S: fmt::Debug> fmt::Debug for Deduplicate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deduplicate")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Message>> Service<Message> for Deduplicate<S> {
    /// `None` for a repeat that was skipped.
    type Response = Option<S::Response>;
    type Error = S::Error;
    type Future = DeduplicateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, message: Message) -> Self::Future {
        let key = message.id.as_deref().map(|id| self.seen.key(id));
        if key.is_some_and(|key| self.seen.contains(key)) {
            self.seen.duplicates.fetch_add(1, Relaxed);
            return DeduplicateFuture {
                state: State::Repeat,
            };
        }
        DeduplicateFuture {
            state: State::Handling {
                inner: self.inner.call(message),
                key,
                seen: Arc::clone(&self.seen),
            },
        }
    }
}

pin_project! {
    /// The future of a [`Deduplicate`] call.
    pub struct DeduplicateFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Handling {
            #[pin]
            inner: F,
            key: Option<u64>,
            seen: Arc<Seen>,
        },
        Repeat,
    }
}

impl<F, T, E> Future for DeduplicateFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<Option<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Handling { inner, key, seen } => {
                let response = ready!(inner.poll(cx))?;
                if let Some(key) = key.take() {
                    seen.remember(key);
                }
                Poll::Ready(Ok(Some(response)))
            }
            StateProj::Repeat => Poll::Ready(Ok(None)),
        }
    }
}

impl<F> fmt::Debug for DeduplicateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeduplicateFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_id_is_forgotten_first_and_repeats_are_not_stored_twice() {
        let layer = DeduplicateLayer::new(2).unwrap();
        let seen = &layer.seen;
        for id in ["a", "b", "a", "c"] {
            seen.remember(seen.key(id));
        }
        assert!(!seen.contains(seen.key("a")));
        assert!(seen.contains(seen.key("b")) && seen.contains(seen.key("c")));
        assert_eq!(layer.figures().remembered, 2);
        assert_eq!(DeduplicateLayer::new(0).unwrap_err().field(), "capacity");
    }
}
