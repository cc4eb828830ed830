//! The threshold-tuning lab's engine (`examples/tune_thresholds/lab.rs`):
//! exact detection, recovery and false-trip numbers on a small profile in
//! paused time, worked out by hand below, and the ranking they make.

// The example prints with parts of the engine this test has no use for.
#[allow(dead_code)]
#[path = "../examples/tune_thresholds/lab.rs"]
mod lab;

use std::time::Duration;

use lab::{Episode, Lab, Pattern, Profile, Segment, Setting};
use seawall::circuit_breaker::{OpenDuration, Preset};
use seawall::window::Window;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// 5 calls a second (one every 200 ms), each taking 10 ms: 10 s at 20%
/// errors (healthy: calls 4, 9, 14... of it fail, at 0.8 s, 1.8 s, ...), 10 s
/// down (every call fails), then 20 s healthy without errors.
fn small() -> Profile {
    Profile::new(
        "small",
        vec![
            Segment::new(10, 5.0, 0.2, ms(10)),
            Segment::new(10, 5.0, 1.0, ms(10)),
            Segment::new(20, 5.0, 0.0, ms(10)),
        ],
    )
    .unwrap()
}

/// Failures spread evenly, so that the numbers can be worked out by hand.
fn lab() -> Lab {
    Lab {
        pattern: Pattern::Even,
        ..Lab::default()
    }
}

/// The last 10 calls, judged from 5, 50%, open 5 s.
fn count_10() -> Setting {
    Setting {
        window: Window::count(10),
        minimum_calls: 5,
        ..Setting::hystrix()
    }
}

/// Three failures in a row (no error percentage), open 1 s doubling to 8 s.
fn consecutive_3() -> Setting {
    Setting {
        error_threshold: None,
        consecutive_failures: Some(3),
        open_duration: lab::exponential(Duration::from_secs(1), Duration::from_secs(8)),
        ..Setting::hystrix()
    }
}

/// `count_10` tripping at 20%: the healthy start's errors trip it.
fn count_10_at_20() -> Setting {
    Setting {
        error_threshold: Some(20.0),
        ..count_10()
    }
}

fn settings() -> Vec<Setting> {
    vec![
        Setting::hystrix(),
        count_10_at_20(),
        consecutive_3(),
        count_10(),
    ]
}

/// One episode's numbers: detect, recover, failed before the trip.
fn episode(run: &lab::Run) -> (Option<Duration>, Option<Duration>, u64) {
    assert_eq!(run.episodes.len(), 1, "{run:?}");
    let e = &run.episodes[0];
    assert_eq!(
        e.episode,
        Episode {
            start: Duration::from_secs(10),
            end: Duration::from_secs(20)
        }
    );
    (e.detect, e.recover, e.failed_before_trip)
}

#[test]
fn count_window_trips_on_the_third_failure_and_closes_on_the_second_probe() {
    // The window holds calls 40..49 of the start (44 and 49 failed) when the
    // outage begins: 3 more failures make 5 of 10. Tripped at 10.41 s, open
    // until 15.41; the 15.6 s probe fails (open until 20.61), the 20.8 s
    // one succeeds at 20.81. Refused: 10.6..=15.4 and 15.8..=20.6, 25 each;
    // the four in 20.0..=20.6 are recovery's, not false trips.
    let run = lab::simulate(&small(), &count_10(), &lab()).unwrap();
    assert_eq!(episode(&run), (Some(ms(410)), Some(ms(810)), 3));
    assert_eq!(run.calls, 200);
    assert_eq!(run.refused, 50);
    assert_eq!(run.false_trips, 0);
    assert_eq!(run.trips, 1, "reopening from half-open is not a new trip");
    // 10 failures at the start, 3 in the outage and the failed probe, and
    // every refusal.
    assert_eq!(run.fallbacks, 14 + 50);
    assert_eq!(run.score(), ms(410 + 810));
}

