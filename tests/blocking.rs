//! Thread-pool isolation with real threads. Nothing here sleeps on the wall
//! clock: calls block on gates the test opens, and the few waits for another
//! thread spin with a generous failure guard.

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use seawall::blocking::{BlockingPool, BlockingService, PoolFigures};
use seawall::bulkhead::Isolation;
use seawall::timeout::TimeoutLayer;
use seawall::Error;
use tower::{Layer, Service, ServiceExt};

/// Only reached when something is broken; a passing test never waits this.
const GUARD: Duration = Duration::from_secs(20);

/// Calls block on the gate until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn pass(&self) {
        let (open, changed) = &*self.0;
        let (open, timed_out) = changed
            .wait_timeout_while(open.lock().unwrap(), GUARD, |open| !*open)
            .unwrap();
        assert!(*open && !timed_out.timed_out(), "the gate was never opened");
    }

    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

/// Waits until another thread makes `done` true.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < GUARD, "never happened: {what}");
        std::thread::yield_now();
    }
}

/// Counts calls running at once, the most seen, and every call run.
#[derive(Clone, Default)]
struct Probe {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    ran: Arc<AtomicUsize>,
}

impl Probe {
    fn gated(&self, gate: &Gate) -> impl Fn(u32) -> Result<u32, String> + Send + Sync + 'static {
        let (probe, gate) = (self.clone(), gate.clone());
        move |n| {
            probe.ran.fetch_add(1, SeqCst);
            let now = probe.now.fetch_add(1, SeqCst) + 1;
            probe.max.fetch_max(now, SeqCst);
            gate.pass();
            probe.now.fetch_sub(1, SeqCst);
            match n {
                0 => panic!("the client panicked"),
                1 => Err("the client failed".to_owned()),
                n => Ok(n),
            }
        }
    }
}

/// Submits a call now (a blocking service queues its call in `call`), to be
/// awaited later.
async fn submit<Req, S: Service<Req>>(service: &mut S, n: Req) -> S::Future
where
    S::Error: std::fmt::Debug,
{
    service.ready().await.unwrap().call(n)
}

