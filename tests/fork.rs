//! A child process made by `fork` has no thread but the one that forked, so
//! the coarse clock's thread is gone and the time it kept is frozen. The
//! child's breakers must still see time pass: an open breaker must let a
//! probe through after its open duration. And its timeouts must fire,
//! though the thread that wakes pending calls' deadlines is gone.
#![cfg(target_os = "linux")]

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::classify::Verdict;
use seawall::timeout::TimeoutLayer;
use seawall::Clock;
use tower::{service_fn, Layer, ServiceExt};

/// In the child: trips a breaker and waits (on the wall clock) for it to
/// let a probe through. Returns the exit code: 0 when it did.
fn child() -> i32 {
    let breaker = CircuitBreaker::builder()
        .clock(Clock::coarse())
        .consecutive_failures(1)
        .open_duration(OpenDuration::Fixed(Duration::from_millis(50)))
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().record(Verdict::Failure);
    let give_up = Instant::now() + Duration::from_secs(20);
    while Instant::now() < give_up {
        if breaker.try_acquire().is_ok() {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    1
}

/// In the child, once the parent's last sweep of the alarms is well past:
/// a call that never answers, under a timeout with the coarse clock.
/// Returns 0 when the timeout fired.
fn child_times_out() -> i32 {
    std::thread::sleep(Duration::from_millis(50));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let service = TimeoutLayer::new(Duration::from_millis(30))
            .clock(Clock::coarse())
            .layer(service_fn(|()| {
                std::future::pending::<Result<(), Infallible>>()
            }));
        // Looked at first, the guard fires only if nothing else ends the call.
        tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(20)) => 1,
            ended = service.oneshot(()) => i32::from(ended.is_ok()),
        }
    })
}

/// The tests fork one at a time, and not while the other is busy in the
/// clock: a child inherits a lock another thread held at the fork as held
/// for good.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Forks; the child runs `child` and leaves with its code. Returns it.
fn in_child(child: fn() -> i32) -> i32 {
    // SAFETY: the child only runs `child` (which allocates and spawns
    // threads, as glibc allows after fork) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child made above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "the child did not exit: {status}");
    libc::WEXITSTATUS(status)
}

#[test]
fn a_forked_child_sees_time_pass() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // The parent's clock thread is running, and keeping the time, when it
    // forks.
    let clock = Clock::coarse();
    let breaker = CircuitBreaker::builder().clock(clock).build().unwrap();
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(50) {
        breaker.try_acquire().unwrap().record(Verdict::Success);
    }
    assert_eq!(
        in_child(child),
        0,
        "the child's open breaker never let a probe through: its time stood still"
    );
}

#[test]
fn a_forked_child_times_out_without_the_parents_alarms() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // The parent's clock thread sweeps alarms when it forks: a call of its
    // own was pending under a timeout.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let service = TimeoutLayer::new(Duration::from_millis(20))
            .clock(Clock::coarse())
            .layer(service_fn(|()| {
                std::future::pending::<Result<(), Infallible>>()
            }));
        assert!(service.oneshot(()).await.is_err());
    });
    assert_eq!(
        in_child(child_times_out),
        0,
        "the child's timeout never fired"
    );
}
