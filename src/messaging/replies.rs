//! Where replies go: a bounded table of waiting requests keyed by
//! correlation id, fed by one subscription to the reply subject that is
//! renewed when lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::transport::unique_subject;
use super::{Decision, Message, RequestError, Transport};

/// How long to wait before subscribing again after the first failure; it
/// doubles up to [`MAX_RESUBSCRIBE_BACKOFF`].
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(5);

/// Counts of what came back on the reply subject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyFigures {
    /// Requests waiting for replies now.
    pub pending: usize,
    /// Replies handed to a waiting request.
    pub matched: u64,
    /// Replies nobody waited for (any more): late, unknown, or beyond
    /// what a gather keeps. Dropped.
    pub unmatched: u64,
    /// Replies a request had received already (the same [id](Message::id)
    /// again: a responder's retry, a broker's redelivery). Dropped, so that
    /// a gather counts each responder once.
    pub duplicates: u64,
    /// Waiting requests the broker said nobody subscribes to (NATS's "no
    /// responders"; see [`Message::no_responders`]): ended at once, not
    /// counted as matched. Such a word for a request nobody waits for any
    /// more counts as unmatched.
    pub no_responders: u64,
    /// Times the reply subscription was lost and made again.
    pub resubscribed: u64,
}

pub(crate) struct Router {
    waiting: Mutex<HashMap<String, Place>>,
    max_pending: usize,
    prefix: String,
    next: AtomicU64,
    matched: AtomicU64,
    unmatched: AtomicU64,
    duplicates: AtomicU64,
    no_responders: AtomicU64,
    resubscribed: AtomicU64,
}

/// Where a waiting request's replies go, and the ids of those it got.
struct Place {
    replies: mpsc::Sender<Message>,
    seen: Vec<String>,
}

/// What became of a reply.
enum Routed {
    Matched,
    Unmatched,
    Duplicate,
    NoResponders,
}

/// A request's place in the table; leaving it (on reply, timeout or drop)
/// frees the place, so abandoned requests leave nothing behind.
pub(crate) struct Waiting {
    pub(crate) id: String,
    pub(crate) replies: mpsc::Receiver<Message>,
    router: Arc<Router>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.router.waiting().remove(&self.id);
    }
}

impl Router {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Place>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a request expecting up to `replies` replies, or `None`
    /// when `max_pending` requests wait already.
    fn wait(self: &Arc<Self>, replies: usize) -> Option<Waiting> {
        let (sender, receiver) = mpsc::channel(replies.max(1));
        let id = format!(
            "{}.{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut waiting = self.waiting();
        if waiting.len() >= self.max_pending {
            return None;
        }
        let place = Place {
            replies: sender,
            seen: Vec::new(),
        };
        waiting.insert(id.clone(), place);
        drop(waiting);
        Some(Waiting {
            id,
            replies: receiver,
            router: Arc::clone(self),
        })
    }

    fn route(&self, reply: Message) {
        let counter = match self.place(reply) {
            Routed::Matched => &self.matched,
            Routed::Unmatched => &self.unmatched,
            Routed::Duplicate => &self.duplicates,
            Routed::NoResponders => &self.no_responders,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn place(&self, reply: Message) -> Routed {
        let Some(correlation_id) = &reply.correlation_id else {
            return Routed::Unmatched;
        };
        let mut waiting = self.waiting();
        let Some(place) = waiting.get_mut(correlation_id) else {
            return Routed::Unmatched;
        };
        if reply.no_responders {
            // The request ends on it, whatever it received before.
            return match place.replies.try_send(reply) {
                Ok(()) => Routed::NoResponders,
                Err(_) => Routed::Unmatched,
            };
        }
        if reply.id.as_ref().is_some_and(|id| place.seen.contains(id)) {
            return Routed::Duplicate;
        }
        let id = reply.id.clone();
        if place.replies.try_send(reply).is_err() {
            return Routed::Unmatched;
        }
        place.seen.extend(id);
        Routed::Matched
    }

    pub(crate) fn figures(&self) -> ReplyFigures {
        ReplyFigures {
            pending: self.waiting().len(),
            matched: self.matched.load(Ordering::Relaxed),
            unmatched: self.unmatched.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            no_responders: self.no_responders.load(Ordering::Relaxed),
            resubscribed: self.resubscribed.load(Ordering::Relaxed),
        }
    }
}

/// The reply side shared by a correlator and its scatter-gathers: the
/// router, the reply subject, and the listening task, which stops when the
/// last handle goes.
pub(crate) struct Replies<T> {
    pub(crate) transport: T,
    pub(crate) subject: String,
    pub(crate) router: Arc<Router>,
    _stop: oneshot::Sender<()>,
}

impl<T: Transport> Replies<T> {
    /// Subscribes to `subject` and starts routing what arrives on it.
    pub(crate) async fn start(
        transport: T,
        subject: String,
        max_pending: usize,
    ) -> Result<Replies<T>, T::Error> {
        let subscription = transport.subscribe(&subject).await?;
        let router = Arc::new(Router {
            waiting: Mutex::new(HashMap::new()),
            max_pending,
            prefix: unique_subject("c"),
            next: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            no_responders: AtomicU64::new(0),
            resubscribed: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(listen(
            transport.clone(),
            subject.clone(),
            Arc::downgrade(&router),
            subscription,
            stopped,
        ));
        Ok(Replies {
            transport,
            subject,
            router,
            _stop: stop,
        })
    }
}

impl<T: Transport> Replies<T> {
    /// Takes a place for up to `replies` replies to `request`, and
    /// addresses the request for them.
    pub(crate) fn ask(
        &self,
        request: &mut Message,
        replies: usize,
    ) -> Result<Waiting, RequestError<T::Error>> {
        let waiting = self
            .router
            .wait(replies)
            .ok_or(RequestError::TooManyPending {
                limit: self.router.max_pending,
            })?;
        request.reply_to = Some(self.subject.clone());
        request.correlation_id = Some(waiting.id.clone());
        Ok(waiting)
    }
}

async fn listen<T: Transport>(
    transport: T,
    subject: String,
    router: Weak<Router>,
    mut subscription: T::Subscription,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let delivery = tokio::select! {
            _ = &mut stopped => return,
            delivery = subscription.next() => delivery,
        };
        let Some(router) = router.upgrade() else {
            return;
        };
        match delivery {
            Some(delivery) => {
                let (reply, settle) = delivery.into_parts();
                router.route(reply);
                if let Err(error) = settle.send(Decision::Ack).await {
                    tracing::debug!(target: "seawall::messaging", %error, "could not acknowledge a reply");
                }
            }
            None => {
                tracing::warn!(target: "seawall::messaging", %subject, "reply subscription lost; subscribing again");
                let mut backoff = RESUBSCRIBE_BACKOFF;
                subscription = loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    match transport.subscribe(&subject).await {
                        Ok(subscription) => break subscription,
                        Err(error) => {
                            tracing::debug!(target: "seawall::messaging", %error, "subscribing again failed");
                            backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                        }
                    }
                };
                router.resubscribed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
