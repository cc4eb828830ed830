//! The bulkhead under load and under cancellation, with tokio's clock paused.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::bulkhead::{Bulkhead, BulkheadFigures, BulkheadService, Isolation, Mode};
use seawall::Error;
use tokio::time::{advance, sleep, timeout};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts calls in flight, the most seen at once, and every call made.
#[derive(Clone, Default)]
struct Probe {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<u64, &'static str>> + Send>>;
impl Probe {
    /// A dependency that takes `ms` milliseconds per call (`u64::MAX`: hangs;
    /// 0: panics).
    fn service(&self) -> ProbeService {
        ProbeService(self.clone())
    }
}

#[derive(Clone)]
struct ProbeService(Probe);

impl Service<u64> for ProbeService {
    type Response = u64;
    type Error = &'static str;
    type Future = BoxFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, ms: u64) -> BoxFuture {
        let probe = self.0.clone();
        Box::pin(async move {
            probe.calls.fetch_add(1, SeqCst);
            let now = probe.now.fetch_add(1, SeqCst) + 1;
            probe.max.fetch_max(now, SeqCst);
            struct Leave(Arc<AtomicUsize>);
            impl Drop for Leave {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, SeqCst);
                }
            }
            let _leave = Leave(probe.now.clone());
            match ms {
                0 => panic!("the dependency panicked"),
                u64::MAX => std::future::pending().await,
                ms => sleep(Duration::from_millis(ms)).await,
            }
            Ok(ms)
        })
    }
}

fn figures<M: Mode>(bulkhead: &Bulkhead<M>) -> (usize, usize) {
    let BulkheadFigures {
        in_flight, queued, ..
    } = bulkhead.figures();
    (in_flight, queued)
}

