//! The threshold-tuning lab: replays failure profiles through a grid of
//! circuit-breaker settings in paused time, and ranks the settings by how
//! fast they detect and recover, and how often they refuse healthy calls.
//!
//! ```text
//! cargo run --example tune_thresholds
//! cargo run --example tune_thresholds -- --profile outage --profile examples/profiles/brownout.csv
//! cargo run --example tune_thresholds -- --grid full --top 25 --csv lab.csv --svg lab.svg
//! ```
//!
//! Each replay runs thousands of simulated seconds per wall second, and
//! every run gives the same numbers. What each column means, how a second
//! counts as unhealthy, and the score are in `lab.rs`'s top comment.

mod lab;

use std::process::ExitCode;
use std::time::Duration;

use lab::{Lab, Pattern, Profile, Row, Setting};

const USAGE: &str = "\
Usage: cargo run --example tune_thresholds -- [options]

Replays failure profiles through circuit-breaker settings in paused time and
ranks the settings (lower score is better).

Options:
  --profile P    a built-in profile (outage, brownout, slow, low-rate,
                 flaky-background), `all` of them, or a CSV file with the
                 header seconds,rate,error_share,latency_ms and one segment a
                 row; repeatable (default: all built-ins)
  --grid G       `default` (35 settings) or `full` (324; slower)
  --top N        rows to print and chart (default 15)
  --csv FILE     write the whole ranking as CSV
  --svg FILE     write the top rows as an SVG chart
  --threads N    replay on N threads (default: the machine's CPUs)
  --even         spread failures evenly instead of shuffling them in blocks
  --seed N       the seed for shuffled failures (default 2026)
  --list         list the profiles and settings, and exit
  -h, --help     this text";

/// What the command line asked for.
struct Options {
    profiles: Vec<Profile>,
    full_grid: bool,
    top: usize,
    csv: Option<String>,
    svg: Option<String>,
    threads: usize,
    lab: Lab,
    list: bool,
}

/// Why the command line was not run.
enum Stop {
    Help,
    Bad(String),
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, Stop> {
    let mut args = args.into_iter();
    let mut options = Options {
        profiles: Vec::new(),
        full_grid: false,
        top: 15,
        csv: None,
        svg: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        lab: Lab::default(),
        list: false,
    };
    let mut seed = None;
    let mut even = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| Stop::Bad(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "-h" | "--help" => return Err(Stop::Help),
            "--profile" => {
                let name = value("--profile")?;
                options.profiles.extend(profiles_named(&name)?);
            }
            "--grid" => match value("--grid")?.as_str() {
                "default" => options.full_grid = false,
                "full" => options.full_grid = true,
                other => return Err(Stop::Bad(format!("unknown grid {other:?}"))),
            },
            "--top" => options.top = positive("--top", &value("--top")?)?,
            "--threads" => options.threads = positive("--threads", &value("--threads")?)?,
            "--csv" => options.csv = Some(value("--csv")?),
            "--svg" => options.svg = Some(value("--svg")?),
            "--seed" => {
                let text = value("--seed")?;
                seed =
                    Some(text.parse::<u64>().map_err(|_| {
                        Stop::Bad(format!("--seed {text:?} is not a whole number"))
                    })?);
            }
            "--even" => even = true,
            "--list" => options.list = true,
            other => return Err(Stop::Bad(format!("unknown argument {other:?}"))),
        }
    }
    options.lab.pattern = match (even, seed) {
        (true, Some(_)) => return Err(Stop::Bad("--even takes no --seed".to_owned())),
        (true, None) => Pattern::Even,
        (false, Some(seed)) => Pattern::Shuffled { seed },
        (false, None) => options.lab.pattern,
    };
    if options.profiles.is_empty() {
        options.profiles = profiles_named("all")?;
    }
    Ok(options)
}

fn positive(name: &str, text: &str) -> Result<usize, Stop> {
    text.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Stop::Bad(format!("{name} {text:?} is not a whole number above 0")))
}

