//! What a seawall `Policy` costs inside a real HTTP request (issue 19:
//! "measure what users feel, inside a real request").
//!
//! ```text
//! cargo bench -p seawall-benches --bench http --features http
//! # 50,000 requests a variant
//! SEAWALL_BENCH_SHORT=1 cargo bench -p seawall-benches --bench http --features http
//! # any number
//! SEAWALL_HTTP_REQUESTS=20000 cargo bench -p seawall-benches --bench http --features http
//! ```
//!
//! One process, one tokio multi-thread runtime (a worker per core). An
//! axum server on 127.0.0.1 (an ephemeral port) answers `GET /` with a
//! two-byte static body; a hyper-util legacy `Client` (HTTP/1.1,
//! keep-alive, `TCP_NODELAY` on both ends, a pool of up to 64 idle
//! connections) calls it from 64 tasks, each sending one request after
//! another and reading the whole body, so 64 requests are in flight at
//! any time over 64 kept-alive connections. Each round first sends 10%
//! of its requests as a warm-up (connections opened, allocator and caches
//! warm), then the measured requests (default 200,000; 50,000 with
//! `SEAWALL_BENCH_SHORT=1`; `SEAWALL_HTTP_REQUESTS` sets any number).
//! Every request's latency is taken with `std::time::Instant` around
//! `ready().await` and `call(...).await`: what a caller of the client waits.
//!
//! Each variant's requests go in ten rounds, the variants taking turns
//! (bare, layered_server, tower_server, policy_server, tower_client,
//! policy_client, bare_again, each round starting one variant further
//! on), so that a spell of slowness on the machine is shared by all of
//! them; the server is restarted, and warmed up, for each round:
//!
//! - `bare`: no middleware on either side.
//! - `layered_server`: a layer that does nothing (tower's `MapRequest`
//!   with the identity) on the server's `Router`: what axum's `layer`
//!   costs a request whatever the layer, the floor of `tower_server` and
//!   `policy_server`.
//! - `tower_server`: tower's `ConcurrencyLimit` (1,024) and `Timeout` (1 s)
//!   on the server's `Router` (with axum's `HandleErrorLayer` for their
//!   errors): the peer to compare the Policy with.
//! - `tower_client`: the same pair around the client, the server bare.
//! - `policy_server`: the server's `Router` under `.layer(...)` of a seawall
//!   `Policy` (a breaker with Hystrix's defaults, a bulkhead of 1,024 calls,
//!   a 1 s timeout, 5xx answers counted as failures) with
//!   `ErrorResponseLayer` turning its refusals into responses.
//! - `policy_client`: the same Policy around the client (a `service_fn`
//!   over the hyper-util client), the server bare.
//! - `bare_again`: `bare` once more.
//!
//! It prints a markdown table (requests, seconds, requests/s, p50 and p99
//! in µs, requests/s over the mean of the two bare runs, and the same
//! ratio round by round, against the two bare passes of the same round:
//! its median and range), the load average from `/proc/loadavg` before
//! and after, and the command that reproduces the run.
//!
//! Reading the numbers: client and server share the machine's cores, so
//! requests/s is bounded by the CPU time of a whole HTTP exchange (two
//! socket writes, two reads, hyper's parsing, axum's routing, the tasks'
//! wake-ups) — tens of microseconds of CPU per request, against the
//! hundreds of nanoseconds a Policy adds (BENCHMARKS.md). With 64
//! requests always in flight, p50 and p99 are mostly queueing behind the
//! other 63, so they move with throughput. The two bare runs are identical
//! work: their difference is the noise of this machine at this moment, and
//! a Policy variant whose "vs bare" lies within that spread costs nothing
//! a user could see. The median of the rounds' ratios is the steadier
//! figure: a spell of slowness moves one round's ratio, not the median.
//! A shared machine (the load average shows it) widens the spread; rerun
//! on a quiet one before reading more into it. What load cannot move is
//! the instructions a request takes: `scripts/http-instructions`.

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::http::{Request, Response, StatusCode, Uri};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::integration::axum::{server_errors, ErrorResponseLayer};
use seawall::policy::Policy;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::util::MapRequestLayer;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

/// Client tasks, each with one request in flight (and so connections).
const TASKS: usize = 64;
/// Measured requests per variant by default.
const DEFAULT_REQUESTS: usize = 200_000;
/// Measured requests per variant with `SEAWALL_BENCH_SHORT=1`.
const SHORT_REQUESTS: usize = 50_000;
/// Each variant's requests are sent in this many rounds, the variants
/// taking turns, each round in another order.
const ROUNDS: usize = 10;
/// The server's answer.
const BODY: &str = "ok";
/// A phase (warm-up or measurement) stops sending after this long, however
/// many requests it has left: the process always ends.
const PHASE_LIMIT: Duration = Duration::from_secs(30);
/// How long after [`PHASE_LIMIT`] a phase's tasks may take to come back
/// (a request stuck without an answer) before they are aborted.
const PHASE_GRACE: Duration = Duration::from_secs(10);

