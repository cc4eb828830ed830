//! One budget across three hops, on loopback with real servers: an axum
//! edge (300 ms for a request that carries none) calls a tonic service,
//! which asks a responder over NATS (a `nats-server` of the test's own).
//! Real time, since the sockets are real: nothing asserts a duration; each
//! hop's deadline is compared with the one before it, on the one clock of
//! this process.
//!
//! Skips (with a reason) without `nats-server`, except in CI.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use seawall::budget::{Budget, BudgetLayer, PropagateBudgetLayer, HEADER};
use seawall::circuit_breaker::CircuitBreaker;
use seawall::integration::axum::ErrorResponseLayer;
use seawall::integration::tonic::{server_errors, StatusLayer};
use seawall::messaging::nats::NatsTransport;
use seawall::messaging::{Consumer, Correlator, Message, Transport};
use seawall::policy::Policy;
use seawall::BoxError;
use support::nats::NatsServer;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

pub mod echo {
    tonic::include_proto!("echo");
}

use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{SayReply, SayRequest};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A hop, and the deadline it saw (`None`: it had no budget).
type Sighting = (&'static str, Option<Instant>);

/// What the hops saw, in the order they were reached.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Sighting>>>);

impl Seen {
    fn note(&self, hop: &'static str) {
        let deadline = Budget::current().map(|budget| budget.deadline());
        self.0.lock().unwrap().push((hop, deadline));
    }

    fn take(&self) -> Vec<Sighting> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A policy whose breaker would open on one failure: any failure counted
/// for a caller's deadline would show. Its bulkhead tells when its calls
/// have ended (finished or dropped).
fn policy(name: &str) -> Policy {
    Policy::builder()
        .name(name)
        .timeout(ms(5_000))
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(1))
        .bulkhead(seawall::bulkhead::Bulkhead::builder().max_concurrent(64))
        .build()
        .unwrap()
}

/// The third hop: answers each request on `work` after the delay it names.
async fn start_responder(nats: NatsTransport, seen: Seen) -> Policy {
    let policy = policy("responder");
    let requests = nats.subscribe("work").await.unwrap();
    let handler = policy.layer(service_fn(move |request: Message| {
        let (nats, seen) = (nats.clone(), seen.clone());
        async move {
            seen.note("responder");
            let delay: u64 = std::str::from_utf8(&request.payload)?.parse()?;
            tokio::time::sleep(ms(delay)).await;
            nats.publish(request.reply("done").unwrap()).await?;
            Ok::<_, BoxError>(())
        }
    }));
    tokio::spawn(Consumer::new(handler).concurrency(8).run(requests));
    policy
}

type ToNats = seawall::policy::PolicyService<Correlator<NatsTransport>>;

/// The second hop: a tonic service that asks the responder.
struct Middle {
    nats: ToNats,
    seen: Seen,
}

#[tonic::async_trait]
impl Echo for Middle {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        self.seen.note("tonic");
        let delay = request.into_inner().delay_ms;
        let question = Message::new("work", delay.to_string());
        let answer = self.nats.clone().oneshot(question).await?;
        let text = String::from_utf8_lossy(&answer.payload).into_owned();
        Ok(Response::new(SayReply { text }))
    }
}

async fn start_middle(nats: ToNats, seen: Seen) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .layer(StatusLayer::new())
                .layer(BudgetLayer::new()),
        )
        .add_service(EchoServer::new(Middle { nats, seen }));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    address
}

type ToTonic = EchoClient<
    seawall::integration::tonic::StatusService<
        seawall::policy::PolicyService<
            seawall::budget::PropagateBudget<Channel>,
            CircuitBreaker,
            seawall::classify::Http<tower_http::classify::GrpcErrorsAsFailures>,
        >,
    >,
>;

#[derive(Clone)]
struct Edge {
    tonic: ToTonic,
    seen: Seen,
}

/// The first hop's handler: asks the tonic service, which asks the
/// responder to take `delay` ms.
async fn work(State(edge): State<Edge>, Path(delay): Path<u64>) -> Result<String, StatusCode> {
    edge.seen.note("edge");
    let request = SayRequest {
        text: String::new(),
        delay_ms: delay,
        fail: false,
    };
    match edge.tonic.clone().say(request).await {
        Ok(reply) => Ok(reply.into_inner().text),
        Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
            Err(StatusCode::GATEWAY_TIMEOUT)
        }
        Err(status) => {
            eprintln!("the tonic service answered {status:?}");
            Err(StatusCode::BAD_GATEWAY)
        }
    }
}

struct Hops {
    url: String,
    seen: Seen,
    to_tonic:
        Policy<CircuitBreaker, seawall::classify::Http<tower_http::classify::GrpcErrorsAsFailures>>,
    to_nats: Policy,
    responder: Policy,
    _nats_server: NatsServer,
}