/// A built-in profile, all of them, or one read from a CSV file.
fn profiles_named(name: &str) -> Result<Vec<Profile>, Stop> {
    if name == "all" {
        return Ok(lab::BUILTIN_PROFILES
            .iter()
            .filter_map(|name| Profile::builtin(name))
            .collect());
    }
    if let Some(profile) = Profile::builtin(name) {
        return Ok(vec![profile]);
    }
    if !name.ends_with(".csv") && !std::path::Path::new(name).exists() {
        return Err(Stop::Bad(format!(
            "unknown profile {name:?}: one of {}, {}, all (the first five), or a .csv file",
            lab::BUILTIN_PROFILES.join(", "),
            lab::MORE_PROFILES.join(", ")
        )));
    }
    let text = std::fs::read_to_string(name)
        .map_err(|e| Stop::Bad(format!("cannot read profile {name}: {e}")))?;
    // The file's name, extension and all: `brownout.csv` is not the
    // built-in `brownout`.
    let short = std::path::Path::new(name)
        .file_name()
        .map_or_else(|| name.to_owned(), |s| s.to_string_lossy().into_owned());
    Profile::from_csv(short, &text)
        .map(|profile| vec![profile])
        .map_err(Stop::Bad)
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(Stop::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Stop::Bad(why)) => {
            eprintln!("tune_thresholds: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut settings = if options.full_grid {
        lab::full_grid()
    } else {
        lab::default_grid()
    };
    let hystrix = Setting::hystrix();
    if !settings.contains(&hystrix) {
        settings.push(hystrix.clone());
    }
    if options.list {
        list(&options, &settings);
        return ExitCode::SUCCESS;
    }

    let began = std::time::Instant::now();
    let rows = match lab::rank(&options.profiles, &settings, &options.lab, options.threads) {
        Ok(rows) => rows,
        Err(why) => {
            eprintln!("tune_thresholds: {why}");
            return ExitCode::FAILURE;
        }
    };
    let wall = began.elapsed();
    report(&options, &rows, wall);

    let mut charted = ranked(&rows, options.top);
    if let Some(at) = rows.iter().position(|row| row.setting == hystrix) {
        if at >= options.top {
            charted.push((at + 1, &rows[at]));
        }
    }
    let mut written = Ok(());
    if let Some(path) = &options.csv {
        written = written.and(write(path, &lab::to_csv(&rows)));
    }
    if let Some(path) = &options.svg {
        let names: Vec<&str> = options.profiles.iter().map(|p| p.name.as_str()).collect();
        let title = format!(
            "Breaker settings ranked on {} (lower is better)",
            names.join(", ")
        );
        written = written.and(write(path, &lab::to_svg(&charted, &title)));
    }
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("tune_thresholds: {why}");
            ExitCode::FAILURE
        }
    }
}

fn write(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
    println!("wrote {path}");
    Ok(())
}

fn list(options: &Options, settings: &[Setting]) {
    println!("profiles (second by second: seconds, calls/s, error share, latency):");
    for profile in &options.profiles {
        let episodes = profile.episodes(&options.lab).len();
        println!(
            "  {} ({} s, {} unhealthy episode{}):",
            profile.name,
            profile.length().as_secs(),
            episodes,
            if episodes == 1 { "" } else { "s" }
        );
        for s in &profile.segments {
            println!(
                "    {:>5} s  {:>7} /s  {:>5.1}%  {:?}{}",
                s.seconds,
                s.rate,
                s.error_share * 100.0,
                s.latency,
                if s.healthy(&options.lab) {
                    ""
                } else {
                    "  unhealthy"
                }
            );
        }
    }
    println!("settings ({}):", settings.len());
    for setting in settings {
        println!("  {}", setting.label());
    }
}