/// Sends `tasks` concurrent calls taking `ms` each; returns (admitted, refused
/// with the time each refused call waited).
async fn storm<M: Mode>(
    bulkhead: &Bulkhead<M>,
    probe: &Probe,
    tasks: usize,
    ms: u64,
) -> (usize, Vec<Option<Duration>>)
where
    BulkheadService<ProbeService, M>:
        Service<u64, Response = u64, Error = Error<&'static str>> + Clone + Send + 'static,
    <BulkheadService<ProbeService, M> as Service<u64>>::Future: Send,
{
    let service = bulkhead.layer().layer(probe.service());
    let handles: Vec<_> = (0..tasks)
        .map(|_| tokio::spawn(service.clone().oneshot(ms)))
        .collect();
    let (mut admitted, mut refused) = (0, Vec::new());
    for handle in handles {
        match handle.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(Error::BulkheadFull(full)) => {
                assert_eq!(full.isolation(), Isolation::Bulkhead);
                assert_eq!(full.limit(), 10);
                refused.push(full.waited());
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    (admitted, refused)
}

#[tokio::test(start_paused = true)]
async fn rejecting_bulkhead_of_ten_under_a_thousand_tasks() {
    let bulkhead = Bulkhead::builder().max_concurrent(10).build().unwrap();
    let probe = Probe::default();
    let (admitted, refused) = storm(&bulkhead, &probe, 1_000, 10).await;
    assert_eq!(admitted + refused.len(), 1_000, "every call accounted for");
    assert_eq!(admitted, 10);
    assert!(refused.iter().all(Option::is_none), "refused at once");
    assert_eq!(probe.max.load(SeqCst), 10);
    assert_eq!(
        probe.calls.load(SeqCst),
        admitted,
        "refused calls never reach the service"
    );
    let f = bulkhead.figures();
    assert_eq!(
        (
            f.in_flight,
            f.queued,
            f.max_in_flight_seen,
            f.admitted,
            f.rejected
        ),
        (0, 0, 10, 10, 990)
    );
}

/// Threads released together through a bulkhead of 2: a rejecting one
/// counts exactly the calls it let in and the calls it refused; a queueing
/// one admits every call, at once or handed a permit by a call that ends,
/// and counts each admission once.
#[test]
fn admissions_and_refusals_are_counted_exactly_when_threads_start_together() {
    use seawall::bulkhead::Queue;
    use std::sync::atomic::AtomicU64;
    use std::sync::Barrier;

    const THREADS: usize = 8;
    const CALLS: u64 = 300;

    /// Holds its permit over a few yields, so that calls queue and are
    /// handed permits by calls that end; counts the calls in it at once.
    #[derive(Clone, Default)]
    struct Yielding {
        inside: Arc<AtomicUsize>,
        most_inside: Arc<AtomicUsize>,
    }

    impl Service<()> for Yielding {
        type Response = ();
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            let (inside, most_inside) = (self.inside.clone(), self.most_inside.clone());
            Box::pin(async move {
                most_inside.fetch_max(inside.fetch_add(1, SeqCst) + 1, SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                inside.fetch_sub(1, SeqCst);
                Ok(())
            })
        }
    }

    /// The calls let in, the calls refused, and the most in the service
    /// at once.
    fn through<M: Mode>(bulkhead: &Bulkhead<M>) -> (u64, u64, usize)
    where
        BulkheadService<Yielding, M>:
            Service<(), Response = (), Error = Error<Infallible>> + Clone + Send + 'static,
        <BulkheadService<Yielding, M> as Service<()>>::Future: Send,
    {
        let probe = Yielding::default();
        let service = bulkhead.layer().layer(probe.clone());
        let barrier = Arc::new(Barrier::new(THREADS));
        let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (service, barrier) = (service.clone(), barrier.clone());
                let (ok, refused) = (ok.clone(), refused.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    barrier.wait();
                    runtime.block_on(async {
                        let calls: Vec<_> = (0..CALLS)
                            .map(|_| tokio::spawn(service.clone().oneshot(())))
                            .collect();
                        for call in calls {
                            match call.await.unwrap() {
                                Ok(()) => ok.fetch_add(1, SeqCst),
                                Err(_) => refused.fetch_add(1, SeqCst),
                            };
                        }
                    });
                })
            })
            .collect();
        threads
            .into_iter()
            .for_each(|thread| thread.join().unwrap());
        let most_inside = probe.most_inside.load(SeqCst);
        (ok.load(SeqCst), refused.load(SeqCst), most_inside)
    }

    for round in 0..20 {
        let rejecting = Bulkhead::builder().max_concurrent(2).build().unwrap();
        let (ok, refused, most_inside) = through(&rejecting);
        let f = rejecting.figures();
        assert_eq!(ok + refused, THREADS as u64 * CALLS);
        assert!(most_inside <= 2, "round {round}: {most_inside} at once");
        assert_eq!((f.admitted, f.rejected), (ok, refused), "round {round}");

        let queueing: Bulkhead<Queue> = Bulkhead::builder()
            .max_concurrent(2)
            .queue(THREADS * CALLS as usize, Duration::from_secs(600))
            .build()
            .unwrap();
        let (ok, refused, most_inside) = through(&queueing);
        let f = queueing.figures();
        assert!(most_inside <= 2, "round {round}: {most_inside} at once");
        assert_eq!((ok, refused), (THREADS as u64 * CALLS, 0), "round {round}");
        assert_eq!(
            (f.admitted, f.rejected, f.in_flight),
            (ok, 0, 0),
            "round {round}"
        );
    }
}

