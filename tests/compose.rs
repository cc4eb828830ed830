//! seawall's parts compose: separate layers and the Policy follow the same
//! rules, errors never nest, and tower's own errors are understood.

// The helpers serve the tests of feature `cache`; without it they idle.
#![cfg_attr(not(feature = "cache"), allow(unused))]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use seawall::blocking::{BlockingPool, BlockingService};
use seawall::bulkhead::{Bulkhead, Isolation};
use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerBuilder, OpenDuration, State};
use seawall::classify::{ByKind, Classify, Verdict};
use seawall::fallback::{Fallback, FallbackLayer};
use seawall::policy::Policy;
use seawall::window::{Counts, Window};
use seawall::{BoxError, Error, ResilienceExt};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a test dependency does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Answers with this.
    Answer(&'static str),
    /// Answers with an error page (a response the classifier calls a failure).
    ErrorPage,
    /// Fails.
    Fail,
    /// Fails with an error that is not the dependency's fault.
    NotFound,
    /// Takes a second (past every deadline here).
    Hang,
}

#[derive(Debug, PartialEq, Eq)]
enum Failed {
    Down,
    NotFound,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Failed {}
seawall::leaf_error!(Failed);

/// A request: the key its answers are cached under, and what to do.
type Request = (u8, Act);

fn dependency(
    calls: Arc<AtomicUsize>,
) -> impl Service<Request, Response = String, Error = Failed, Future = impl Send> + Clone {
    service_fn(move |(_, act): Request| {
        calls.fetch_add(1, SeqCst);
        async move {
            match act {
                Act::Answer(text) => Ok(text.to_owned()),
                Act::ErrorPage => Ok("error page".to_owned()),
                Act::Fail => Err(Failed::Down),
                Act::NotFound => Err(Failed::NotFound),
                Act::Hang => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok("too late".to_owned())
                }
            }
        }
    })
}

/// The one classifier both stacks are given: an error page is a failure,
/// a missing record is nobody's fault.
fn judge(result: &Result<String, Error<Failed>>) -> Verdict {
    match result {
        Ok(page) if page == "error page" => Verdict::Failure,
        Err(Error::Inner(Failed::NotFound)) => Verdict::Ignore,
        other => ByKind.classify(other),
    }
}

fn breaker() -> CircuitBreakerBuilder {
    CircuitBreaker::builder()
        .window(Window::count(10))
        .minimum_calls(4)
        .error_threshold(60.0)
        .open_duration(OpenDuration::Fixed(ms(1_000)))
        .half_open_probes(1)
}

#[cfg(feature = "cache")]
fn fallback() -> Fallback<Request, String, Failed, u8> {
    use seawall::fallback::{FallbackCache, Provenance};
    Fallback::keyed(|(key, _): &Request| *key)
        .cache(FallbackCache::builder().build().unwrap())
        .value("default".to_owned())
        .mark(|answer: &mut String, from| {
            answer.push_str(match from {
                Provenance::Cache { .. } => " (cached)",
                _ => " (fallback)",
            })
        })
        .build()
        .unwrap()
}

/// Each step: the request, then how long to wait after it.
#[cfg(feature = "cache")]
const SCRIPT: &[(Request, u64)] = &[
    ((1, Act::Answer("one")), 10),
    ((2, Act::Answer("two")), 10),
    ((2, Act::NotFound), 10),  // ignored: the caller gets the error
    ((1, Act::ErrorPage), 10), // a failure: passed on, not cached
    ((1, Act::Fail), 10),      // the last good answer for 1
    ((2, Act::Hang), 10),      // timed out: the cache answers; 3 of 5 open it
    ((3, Act::Fail), 10),      // short-circuited, nothing cached: the value
    ((1, Act::Answer("new one")), 1_000), // short-circuited: cached
    ((1, Act::Answer("newer one")), 10), // the probe: closes
    ((1, Act::Fail), 10),      // the newest good answer
    ((2, Act::Answer("two again")), 10),
];

/// What one call gave, and the breaker after it.
#[derive(Debug, PartialEq)]
struct Step {
    answer: Result<String, String>,
    state: State,
    counts: Counts,
}