impl Hops {
    async fn start() -> Option<Hops> {
        let nats_server = NatsServer::start()?;
        let client = async_nats::connect(nats_server.address()).await.unwrap();
        let nats = NatsTransport::new(client);
        let seen = Seen::default();

        let responder = start_responder(nats.clone(), seen.clone()).await;
        let to_nats = policy("to-nats");
        let correlator = Correlator::builder(nats).build().await.unwrap();
        let middle = start_middle(to_nats.layer(correlator), seen.clone()).await;

        let to_tonic = Policy::builder()
            .name("to-tonic")
            .timeout(ms(5_000))
            .circuit_breaker(CircuitBreaker::builder().consecutive_failures(1))
            .classify(server_errors())
            .build()
            .unwrap();
        let channel = Channel::from_shared(format!("http://{middle}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        // The edge keeps 20 ms to answer with after the tonic service's
        // deadline.
        let channel = ServiceBuilder::new()
            .layer(StatusLayer::new())
            .layer(to_tonic.clone())
            .layer(PropagateBudgetLayer::new().margin(ms(20)))
            .service(channel);
        let edge = Edge {
            tonic: EchoClient::new(channel),
            seen: seen.clone(),
        };
        let budgets = BudgetLayer::builder()
            .default_budget(ms(300))
            .max_budget(ms(10_000))
            .build()
            .unwrap();
        let app = Router::new()
            .route("/work/{delay}", get(work))
            .with_state(edge)
            .layer(
                ServiceBuilder::new()
                    .layer(ErrorResponseLayer::new())
                    .layer(budgets),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Some(Hops {
            url,
            seen,
            to_tonic,
            to_nats,
            responder,
            _nats_server: nats_server,
        })
    }

    async fn get(&self, path: &str, budget_ms: Option<u64>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.url));
        if let Some(budget) = budget_ms {
            request = request.header(HEADER, budget);
        }
        request.send().await.unwrap()
    }

    /// (failures, timeouts, caller deadlines) of each hop's breaker.
    fn counts(&self) -> [(u64, u64, u64); 3] {
        [
            &self.to_tonic.breaker(),
            &self.to_nats.breaker(),
            &self.responder.breaker(),
        ]
        .map(|breaker| {
            let lifetime = breaker.lifetime_counts();
            (lifetime.failure, lifetime.timeout, lifetime.caller_deadline)
        })
    }

    /// Waits (at most 10 s) until the hops' counts are `done`, and returns
    /// them: the last hops finish after the edge has answered.
    async fn counts_when(
        &self,
        done: impl Fn(&[(u64, u64, u64); 3]) -> bool,
    ) -> [(u64, u64, u64); 3] {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !done(&self.counts()) {
                tokio::time::sleep(ms(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "counts {:?}", self.counts());
        self.counts()
    }
}

/// Each hop saw a budget, in order, and none ends later than the one
/// before it.
fn assert_budgets_shrink(seen: &[Sighting], hops: &[&str]) {
    let names: Vec<_> = seen.iter().map(|(hop, _)| *hop).collect();
    assert_eq!(names, hops);
    let deadlines: Vec<Instant> = seen
        .iter()
        .map(|(hop, deadline)| deadline.unwrap_or_else(|| panic!("{hop} saw no budget")))
        .collect();
    for pair in deadlines.windows(2) {
        assert!(pair[1] <= pair[0], "a later hop was given longer: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_budget_travels_from_the_edge_to_the_last_hop() {
    let Some(hops) = Hops::start().await else {
        return;
    };

    // Healthy: every hop sees the budget, shorter each time.
    let response = hops.get("/work/1", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "done");
    assert_budgets_shrink(&hops.seen.take(), &["edge", "tonic", "responder"]);
    assert_eq!(hops.counts(), [(0, 0, 0); 3]);

    // A slow responder: the edge answers 504, and no hop blames the next
    // for the caller's deadline.
    let response = hops.get("/work/5000", Some(300)).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let slow = hops
        .counts_when(|counts| {
            let middle_done = hops.to_nats.bulkhead().unwrap().in_flight == 0;
            counts[0].2 == 1 && counts[2].2 == 1 && middle_done
        })
        .await;
    assert_eq!((slow[0], slow[2]), ((0, 0, 1), (0, 0, 1)));
    // The middle hop's call to NATS ends by its own deadline (counted as
    // the caller's), or a moment before: the edge's channel enforces the
    // `grpc-timeout` it sent, counted from before the request crossed the
    // wire, and cancels the middle hop's request, which drops its call
    // (gRPC's CANCELLED: not counted, as a dropped call is not by default).
    // Never a failure or a timeout.
    assert!(matches!(slow[1], (0, 0, 0 | 1)), "{slow:?}");
    assert_budgets_shrink(&hops.seen.take(), &["edge", "tonic", "responder"]);

    // A budget spent on arrival: the edge answers at once, and calls nobody.
    let response = hops.get("/work/1", Some(0)).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()["seawall-caller-deadline"], "1");
    // Less left than the edge's margin: the edge's handler runs, but sends
    // nothing to the tonic service.
    let response = hops.get("/work/1", Some(10)).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        hops.seen
            .take()
            .iter()
            .map(|(hop, _)| *hop)
            .collect::<Vec<_>>(),
        ["edge"]
    );
    let spent = hops.counts_when(|counts| counts[0].2 == 2).await;
    assert_eq!(spent, [(0, 0, 2), slow[1], slow[2]]);
    for breaker in [
        hops.to_tonic.breaker(),
        hops.to_nats.breaker(),
        hops.responder.breaker(),
    ] {
        assert_eq!(breaker.state(), seawall::circuit_breaker::State::Closed);
    }
}
