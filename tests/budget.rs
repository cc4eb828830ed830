//! A request's budget, in paused time: read at the edge, capping every
//! deadline on the way out, written into outgoing requests and messages,
//! dropped from queues once spent, and never blamed on a dependency.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request};
use seawall::budget::{Budget, BudgetLayer, PropagateBudgetLayer, HEADER};
use seawall::bulkhead::Bulkhead;
use seawall::messaging::{Consumer, Correlator, InMemory, Message, Transport};
use seawall::policy::Policy;
use seawall::timeout::TimeoutLayer;
use seawall::{BoxError, Error};
use tokio::time::{advance, sleep, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A dependency that takes `delay` and counts its calls.
fn dependency(
    delay: Duration,
) -> (
    Arc<AtomicU64>,
    impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let service = service_fn(move |()| {
        counted.fetch_add(1, SeqCst);
        async move {
            sleep(delay).await;
            Ok::<_, BoxError>(())
        }
    });
    (calls, service)
}

fn callers_deadline<E>(result: &Result<(), Error<E>>) -> Option<Duration> {
    match result {
        Err(Error::Timeout(elapsed)) if elapsed.is_callers_deadline() => Some(elapsed.after()),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_policy_gives_a_call_no_more_than_the_budget_left_and_does_not_blame_the_dependency() {
    let policy = Policy::builder()
        .name("slow")
        .timeout(ms(1_000))
        .build()
        .unwrap();
    let (calls, slow) = dependency(ms(5_000));
    let service = policy.layer(slow);
    let result = Budget::new(ms(300))
        .scope(async {
            sleep(ms(100)).await;
            service.oneshot(()).await
        })
        .await;
    assert_eq!(callers_deadline(&result), Some(ms(200)));
    assert_eq!(calls.load(SeqCst), 1);
    let lifetime = policy.breaker().lifetime_counts();
    assert_eq!(
        (
            lifetime.caller_deadline,
            lifetime.failure,
            lifetime.timeout,
            lifetime.success
        ),
        (1, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_margin_keeps_time_for_the_caller_and_the_policy_timeout_still_caps() {
    let policy = Policy::builder()
        .timeout(ms(1_000))
        .budget_margin(ms(50))
        .build()
        .unwrap();
    let (_, slow) = dependency(ms(5_000));
    let service = policy.layer(slow);
    let within = Budget::new(ms(300))
        .scope(service.clone().oneshot(()))
        .await;
    assert_eq!(callers_deadline(&within), Some(ms(250)));
    // A budget longer than the timeout: the timeout is the dependency's.
    let long = Budget::new(ms(10_000)).scope(service.oneshot(())).await;
    assert!(
        matches!(&long, Err(Error::Timeout(e)) if !e.is_callers_deadline() && e.after() == ms(1_000))
    );
    let lifetime = policy.breaker().lifetime_counts();
    assert_eq!((lifetime.caller_deadline, lifetime.timeout), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_makes_no_call_and_counts_the_callers_deadline() {
    let policy = Policy::builder()
        .timeout(ms(1_000))
        .budget_margin(ms(20))
        .build()
        .unwrap();
    let (calls, fast) = dependency(ms(1));
    let service = policy.layer(fast);
    // 10 ms left, less a 20 ms margin: nothing left for the dependency.
    let result = Budget::new(ms(10)).scope(service.clone().oneshot(())).await;
    assert_eq!(callers_deadline(&result), Some(Duration::ZERO));
    let spent = Budget::new(ms(100));
    advance(ms(100)).await;
    let result = spent.scope(service.oneshot(())).await;
    assert_eq!(callers_deadline(&result), Some(Duration::ZERO));
    assert_eq!(calls.load(SeqCst), 0);
    let lifetime = policy.breaker().lifetime_counts();
    assert_eq!((lifetime.caller_deadline, lifetime.calls()), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_budget_spent_while_queued_for_the_bulkhead_makes_no_call() {
    let policy = Policy::builder()
        .timeout(ms(10_000))
        .bulkhead(Bulkhead::builder().max_concurrent(1).queue(4, ms(10_000)))
        .build()
        .unwrap();
    let (calls, slow) = dependency(ms(500));
    let service = policy.layer(slow);
    let first = tokio::spawn(service.clone().oneshot(()));
    tokio::task::yield_now().await;
    // Spent before it could join the line: refused at once, not queued.
    let started = Instant::now();
    let spent = Budget::new(Duration::ZERO)
        .scope(service.clone().oneshot(()))
        .await;
    assert!(callers_deadline(&spent).is_some(), "{spent:?}");
    assert_eq!(started.elapsed(), Duration::ZERO);
    // Queued behind a 500 ms call with 100 ms left: its turn comes too
    // late, and it makes no call.
    let queued = Budget::new(ms(100)).scope(service.oneshot(())).await;
    assert!(callers_deadline(&queued).is_some(), "{queued:?}");
    first.await.unwrap().unwrap();
    assert_eq!(calls.load(SeqCst), 1);
    let lifetime = policy.breaker().lifetime_counts();
    assert_eq!((lifetime.success, lifetime.caller_deadline), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn the_timeout_layer_honours_the_budget_too() {
    let (calls, slow) = dependency(ms(5_000));
    let service = TimeoutLayer::new(ms(1_000))
        .budget_margin(ms(10))
        .layer(slow);
    let result = Budget::new(ms(110))
        .scope(service.clone().oneshot(()))
        .await;
    assert_eq!(callers_deadline(&result), Some(ms(100)));
    let result = Budget::new(ms(5)).scope(service.oneshot(())).await;
    assert_eq!(callers_deadline(&result), Some(Duration::ZERO));
    assert_eq!(calls.load(SeqCst), 1);
}

/// The budget a handler saw: from the task-local, and from the request's
/// extensions.
type SeenBudgets = Arc<Mutex<Vec<(Option<Duration>, Option<Duration>)>>>;

/// A handler that reports the budget it saw.
fn reporting_handler(
    seen: SeenBudgets,
    delay: Duration,
) -> impl Service<Request<()>, Response = &'static str, Error = BoxError> + Clone {
    service_fn(move |request: Request<()>| {
        let from_extensions = request.extensions().get::<Budget>().map(Budget::remaining);
        let seen = Arc::clone(&seen);
        async move {
            let current = Budget::current().map(|budget| budget.remaining());
            seen.lock().unwrap().push((current, from_extensions));
            sleep(delay).await;
            Ok::<_, BoxError>("done")
        }
    })
}

fn request_with(header: &str, value: &str) -> Request<()> {
    Request::builder().header(header, value).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_edge_reads_the_budget_a_request_carries_and_runs_the_handler_within_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = BudgetLayer::builder()
        .default_budget(ms(2_000))
        .max_budget(ms(5_000))
        .build()
        .unwrap();
    let edge = layer.layer(reporting_handler(Arc::clone(&seen), ms(10)));
    let budgets = [
        (request_with(HEADER, "300"), ms(300)),
        (request_with("grpc-timeout", "250m"), ms(250)),
        (Request::new(()), ms(2_000)),
        (request_with(HEADER, "3600000"), ms(5_000)),
        (request_with(HEADER, "soon"), ms(2_000)),
    ];
    for (request, budget) in budgets {
        assert_eq!(edge.clone().oneshot(request).await.unwrap(), "done");
        let last = *seen.lock().unwrap().last().unwrap();
        assert_eq!(last, (Some(budget), Some(budget)));
    }
}

#[tokio::test(start_paused = true)]
async fn the_edge_answers_a_spent_budget_at_once_and_stops_a_handler_that_overruns() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let edge = BudgetLayer::new().layer(reporting_handler(Arc::clone(&seen), ms(1_000)));
    let spent = edge.clone().oneshot(request_with(HEADER, "0")).await;
    assert!(matches!(&spent, Err(Error::Timeout(e)) if e.is_callers_deadline()));
    assert!(seen.lock().unwrap().is_empty(), "the handler was called");

    let started = Instant::now();
    let overran = edge.clone().oneshot(request_with(HEADER, "300")).await;
    assert!(
        matches!(&overran, Err(Error::Timeout(e)) if e.is_callers_deadline() && e.after() == ms(300))
    );
    assert_eq!(started.elapsed(), ms(300));

    // No budget carried and no default: the handler runs unbounded.
    assert_eq!(edge.oneshot(Request::new(())).await.unwrap(), "done");
    assert_eq!(seen.lock().unwrap().last(), Some(&(None, None)));
}

#[test]
fn the_edge_refuses_settings_that_cannot_work() {
    let zero = BudgetLayer::builder()
        .default_budget(Duration::ZERO)
        .build();
    assert_eq!(zero.unwrap_err().field(), "default_budget");
    let zero = BudgetLayer::builder().max_budget(Duration::ZERO).build();
    assert_eq!(zero.unwrap_err().field(), "max_budget");
    let inverted = BudgetLayer::builder()
        .default_budget(ms(10))
        .max_budget(ms(5))
        .build()
        .unwrap_err();
    assert_eq!(
        inverted.to_string(),
        "invalid default_budget = 10ms: must not be longer than max_budget"
    );
}

type Sent = (Option<HeaderValue>, Option<HeaderValue>);

/// An HTTP client whose server answers with the budget headers it was sent.
fn echo_headers(
) -> impl Service<Request<()>, Response = http::Response<Sent>, Error = BoxError> + Clone {
    service_fn(|request: Request<()>| async move {
        let headers = request.headers();
        let sent = (
            headers.get(HEADER).cloned(),
            headers.get("grpc-timeout").cloned(),
        );
        Ok::<_, BoxError>(http::Response::new(sent))
    })
}

async fn send(
    client: impl Service<Request<()>, Response = http::Response<Sent>, Error = Error<BoxError>>,
    request: Request<()>,
) -> Result<Sent, Error<BoxError>> {
    Ok(client.oneshot(request).await?.into_body())
}

#[tokio::test(start_paused = true)]
async fn outgoing_requests_carry_what_is_left_less_the_margin_and_spent_ones_are_not_sent() {
    let client = PropagateBudgetLayer::new()
        .margin(ms(20))
        .layer(echo_headers());
    let sent = Budget::new(ms(300))
        .scope(async {
            sleep(ms(80)).await;
            send(client.clone(), Request::new(())).await
        })
        .await
        .unwrap();
    assert_eq!(sent, (Some(HeaderValue::from(200u64)), None));

    let grpc = Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let sent = Budget::new(ms(300))
        .scope(send(client.clone(), grpc))
        .await
        .unwrap();
    assert_eq!(sent, (None, Some(HeaderValue::from_static("280000u"))));

    // A budget in the request's extensions is honoured without a scope.
    let mut carried = Request::new(());
    carried.extensions_mut().insert(Budget::new(ms(50)));
    let sent = send(client.clone(), carried).await.unwrap();
    assert_eq!(sent.0, Some(HeaderValue::from(30u64)));

    let spent = Budget::new(ms(20))
        .scope(send(client.clone(), Request::new(())))
        .await;
    assert!(matches!(&spent, Err(Error::Timeout(e)) if e.is_callers_deadline()));
    // No budget: the request goes out as it was.
    assert_eq!(send(client, Request::new(())).await.unwrap(), (None, None));
}

/// A server that answers after `delay` with `status` (a gRPC status when
/// `grpc`), marked as its caller's deadline when `marked`; or fails.
fn answering(
    delay: Duration,
    answer: Result<(u16, Option<&'static str>, bool), &'static str>,
) -> impl Service<Request<()>, Response = http::Response<()>, Error = BoxError> + Clone {
    service_fn(move |_: Request<()>| async move {
        sleep(delay).await;
        let (status, grpc, marked) = answer.map_err(BoxError::from)?;
        let mut response = http::Response::builder().status(status);
        if let Some(code) = grpc {
            response = response.header("grpc-status", code);
        }
        if marked {
            response = response.header(seawall::budget::CALLER_DEADLINE, "1");
        }
        Ok::<_, BoxError>(response.body(()).unwrap())
    })
}

#[tokio::test(start_paused = true)]
async fn deadline_answers_and_late_errors_are_the_callers_deadline_others_are_the_servers() {
    let layer = PropagateBudgetLayer::new().margin(ms(20));
    let call = |delay, answer| {
        let client = layer.clone().layer(answering(ms(delay), answer));
        Budget::new(ms(300)).scope(client.oneshot(Request::new(())))
    };
    let callers = |result: &Result<http::Response<()>, Error<BoxError>>| matches!(result, Err(Error::Timeout(e)) if e.is_callers_deadline());
    // Told 280 ms: answers from then on are the caller's deadline.
    assert!(callers(&call(280, Ok((504, None, false))).await));
    assert!(callers(&call(280, Ok((200, Some("4"), false))).await));
    assert!(callers(&call(280, Ok((200, Some("1"), false))).await));
    assert!(callers(&call(280, Err("tonic's channel timer")).await));
    // Before then, only a marked deadline answer is.
    assert!(callers(&call(100, Ok((504, None, true))).await));
    assert!(callers(&call(100, Ok((200, Some("4"), true))).await));
    let early = call(100, Ok((504, None, false))).await.unwrap();
    assert_eq!(early.status(), 504);
    assert!(matches!(
        call(100, Err("refused")).await,
        Err(Error::Inner(_))
    ));
    // Anything else passes, whenever it comes.
    let late_ok = call(290, Ok((200, Some("0"), true))).await.unwrap();
    assert_eq!(late_ok.status(), 200);
    let late_internal = call(290, Ok((500, None, false))).await.unwrap();
    assert_eq!(late_internal.status(), 500);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_drops_messages_that_expired_in_the_queue_and_counts_them() {
    let broker = InMemory::new();
    let jobs = broker.subscribe_now("jobs");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let publisher = broker.clone();
    // Five jobs sent by a request with 50 ms left; each takes 20 ms.
    Budget::new(ms(50))
        .scope(async {
            for n in 0..5u8 {
                let mut notify = seawall::messaging::Publisher::new(publisher.clone());
                notify.call(Message::new("jobs", vec![n])).await.unwrap();
            }
        })
        .await;
    let handler = {
        let seen = Arc::clone(&seen);
        service_fn(move |job: Message| {
            let seen = Arc::clone(&seen);
            async move {
                let left = Budget::current().map(|budget| budget.remaining());
                seen.lock().unwrap().push((job.payload[0], left));
                sleep(ms(20)).await;
                Ok::<_, Error<BoxError>>(())
            }
        })
    };
    let figures = Consumer::new(handler)
        .run_until(jobs, sleep(ms(1_000)))
        .await;
    // Jobs 0, 1 and 2 start at 0, 20 and 40 ms; 3 and 4 would start at 60.
    assert_eq!(
        *seen.lock().unwrap(),
        [(0, Some(ms(50))), (1, Some(ms(30))), (2, Some(ms(10)))]
    );
    assert_eq!((figures.handled, figures.expired, figures.acked), (3, 2, 5));
}

#[tokio::test(start_paused = true)]
async fn requests_carry_the_callers_deadline_to_the_responder() {
    let broker = InMemory::new();
    let mut questions = broker.subscribe_now("questions");
    let responder = broker.clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(question) = questions.next().await {
            let left = question.message().deadline.map(|budget| budget.remaining());
            let answer = question.message().reply(format!("{left:?}")).unwrap();
            responder.publish(answer).await.unwrap();
        }
    });
    let mut correlator = Correlator::builder(broker.clone()).build().await.unwrap();
    let answer = Budget::new(ms(250))
        .scope(async {
            sleep(ms(50)).await;
            correlator.call(Message::new("questions", "?")).await
        })
        .await
        .unwrap();
    assert_eq!(answer.payload, format!("{:?}", Some(ms(200))));
    // An earlier deadline of the message's own is kept.
    let own = Message::new("questions", "?").with_deadline(Budget::new(ms(100)));
    let answer = Budget::new(ms(250))
        .scope(correlator.call(own))
        .await
        .unwrap();
    assert_eq!(answer.payload, format!("{:?}", Some(ms(100))));
}

/// The edge's own default and maximum are the server's deadline, not the
/// caller's: a handler that overruns them is the server's timeout (no
/// `seawall-caller-deadline` mark for the caller to trust); one that
/// overruns what the caller sent is the caller's.
#[tokio::test(start_paused = true)]
async fn the_edges_own_default_and_maximum_are_not_the_callers_deadline() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = BudgetLayer::builder()
        .default_budget(ms(200))
        .max_budget(ms(500))
        .build()
        .unwrap();
    let edge = layer.layer(reporting_handler(Arc::clone(&seen), ms(10_000)));
    let callers = |result: &Result<&str, Error<BoxError>>| match result {
        Err(Error::Timeout(e)) => Some(e.is_callers_deadline()),
        _ => None,
    };
    let sent = edge.clone().oneshot(request_with(HEADER, "300")).await;
    assert_eq!(callers(&sent), Some(true));
    let defaulted = edge.clone().oneshot(Request::new(())).await;
    assert_eq!(callers(&defaulted), Some(false));
    let capped = edge.clone().oneshot(request_with(HEADER, "60000")).await;
    assert_eq!(callers(&capped), Some(false));
    // Inside a shorter budget of the caller's own (in process), it is the
    // caller's again.
    let inside = Budget::new(ms(100))
        .scope(edge.oneshot(Request::new(())))
        .await;
    assert_eq!(callers(&inside), Some(true));
}