/// The Policy of both Policy variants: a breaker with Hystrix's defaults,
/// a bulkhead of 1,024 calls, a 1 s timeout, 5xx answers as failures.
macro_rules! policy {
    ($name:expr) => {
        Policy::builder()
            .name($name)
            .circuit_breaker(CircuitBreaker::builder())
            .bulkhead(Bulkhead::builder().max_concurrent(1024))
            .timeout(Duration::from_secs(1))
            .classify(server_errors())
            .build()
            .expect("the benchmark's Policy configuration is valid")
    };
}

fn main() {
    let (requests, mut reproduce) = size();
    if let Ok(chosen) = std::env::var("SEAWALL_HTTP_VARIANTS") {
        reproduce = format!("SEAWALL_HTTP_VARIANTS={chosen} {reproduce}");
    }
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio multi-thread runtime");
    let started = Instant::now();
    let variants = chosen_variants();
    // Rounds over all the variants in turn: this machine sometimes runs
    // everything a third slower for a while, which would otherwise land on
    // whichever variant ran then. Each round starts one variant further
    // on, so that none always runs first, or always after another.
    let rows = runtime.block_on(async {
        let mut rows: Vec<Option<Row>> = variants.iter().map(|_| None).collect();
        for round in 0..ROUNDS {
            let shift = round % variants.len();
            for i in (0..variants.len()).map(|i| (i + shift) % variants.len()) {
                let measured = run(variants[i], requests / ROUNDS).await;
                match &mut rows[i] {
                    Some(row) => row.merge(measured),
                    None => rows[i] = Some(measured),
                }
            }
        }
        rows.into_iter().flatten().collect::<Vec<_>>()
    });
    drop(runtime);
    let load_after = load_average();
    report(&rows, requests, started.elapsed());
    println!();
    println!("load average before: {load_before}");
    println!("load average after:  {load_after}");
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("reproduce: `{reproduce}`");
}

/// Measured requests per variant, and the command line that gives them.
fn size() -> (usize, String) {
    let command = "cargo bench -p seawall-benches --bench http --features http";
    if let Ok(requests) = std::env::var("SEAWALL_HTTP_REQUESTS") {
        let parsed = requests.trim().parse::<usize>().expect(
            "SEAWALL_HTTP_REQUESTS must be a whole number of requests per variant (e.g. 20000)",
        );
        return (parsed, format!("SEAWALL_HTTP_REQUESTS={parsed} {command}"));
    }
    if std::env::var("SEAWALL_BENCH_SHORT").is_ok_and(|v| v == "1") {
        return (SHORT_REQUESTS, format!("SEAWALL_BENCH_SHORT=1 {command}"));
    }
    (DEFAULT_REQUESTS, command.to_owned())
}

/// Every variant, or those `SEAWALL_HTTP_VARIANTS` names (comma-separated),
/// for a profiler or `perf stat` to see one alone.
fn chosen_variants() -> Vec<Variant> {
    let all = [
        Variant::Bare,
        Variant::LayeredServer,
        Variant::TowerServer,
        Variant::PolicyServer,
        Variant::TowerClient,
        Variant::PolicyClient,
        Variant::BareAgain,
    ];
    let Ok(chosen) = std::env::var("SEAWALL_HTTP_VARIANTS") else {
        return all.to_vec();
    };
    let names: Vec<&str> = chosen.split(',').map(str::trim).collect();
    for name in &names {
        assert!(
            all.iter().any(|v| v.name() == *name),
            "SEAWALL_HTTP_VARIANTS: no variant {name:?} (they are: {})",
            all.map(Variant::name).join(", ")
        );
    }
    all.into_iter()
        .filter(|v| names.contains(&v.name()))
        .collect()
}

fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(load) => load
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "unknown (no /proc/loadavg)".to_owned(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    LayeredServer,
    TowerServer,
    PolicyServer,
    TowerClient,
    PolicyClient,
    BareAgain,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::LayeredServer => "layered_server",
            Variant::TowerServer => "tower_server",
            Variant::PolicyServer => "policy_server",
            Variant::TowerClient => "tower_client",
            Variant::PolicyClient => "policy_client",
            Variant::BareAgain => "bare_again",
        }
    }

    fn is_bare(self) -> bool {
        matches!(self, Variant::Bare | Variant::BareAgain)
    }
}

/// One phase's outcome: every request's latency (sorted, in ns).
struct Measured {
    elapsed: Duration,
    latencies: Vec<u32>,
    failures: usize,
    first_failure: Option<String>,
    cut_short: bool,
}