#[test]
fn hystrix_defaults_wait_for_half_the_ten_second_window() {
    // At 13.41 s the window holds seconds 4..=13: 30 calls of the start (6
    // failed), 15 failures of seconds 10..=12 and 3 of second 13: 24 of 48.
    // Open until 18.41; the 18.6 s probe fails (open until 23.61), the
    // 23.8 s one closes it at 23.81.
    let run = lab::simulate(&small(), &Setting::hystrix(), &lab()).unwrap();
    assert_eq!(episode(&run), (Some(ms(3410)), Some(ms(3810)), 18));
    assert_eq!(run.refused, 50);
    assert_eq!(run.false_trips, 0);
    assert_eq!(run.trips, 1);
    assert_eq!(run.fallbacks, (10 + 18 + 1) + 50);
}

#[test]
fn exponential_backoff_trips_fast_and_recovers_late() {
    // The start's last call (9.8 s) failed: the outage's second failure is
    // the third in a row, tripping it at 10.21 s. Probes at 11.4, 13.6 and
    // 17.8 s fail and reopen it for 2, 4 and 8 s (no jitter): open until
    // 25.81, closed by the 26.0 s probe at 26.01. The evenly spread 20% of
    // the start never fails twice in a row before that.
    let run = lab::simulate(&small(), &consecutive_3(), &lab()).unwrap();
    assert_eq!(episode(&run), (Some(ms(210)), Some(ms(6010)), 2));
    assert_eq!(run.refused, 5 + 10 + 20 + 40);
    assert_eq!(run.false_trips, 0, "refused from 20 s on: recovery's");
    assert_eq!(run.trips, 1);
    assert_eq!(run.fallbacks, (10 + 2 + 3) + 75);
}

#[test]
fn a_threshold_at_the_background_error_rate_trips_while_healthy() {
    // 1 failure in the first 5 calls is 20%: tripped at 0.81 s, refusing
    // 1.0..=5.8 s (25 false trips). The 6.0 s probe closes it with an empty
    // window; 2 failures in the next 9 calls trip it again at 7.81 s,
    // refusing 8.0..=9.8 s (10 more) and still open when the outage starts:
    // detected at once. Probes at 13.0 and 18.2 s fail; 23.4 s closes it.
    let run = lab::simulate(&small(), &count_10_at_20(), &lab()).unwrap();
    assert_eq!(episode(&run), (Some(Duration::ZERO), Some(ms(3410)), 0));
    assert_eq!(run.false_trips, 35);
    assert_eq!(run.trips, 2);
    assert_eq!(run.refused, 25 + 10 + 15 + 25 + 25);
    assert_eq!(run.fallbacks, (3 + 2) + 100);
    assert_eq!(run.score(), ms(3410) + 35 * lab::FALSE_TRIP_COST);
}

#[test]
fn ranking_orders_by_score_then_label() {
    let rows = lab::rank(&[small()], &settings(), &lab(), 2).unwrap();
    let ranked: Vec<(String, Duration)> = rows.iter().map(|r| (r.label.clone(), r.score)).collect();
    assert_eq!(
        ranked,
        [
            (count_10().label(), ms(410 + 810)),
            (consecutive_3().label(), ms(210 + 6010)),
            (Setting::hystrix().label(), ms(3410 + 3810)),
            (
                count_10_at_20().label(),
                ms(3410) + 35 * lab::FALSE_TRIP_COST
            ),
        ]
    );
    assert_eq!(count_10().label(), "count 10 min5 50% open 5s");
    assert_eq!(
        consecutive_3().label(),
        "time 10s/10 min20 no-err% consec3 open 1s..8s"
    );

    // Equal scores fall back to the label: the same setting under two
    // origins ties exactly.
    let twin = Setting {
        origin: Some("a twin"),
        ..count_10()
    };
    let rows = lab::rank(&[small()], &[count_10(), twin.clone()], &lab(), 1).unwrap();
    assert_eq!(rows[0].score, rows[1].score);
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "a twin: count 10 min5 50% open 5s",
            "count 10 min5 50% open 5s"
        ]
    );
}