/// A permit goes back on whichever thread ends the call, and each thread
/// keeps what comes back to it for its next calls: permits taken on every
/// thread and given back on one are still all there for the others, so a
/// bulkhead refuses only when every permit is in use. Threads released
/// together each make one call a step and hand it to the step's collector,
/// which ends them all; never more than the limit are in flight, so every
/// call is admitted.
#[test]
fn permits_given_back_on_another_thread_are_taken_again_by_every_thread() {
    use std::sync::mpsc;
    use std::sync::Barrier;

    const THREADS: usize = 4;
    const STEPS: usize = 200;

    for round in 0..20 {
        let bulkhead = Bulkhead::builder().max_concurrent(THREADS).build().unwrap();
        let service = bulkhead
            .layer()
            .layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
        let barrier = Arc::new(Barrier::new(THREADS));
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel()).unzip();
        let threads: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(me, calls)| {
                let (mut service, barrier, senders) =
                    (service.clone(), barrier.clone(), senders.clone());
                std::thread::spawn(move || {
                    for step in 0..STEPS {
                        barrier.wait();
                        let collector = step % THREADS;
                        senders[collector].send(service.call(())).unwrap();
                        if me == collector {
                            for _ in 0..THREADS {
                                drop(calls.recv().unwrap());
                            }
                        }
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .for_each(|thread| thread.join().unwrap());
        let f = bulkhead.figures();
        assert_eq!(
            (f.admitted, f.rejected, f.in_flight),
            ((THREADS * STEPS) as u64, 0, 0),
            "round {round}"
        );

        // And all of them at once, on yet another thread.
        let mut service = service.clone();
        let held: Vec<_> = (0..THREADS).map(|_| service.call(())).collect();
        let refused = service.call(());
        let f = bulkhead.figures();
        assert_eq!((f.in_flight, f.rejected), (THREADS, 1), "round {round}");
        drop((held, refused));
    }
}

#[tokio::test(start_paused = true)]
async fn queueing_bulkhead_bounds_the_line_and_the_wait() {
    // 10 run, 100 wait (each batch of 10 takes 10 ms, so all get in within
    // 100 ms < 1 s), the other 890 are refused at once.
    let bulkhead = Bulkhead::builder()
        .max_concurrent(10)
        .queue(100, ms(1_000))
        .build()
        .unwrap();
    let probe = Probe::default();
    let (admitted, refused) = storm(&bulkhead, &probe, 1_000, 10).await;
    assert_eq!((admitted, refused.len()), (110, 890));
    assert!(refused.iter().all(Option::is_none));
    assert_eq!(probe.max.load(SeqCst), 10);

    // A wait of 15 ms: the second batch gets in at 10 ms, the rest give up
    // at 15 ms, and say so.
    let bulkhead = Bulkhead::builder()
        .max_concurrent(10)
        .queue(100, ms(15))
        .build()
        .unwrap();
    let (admitted, refused) = storm(&bulkhead, &probe, 100, 10).await;
    assert_eq!(admitted, 20);
    assert_eq!(refused, vec![Some(ms(15)); 80]);
    assert_eq!(figures(&bulkhead), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn backpressure_waits_in_poll_ready() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(10)
        .backpressure(1_000, ms(10_000))
        .build()
        .unwrap();
    let probe = Probe::default();
    let (admitted, refused) = storm(&bulkhead, &probe, 1_000, 10).await;
    assert_eq!((admitted, refused.len()), (1_000, 0));
    assert_eq!(probe.max.load(SeqCst), 10);

    // Past its max wait, `poll_ready` turns ready and the call is refused.
    let bulkhead = Bulkhead::builder()
        .max_concurrent(1)
        .backpressure(10, ms(5))
        .build()
        .unwrap();
    let service = bulkhead.layer().layer(probe.service());
    let busy = tokio::spawn(service.clone().oneshot(100));
    tokio::task::yield_now().await;
    let mut waiting = service.clone();
    let ready = timeout(ms(50), waiting.ready()).await;
    assert!(ready.is_ok(), "ready after its max wait, not stuck");
    match waiting.call(1).await.unwrap_err() {
        Error::BulkheadFull(full) => assert_eq!(full.waited(), Some(ms(5))),
        other => panic!("{other:?}"),
    }
    busy.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiting_calls_get_in_first_come_first_served() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(1)
        .queue(10, ms(10_000))
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let service = bulkhead.layer().layer(service_fn({
        let order = order.clone();
        move |n: u64| {
            order.lock().unwrap().push(n);
            async move {
                sleep(ms(10)).await;
                Ok::<_, Infallible>(n)
            }
        }
    }));
    let calls: Vec<_> = (0..5)
        .map(|n| tokio::spawn(service.clone().oneshot(n)))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn permits_come_back_after_a_drop_at_every_point() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(1)
        .queue(10, ms(10_000))
        .build()
        .unwrap();
    let probe = Probe::default();
    let mut service = bulkhead.layer().layer(probe.service());

    // Dropped before its first poll.
    let call = service.ready().await.unwrap().call(u64::MAX);
    assert_eq!(figures(&bulkhead), (1, 0));
    drop(call);
    assert_eq!(figures(&bulkhead), (0, 0));

    // Dropped while the dependency works.
    let running = timeout(ms(5), service.ready().await.unwrap().call(u64::MAX)).await;
    assert!(running.is_err());
    assert_eq!(figures(&bulkhead), (0, 0));

    // Dropped while waiting in line, before and after its first poll.
    let first = tokio::spawn(service.clone().oneshot(100));
    tokio::task::yield_now().await;
    let queued = service.ready().await.unwrap().call(1);
    assert_eq!(figures(&bulkhead), (1, 1));
    drop(queued);
    assert_eq!(figures(&bulkhead), (1, 0));
    let queued = timeout(ms(5), service.ready().await.unwrap().call(1)).await;
    assert!(queued.is_err());
    assert_eq!(figures(&bulkhead), (1, 0));
    first.await.unwrap().unwrap();

    // The dependency panics.
    let panicked = tokio::spawn(service.clone().oneshot(0)).await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(figures(&bulkhead), (0, 0));

    // After an answer.
    service.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(figures(&bulkhead), (0, 0));
    assert_eq!(bulkhead.figures().rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn backpressure_permits_come_back_when_the_service_is_dropped() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(1)
        .backpressure(10, ms(10_000))
        .build()
        .unwrap();
    let probe = Probe::default();
    let mut holder = bulkhead.layer().layer(probe.service());
    holder.ready().await.unwrap(); // holds the permit for its next call
    assert_eq!(figures(&bulkhead), (1, 0));

    let mut waiter = holder.clone();
    assert!(
        timeout(ms(5), waiter.ready()).await.is_err(),
        "no permit to reserve"
    );
    assert_eq!(
        figures(&bulkhead),
        (1, 1),
        "the waiting service keeps its place"
    );
    drop(holder);
    assert_eq!(
        figures(&bulkhead),
        (1, 0),
        "the permit went straight to the waiter"
    );
    assert_eq!(waiter.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert_eq!(figures(&bulkhead), (0, 0));

    // A waiting service dropped leaves the line; a reserving one gives back.
    let mut holder = waiter.clone();
    holder.ready().await.unwrap();
    assert!(timeout(ms(5), waiter.ready()).await.is_err());
    assert_eq!(figures(&bulkhead), (1, 1));
    drop(waiter);
    assert_eq!(figures(&bulkhead), (1, 0));
    drop(holder);
    assert_eq!(figures(&bulkhead), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_storm_leaks_nothing() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(10)
        .queue(500, ms(50))
        .build()
        .unwrap();
    let probe = Probe::default();
    let service = bulkhead.layer().layer(probe.service());
    // Every kind of ending at once: finished, timed out while waiting or
    // while running, refused, panicked.
    let tasks: Vec<_> = (0..1_000u64)
        .map(|i| {
            let call = service.clone().oneshot(match i % 7 {
                0 => 0,
                1 | 2 => u64::MAX,
                n => n * 3,
            });
            tokio::spawn(async move { timeout(ms(i % 40), call).await })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    advance(ms(1_000)).await;
    assert_eq!(figures(&bulkhead), (0, 0));
    assert_eq!(probe.now.load(SeqCst), 0);
    // The whole capacity is there.
    let held: Vec<_> = (0..10)
        .map(|_| tokio::spawn(service.clone().oneshot(u64::MAX)))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(figures(&bulkhead), (10, 0));
    held.into_iter().for_each(|task| task.abort());
    tokio::task::yield_now().await;
    assert_eq!(figures(&bulkhead), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_limit_changes_at_runtime_without_dropping_calls() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(2)
        .queue(10, ms(10_000))
        .build()
        .unwrap();
    let probe = Probe::default();
    let service = bulkhead.layer().layer(probe.service());
    let calls: Vec<_> = (0..7)
        .map(|_| tokio::spawn(service.clone().oneshot(100)))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(figures(&bulkhead), (2, 5));

    bulkhead.set_max_concurrent(5).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        figures(&bulkhead),
        (5, 2),
        "raising lets waiting calls in at once"
    );

    bulkhead.set_max_concurrent(1).unwrap();
    assert_eq!(
        figures(&bulkhead),
        (5, 2),
        "lowering drops nothing in flight"
    );
    advance(ms(100)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        figures(&bulkhead),
        (1, 1),
        "the five finished; one at a time now"
    );
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls.load(SeqCst), 7);
    assert!(bulkhead.set_max_concurrent(0).is_err());
}

#[test]
fn bad_settings_are_refused() {
    let cases = [
        (
            Bulkhead::builder().max_concurrent(0).build().unwrap_err(),
            "max_concurrent",
            "0",
        ),
        (
            Bulkhead::builder()
                .max_concurrent(1 << 20)
                .build()
                .unwrap_err(),
            "max_concurrent",
            "1048576",
        ),
        (
            Bulkhead::builder().queue(0, ms(1)).build().unwrap_err(),
            "max_queue",
            "0",
        ),
        (
            Bulkhead::builder()
                .backpressure(1, Duration::ZERO)
                .build()
                .unwrap_err(),
            "max_wait",
            "0ns",
        ),
    ];
    for (err, field, value) in cases {
        assert_eq!((err.field(), err.value()), (field, value));
    }
}