fn pool(threads: usize, queue: usize) -> BlockingPool {
    BlockingPool::builder()
        .threads(threads)
        .queue(queue)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_runs_more_calls_than_threads() {
    let (pool, gate, probe) = (pool(4, 100), Gate::default(), Probe::default());
    let service = BlockingService::new(pool.clone(), probe.gated(&gate));
    let calls: Vec<_> = (0..50)
        .map(|n| tokio::spawn(service.clone().oneshot(n + 2)))
        .collect();
    eventually("four busy threads and 46 queued calls", || {
        let f = pool.figures();
        f.busy == 4 && f.queued == 46
    });
    gate.open();
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), n as u32 + 2);
    }
    assert_eq!(probe.max.load(SeqCst), 4);
    assert_eq!(pool.figures().completed, 50);
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocking_call_never_stalls_the_runtime() {
    // The blocking call waits for the async task to make progress: on the
    // runtime's only thread it would wait forever (well, for GUARD).
    let (progress_tx, progress_rx) = mpsc::channel::<usize>();
    let progress_rx = Mutex::new(progress_rx);
    let service = BlockingService::new(pool(1, 0), move |_: ()| {
        progress_rx
            .lock()
            .unwrap()
            .recv_timeout(GUARD)
            .map_err(|e| e.to_string())
    });
    let call = tokio::spawn(service.oneshot(()));
    let ticker = tokio::spawn(async move {
        for tick in 0..100 {
            tokio::task::yield_now().await;
            if tick == 99 {
                progress_tx.send(tick).unwrap();
            }
        }
    });
    ticker.await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 99);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_pool_refuses_at_once() {
    let (pool, gate, probe) = (pool(1, 1), Gate::default(), Probe::default());
    let mut service = BlockingService::new(pool.clone(), probe.gated(&gate));
    let running = submit(&mut service, 2).await;
    eventually("a busy thread", || pool.figures().busy == 1);
    let queued = submit(&mut service, 3).await;
    match submit(&mut service, 4).await.await.unwrap_err() {
        Error::BulkheadFull(full) => {
            assert_eq!(full.isolation(), Isolation::ThreadPool);
            assert_eq!((full.limit(), full.waited()), (1, None));
        }
        other => panic!("{other:?}"),
    }
    gate.open();
    assert_eq!(running.await.unwrap(), 2);
    assert_eq!(queued.await.unwrap(), 3);
    assert_eq!(pool.figures().rejected, 1);
    assert_eq!(probe.ran.load(SeqCst), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_timeout_above_abandons_the_call_and_the_figures_show_it() {
    let (pool, gate, probe) = (pool(1, 1), Gate::default(), Probe::default());
    let service = BlockingService::new(pool.clone(), probe.gated(&gate));
    let mut service = TimeoutLayer::new(Duration::from_secs(1)).layer(service);

    let start = tokio::time::Instant::now();
    let call = submit(&mut service, 2).await;
    // Running, not merely queued (a queued call would be cancelled instead).
    eventually("a busy thread", || pool.figures().busy == 1);
    let err = call.await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "exactly at the deadline"
    );
    assert_eq!(
        pool.figures().abandoned_running,
        1,
        "the thread is still tied up"
    );

    gate.open();
    eventually("the abandoned call to finish", || pool.figures().busy == 0);
    let PoolFigures {
        abandoned_running,
        busy,
        completed,
        ..
    } = pool.figures();
    assert_eq!((abandoned_running, busy, completed), (0, 0, 1));
    assert_eq!(pool.figures().abandoned, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_given_up_while_queued_never_runs() {
    let (pool, gate, probe) = (pool(1, 5), Gate::default(), Probe::default());
    let mut service = BlockingService::new(pool.clone(), probe.gated(&gate));
    let running = submit(&mut service, 2).await;
    eventually("a busy thread", || pool.figures().busy == 1);
    let queued = submit(&mut service, 3).await;
    assert_eq!(pool.figures().queued, 1);
    drop(queued);
    gate.open();
    assert_eq!(running.await.unwrap(), 2);
    eventually("the cancelled call to be skipped", || {
        pool.figures().cancelled == 1
    });
    assert_eq!(probe.ran.load(SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn errors_and_panics_reach_the_caller_and_the_pool_survives() {
    let (pool, gate, probe) = (pool(1, 0), Gate::default(), Probe::default());
    gate.open();
    let service = BlockingService::new(pool.clone(), probe.gated(&gate));
    let err = service.clone().oneshot(1).await.unwrap_err();
    assert_eq!(err.into_inner().as_deref(), Some("the client failed"));
    let panicked = tokio::spawn(service.clone().oneshot(0)).await.unwrap_err();
    assert!(panicked.is_panic());
    assert_eq!(service.oneshot(7).await.unwrap(), 7);
    assert_eq!(pool.figures().threads_alive, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_last_handle_runs_the_queue_then_stops_the_threads() {
    thread_local! {
        static ON_EXIT: RefCell<Option<ExitSignal>> = const { RefCell::new(None) };
    }
    struct ExitSignal(mpsc::Sender<()>);
    impl Drop for ExitSignal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    let (exited_tx, exited) = mpsc::channel();
    let exited_tx = Mutex::new(exited_tx);
    let gate = Gate::default();
    let gate_in = gate.clone();
    let pool = pool(2, 10);
    let mut service = BlockingService::new(pool.clone(), move |n: u32| {
        ON_EXIT.with(|slot| {
            slot.borrow_mut()
                .get_or_insert_with(|| ExitSignal(exited_tx.lock().unwrap().clone()));
        });
        gate_in.pass();
        Ok::<_, Infallible>(n)
    });
    let mut calls = Vec::new();
    for n in 0..6 {
        calls.push(submit(&mut service, n).await);
    }
    eventually("two busy threads", || pool.figures().busy == 2);
    drop((pool, service));
    gate.open();
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), n as u32, "queued work still runs");
    }
    for _ in 0..2 {
        exited
            .recv_timeout(GUARD)
            .expect("a pool thread did not exit");
    }
}

#[test]
fn bad_settings_are_refused() {
    let err = BlockingPool::builder().threads(0).build().unwrap_err();
    assert_eq!((err.field(), err.value()), ("threads", "0"));
    let err = BlockingPool::builder().threads(5_000).build().unwrap_err();
    assert_eq!((err.field(), err.value()), ("threads", "5000"));
}

#[tokio::test(flavor = "current_thread")]
async fn an_unbounded_queue_is_a_queue_not_an_overflow() {
    let (gate, probe) = (Gate::default(), Probe::default());
    let pool = BlockingPool::builder()
        .threads(1)
        .queue(usize::MAX)
        .build()
        .unwrap();
    let mut service = BlockingService::new(pool.clone(), probe.gated(&gate));
    let mut calls = Vec::new();
    for n in 2..6 {
        calls.push(submit(&mut service, n).await);
    }
    eventually("one call running, three queued", || {
        let figures = pool.figures();
        (figures.busy, figures.queued) == (1, 3)
    });
    gate.open();
    for (n, call) in (2..).zip(calls) {
        assert_eq!(call.await.unwrap(), n);
    }
    assert_eq!(probe.max.load(SeqCst), 1, "one thread, one call at a time");
    assert_eq!(pool.figures().rejected, 0);
}

/// Panics when dropped: a request or an answer that a pool thread drops for
/// a caller who gave up.
struct Bomb(u32);

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a Drop that panics");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn panics_in_drops_on_a_pool_thread_leave_the_pool_whole() {
    let gate = Gate::default();
    let pool = pool(1, 4);
    let gate_in = gate.clone();
    let mut bombs = BlockingService::new(pool.clone(), move |bomb: Bomb| {
        gate_in.pass();
        let answer = Bomb(bomb.0);
        std::mem::forget(bomb);
        Ok::<_, Infallible>(answer)
    });
    let running = submit(&mut bombs, Bomb(1)).await;
    eventually("the first call running", || pool.figures().busy == 1);
    // Given up while queued: its request is dropped on the thread.
    drop(submit(&mut bombs, Bomb(2)).await);
    // Given up while running: its answer is dropped on the thread.
    drop(running);
    gate.open();
    // The answer is dropped after the call is booked done: wait for both.
    eventually("both calls settled and both bombs dropped", || {
        let figures = pool.figures();
        figures.cancelled == 1
            && figures.abandoned == 1
            && figures.busy == 0
            && figures.panics_outside_calls == 2
    });
    let figures = pool.figures();
    assert_eq!(figures.threads_alive, 1);
    assert_eq!(figures.threads_replaced, 0);
    let answer = submit(&mut bombs, Bomb(3)).await.await.unwrap();
    assert_eq!(answer.0, 3);
    std::mem::forget(answer);
    assert_eq!(pool.figures().threads_alive, 1);
}