#[cfg(feature = "cache")]
async fn run<S>(mut service: S, breaker: &CircuitBreaker, calls: &AtomicUsize) -> Vec<Step>
where
    S: Service<Request, Response = String, Error = Error<Failed>>,
{
    let mut steps = Vec::new();
    for &(request, wait) in SCRIPT {
        let answer = service.ready().await.unwrap().call(request).await;
        let answer = answer.map_err(|error| match error {
            Error::Inner(inner) => format!("inner {inner}"),
            refused => format!("refused: {refused}"),
        });
        steps.push(Step {
            answer,
            state: breaker.state(),
            counts: breaker.counts(),
        });
        tokio::time::advance(ms(wait)).await;
    }
    steps.push(Step {
        answer: Ok(format!(
            "{} calls reached the dependency",
            calls.load(SeqCst)
        )),
        state: breaker.state(),
        counts: breaker.lifetime().counts,
    });
    steps
}

#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn a_fallback_layer_over_a_breaker_and_a_policy_behave_identically() {
    let layered_calls = Arc::new(AtomicUsize::new(0));
    let layered_breaker = breaker().name("layered").build().unwrap();
    let layered = ServiceBuilder::new()
        .layer(
            FallbackLayer::new(fallback())
                .classify(judge)
                .stats(&layered_breaker),
        )
        .layer(layered_breaker.layer().classify(judge))
        .call_timeout(ms(100))
        .service(dependency(layered_calls.clone()));
    let layered = run(layered, &layered_breaker, &layered_calls).await;

    let policy_calls = Arc::new(AtomicUsize::new(0));
    let policy = Policy::builder()
        .name("policy")
        .circuit_breaker(breaker())
        .timeout(ms(100))
        .fallback(fallback())
        .classify(judge)
        .build()
        .unwrap();
    let policy_steps = run(
        policy.layer(dependency(policy_calls.clone())),
        policy.breaker(),
        &policy_calls,
    )
    .await;

    for (n, (layered, policy)) in layered.iter().zip(&policy_steps).enumerate() {
        assert_eq!(layered, policy, "step {n}");
    }
    let answers: Vec<_> = layered.iter().map(|s| s.answer.clone()).collect();
    let ok = |s: &str| Ok(s.to_owned());
    assert_eq!(
        answers,
        [
            ok("one"),
            ok("two"),
            Err("inner NotFound".to_owned()),
            ok("error page"),
            ok("one (cached)"),
            ok("two (cached)"),
            ok("default (fallback)"),
            ok("one (cached)"),
            ok("newer one"),
            ok("newer one (cached)"),
            ok("two again"),
            ok("9 calls reached the dependency"),
        ]
    );
    assert_eq!(layered[4].state, State::Closed);
    assert_eq!(layered[5].state, State::Open, "the timeout opened it");
    assert_eq!(layered[8].state, State::Closed, "the probe closed it");
    let totals = layered.last().unwrap().counts;
    assert_eq!(
        (
            totals.success,
            totals.failure,
            totals.timeout,
            totals.ignored
        ),
        (4, 3, 1, 1)
    );
    assert_eq!(
        (
            totals.short_circuited,
            totals.fallback_success,
            totals.cache_hit
        ),
        (2, 1, 4)
    );
}

