//! Thread-pool isolation: a synchronous (blocking) client as a `Service`.
//!
//! Use a blocking pool when the client you must call blocks its thread (a
//! database driver, a legacy SDK, a synchronous messaging client): it runs
//! the calls on threads of its own, sized for that one dependency, and
//! makes the client a tower `Service` that any seawall layer, or a
//! [`Policy`](crate::policy::Policy), can guard.
//!
//! A blocking call on a tokio worker thread stalls every task on that
//! thread. [`BlockingService`] runs each call on a [`BlockingPool`] of
//! dedicated threads instead (Hystrix's thread-pool isolation): at most
//! `threads` calls at once, a bounded queue, and a refusal with
//! [`Error::BulkheadFull`] when both are full: the pool is a bulkhead of
//! its own, and the breaker above it counts its refusals as rejections.
//!
//! Any `Fn(Req) -> Result<Res, E> + Send + Sync` is a client: a closure
//! that calls a method of a blocking client (behind an `Arc`) will do. Put a
//! [timeout](crate::timeout) above it to stop waiting for a slow answer;
//! the thread cannot be interrupted and finishes the call, counted as
//! abandoned in [`PoolFigures`].
//!
//! # Compared with `tokio::task::spawn_blocking`
//!
//! `spawn_blocking` shares one large pool (512 threads by default) with
//! everything else and queues without bound: one slow dependency can take it
//! all. A `BlockingPool` is sized per dependency, refuses when full, and
//! says how many of its threads are tied up by callers that gave up.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use seawall::blocking::{BlockingPool, BlockingService};
//! use seawall::timeout::TimeoutLayer;
//! use tower::{Layer, ServiceExt};
//!
//! /// A client with a blocking method (a database driver, say).
//! struct Inventory;
//! impl Inventory {
//!     fn stock(&self, sku: u32) -> Result<u32, std::io::Error> {
//!         std::thread::sleep(Duration::from_millis(1)); // blocking I/O
//!         Ok(sku * 2)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = BlockingPool::builder().name("inventory").threads(4).queue(8).build()?;
//! let client = Arc::new(Inventory);
//! let service = BlockingService::new(pool.clone(), move |sku: u32| client.stock(sku));
//! let service = TimeoutLayer::new(Duration::from_secs(1)).layer(service);
//!
//! let stock = service.oneshot(21).await?;
//! assert_eq!(stock, 42);
//! # Ok(())
//! # }
//! ```

mod future;
mod pool;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tower_service::Service;

pub use future::ResponseFuture;
pub use pool::{BlockingPool, BlockingPoolBuilder, PoolFigures};

use crate::error::{Error, IntoError};
use pool::{Job, JobState};

/// A synchronous function as a `Service` whose calls run on a
/// [`BlockingPool`]. Cheap to clone; clones share the pool and the function.
pub struct BlockingService<F> {
    pool: BlockingPool,
    call: Arc<F>,
}

impl<F> BlockingService<F> {
    /// Runs `call` on `pool`'s threads.
    pub fn new(pool: BlockingPool, call: F) -> Self {
        BlockingService {
            pool,
            call: Arc::new(call),
        }
    }

    /// The pool the calls run on.
    pub fn pool(&self) -> &BlockingPool {
        &self.pool
    }
}

impl<F> Clone for BlockingService<F> {
    fn clone(&self) -> Self {
        BlockingService {
            pool: self.pool.clone(),
            call: Arc::clone(&self.call),
        }
    }
}

impl<F> std::fmt::Debug for BlockingService<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingService")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl<F, Req, Res, E> Service<Req> for BlockingService<F>
where
    F: Fn(Req) -> Result<Res, E> + Send + Sync + 'static,
    Req: Send + 'static,
    Res: Send + 'static,
    E: IntoError + Send + 'static,
{
    type Response = Res;
    type Error = Error<E::Inner>;
    type Future = ResponseFuture<Res, E>;

    /// Always ready: a full pool refuses in `call`, like Hystrix.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let (answer, answered) = oneshot::channel();
        let call = Arc::clone(&self.call);
        let state = JobState::new();
        let finished = Arc::clone(&state);
        let job = Job {
            run: Box::new(move |pool| {
                let result = catch_unwind(AssertUnwindSafe(|| call(request)));
                pool.finish(&finished);
                // The caller may have gone: nobody to tell.
                let _ = answer.send(result);
            }),
            state: Arc::clone(&state),
        };
        match self.pool.submit(job) {
            Ok(()) => ResponseFuture::submitted(answered, state, Arc::clone(self.pool.shared())),
            Err(full) => ResponseFuture::refused(full),
        }
    }
}
