//! Every bad setting is refused with its field and value, never a panic.

use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerBuilder, OpenDuration};
use seawall::window::Window;

fn refused(builder: CircuitBreakerBuilder) -> (String, String) {
    let err = builder.build().unwrap_err();
    (err.field().to_owned(), err.value().to_owned())
}

fn b() -> CircuitBreakerBuilder {
    CircuitBreaker::builder()
}

#[test]
fn bad_settings_name_their_field_and_value() {
    let secs = Duration::from_secs;
    let cases = [
        (b().error_threshold(100.5), ("error_threshold", "100.5")),
        (b().error_threshold(-1.0), ("error_threshold", "-1")),
        (b().error_threshold(f64::NAN), ("error_threshold", "NaN")),
        (
            b().slow_calls(secs(1), 101.0),
            ("slow_calls.percent", "101"),
        ),
        (
            b().slow_calls(Duration::ZERO, 50.0),
            ("slow_calls.slower_than", "0ns"),
        ),
        (b().minimum_calls(0), ("minimum_calls", "0")),
        (
            b().window(Window::count(10)).minimum_calls(11),
            ("minimum_calls", "11"),
        ),
        (
            b().window(Window::time(secs(10), 0)),
            ("window.buckets", "0"),
        ),
        (
            b().window(Window::time(secs(10), 3)),
            ("window.span", "10s"),
        ),
        (b().window(Window::count(0)), ("window.calls", "0")),
        (b().consecutive_failures(0), ("consecutive_failures", "0")),
        (b().half_open_probes(0), ("half_open_probes", "0")),
        (b().half_open_probes(1001), ("half_open_probes", "1001")),
        (
            b().open_duration(OpenDuration::Fixed(Duration::ZERO)),
            ("open_duration", "0ns"),
        ),
        (
            b().open_duration(OpenDuration::exponential(secs(0), secs(1))),
            ("open_duration.initial", "0ns"),
        ),
        (
            b().open_duration(OpenDuration::exponential(secs(10), secs(1))),
            ("open_duration.max", "1s"),
        ),
        (
            b().open_duration(OpenDuration::Exponential {
                initial: secs(1),
                multiplier: 0.5,
                max: secs(2),
                jitter: 0.0,
            }),
            ("open_duration.multiplier", "0.5"),
        ),
        (
            b().open_duration(OpenDuration::Exponential {
                initial: secs(1),
                multiplier: 2.0,
                max: secs(2),
                jitter: 1.5,
            }),
            ("open_duration.jitter", "1.5"),
        ),
    ];
    for (builder, (field, value)) in cases {
        assert_eq!(refused(builder), (field.to_owned(), value.to_owned()));
    }
}

#[test]
fn the_message_says_what_is_wrong() {
    let err = b().half_open_probes(0).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid half_open_probes = 0: must be in 1..=1000"
    );
}

#[test]
fn edges_of_the_valid_ranges_are_accepted() {
    let ok = [
        b().error_threshold(0.0),
        b().error_threshold(100.0),
        b().disable_error_threshold().error_threshold(50.0),
        b().window(Window::count(1)).minimum_calls(1),
        b().window(Window::time(Duration::from_millis(1), 1)),
        b().half_open_probes(1000),
        b().open_duration(OpenDuration::exponential(
            Duration::from_secs(1),
            Duration::from_secs(1),
        )),
    ];
    for builder in ok {
        builder.build().unwrap();
    }
}

#[test]
fn an_endless_backoff_cap_is_a_valid_cap_not_a_panic() {
    use seawall::circuit_breaker::State;
    use seawall::classify::Verdict;

    let breaker = b()
        .consecutive_failures(1)
        .open_duration(OpenDuration::Exponential {
            initial: Duration::MAX,
            multiplier: 2.0,
            max: Duration::MAX,
            jitter: 0.0,
        })
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().record(Verdict::Failure);
    assert_eq!(breaker.state(), State::Open);
}
