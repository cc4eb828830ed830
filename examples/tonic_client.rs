//! A tonic client behind a Policy: the generated client type is unchanged,
//! and seawall's refusals reach the caller as the right gRPC codes.
//!
//! The client's Policy:
//! - a 200 ms timeout (`DEADLINE_EXCEEDED`);
//! - a bulkhead of 8 calls (`RESOURCE_EXHAUSTED`);
//! - a breaker that counts the server's own failure statuses (classifier
//!   `server_errors`): 5 s window in 1 s buckets, at least 6 calls, 50%
//!   errors, open 2 s (`UNAVAILABLE`, with `retry-after`).
//!
//! An in-process echo server is healthy, then fails, then is slow, then
//! recovers. Every second the example prints the codes its callers got.
//! Run it with `cargo run --example tonic_client --features tonic-examples`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::integration::tonic::{server_errors, StatusLayer};
use seawall::policy::Policy;
use seawall::window::Window;
use tokio::net::TcpListener;
use tokio::time::{interval, sleep, Instant};
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

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const SLOW: u8 = 2;

struct FlakyEcho {
    mode: Arc<AtomicU8>,
}

#[tonic::async_trait]
impl Echo for FlakyEcho {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        match self.mode.load(Relaxed) {
            FAILING => Err(Status::internal("database down")),
            mode => {
                if mode == SLOW {
                    sleep(Duration::from_secs(1)).await;
                }
                Ok(Response::new(SayReply {
                    text: request.into_inner().text,
                }))
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let echo = EchoServer::new(FlakyEcho { mode: mode.clone() });
    tokio::spawn(
        Server::builder()
            .add_service(echo)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let policy = Policy::builder()
        .name("echo")
        .timeout(Duration::from_millis(200))
        .bulkhead(Bulkhead::builder().max_concurrent(8))
        .circuit_breaker(
            CircuitBreaker::builder()
                .window(Window::time(Duration::from_secs(5), 5))
                .minimum_calls(6)
                .error_threshold(50.0)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(2))),
        )
        .classify(server_errors())
        .build()?;
    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    // The generated client, unchanged, over the guarded channel.
    let client = EchoClient::new(
        ServiceBuilder::new()
            .layer(StatusLayer::new())
            .layer(policy.clone())
            .service(channel),
    );

    let mut transitions = policy.breaker().subscribe();
    tokio::spawn(async move {
        while let Some(t) = transitions.recv().await {
            println!("        -> breaker {} to {}: {}", t.from, t.to, t.reason);
        }
    });

    // Ten calls a second; codes tallied per second.
    let seen = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    let load = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut tick = interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let (mut client, seen) = (client.clone(), seen.clone());
                tokio::spawn(async move {
                    let request = SayRequest {
                        text: "ping".into(),
                        delay_ms: 0,
                        fail: false,
                    };
                    let code = match client.say(request).await {
                        Ok(_) => "Ok".to_owned(),
                        Err(status) => format!("{:?}", status.code()),
                    };
                    *seen.lock().unwrap().entry(code).or_default() += 1;
                });
            }
        })
    };

    let start = Instant::now();
    for second in 1..=12u64 {
        let (label, next) = match second {
            1..=3 => ("healthy", HEALTHY),
            4..=6 => ("failing", FAILING),
            7..=8 => ("slow", SLOW),
            _ => ("healthy", HEALTHY),
        };
        mode.store(next, Relaxed);
        sleep((start + Duration::from_secs(second)).saturating_duration_since(Instant::now()))
            .await;
        let codes = std::mem::take(&mut *seen.lock().unwrap());
        let codes: Vec<_> = codes
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect();
        println!(
            "{second:>3}s  server {label:<8}  breaker {:<9}  {}",
            policy.breaker().state().to_string(),
            codes.join(", ")
        );
    }
    load.abort();
    Ok(())
}