fn report(options: &Options, rows: &[Row], wall: Duration) {
    let lab = &options.lab;
    let names: Vec<&str> = options.profiles.iter().map(|p| p.name.as_str()).collect();
    let simulated: u64 = options.profiles.iter().map(|p| p.length().as_secs()).sum();
    let episodes = rows.first().map_or(0, Row::episode_count);
    println!(
        "{} settings x {} profiles ({}): {} simulated s and {} episodes each",
        rows.len(),
        names.len(),
        names.join(", "),
        simulated,
        episodes
    );
    println!(
        "unhealthy: error share >= {}% or latency > {:?}; timeout {:?}; failures {}",
        lab.unhealthy_error_share * 100.0,
        lab.slow_limit,
        lab.timeout,
        match lab.pattern {
            Pattern::Even => "spread evenly".to_owned(),
            Pattern::Shuffled { seed } =>
                format!("shuffled in blocks of {} (seed {seed})", lab::BLOCK),
        }
    );
    println!(
        "score = detect + recover seconds (a miss: the episode's length; stuck: the time left) + {} s per false trip",
        lab::FALSE_TRIP_COST.as_secs()
    );
    println!();

    let hystrix = Setting::hystrix();
    let hystrix_at = rows.iter().position(|row| row.setting == hystrix);
    let shown = ranked(rows, options.top);
    let width = rows
        .iter()
        .map(|row| row.label.len())
        .max()
        .unwrap_or(0)
        .max("setting".len());
    println!("{}", header(width));
    for &(rank, row) in &shown {
        println!("{}", line(rank, row, width));
    }
    if let Some(at) = hystrix_at {
        println!();
        println!(
            "Hystrix defaults (seawall's): rank {} of {}",
            at + 1,
            rows.len()
        );
        if at >= options.top {
            println!("{}", line(at + 1, &rows[at], width));
        }
    }

    println!();
    println!("by profile: the best setting on it alone, then the Hystrix defaults there");
    let name_width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for (p, name) in names.iter().enumerate() {
        let best = rows.iter().min_by(|a, b| {
            a.runs[p]
                .score()
                .cmp(&b.runs[p].score())
                .then_with(|| a.label.cmp(&b.label))
        });
        if let Some(best) = best {
            let score = best.runs[p].score();
            let tied = rows
                .iter()
                .filter(|row| row.runs[p].score() == score)
                .count()
                - 1;
            let tied = match tied {
                0 => String::new(),
                n => format!(" (and {n} more with this score)"),
            };
            println!(
                "  {name:<name_width$}  {}  {}{tied}",
                per_profile(&best.runs[p]),
                best.label
            );
        }
        if let Some(at) = hystrix_at {
            println!(
                "  {:<name_width$}  {}  Hystrix defaults",
                "",
                per_profile(&rows[at].runs[p])
            );
        }
    }

    let calls: u64 = rows.iter().map(Row::calls).sum();
    println!();
    println!(
        "replayed {} simulated s ({} calls) in {:.1} s wall on {} thread{}",
        simulated * rows.len() as u64,
        calls,
        wall.as_secs_f64(),
        options.threads,
        if options.threads == 1 { "" } else { "s" }
    );
}

/// The first `top` rows with their ranks.
fn ranked(rows: &[Row], top: usize) -> Vec<(usize, &Row)> {
    rows.iter()
        .take(top)
        .enumerate()
        .map(|(i, row)| (i + 1, row))
        .collect()
}

fn header(width: usize) -> String {
    format!(
        "rank  {:<width$}  detect  recover  missed  stuck  failed  false  trips  fallback     score",
        "setting"
    )
}

fn line(rank: usize, row: &Row, width: usize) -> String {
    format!(
        "{rank:>4}  {:<width$}  {:>6}  {:>7}  {:>6}  {:>5}  {:>6}  {:>5}  {:>5}  {:>7.1}%  {:>8.1}",
        row.label,
        lab::seconds(row.detect_mean()),
        lab::seconds(row.recover_mean()),
        row.missed(),
        row.stuck(),
        row.failed_before_trip(),
        row.false_trips(),
        row.trips(),
        row.fallback_share() * 100.0,
        row.score.as_secs_f64(),
    )
}

/// One run in a line: detection and recovery of its first episodes, false
/// trips and score.
fn per_profile(run: &lab::Run) -> String {
    let detect: Vec<String> = run
        .episodes
        .iter()
        .map(|e| lab::seconds(e.detect))
        .collect();
    let recover: Vec<String> = run
        .episodes
        .iter()
        .map(|e| lab::seconds(e.recover))
        .collect();
    let or_none = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join("/")
        }
    };
    format!(
        "detect {:>5}  recover {:>5}  false {:>4}  score {:>6.1}",
        or_none(detect),
        or_none(recover),
        run.false_trips,
        run.score().as_secs_f64()
    )
}