/// Every seawall layer stacked separately over reqwest: one level of
/// `Error<reqwest::Error>`, `?` into anyhow, and the report reaches the
/// operating system's own words.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn every_layer_stacked_over_reqwest_reports_the_whole_cause() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = reqwest::Client::new();
    let fetch = service_fn(move |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await }
    });
    let breaker = CircuitBreaker::builder().name("upstream").build().unwrap();
    let bulkhead = Bulkhead::builder().max_concurrent(4).build().unwrap();
    let fallback = Fallback::builder()
        .function(|_: &(), _: &Error<reqwest::Error>| {
            Ok::<_, Infallible>(reqwest::Response::from(axum::http::Response::new("cached")))
        })
        .on(seawall::fallback::Causes::only(&[
            seawall::fallback::Cause::CircuitOpen,
        ]))
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(FallbackLayer::new(fallback).stats(&breaker))
        .circuit_breaker(&breaker)
        .bulkhead(&bulkhead)
        .call_timeout(Duration::from_secs(5))
        .service(fetch);
    assert_error_type::<_, String, reqwest::Error>(&service);

    async fn get<S>(service: S, url: String) -> anyhow::Result<reqwest::Response>
    where
        S: Service<String, Response = reqwest::Response, Error = Error<reqwest::Error>>,
    {
        Ok(service.oneshot(url).await?)
    }
    let report = format!(
        "{:#}",
        get(service.clone(), format!("http://{closed}/"))
            .await
            .unwrap_err()
    );
    assert!(report.contains(&closed.to_string()), "{report}");
    assert!(
        report.to_lowercase().contains("connection refused"),
        "the cause at the bottom of the chain: {report}"
    );
    assert_eq!(breaker.counts().failure, 1);

    let boxed: Result<_, BoxError> = service
        .clone()
        .oneshot(format!("http://{closed}/"))
        .await
        .map_err(Into::into);
    let boxed = boxed.unwrap_err();
    let mut chain = vec![boxed.to_string()];
    let mut source = boxed.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    assert!(
        chain
            .iter()
            .any(|c| c.to_lowercase().contains("connection refused")),
        "{chain:?}"
    );

    breaker.force_open();
    let answer = service.oneshot(format!("http://{closed}/")).await.unwrap();
    assert_eq!(answer.text().await.unwrap(), "cached", "the fallback above");
}

/// Checks at compile time that `service` errs with `Error<E>`, one level.
fn assert_error_type<S, Req, E>(_: &S)
where
    S: Service<Req, Error = Error<E>>,
{
}

/// A blocking client's io error, with a cause of its own, through every
/// layer and a pool: one level of `Error<io::Error>`, the cause kept.
#[tokio::test]
async fn a_blocking_client_under_every_layer_keeps_its_cause() {
    #[derive(Debug)]
    struct Handshake;
    impl std::fmt::Display for Handshake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the server sent no greeting")
        }
    }
    impl std::error::Error for Handshake {}

    let pool = BlockingPool::builder().threads(1).queue(1).build().unwrap();
    let client = BlockingService::new(pool, |_: u32| -> std::io::Result<u32> {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            Handshake,
        ))
    });
    let breaker = CircuitBreaker::builder().build().unwrap();
    let bulkhead = Bulkhead::builder().max_concurrent(2).build().unwrap();
    let service = ServiceBuilder::new()
        .circuit_breaker(&breaker)
        .bulkhead(&bulkhead)
        .call_timeout(ms(500))
        .service(client);
    assert_error_type::<_, u32, std::io::Error>(&service);

    let error = anyhow::Error::from(service.oneshot(7).await.unwrap_err());
    assert_eq!(format!("{error:#}"), "the server sent no greeting");
    let io = error.downcast_ref::<Error<std::io::Error>>().unwrap();
    assert_eq!(
        io.inner().unwrap().kind(),
        std::io::ErrorKind::ConnectionAborted
    );
    assert_eq!(breaker.counts().failure, 1);
}

/// tower's own `Timeout` and `LoadShed` below a seawall breaker: their
/// errors are a timeout and a refusal, in the counts and in the `is_*`
/// helpers.
#[tokio::test(start_paused = true)]
async fn towers_own_timeout_and_load_shedding_are_understood() {
    let breaker = CircuitBreaker::builder().build().unwrap();
    let slow = ServiceBuilder::new()
        .layer(breaker.layer())
        .layer(tower::timeout::TimeoutLayer::new(ms(10)))
        .service(service_fn(|_: ()| async {
            tokio::time::sleep(ms(100)).await;
            Ok::<_, Infallible>(())
        }));
    let error = slow.oneshot(()).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(breaker.counts().timeout, 1);

    let breaker = CircuitBreaker::builder().build().unwrap();
    let mut shedding = ServiceBuilder::new()
        .layer(breaker.layer())
        .load_shed()
        .concurrency_limit(1)
        .service(service_fn(|_: ()| async {
            tokio::time::sleep(ms(100)).await;
            Ok::<_, Infallible>(())
        }));
    let held = shedding.ready().await.unwrap().call(());
    let error = shedding.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(error.is_bulkhead_full(), "{error:?}");
    assert_eq!(breaker.counts().rejected, 1);
    held.await.unwrap();
    assert_eq!(breaker.counts().success, 1);
}

