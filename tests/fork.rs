//! A child process made by `fork` has no thread but the one that forked, so
//! the coarse clock's thread is gone and the time it kept is frozen. The
//! child's breakers must still see time pass: an open breaker must let a
//! probe through after its open duration.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::classify::Verdict;
use seawall::Clock;

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

#[test]
fn a_forked_child_sees_time_pass() {
    // The parent's clock thread is running, and keeping the time, when it
    // forks.
    let clock = Clock::coarse();
    let breaker = CircuitBreaker::builder().clock(clock).build().unwrap();
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(50) {
        breaker.try_acquire().unwrap().record(Verdict::Success);
    }
    // SAFETY: the child only runs `child` (which allocates and spawns a
    // thread, as glibc allows after fork) and leaves with `_exit`.
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
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child's open breaker never let a probe through: its time stood still"
    );
}
