//! While the only calls left wait on their deadlines, the coarse clock's
//! thread sleeps until the first of them is due instead of ticking, and
//! wakes for it. In a process of its own (one test), so that no other test
//! reads the clock or sets deadlines meanwhile.

use std::convert::Infallible;
use std::sync::mpsc;
use std::time::Duration;

use seawall::timeout::TimeoutLayer;
use seawall::{Clock, Error};
use tower::{service_fn, Layer, ServiceExt};

#[path = "support/threads.rs"]
mod threads;

use threads::{switches_of, switches_once_parked};

/// A call that never answers, under `timeout`: whether it timed out. Only
/// its deadline can end it: the 60 s guard is looked at first, so that its
/// own wakeup finds it done rather than polling the call.
async fn hangs_under(timeout: Duration) -> bool {
    let service = TimeoutLayer::new(timeout)
        .clock(Clock::coarse())
        .layer(service_fn(|()| {
            std::future::pending::<Result<(), Infallible>>()
        }));
    tokio::select! {
        biased;
        () = tokio::time::sleep(Duration::from_secs(60)) => false,
        ended = service.oneshot(()) => matches!(ended, Err(Error::Timeout(_))),
    }
}

#[test]
fn calls_that_only_wait_let_the_clock_thread_sleep_until_their_deadline() {
    let (ended, ends) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            // The first calls start the clock's thread, and arm tokio's
            // timer while it starts; the thread then keeps their deadlines.
            for _ in 0..3 {
                assert!(hangs_under(Duration::from_millis(5)).await);
            }
            // The later call waits on after the sooner one ends, until the
            // test is over.
            let late = tokio::spawn(hangs_under(Duration::from_secs(40)));
            let _ = ended.send(hangs_under(Duration::from_secs(4)).await);
            let _ = late.await;
        });
    });

    // Calls waiting, nothing else: the thread goes quiet (a loaded machine
    // may take longer to let it notice), then stays so.
    let last = switches_once_parked(
        "seawall-clock",
        Duration::from_millis(300),
        "the clock's thread still ticks after 30 s of calls that only wait",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        switches_of("seawall-clock"),
        Some(last),
        "the clock's thread woke while the calls only waited"
    );
    // The sooner deadline wakes it, and its call times out.
    let soon = ends.recv_timeout(Duration::from_secs(20)).unwrap_or(false);
    assert!(soon, "the 4 s deadline never ended its call");
}
