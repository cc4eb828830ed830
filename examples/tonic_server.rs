//! A tonic server that sheds load and times out before its handler runs.
//!
//! The server's Policy:
//! - a bulkhead of 4 calls, refusing more with `RESOURCE_EXHAUSTED`;
//! - a 300 ms timeout, or the caller's `grpc-timeout` if shorter,
//!   answering `DEADLINE_EXCEEDED`.
//!
//! The example serves on 127.0.0.1, then plays three rounds of calls against
//! itself and prints the status of each. Run it with
//! `cargo run --example tonic_server --features tonic-examples`.

use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::integration::tonic::{GrpcTimeout, StatusLayer};
use seawall::policy::Policy;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tower::ServiceBuilder;

pub mod echo {
    tonic::include_proto!("echo");
}

use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{SayReply, SayRequest};

struct Echoer;

#[tonic::async_trait]
impl Echo for Echoer {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let SayRequest { text, delay_ms, .. } = request.into_inner();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        Ok(Response::new(SayReply { text }))
    }
}

fn describe(result: Result<Response<SayReply>, Status>) -> String {
    match result {
        Ok(reply) => format!("OK {:?}", reply.into_inner().text),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = Policy::builder()
        .name("echo-server")
        .bulkhead(Bulkhead::builder().max_concurrent(4))
        .timeout(Duration::from_millis(300))
        .per_request_deadline(GrpcTimeout)
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = Server::builder()
        // seawall's refusals become statuses the client receives as they are.
        .layer(
            ServiceBuilder::new()
                .layer(StatusLayer::new())
                .layer(policy.clone()),
        )
        .add_service(EchoServer::new(Echoer))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    println!("serving on {address}");

    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let client = EchoClient::new(channel);
    let call = |text: &str, delay_ms: u64| {
        let mut client = client.clone();
        let request = SayRequest {
            text: text.to_owned(),
            delay_ms,
            fail: false,
        };
        async move { describe(client.say(request).await) }
    };

    println!("\n1. six calls of 100 ms at once (bulkhead of 4):");
    let calls: Vec<_> = (0..6)
        .map(|n| tokio::spawn(call(&format!("call {n}"), 100)))
        .collect();
    for call in calls {
        println!("   {}", call.await?);
    }

    println!("\n2. a call that takes 2 s (server timeout 300 ms):");
    println!("   {}", call("slow", 2_000).await);

    println!("\n3. a caller asking for an hour gets the server's cap:");
    let mut request = Request::new(SayRequest {
        text: "patient".into(),
        delay_ms: 2_000,
        fail: false,
    });
    request.set_timeout(Duration::from_secs(3_600));
    println!("   {}", describe(client.clone().say(request).await));

    let counts = policy.breaker().counts();
    let figures = policy.bulkhead().unwrap_or_default();
    println!(
        "\nserver: {} ok, {} timed out, {} shed (never more than {} in flight at once)",
        counts.success, counts.timeout, counts.rejected, figures.max_in_flight_seen
    );
    Ok(())
}
