//! seawall doing its job, live: an in-process inventory service with a
//! scripted failure schedule, a client calling it 100 times a second
//! through a full Policy, and what each call became, second by second.
//!
//! The schedule, injected with seawall's own fault layer: healthy, then
//! slow (every call takes 300 ms, past the 100 ms timeout), failing (half
//! the calls fail), down (every call fails), and healthy again. Watch the
//! breaker trip, the fallback answer from its cache of last good answers,
//! the probes, and the breaker closing.
//!
//! ```text
//! cargo run -p seawall-demo              # 38 s
//! cargo run -p seawall-demo -- --quick   # 18 s
//! cargo run -p seawall-demo -- --svg FILE
//! ```
//!
//! On a terminal the panel updates in place; otherwise each second is a
//! line. At the end: a summary, and an SVG picture of the run (latency,
//! error rate, calls by outcome and breaker state over time).

mod picture;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, State};
use seawall::fallback::{Fallback, FallbackCache};
use seawall::fault::{FaultKind, Faults};
use seawall::policy::Policy;
use seawall::window::{Counts, Window};
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};
use tower::{service_fn, ServiceExt};

/// One stretch of the schedule: its name, its length in seconds (full run
/// and `--quick`), and the faults injected.
struct Phase {
    name: &'static str,
    seconds: u64,
    quick: u64,
    errors: f64,
    slow: f64,
}

#[rustfmt::skip]
const SCHEDULE: [Phase; 5] = [
    Phase { name: "healthy", seconds: 6, quick: 3, errors: 0.0, slow: 0.0 },
    Phase { name: "slow", seconds: 6, quick: 3, errors: 0.0, slow: 1.0 },
    Phase { name: "failing", seconds: 6, quick: 3, errors: 0.5, slow: 0.0 },
    Phase { name: "down", seconds: 8, quick: 4, errors: 1.0, slow: 0.0 },
    Phase { name: "recovering", seconds: 12, quick: 5, errors: 0.0, slow: 0.0 },
];

const CALLS_PER_SECOND: u64 = 100;
const SKUS: u64 = 20;

/// What one second looked like.
#[derive(Clone, Debug, Default)]
pub struct Second {
    pub phase: &'static str,
    pub counts: Counts,
    pub state: Option<State>,
    pub p50: Duration,
    pub p99: Duration,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut svg) = (false, String::from("target/seawall-demo.svg"));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--svg" => match args.next() {
                Some(path) => svg = path,
                None => return usage(),
            },
            _ => return usage(),
        }
    }

    let faults: Faults<String, std::io::Error> = Faults::builder()
        .outcome(0.0, || {
            Err(std::io::Error::other("inventory service unavailable"))
        })
        .latency(0.0, Duration::from_millis(300))
        .build()?;
    let breaker = CircuitBreaker::builder()
        .name("inventory")
        .window(Window::time(Duration::from_secs(5), 5))
        .minimum_calls(20)
        .error_threshold(50.0)
        .open_duration(OpenDuration::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(4),
            jitter: 0.0,
        })
        .half_open_probes(3)
        .build()?;
    let policy = Policy::builder()
        .name("inventory")
        .circuit_breaker(breaker.clone())
        .bulkhead(Bulkhead::builder().max_concurrent(40))
        .timeout(Duration::from_millis(100))
        .fallback(Fallback::keyed(|sku: &u64| *sku).cache(FallbackCache::builder().build()?))
        .faults(faults.clone())
        .build()?;
    // The inventory service itself: 5 ms an answer.
    let inventory = service_fn(|sku: u64| async move {
        sleep(Duration::from_millis(5)).await;
        Ok::<_, std::io::Error>(format!("{} widgets of sku {sku}", sku * 7 % 50))
    });
    let client = tower::Layer::layer(&policy, inventory);

    // The callers: 100 calls a second, each on a task of its own, timed as
    // the caller sees it.
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let unanswered = Arc::new(AtomicU64::new(0));
    let load = {
        let (latencies, unanswered) = (latencies.clone(), unanswered.clone());
        tokio::spawn(async move {
            let mut tick = interval(Duration::from_millis(1000 / CALLS_PER_SECOND));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            for request in 0u64.. {
                tick.tick().await;
                let (client, latencies, unanswered) =
                    (client.clone(), latencies.clone(), unanswered.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    if client.oneshot(request % SKUS).await.is_err() {
                        unanswered.fetch_add(1, Relaxed);
                    }
                    latencies.lock().unwrap().push(started.elapsed());
                });
            }
        })
    };

    let terminal = std::io::stdout().is_terminal();
    let mut seconds = Vec::new();
    let mut before = breaker.lifetime_counts();
    let start = Instant::now();
    let mut elapsed = 0;
    let mut drawn = false;
    for phase in &SCHEDULE {
        // Both off first: their sum may not pass 1 on the way.
        faults.set_probability(FaultKind::Outcome, 0.0)?;
        faults.set_probability(FaultKind::Latency, phase.slow)?;
        faults.set_probability(FaultKind::Outcome, phase.errors)?;
        let length = if quick { phase.quick } else { phase.seconds };
        for _ in 0..length {
            elapsed += 1;
            sleep((start + Duration::from_secs(elapsed)).saturating_duration_since(Instant::now()))
                .await;
            let now = breaker.lifetime_counts();
            let mut taken = std::mem::take(&mut *latencies.lock().unwrap());
            taken.sort();
            let at = |q: f64| {
                taken
                    .get(((taken.len() as f64 * q) as usize).min(taken.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or_default()
            };
            let second = Second {
                phase: phase.name,
                counts: delta(now, before),
                state: Some(breaker.state()),
                p50: at(0.5),
                p99: at(0.99),
            };
            before = now;
            show(&second, elapsed, terminal, drawn)?;
            drawn = true;
            seconds.push(second);
        }
    }
    load.abort();

    summary(&seconds, &breaker, unanswered.load(Relaxed));
    if let Some(dir) = std::path::Path::new(&svg).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&svg, picture::svg(&seconds))?;
    println!("\nA picture of the run: {svg}");
    Ok(())
}