#[test]
fn replays_are_the_same_on_any_number_of_threads() {
    // The shuffled pattern and a built-in profile, so that this is not only
    // true of the hand-checked case.
    let profiles = [Profile::builtin("low-rate").unwrap(), small()];
    let one = lab::rank(&profiles, &settings(), &Lab::default(), 1).unwrap();
    let three = lab::rank(&profiles, &settings(), &Lab::default(), 3).unwrap();
    assert_eq!(one, three);
    assert_eq!(one.len(), 4);
}

#[test]
fn a_miss_costs_the_episode_and_no_trip_is_no_false_trip() {
    // One call a second: the Hystrix defaults never see 20 calls in 10 s.
    let run = lab::simulate(
        &Profile::builtin("low-rate").unwrap(),
        &Setting::hystrix(),
        &Lab::default(),
    )
    .unwrap();
    assert_eq!(run.episodes.len(), 1);
    let e = &run.episodes[0];
    assert_eq!((e.detect, e.recover), (None, None));
    assert_eq!(e.failed_before_trip, 60);
    assert_eq!((run.trips, run.refused, run.false_trips), (0, 0, 0));
    assert_eq!(run.score(), Duration::from_secs(60));
}

#[test]
fn even_and_shuffled_patterns_fail_exactly_the_share() {
    let even = Pattern::Even.failing(15, 0.2, 0);
    let failing: Vec<usize> = (0..15).filter(|&m| even[m]).collect();
    assert_eq!(failing, [4, 9, 14]);

    let shuffled = Pattern::Shuffled { seed: 7 };
    let calls = 3 * lab::BLOCK + 40;
    let fails = shuffled.failing(calls, 0.25, 0);
    for block in fails.chunks(lab::BLOCK) {
        let expected = block.len() / 4;
        assert_eq!(block.iter().filter(|&&f| f).count(), expected);
    }
    assert_eq!(
        fails,
        shuffled.failing(calls, 0.25, 0),
        "the same every time"
    );
    assert_ne!(fails, shuffled.failing(calls, 0.25, 1), "per segment");
    assert_ne!(
        fails,
        Pattern::Shuffled { seed: 8 }.failing(calls, 0.25, 0),
        "per seed"
    );
    assert!(shuffled.failing(50, 1.0, 0).iter().all(|&f| f));
    assert!(!shuffled.failing(50, 0.0, 0).iter().any(|&f| f));
}

#[test]
fn the_plan_spaces_calls_evenly_and_marks_unhealthy_seconds() {
    let plan = small().plan(&lab());
    assert_eq!(plan.len(), 200);
    assert_eq!(plan[1].at, ms(200));
    assert_eq!(plan[51].at, ms(10_200));
    assert!(plan[49].healthy && !plan[50].healthy && !plan[99].healthy && plan[100].healthy);
    assert!(plan[50..100].iter().all(|call| call.fail));

    // Half a call a second: one every 2 s.
    let slow = Profile::new("half", vec![Segment::new(5, 0.5, 0.0, ms(1))]).unwrap();
    let at: Vec<Duration> = slow.plan(&lab()).iter().map(|c| c.at).collect();
    assert_eq!(at, [ms(0), ms(2000), ms(4000)]);

    // Too slow is unhealthy too, and adjacent unhealthy segments merge.
    let profile = Profile::new(
        "merged",
        vec![
            Segment::new(3, 1.0, 0.0, ms(10)),
            Segment::new(2, 1.0, 0.0, ms(600)),
            Segment::new(2, 1.0, 0.5, ms(10)),
            Segment::new(1, 1.0, 0.49, ms(500)),
        ],
    )
    .unwrap();
    assert_eq!(
        profile.episodes(&lab()),
        [Episode {
            start: Duration::from_secs(3),
            end: Duration::from_secs(7)
        }]
    );
}

