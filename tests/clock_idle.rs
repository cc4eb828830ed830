//! The coarse clock's thread costs nothing while nothing reads the time: no
//! wakeups, counted by the kernel. In a process of its own (one test), so
//! that no other test reads the clock meanwhile.

use std::time::{Duration, Instant};

use seawall::circuit_breaker::CircuitBreaker;
use seawall::classify::Verdict;
use seawall::Clock;

#[path = "support/threads.rs"]
mod threads;

use threads::{switches_of, switches_once_parked};

#[test]
fn an_idle_process_pays_no_wakeups_and_calls_resume_at_once() {
    let breaker = CircuitBreaker::builder()
        .clock(Clock::coarse())
        .build()
        .unwrap();
    // The first reads start the clock's thread (named once it runs, which a
    // loaded machine may delay).
    let give_up = Instant::now() + Duration::from_secs(30);
    while switches_of("seawall-clock").is_none() {
        breaker.try_acquire().unwrap().record(Verdict::Success);
        assert!(
            Instant::now() < give_up,
            "the reads never started the clock's thread"
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    // Idle: wait until the thread parks (after 100 ms without a read; a
    // loaded machine may take longer to let it notice), then check that it
    // stays parked.
    let last = switches_once_parked(
        "seawall-clock",
        Duration::from_millis(500),
        "the clock's thread still wakes after 30 idle seconds",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        switches_of("seawall-clock").unwrap(),
        last,
        "the clock's thread woke while the process was idle"
    );

    // Calls resume: the time is right at once, and the thread wakes.
    let open = CircuitBreaker::builder()
        .clock(Clock::coarse())
        .consecutive_failures(1)
        .open_duration(seawall::circuit_breaker::OpenDuration::Fixed(
            Duration::from_millis(200),
        ))
        .build()
        .unwrap();
    open.try_acquire().unwrap().record(Verdict::Failure);
    let refused = open.try_acquire().unwrap_err();
    assert!(refused.retry_after().unwrap() <= Duration::from_millis(200));
    let start = Instant::now();
    loop {
        if open.try_acquire().is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never half-opened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        switches_of("seawall-clock").unwrap() > last,
        "woken by the reads"
    );
}
