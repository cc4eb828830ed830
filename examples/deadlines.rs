//! One budget per request, from the edge to the last hop.
//!
//! Three hops in one process, on 127.0.0.1:
//!
//! 1. an axum **edge**: a request gets the budget it carries in
//!    `seawall-budget-ms` (or 300 ms if it carries none, and never more than
//!    2 s); the edge calls
//! 2. a tonic **service** with what is left, less 20 ms the edge keeps to
//!    answer with (`grpc-timeout`); the service asks
//! 3. a **worker** over a message broker (seawall's in-memory one here; NATS
//!    or RabbitMQ the same way): the message carries the deadline, and the
//!    worker drops it if it expired in the queue.
//!
//! Every hop prints the budget it sees. Then: a healthy request, a slow
//! worker (the edge answers 504 in time, and no breaker blames the next
//! hop), and a request whose budget is already spent (nobody is called).
//! Run it with
//! `cargo run --example deadlines --features axum,tonic-examples,messaging`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use seawall::budget::{Budget, BudgetLayer, PropagateBudgetLayer, HEADER};
use seawall::integration::axum::ErrorResponseLayer;
use seawall::integration::tonic::{server_errors, StatusLayer};
use seawall::messaging::{Consumer, Correlator, InMemory, Message, Transport};
use seawall::policy::{Policy, PolicyService};
use tokio::net::TcpListener;
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

/// Prints the budget the code running now sees.
fn show(hop: &str) {
    match Budget::current() {
        Some(budget) => println!(
            "  {hop:<8} sees {:>3} ms left",
            budget.remaining().as_millis()
        ),
        None => println!("  {hop:<8} sees no budget"),
    }
}

/// The worker: answers after the delay each message names.
fn start_worker(broker: InMemory) -> Policy {
    let work = broker.subscribe_now("work");
    let handler = service_fn(move |job: Message| {
        let broker = broker.clone();
        async move {
            show("worker");
            let delay: u64 = std::str::from_utf8(&job.payload)?.parse()?;
            tokio::time::sleep(ms(delay)).await;
            broker
                .publish(job.reply("done").expect("a request"))
                .await?;
            Ok::<_, seawall::BoxError>(())
        }
    });
    // The worker's own policy caps each job by the message's deadline.
    let policy = Policy::builder()
        .name("worker")
        .timeout(ms(5_000))
        .build()
        .unwrap();
    tokio::spawn(Consumer::new(policy.layer(handler)).run(work));
    policy
}

/// The tonic service: asks the worker.
struct Service {
    worker: PolicyService<Correlator<InMemory>>,
}

#[tonic::async_trait]
impl Echo for Service {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        show("service");
        let job = Message::new("work", request.into_inner().delay_ms.to_string());
        let answer = self.worker.clone().oneshot(job).await?;
        let text = String::from_utf8_lossy(&answer.payload).into_owned();
        Ok(Response::new(SayReply { text }))
    }
}

type ToService = EchoClient<
    seawall::integration::tonic::StatusService<
        PolicyService<
            seawall::budget::PropagateBudget<Channel>,
            seawall::circuit_breaker::CircuitBreaker,
            seawall::classify::Http<tower_http::classify::GrpcErrorsAsFailures>,
        >,
    >,
>;

/// The edge's handler: asks the service to have the worker take `delay`.
async fn work(
    State(service): State<ToService>,
    Path(delay): Path<u64>,
) -> Result<String, StatusCode> {
    show("edge");
    let request = SayRequest {
        text: String::new(),
        delay_ms: delay,
        fail: false,
    };
    match service.clone().say(request).await {
        Ok(reply) => Ok(reply.into_inner().text),
        Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
            Err(StatusCode::GATEWAY_TIMEOUT)
        }
        Err(_) => Err(StatusCode::BAD_GATEWAY),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = InMemory::new();
    let worker = start_worker(broker.clone());

    // The service reads `grpc-timeout` at its edge, and asks the worker
    // within what is left.
    let to_worker = Policy::builder()
        .name("to-worker")
        .timeout(ms(5_000))
        .build()?;
    let correlator = Correlator::builder(broker).build().await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let service_address = listener.local_addr()?;
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .layer(StatusLayer::new())
                .layer(BudgetLayer::new()),
        )
        .add_service(EchoServer::new(Service {
            worker: to_worker.layer(correlator),
        }));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));

    // The edge: a budget for every request, and the service told what is
    // left of it, less 20 ms.
    let to_service = Policy::builder()
        .name("to-service")
        .timeout(ms(5_000))
        .classify(server_errors())
        .build()?;
    let channel = Channel::from_shared(format!("http://{service_address}"))?
        .connect()
        .await?;
    let channel = ServiceBuilder::new()
        .layer(StatusLayer::new())
        .layer(to_service.clone())
        .layer(PropagateBudgetLayer::new().margin(ms(20)))
        .service(channel);
    let budgets = BudgetLayer::builder()
        .default_budget(ms(300))
        .max_budget(ms(2_000))
        .build()?;
    let app = Router::new()
        .route("/work/{delay}", get(work))
        .with_state(EchoClient::new(channel))
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(budgets),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let edge = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    for (what, path, budget) in [
        (
            "a healthy request, with the default budget",
            "/work/10",
            None,
        ),
        ("a slow worker, with 250 ms", "/work/5000", Some(250)),
        ("a budget spent before it arrived", "/work/10", Some(0)),
    ] {
        println!("{what}:");
        let mut request = client.get(format!("{edge}{path}"));
        if let Some(budget) = budget {
            request = request.header(HEADER, budget);
        }
        let response = request.send().await?;
        println!("  the edge answered {}", response.status());
    }
    // The slow worker's job ends at its deadline, after the edge answered.
    tokio::time::sleep(ms(100)).await;
    for policy in [to_service.breaker(), to_worker.breaker(), worker.breaker()] {
        let counts = policy.lifetime_counts();
        println!(
            "{}: {} ok, {} failed, {} timed out, {} ended by their caller's deadline",
            policy.name(),
            counts.success,
            counts.failure,
            counts.timeout,
            counts.caller_deadline
        );
    }
    Ok(())
}