struct Row {
    variant: Variant,
    measured: Measured,
    /// Requests per second in each round, in the rounds' order.
    rounds: Vec<f64>,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another round's requests to these.
    fn merge(&mut self, other: Measured) {
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.failures += other.failures;
        self.first_failure = self.first_failure.take().or(other.first_failure);
        self.cut_short |= other.cut_short;
    }
}

impl Row {
    fn rps(&self) -> f64 {
        self.measured.rps()
    }

    /// Adds another round of the same variant.
    fn merge(&mut self, other: Row) {
        self.rounds.extend(other.rounds);
        self.measured.merge(other.measured);
    }
}

/// Starts the variant's server, warms up, measures, stops the server.
async fn run(variant: Variant, requests: usize) -> Row {
    let app = Router::new().route("/", get(|| async { BODY }));
    let app = match variant {
        Variant::PolicyServer => app.layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(policy!("http_bench_server")),
        ),
        Variant::LayeredServer => app.layer(MapRequestLayer::new(|request: Request<Body>| request)),
        Variant::TowerServer => app.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .concurrency_limit(1024)
                .timeout(Duration::from_secs(1)),
        ),
        _ => app,
    };
    let server = Server::start(app).await;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(TASKS)
        .build(connector);
    let fetch = service_fn(move |request: Request<Body>| {
        let client = client.clone();
        async move {
            let (parts, body) = client.request(request).await?.into_parts();
            let body = axum::body::to_bytes(Body::new(body), 64 * 1024).await?;
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        }
    });

    let uri = server.uri.clone();
    let measured = match variant {
        Variant::TowerClient => {
            let guarded = ServiceBuilder::new()
                .concurrency_limit(1024)
                .timeout(Duration::from_secs(1))
                .service(fetch);
            warm_up_and_measure(guarded, uri, requests).await
        }
        Variant::PolicyClient => {
            let guarded = ServiceBuilder::new()
                .layer(policy!("http_bench_client"))
                .service(fetch);
            warm_up_and_measure(guarded, uri, requests).await
        }
        _ => warm_up_and_measure(fetch, uri, requests).await,
    };
    // The client (and its pooled connections) went with the service.
    server.stop().await;
    eprintln!(
        "{:<14} {} requests in {:.2} s",
        variant.name(),
        measured.latencies.len(),
        measured.elapsed.as_secs_f64()
    );
    let rounds = vec![measured.rps()];
    Row {
        variant,
        measured,
        rounds,
    }
}

async fn warm_up_and_measure<S>(service: S, uri: Uri, requests: usize) -> Measured
where
    S: Service<Request<Body>, Response = Response<Bytes>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Display + Send,
{
    let warm_up = drive(service.clone(), uri.clone(), requests / 10).await;
    if warm_up.failures > 0 {
        eprintln!(
            "warm-up: {} failed requests (first: {})",
            warm_up.failures,
            warm_up.first_failure.as_deref().unwrap_or("?")
        );
    }
    drive(service, uri, requests).await
}

/// Sends `requests` requests from [`TASKS`] tasks, each one at a time.
async fn drive<S>(service: S, uri: Uri, requests: usize) -> Measured
where
    S: Service<Request<Body>, Response = Response<Bytes>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Display + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<JoinHandle<Measured>> = (0..TASKS)
        .map(|_| {
            let (mut service, next, uri) = (service.clone(), Arc::clone(&next), uri.clone());
            tokio::spawn(async move {
                let mut mine = Measured {
                    elapsed: Duration::ZERO,
                    latencies: Vec::with_capacity(requests / TASKS + 1),
                    failures: 0,
                    first_failure: None,
                    cut_short: false,
                };
                while next.fetch_add(1, Relaxed) < requests {
                    let request = Request::get(uri.clone())
                        .body(Body::empty())
                        .expect("a GET request to a valid URI");
                    let sent = Instant::now();
                    let outcome = match service.ready().await {
                        Ok(ready) => ready.call(request).await,
                        Err(error) => Err(error),
                    };
                    let took = sent.elapsed();
                    mine.latencies
                        .push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
                    let failure = match outcome {
                        Ok(r) if r.status() == StatusCode::OK && r.body() == BODY => None,
                        Ok(r) => Some(format!("status {}, body {:?}", r.status(), r.body())),
                        Err(error) => Some(error.to_string()),
                    };
                    if let Some(failure) = failure {
                        mine.failures += 1;
                        mine.first_failure.get_or_insert(failure);
                    }
                    if sent.duration_since(started) > PHASE_LIMIT {
                        mine.cut_short = true;
                        break;
                    }
                }
                mine
            })
        })
        .collect();

    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let mut all = Measured {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(requests),
        failures: 0,
        first_failure: None,
        cut_short: false,
    };
    let joined = tokio::time::timeout(PHASE_LIMIT + PHASE_GRACE, async {
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await);
        }
        results
    })
    .await;
    all.elapsed = started.elapsed();
    match joined {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(mine) => {
                        all.latencies.extend_from_slice(&mine.latencies);
                        all.failures += mine.failures;
                        if all.first_failure.is_none() {
                            all.first_failure = mine.first_failure;
                        }
                        all.cut_short |= mine.cut_short;
                    }
                    Err(error) => {
                        all.failures += 1;
                        all.first_failure
                            .get_or_insert(format!("task failed: {error}"));
                    }
                }
            }
        }
        Err(_) => {
            for abort in aborts {
                abort.abort();
            }
            all.cut_short = true;
            all.first_failure
                .get_or_insert("requests unanswered past the phase's limit; tasks aborted".into());
        }
    }
    all.latencies.sort_unstable();
    all
}

