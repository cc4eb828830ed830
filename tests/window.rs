//! The rolling windows on their own, with tokio's clock paused.

use std::time::Duration;

use seawall::window::{Counts, Outcome, RollingWindow, Window};
use seawall::Clock;
use tokio::time::advance;

fn time_window(span_secs: u64, buckets: u32, latency: bool) -> RollingWindow {
    RollingWindow::new(
        Window::time(Duration::from_secs(span_secs), buckets),
        Clock::tokio(),
        latency,
    )
    .unwrap()
}

fn record(window: &RollingWindow, outcome: Outcome, n: usize) {
    for _ in 0..n {
        window.record(outcome, None, false);
    }
}

#[tokio::test(start_paused = true)]
async fn time_buckets_drop_out_whole_at_the_span() {
    let window = time_window(10, 10, false);
    record(&window, Outcome::Failure, 5);
    advance(Duration::from_millis(2_500)).await;
    record(&window, Outcome::Success, 3);
    advance(Duration::from_millis(2_500)).await;
    record(&window, Outcome::Timeout, 2);
    assert_eq!(window.counts().calls(), 10);

    advance(Duration::from_millis(4_999)).await; // t = 9.999 s
    assert_eq!(
        window.counts().failure,
        5,
        "the first bucket is 9.999 s old"
    );
    advance(Duration::from_millis(1)).await; // t = 10 s
    let counts = window.counts();
    assert_eq!((counts.failure, counts.success, counts.timeout), (0, 3, 2));
    advance(Duration::from_secs(3)).await; // t = 13 s: bucket [2 s, 3 s) is gone
    assert_eq!((window.counts().success, window.counts().timeout), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn nothing_survives_an_idle_gap_and_the_ring_is_reused_correctly() {
    let window = time_window(10, 10, false);
    record(&window, Outcome::Failure, 7);
    // Eleven buckets later the mark of bucket 0's slot is from bucket 0:
    // it must not be mistaken for the current bucket's.
    advance(Duration::from_secs(11)).await;
    assert_eq!(window.counts(), Counts::default());
    record(&window, Outcome::Success, 1);
    assert_eq!(window.counts().calls(), 1);
    advance(Duration::from_secs(86_400)).await;
    assert_eq!(window.counts().calls(), 0);
    record(&window, Outcome::Rejected, 2);
    assert_eq!(window.counts().rejected, 2);
    assert_eq!(window.counts().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_outcome_and_slow_calls_are_counted_apart() {
    let window = time_window(10, 10, false);
    record(&window, Outcome::Success, 1);
    record(&window, Outcome::Failure, 2);
    record(&window, Outcome::Timeout, 3);
    record(&window, Outcome::Rejected, 4);
    record(&window, Outcome::ShortCircuited, 5);
    window.record(Outcome::Success, None, true);
    let c = window.counts();
    assert_eq!(
        (
            c.success,
            c.failure,
            c.timeout,
            c.rejected,
            c.short_circuited,
            c.slow
        ),
        (2, 2, 3, 4, 5, 1)
    );
    assert_eq!(
        c.calls(),
        11,
        "short-circuited calls say nothing about the dependency"
    );
    assert_eq!(c.error_percentage(), Some(900.0 / 11.0));
    assert_eq!(c.slow_percentage(), Some(100.0 / 11.0));
    assert_eq!(Counts::default().error_percentage(), None);
}

#[tokio::test(start_paused = true)]
async fn reset_forgets_the_past_but_not_what_comes_next() {
    for window in [
        time_window(10, 10, false),
        RollingWindow::new(Window::count(10), Clock::tokio(), false).unwrap(),
    ] {
        record(&window, Outcome::Failure, 8);
        record(&window, Outcome::ShortCircuited, 3);
        window.reset();
        assert_eq!(window.counts(), Counts::default());
        record(&window, Outcome::Success, 2);
        assert_eq!(window.counts().calls(), 2);
        assert_eq!(window.counts().failure, 0);
    }
}

#[test]
fn count_window_slides_over_the_last_calls() {
    let window = RollingWindow::new(Window::count(100), Clock::coarse(), false).unwrap();
    record(&window, Outcome::Success, 10_000);
    for failures in 1..=100u64 {
        record(&window, Outcome::Failure, 1);
        let counts = window.counts();
        assert_eq!((counts.success, counts.failure), (100 - failures, failures));
    }
    // Partly filled windows count only what they hold.
    let window = RollingWindow::new(Window::count(100), Clock::coarse(), false).unwrap();
    record(&window, Outcome::Timeout, 3);
    assert_eq!(window.counts().calls(), 3);
}

#[test]
fn count_window_slow_flags_slide_too() {
    let window = RollingWindow::new(Window::count(4), Clock::coarse(), false).unwrap();
    for _ in 0..4 {
        window.record(Outcome::Success, None, true);
    }
    assert_eq!(window.counts().slow, 4);
    record(&window, Outcome::Success, 3);
    assert_eq!(window.counts().slow, 1);
    assert_eq!(window.counts().success, 4);
}

#[tokio::test(start_paused = true)]
async fn latency_percentiles_over_the_window() {
    let window = time_window(10, 10, true);
    for ms in 1..=1_000u64 {
        window.record(Outcome::Success, Some(Duration::from_millis(ms)), false);
    }
    let latency = window.snapshot().latency.unwrap();
    assert_eq!(latency.count(), 1_000);
    let close = |actual: Duration, expected_ms: f64| {
        let actual = actual.as_secs_f64() * 1_000.0;
        assert!(
            (actual - expected_ms).abs() / expected_ms <= 0.0625,
            "{actual} ms vs {expected_ms} ms"
        );
    };
    close(latency.p50(), 500.0);
    close(latency.p90(), 900.0);
    close(latency.p99(), 990.0);
    close(latency.p999(), 999.0);
    close(latency.max(), 1_000.0);

    // Latencies leave with their bucket.
    advance(Duration::from_secs(5)).await;
    window.record(Outcome::Success, Some(Duration::from_secs(2)), false);
    advance(Duration::from_secs(5)).await;
    let latency = window.snapshot().latency.unwrap();
    assert_eq!(latency.count(), 1);
    close(latency.p50(), 2_000.0);
}

#[test]
fn count_window_latency_slides() {
    let window = RollingWindow::new(Window::count(10), Clock::coarse(), true).unwrap();
    for _ in 0..10 {
        window.record(Outcome::Success, Some(Duration::from_secs(5)), false);
    }
    for _ in 0..10 {
        window.record(Outcome::Success, Some(Duration::from_millis(1)), false);
    }
    let latency = window.snapshot().latency.unwrap();
    assert_eq!(latency.count(), 10);
    assert!(
        latency.max() < Duration::from_millis(2),
        "{:?}",
        latency.max()
    );
    window.reset();
    assert_eq!(window.snapshot().latency.unwrap().count(), 0);
}

#[test]
fn windows_are_validated() {
    let bad = [
        (Window::time(Duration::from_secs(10), 0), "window.buckets"),
        (
            Window::time(Duration::from_secs(10), 1001),
            "window.buckets",
        ),
        (Window::time(Duration::ZERO, 10), "window.span"),
        (
            Window::time(Duration::from_nanos(10_000_000_001), 10),
            "window.span",
        ),
        (Window::time(Duration::from_millis(10), 20), "window.span"),
        (Window::count(0), "window.calls"),
        (Window::count(1_000_001), "window.calls"),
    ];
    for (window, field) in bad {
        let err = RollingWindow::new(window, Clock::coarse(), false).unwrap_err();
        assert_eq!(err.field(), field, "{window:?}");
    }
    let err = RollingWindow::new(
        Window::time(Duration::from_secs(10), 0),
        Clock::coarse(),
        false,
    )
    .unwrap_err();
    assert_eq!(err.value(), "0");
}
