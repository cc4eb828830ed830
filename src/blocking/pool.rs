//! The bounded pool of dedicated threads.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::bulkhead::{BulkheadFull, Isolation};
use crate::error::ConfigError;

/// A bounded pool of threads of its own for synchronous (blocking) calls:
/// Hystrix's thread-pool isolation. Cheap to clone; clones share the pool.
///
/// A call runs on one of `threads` dedicated threads, never on tokio's
/// workers. When every thread is busy, up to `queue` calls wait in line;
/// more are refused at once with [`Error::BulkheadFull`](crate::Error::BulkheadFull).
///
/// **A call cannot be cancelled once it runs.** When its caller gives up (a
/// timeout above drops the response future), the thread still finishes the
/// call, and the pool counts it as abandoned: see
/// [`PoolFigures::abandoned_running`]. A call dropped while still queued is
/// not run.
///
/// **Shutdown.** When the last handle is dropped (the pool and every
/// service made from it), the calls already queued still run, then the
/// threads exit. Nothing waits for them in `drop`, which may run on an
/// async task.
///
/// ```
/// use seawall::blocking::BlockingPool;
///
/// let pool = BlockingPool::builder().name("legacy-db").threads(4).queue(16).build()?;
/// assert_eq!(pool.figures().threads, 4);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct BlockingPool {
    owner: Arc<Owner>,
}

/// Closes the pool when the last handle goes.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.work.notify_all();
    }
}

pub(crate) struct Shared {
    name: String,
    threads: usize,
    max_queue: usize,
    queue: Mutex<Queue>,
    work: Condvar,
    alive: AtomicUsize,
    completed: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    abandoned_running: AtomicUsize,
    abandoned: AtomicU64,
    panics_outside_calls: AtomicU64,
    threads_replaced: AtomicU64,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs taken by a thread and not finished.
    running: usize,
    closed: bool,
}

pub(crate) struct Job {
    /// Runs the call, calls [`Shared::finish`], then answers: a caller who
    /// has its answer finds the thread free already.
    pub(crate) run: Box<dyn FnOnce(&Shared) + Send>,
    pub(crate) state: Arc<JobState>,
}

/// Where a call is, as its caller and its thread both see it.
pub(crate) struct JobState(AtomicU8);

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// The caller gave up before a thread picked it up: it is not run.
const CANCELLED: u8 = 3;
/// The caller gave up while it ran: it runs to the end, unwatched.
const ABANDONED: u8 = 4;

impl JobState {
    pub(crate) fn new() -> Arc<JobState> {
        Arc::new(JobState(AtomicU8::new(QUEUED)))
    }