/// An axum server on an ephemeral port of 127.0.0.1.
struct Server {
    uri: Uri,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(app: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listening socket on 127.0.0.1:0");
        let address = listener
            .local_addr()
            .expect("the listening socket's address");
        let listener = listener.tap_io(|tcp| {
            // Only a hint: without it the exchange still completes.
            let _ = tcp.set_nodelay(true);
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let uri = format!("http://{address}/")
            .parse()
            .expect("a URI made of a socket address");
        Server { uri, stop, task }
    }

    /// Stops accepting, lets open connections finish, and waits at most 5 s.
    async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("the server stopped with an error: {error}"),
            Ok(Err(error)) => eprintln!("the server's task failed: {error}"),
            Err(_) => {
                eprintln!("the server did not stop within 5 s; aborted");
                abort.abort();
            }
        }
    }
}

/// The least, the median and the greatest of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (values[0], median, values[n - 1])
}

fn percentile_micros(sorted: &[u32], p: f64) -> String {
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    format!("{:.1}", f64::from(sorted[rank - 1]) / 1_000.0)
}

fn report(rows: &[Row], requests: usize, total: Duration) {
    let bare: Vec<&Row> = rows.iter().filter(|row| row.variant.is_bare()).collect();
    let bare_mean = bare.iter().map(|row| row.rps()).sum::<f64>() / bare.len().max(1) as f64;
    // Each round's own bare rate: the mean of its two bare passes.
    let bare_of_round: Vec<f64> = (0..ROUNDS)
        .map(|r| {
            let passes: Vec<f64> = bare
                .iter()
                .filter_map(|row| row.rounds.get(r))
                .copied()
                .collect();
            passes.iter().sum::<f64>() / passes.len().max(1) as f64
        })
        .collect();
    println!(
        "## HTTP round trips: {requests} requests a variant in {ROUNDS} rounds, each after {} of warm-up, {TASKS} connections",
        requests / ROUNDS / 10
    );
    println!();
    println!("| variant | requests | seconds | requests/s | p50 (µs) | p99 (µs) | vs bare (rps) | vs its round's bare: median | rounds' range |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let m = &row.measured;
        let ratios: Vec<f64> = row
            .rounds
            .iter()
            .zip(&bare_of_round)
            .map(|(rps, bare)| rps / bare.max(1e-9))
            .collect();
        let (low, median, high) = spread(ratios);
        // Without a bare variant in the run there is nothing to compare with.
        let ratios = if bare.is_empty() {
            "- | - | -".to_owned()
        } else {
            format!(
                "{:.3} | {median:.3} | {low:.3} to {high:.3}",
                row.rps() / bare_mean
            )
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {ratios} |",
            row.variant.name(),
            m.latencies.len(),
            m.elapsed.as_secs_f64(),
            row.rps(),
            percentile_micros(&m.latencies, 0.50),
            percentile_micros(&m.latencies, 0.99),
        );
    }
    println!();
    if let [a, b] = bare[..] {
        println!(
            "noise: the two bare passes differ by {:.1}% of their mean over all rounds",
            (a.rps() - b.rps()).abs() / bare_mean.max(1e-9) * 100.0
        );
        let (low, median, high) = spread(
            a.rounds
                .iter()
                .zip(&b.rounds)
                .map(|(a, b)| (b / a.max(1e-9) - 1.0) * 100.0)
                .collect(),
        );
        println!(
            "noise: bare_again against bare, round by round: median {median:+.1}%, range {low:+.1}% to {high:+.1}%"
        );
    }
    for row in rows {
        let m = &row.measured;
        if m.failures > 0 {
            println!(
                "{}: {} failed requests (first: {})",
                row.variant.name(),
                m.failures,
                m.first_failure.as_deref().unwrap_or("?")
            );
        }
        if m.cut_short {
            println!(
                "{}: cut short at the {} s limit",
                row.variant.name(),
                PHASE_LIMIT.as_secs()
            );
        }
    }
    println!("whole run: {:.1} s", total.as_secs_f64());
}