fn usage() -> Result<(), Box<dyn std::error::Error>> {
    eprintln!("usage: seawall-demo [--quick] [--svg FILE]");
    std::process::exit(2);
}

/// What happened between two readings of the breaker's lifetime counts.
fn delta(now: Counts, before: Counts) -> Counts {
    let mut counts = Counts::default();
    counts.success = now.success - before.success;
    counts.failure = now.failure - before.failure;
    counts.timeout = now.timeout - before.timeout;
    counts.rejected = now.rejected - before.rejected;
    counts.short_circuited = now.short_circuited - before.short_circuited;
    counts.fallback_success = now.fallback_success - before.fallback_success;
    counts.fallback_failure = now.fallback_failure - before.fallback_failure;
    counts.cache_hit = now.cache_hit - before.cache_hit;
    counts
}

const HEADER: &str =
    "  s  phase       fresh  failed  timeout  full  short-circuit  cached  breaker     p50      p99";

fn row(second: &Second, elapsed: u64) -> String {
    let c = &second.counts;
    format!(
        "{elapsed:>3}  {:<10} {:>6}  {:>6}  {:>7}  {:>4}  {:>13}  {:>6}  {:<10} {:>6.0?} {:>8.0?}",
        second.phase,
        c.success,
        c.failure,
        c.timeout,
        c.rejected,
        c.short_circuited,
        c.cache_hit,
        second.state.map_or("-", State::as_str),
        second.p50,
        second.p99,
    )
}

/// On a terminal, the header and the latest second, redrawn in place;
/// otherwise a line a second.
fn show(second: &Second, elapsed: u64, terminal: bool, drawn: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if !drawn {
        writeln!(out, "{HEADER}")?;
    } else if terminal {
        // Up one line, and clear it.
        write!(out, "\x1b[1F\x1b[2K")?;
    }
    writeln!(out, "{}", row(second, elapsed))?;
    out.flush()
}

fn summary(seconds: &[Second], breaker: &CircuitBreaker, unanswered: u64) {
    let total = seconds.iter().fold(Counts::default(), |mut sum, s| {
        sum += s.counts;
        sum
    });
    let first_bad = seconds.iter().position(|s| s.phase != "healthy");
    let tripped = seconds.iter().position(|s| s.state == Some(State::Open));
    let recovering = seconds.iter().position(|s| s.phase == "recovering");
    let closed_again = recovering.and_then(|from| {
        seconds[from..]
            .iter()
            .position(|s| s.state == Some(State::Closed))
            .map(|after| after + from)
    });
    let history = breaker.history();
    println!("\nSummary");
    println!(
        "  answered fresh {}, from the cache {}, not answered {unanswered}",
        total.success, total.cache_hit
    );
    println!(
        "  the dependency failed {} calls and timed out {}; the breaker short-circuited {} calls it was spared",
        total.failure, total.timeout, total.short_circuited
    );
    if let (Some(bad), Some(trip)) = (first_bad, tripped) {
        println!(
            "  trouble began at second {}; the breaker opened at second {}",
            bad + 1,
            trip + 1
        );
    }
    if let (Some(from), Some(closed)) = (recovering, closed_again) {
        println!(
            "  the dependency recovered at second {}; the breaker closed at second {}",
            from + 1,
            closed + 1
        );
    }
    println!(
        "  time open: {:.1?}; changes of state: {}",
        history.time_in(State::Open),
        history.total_transitions()
    );
}
