//! The run as an SVG: four panels sharing one time axis. Written as text:
//! a plotting crate would triple what the demo compiles for four panels of
//! lines, bars and bands.

use std::fmt::Write;
use std::time::Duration;

use seawall::circuit_breaker::State;

use crate::Second;

const WIDTH: f64 = 900.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 110.0;
const GAP: f64 = 28.0;
const TOP: f64 = 40.0;

/// What each call became at the breaker, stacked bottom up (one outcome a
/// call), with their colours. Answers from the cache, which stand in for
/// some of the others, are a line over them.
const OUTCOMES: [(&str, &str); 5] = [
    ("answered", "#4c9a2a"),
    ("failed", "#d64541"),
    ("timed out", "#e08a2c"),
    ("short-circuited", "#7b68ee"),
    ("bulkhead full", "#999999"),
];

fn outcomes(second: &Second) -> [u64; 5] {
    let c = &second.counts;
    [
        c.success,
        c.failure,
        c.timeout,
        c.short_circuited,
        c.rejected,
    ]
}

/// The SVG text of the run.
pub fn svg(seconds: &[Second]) -> String {
    let n = seconds.len().max(1) as f64;
    let plot = WIDTH - LEFT - RIGHT;
    let x = |i: usize| LEFT + plot * i as f64 / n;
    let height = TOP + 3.0 * (PANEL + GAP) + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="18" font-size="14">seawall demo: a dependency healthy, slow, failing, down, recovering</text>"##
    );
    // Phase labels and separators.
    let mut phase_start = 0;
    for i in 0..=seconds.len() {
        let changed = i == seconds.len() || seconds[i].phase != seconds[phase_start].phase;
        if changed {
            let (from, to) = (x(phase_start), x(i));
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="34" text-anchor="middle" fill="#555">{}</text>"##,
                (from + to) / 2.0,
                seconds[phase_start].phase
            );
            let _ = writeln!(
                s,
                r##"<line x1="{to:.1}" y1="{TOP}" x2="{to:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                height - 20.0
            );
            phase_start = i;
        }
    }

    // 1. Latency, p50 and p99, in milliseconds.
    let top = TOP;
    let max_ms = seconds
        .iter()
        .map(|s| millis(s.p99))
        .fold(1.0_f64, f64::max);
    panel(&mut s, top, "latency (ms)", max_ms);
    for (q, colour, pick) in [
        (
            "p99",
            "#d64541",
            (|s: &Second| s.p99) as fn(&Second) -> Duration,
        ),
        ("p50", "#2a6f9a", |s: &Second| s.p50),
    ] {
        let points: Vec<String> = seconds
            .iter()
            .enumerate()
            .map(|(i, sec)| {
                let y = top + PANEL - PANEL * millis(pick(sec)) / max_ms;
                format!("{:.1},{:.1}", x(i) + 0.5 * plot / n, y)
            })
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"##,
            points.join(" ")
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="{colour}">{q}</text>"##,
            WIDTH - RIGHT - 30.0,
            top + if q == "p99" { 12.0 } else { 26.0 }
        );
    }

    // 2. Error rate of the calls that reached the dependency.
    let top = TOP + PANEL + GAP;
    panel(&mut s, top, "errors (% of calls)", 100.0);
    let points: Vec<String> = seconds
        .iter()
        .enumerate()
        .map(|(i, sec)| {
            let c = &sec.counts;
            let made = c.success + c.failure + c.timeout;
            let share = if made == 0 {
                0.0
            } else {
                100.0 * (c.failure + c.timeout) as f64 / made as f64
            };
            format!(
                "{:.1},{:.1}",
                x(i) + 0.5 * plot / n,
                top + PANEL - PANEL * share / 100.0
            )
        })
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#d64541" stroke-width="1.5" points="{}"/>"##,
        points.join(" ")
    );

    // 3. Calls by outcome, stacked.
    let top = TOP + 2.0 * (PANEL + GAP);
    let max_calls = seconds
        .iter()
        .map(|s| outcomes(s).iter().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    panel(&mut s, top, "calls by outcome", max_calls);
    for (i, sec) in seconds.iter().enumerate() {
        let mut base = top + PANEL;
        for (count, (_, colour)) in outcomes(sec).iter().zip(OUTCOMES) {
            let h = PANEL * *count as f64 / max_calls;
            if h > 0.0 {
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"/>"##,
                    x(i) + 0.5,
                    base - h,
                    (plot / n - 1.0).max(0.5)
                );
            }
            base -= h;
        }
    }
    // Answered from the cache, over the bars.
    let points: Vec<String> = seconds
        .iter()
        .enumerate()
        .map(|(i, sec)| {
            let y = top + PANEL - PANEL * sec.counts.cache_hit as f64 / max_calls;
            format!("{:.1},{y:.1}", x(i) + 0.5 * plot / n)
        })
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#111" stroke-width="2" stroke-dasharray="4 2" points="{}"/>"##,
        points.join(" ")
    );
    let legend = OUTCOMES
        .iter()
        .map(|(name, colour)| (*name, *colour))
        .chain([("from the cache (line)", "#111")]);
    for (k, (name, colour)) in legend.enumerate() {
        let lx = LEFT + 10.0 + 112.0 * k as f64;
        let ly = top + PANEL + 14.0;
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="9" height="9" fill="{colour}"/><text x="{:.1}" y="{ly:.1}">{name}</text>"##,
            ly - 8.0,
            lx + 12.0
        );
    }

    // 4. The breaker's state.
    let top = TOP + 3.0 * (PANEL + GAP) + 6.0;
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end">breaker</text>"##,
        LEFT - 8.0,
        top + 14.0
    );
    for (i, sec) in seconds.iter().enumerate() {
        let colour = match sec.state {
            Some(State::Closed) => "#4c9a2a",
            Some(State::Open) | Some(State::ForcedOpen) => "#d64541",
            Some(State::HalfOpen) => "#e0b02c",
            _ => "#cccccc",
        };
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="20" fill="{colour}"/>"##,
            x(i),
            plot / n + 0.5
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" fill="#555">closed (green), open (red), half-open (amber); one column a second</text>"##,
        top + 36.0
    );
    s.push_str("</svg>\n");
    s
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A panel's frame, title and scale.
fn panel(s: &mut String, top: f64, title: &str, max: f64) {
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL}" fill="none" stroke="#bbb"/>"##,
        WIDTH - LEFT - RIGHT
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{title}</text>"##,
        LEFT - 8.0,
        top + PANEL / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#777">{max:.0}</text>"##,
        LEFT - 8.0,
        top + 10.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#777">0</text>"##,
        LEFT - 8.0,
        top + PANEL
    );
}