    /// The caller gives up on the call.
    pub(crate) fn give_up(&self, shared: &Shared) {
        if self
            .0
            .compare_exchange(QUEUED, CANCELLED, AcqRel, Acquire)
            .is_ok()
        {
            return;
        }
        // Counted before the state says so: the thread may finish the call
        // and uncount it right after the state changes.
        shared.abandoned_running.fetch_add(1, Relaxed);
        if self
            .0
            .compare_exchange(RUNNING, ABANDONED, AcqRel, Acquire)
            .is_err()
        {
            shared.abandoned_running.fetch_sub(1, Relaxed);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Jobs run outside the lock, and catch their panics: a poisoned queue is
    // still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The live figures of a blocking pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolFigures {
    /// Threads in the pool.
    pub threads: usize,
    /// Threads still running (all of them until the pool shuts down).
    pub threads_alive: usize,
    /// Threads running a call now, abandoned or not.
    pub busy: usize,
    /// Calls waiting for a thread (including ones cancelled while waiting,
    /// until a thread skips them).
    pub queued: usize,
    /// Calls run to the end.
    pub completed: u64,
    /// Calls refused because every thread was busy and the queue full.
    pub rejected: u64,
    /// Calls whose caller gave up before they started: not run.
    pub cancelled: u64,
    /// Threads busy right now with a call whose caller has gone. When this
    /// reaches `threads`, the pool is exhausted by abandoned calls.
    pub abandoned_running: usize,
    /// Abandoned calls that have finished since the pool started.
    pub abandoned: u64,
    /// Panics caught on the pool's threads outside the calls themselves: a
    /// request or an answer whose `Drop` panicked when the thread dropped it
    /// for a caller who had gone. The thread carries on.
    pub panics_outside_calls: u64,
    /// Threads that ended unexpectedly and were started again.
    pub threads_replaced: u64,
}

impl BlockingPool {
    /// A builder: 10 threads and no queue (Hystrix's defaults: a call is
    /// refused unless a thread is idle).
    pub fn builder() -> BlockingPoolBuilder {
        BlockingPoolBuilder {
            name: "seawall-blocking".to_owned(),
            threads: 10,
            queue: 0,
        }
    }

    /// The pool's name (its threads' name prefix).
    pub fn name(&self) -> &str {
        &self.owner.shared.name
    }

    /// The live figures.
    pub fn figures(&self) -> PoolFigures {
        let shared = &self.owner.shared;
        let (busy, queued) = {
            let queue = lock(&shared.queue);
            (queue.running, queue.jobs.len())
        };
        PoolFigures {
            threads: shared.threads,
            threads_alive: shared.alive.load(Relaxed),
            busy,
            queued,
            completed: shared.completed.load(Relaxed),
            rejected: shared.rejected.load(Relaxed),
            cancelled: shared.cancelled.load(Relaxed),
            abandoned_running: shared.abandoned_running.load(Relaxed),
            abandoned: shared.abandoned.load(Relaxed),
            panics_outside_calls: shared.panics_outside_calls.load(Relaxed),
            threads_replaced: shared.threads_replaced.load(Relaxed),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// Queues a job for a thread, if one is idle or the queue has room.
    pub(crate) fn submit(&self, job: Job) -> Result<(), BulkheadFull> {
        let shared = &self.owner.shared;
        let mut queue = lock(&shared.queue);
        // Every thread busy and the queue full: a thread counts as free as
        // soon as its job is done, even before it is back waiting for work.
        // Saturating: a queue of `usize::MAX` is a queue without a bound.
        if queue.jobs.len() + queue.running >= shared.threads.saturating_add(shared.max_queue) {
            drop(queue);
            shared.rejected.fetch_add(1, Relaxed);
            return Err(BulkheadFull::new(
                Isolation::ThreadPool,
                shared.threads,
                None,
            ));
        }
        queue.jobs.push_back(job);
        drop(queue);
        shared.work.notify_one();
        Ok(())
    }
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingPool")
            .field("name", &self.owner.shared.name)
            .field("figures", &self.figures())
            .finish()
    }
}

impl Shared {
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// A pool thread's loop. Whatever a job owns (the request of a call
    /// given up while queued, the answer of one given up while running) is
    /// dropped inside `catch_unwind`: a `Drop` that panics costs that job,
    /// never the thread.
    fn work(self: &Arc<Self>, index: usize) {
        let _worker = Worker {
            pool: Arc::clone(self),
            index,
        };
        while let Some(job) = self.next_job() {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.run(job))) {
                self.panics_outside_calls.fetch_add(1, Relaxed);
                // Dropping the payload could panic in turn.
                std::mem::forget(panic);
            }
        }
    }

    fn run(&self, job: Job) {
        let Job { run, state } = job;
        if state
            .0
            .compare_exchange(QUEUED, RUNNING, AcqRel, Acquire)
            .is_ok()
        {
            run(self);
        } else {
            // Booked before the job is dropped, which may panic.
            self.cancelled.fetch_add(1, Relaxed);
            lock(&self.queue).running -= 1;
            drop(run);
        }
    }

    /// Books a job as done and its thread as free.
    pub(crate) fn finish(&self, state: &JobState) {
        self.completed.fetch_add(1, Relaxed);
        if state.0.swap(DONE, AcqRel) == ABANDONED {
            self.abandoned_running.fetch_sub(1, Relaxed);
            self.abandoned.fetch_add(1, Relaxed);
        }
        lock(&self.queue).running -= 1;
    }

    /// The next job; `None` once the pool is closed and drained.
    fn next_job(&self) -> Option<Job> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                queue.running += 1;
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue = self
                .work
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// Builds a [`BlockingPool`]; [`build`](Self::build) checks the settings and
/// starts the threads.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BlockingPoolBuilder {
    name: String,
    threads: usize,
    queue: usize,
}

impl BlockingPoolBuilder {
    /// The threads' name prefix. Default `"seawall-blocking"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many threads run calls. Default 10 (Hystrix's `coreSize`).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How many calls may wait for a thread. Default 0: refused unless a
    /// thread is idle (Hystrix's default `maxQueueSize`).
    pub fn queue(mut self, queue: usize) -> Self {
        self.queue = queue;
        self
    }

    /// Checks the settings and starts the threads.
    pub fn build(self) -> Result<BlockingPool, ConfigError> {
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(ConfigError::new(
                "threads",
                self.threads,
                "must be in 1..=1024",
            ));
        }
        let shared = Arc::new(Shared {
            name: self.name,
            threads: self.threads,
            max_queue: self.queue,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: 0,
                closed: false,
            }),
            work: Condvar::new(),
            alive: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            abandoned_running: AtomicUsize::new(0),
            abandoned: AtomicU64::new(0),
            panics_outside_calls: AtomicU64::new(0),
            threads_replaced: AtomicU64::new(0),
        });
        // The owner closes the pool if a thread fails to start.
        let owner = Arc::new(Owner { shared });
        for index in 0..self.threads {
            if start_worker(&owner.shared, index).is_err() {
                return Err(ConfigError::new(
                    "threads",
                    self.threads,
                    "the system refused to start that many threads",
                ));
            }
        }
        Ok(BlockingPool { owner })
    }
}

fn start_worker(pool: &Arc<Shared>, index: usize) -> std::io::Result<()> {
    let worker = Arc::clone(pool);
    pool.alive.fetch_add(1, Relaxed);
    let started = std::thread::Builder::new()
        .name(format!("{}-{index}", pool.name))
        .spawn(move || worker.work(index));
    if started.is_err() {
        pool.alive.fetch_sub(1, Relaxed);
    }
    started.map(drop)
}

/// A pool thread, counted alive until it ends; one that unwinds out of its
/// loop (which no job can make it do) is replaced while the pool is open.
struct Worker {
    pool: Arc<Shared>,
    index: usize,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let pool = &self.pool;
        pool.alive.fetch_sub(1, Relaxed);
        if std::thread::panicking() && !lock(&pool.queue).closed {
            pool.threads_replaced.fetch_add(1, Relaxed);
            let replaced = start_worker(pool, self.index);
            tracing::error!(target: "seawall::blocking", pool = %pool.name, replaced = replaced.is_ok(), "a pool thread died");
        }
    }
}

/// More threads than this is a misconfiguration, not isolation.
const MAX_THREADS: usize = 1024;