/// A seawall error that reaches another seawall layer boxed (through a
/// `BoxError` stack in between) is still what it was.
#[tokio::test(start_paused = true)]
async fn a_seawall_refusal_boxed_on_the_way_is_still_a_refusal() {
    let lower = CircuitBreaker::builder().name("lower").build().unwrap();
    lower.force_open();
    let upper = CircuitBreaker::builder().name("upper").build().unwrap();
    let service = ServiceBuilder::new()
        .layer(upper.layer())
        .map_err(Into::<BoxError>::into)
        .layer(lower.layer())
        .service(service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
    let error = service.oneshot(()).await.unwrap_err();
    assert!(error.is_circuit_open(), "{error:?}");
    assert_eq!(upper.counts().rejected, 1, "a refusal below, not a failure");
}

#[cfg(feature = "registry")]
#[tokio::test(start_paused = true)]
async fn a_policy_over_a_keyed_registry_keeps_a_breaker_per_tenant() {
    use seawall::circuit_breaker::Registry;

    let tenants = Registry::<&'static str>::builder(
        CircuitBreaker::builder()
            .name("inventory")
            .consecutive_failures(2)
            .disable_error_threshold(),
    )
    .build()
    .unwrap();
    let policy = Policy::builder()
        .name("inventory")
        .circuit_breaker(tenants.keyed(|(tenant, _): &(&'static str, Act)| *tenant))
        .bulkhead(Bulkhead::builder().max_concurrent(8))
        .timeout(ms(100))
        .fallback(Fallback::builder().value("unavailable".to_owned()))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = policy.layer(service_fn({
        let calls = calls.clone();
        move |(_, act): (&'static str, Act)| {
            calls.fetch_add(1, SeqCst);
            async move {
                match act {
                    Act::Fail => Err(std::io::Error::other("down")),
                    _ => Ok("fresh".to_owned()),
                }
            }
        }
    }));

    for _ in 0..2 {
        let answer = service.clone().oneshot(("acme", Act::Fail)).await.unwrap();
        assert_eq!(answer, "unavailable");
    }
    let acme = tenants.get_if_present(&"acme").unwrap();
    assert_eq!(acme.state(), State::Open);
    assert_eq!(
        service
            .clone()
            .oneshot(("acme", Act::Answer("")))
            .await
            .unwrap(),
        "unavailable",
        "acme's breaker refuses; the fallback answers"
    );
    assert_eq!(
        service
            .clone()
            .oneshot(("globex", Act::Answer("")))
            .await
            .unwrap(),
        "fresh",
        "globex's breaker is its own"
    );
    assert_eq!(calls.load(SeqCst), 3);

    let acme_counts = acme.counts();
    assert_eq!(
        (
            acme_counts.failure,
            acme_counts.short_circuited,
            acme_counts.fallback_success
        ),
        (2, 1, 3)
    );
    let globex = policy
        .breakers()
        .registry()
        .get_if_present(&"globex")
        .unwrap();
    assert_eq!(
        (globex.state(), globex.counts().success),
        (State::Closed, 1)
    );
    assert_eq!(
        (acme.name(), globex.name()),
        ("inventory:\"acme\"", "inventory:\"globex\""),
        "named by the registry's builder and the key"
    );
    assert_eq!(policy.bulkhead().unwrap().in_flight, 0);
}

#[tokio::test]
async fn a_policy_over_a_blocking_pool_counts_a_full_pool_as_a_refusal() {
    let pool = BlockingPool::builder()
        .name("ledger")
        .threads(1)
        .queue(0)
        .build()
        .unwrap();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let client = BlockingService::new(pool.clone(), move |entry: u32| -> std::io::Result<u32> {
        if entry == 0 {
            gate.lock().unwrap().recv().unwrap();
        }
        Ok(entry * 10)
    });
    let policy = Policy::builder()
        .name("ledger")
        .circuit_breaker(CircuitBreaker::builder().minimum_calls(100))
        .timeout(Duration::from_secs(5))
        .fallback(Fallback::builder().value(u32::MAX))
        .build()
        .unwrap();
    let service = policy.layer(client);
    assert_error_type::<_, u32, std::io::Error>(&service);

    assert_eq!(service.clone().oneshot(4).await.unwrap(), 40);
    let busy = tokio::spawn(service.clone().oneshot(0));
    while pool.figures().busy == 0 {
        tokio::task::yield_now().await;
    }
    // The only thread is busy and the pool queues nothing: refused, and
    // the fallback answers.
    assert_eq!(service.clone().oneshot(5).await.unwrap(), u32::MAX);
    release.send(()).unwrap();
    assert_eq!(busy.await.unwrap().unwrap(), 0);

    let counts = policy.breaker().counts();
    assert_eq!(
        (counts.success, counts.rejected, counts.fallback_success),
        (2, 1, 1)
    );

    let no_fallback = Policy::builder().name("ledger").build().unwrap();
    let gate_pool = BlockingPool::builder().threads(1).queue(0).build().unwrap();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let service = no_fallback.layer(BlockingService::new(gate_pool.clone(), move |_: u32| {
        gate.lock().unwrap().recv().unwrap();
        Ok::<_, std::io::Error>(())
    }));
    let busy = tokio::spawn(service.clone().oneshot(1));
    while gate_pool.figures().busy == 0 {
        tokio::task::yield_now().await;
    }
    match service.clone().oneshot(2).await.unwrap_err() {
        Error::BulkheadFull(full) => assert_eq!(full.isolation(), Isolation::ThreadPool),
        other => panic!("{other:?}"),
    }
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
}

/// tower-http's classifiers judge responses for seawall's breakers.
#[cfg(feature = "tower-http")]
#[tokio::test(start_paused = true)]
async fn tower_http_classifiers_judge_responses() {
    use axum::http::{Response, StatusCode};
    use seawall::classify::Http;
    use tower_http::classify::{
        GrpcErrorsAsFailures, ServerErrorsAsFailures, StatusInRangeAsFailures,
    };

    /// Sends each response through a breaker classifying with `classify`;
    /// gives (successes, failures).
    async fn judged<C>(classify: C, responses: Vec<Response<()>>) -> (u64, u64)
    where
        C: Classify<Response<()>, Infallible> + Clone,
    {
        let breaker = CircuitBreaker::builder()
            .minimum_calls(1_000)
            .build()
            .unwrap();
        let responses = Arc::new(std::sync::Mutex::new(responses.into_iter()));
        let mut service = breaker
            .layer()
            .classify(classify)
            .layer(service_fn(move |()| {
                let response = responses.lock().unwrap().next().unwrap();
                async move { Ok::<_, Infallible>(response) }
            }));
        while service.ready().await.unwrap().call(()).await.is_ok() && breaker.counts().calls() < 4
        {
        }
        let counts = breaker.counts();
        (counts.success, counts.failure)
    }
    let statuses = |codes: &[u16]| {
        codes
            .iter()
            .map(|&code| {
                let mut response = Response::new(());
                *response.status_mut() = StatusCode::from_u16(code).unwrap();
                response
            })
            .collect::<Vec<_>>()
    };
    let grpc = |codes: &[Option<u16>]| {
        codes
            .iter()
            .map(|code| {
                let mut response = Response::new(());
                if let Some(code) = code {
                    response.headers_mut().insert("grpc-status", (*code).into());
                }
                response
            })
            .collect::<Vec<_>>()
    };

    let server_errors = Http::new(ServerErrorsAsFailures::new());
    assert_eq!(
        judged(server_errors, statuses(&[200, 404, 500, 503])).await,
        (2, 2)
    );
    let client_errors_too = Http::new(StatusInRangeAsFailures::new(400..=599));
    assert_eq!(
        judged(client_errors_too, statuses(&[200, 404, 429, 503])).await,
        (1, 3)
    );
    // grpc-status in the headers (a trailers-only answer) is judged; 5 is
    // NOT_FOUND, 14 UNAVAILABLE; without it the status comes in trailers.
    let grpc_default = Http::new(GrpcErrorsAsFailures::new());
    assert_eq!(
        judged(grpc_default, grpc(&[Some(0), Some(5), Some(14), None])).await,
        (2, 2)
    );
    #[cfg(feature = "tonic")]
    {
        let callers_fault_is_no_failure = seawall::integration::tonic::server_errors();
        assert_eq!(
            judged(
                callers_fault_is_no_failure,
                grpc(&[Some(0), Some(5), Some(14), None])
            )
            .await,
            (3, 1)
        );
    }
}