#[test]
fn csv_profiles_parse_and_bad_ones_say_where() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/profiles/brownout.csv"
    ))
    .unwrap();
    let profile = Profile::from_csv("brownout.csv", &shipped).unwrap();
    assert_eq!(profile.length(), Duration::from_secs(270));
    assert_eq!(
        profile.episodes(&Lab::default()),
        [Episode {
            start: Duration::from_secs(150),
            end: Duration::from_secs(180)
        }]
    );
    assert_eq!(profile.segments[3], Segment::new(30, 20.0, 0.6, ms(150)));

    let ok = "seconds,rate,error_share,latency_ms\n10, 2.5, 0.1, 12.5\n";
    let parsed = Profile::from_csv("x", ok).unwrap();
    assert_eq!(
        parsed.segments,
        [Segment::new(10, 2.5, 0.1, Duration::from_micros(12_500))]
    );

    let error = |text: &str| Profile::from_csv("x", text).unwrap_err();
    assert!(error("").contains("empty"));
    assert!(error("rate,seconds,error_share,latency_ms\n").contains("header"));
    assert!(error("seconds,rate,error_share,latency_ms\n").contains("no segments"));
    assert!(error("seconds,rate,error_share,latency_ms\n10,1,0.1\n")
        .contains("line 2: expected 4 fields"));
    assert!(
        error("# c\nseconds,rate,error_share,latency_ms\n\n10,fast,0.1,5\n")
            .contains("line 4: rate")
    );
    assert!(error("seconds,rate,error_share,latency_ms\n1.5,1,0.1,5\n").contains("whole number"));
    assert!(error("seconds,rate,error_share,latency_ms\n10,1,1.5,5\n").contains("error_share"));
    assert!(error("seconds,rate,error_share,latency_ms\n10,-1,0.5,5\n").contains("rate"));
    assert!(error("seconds,rate,error_share,latency_ms\n0,1,0.5,5\n").contains("seconds"));
    assert!(error("seconds,rate,error_share,latency_ms\n86401,1,0.5,5\n").contains("at most"));
    assert!(error("seconds,rate,error_share,latency_ms\n1000,10000,0.5,5\n").contains("calls"));
}

#[test]
fn grids_hold_hystrix_and_presets_without_jitter() {
    let grid = lab::default_grid();
    assert_eq!(grid.len(), 35);
    assert!(grid.contains(&Setting::hystrix()));
    let mut labels: Vec<String> = grid.iter().map(Setting::label).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), grid.len(), "labels are unique");
    assert!(grid.iter().all(|s| s.builder().build().is_ok()));
    assert_eq!(lab::full_grid().len(), 324);

    let consumer = Setting::preset(Preset::Consumer, "Consumer").unwrap();
    assert_eq!(
        consumer.open_duration,
        OpenDuration::Exponential {
            initial: Duration::from_secs(5),
            multiplier: 2.0,
            max: Duration::from_secs(60),
            jitter: 0.0,
        }
    );
    assert_eq!(
        consumer.label(),
        "Consumer: time 60s/12 min10 50% consec5 open 5s..60s"
    );
}

#[test]
fn csv_and_svg_outputs_follow_the_ranking() {
    let rows = lab::rank(&[small()], &settings(), &lab(), 2).unwrap();
    let csv = lab::to_csv(&rows);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0].starts_with("rank,setting,detect_s,recover_s,"));
    assert_eq!(
        lines[1],
        "1,\"count 10 min5 50% open 5s\",0.410,0.810,0,0,3,0,1,0.3200,1.220"
    );
    assert!(lines[4].starts_with("4,\"count 10 min5 20% open 5s\",0.000,3.410,0,0,0,35,2,"));

    let slow_rule = Setting {
        slow_calls: Some((ms(500), 50.0)),
        ..Setting::hystrix()
    };
    let rows = lab::rank(&[small()], &[slow_rule], &lab(), 1).unwrap();
    let ranked: Vec<(usize, &lab::Row)> = vec![(1, &rows[0])];
    let svg = lab::to_svg(&ranked, "a <title> & more");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("a &lt;title&gt; &amp; more"));
    assert!(svg.contains("slow&gt;500ms:50%"), "labels are escaped");
    assert!(!svg.contains("slow>500ms"));
    // One bar for detection and one for recovery; no false trips.
    assert_eq!(svg.matches("height=\"14\"").count(), 2);
}
