//! A synchronous client behind timeout, bulkhead and circuit breaker.
//!
//! `KvClient` is a plain blocking client: it talks a one-line protocol to a
//! key-value server over `std::net::TcpStream`. The example starts such a
//! server on 127.0.0.1, runs the client on a `BlockingPool` of its own
//! threads (never on tokio's), and guards it, outermost first, with:
//!
//! - a circuit breaker: 5 s window, at least 10 calls, 50% errors (timeouts
//!   and refusals count), open 2 s;
//! - a bulkhead: at most 6 calls in flight, refusing the rest;
//! - a timeout: 150 ms a call.
//!
//! The server answers in 2 ms, turns slow (400 ms) for a while, then
//! recovers. Each second the example prints what the callers saw, how many
//! pool threads are tied up by calls whose callers already gave up, and
//! what the breaker decided. Run it with `cargo run --example sync_client`.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use seawall::blocking::{BlockingPool, BlockingService};
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::window::Window;
use seawall::{Error, ResilienceExt};
use tokio::time::{interval, sleep, Instant};
use tower::{ServiceBuilder, ServiceExt};

/// A blocking key-value client: one connection per call, for simplicity.
struct KvClient {
    server: SocketAddr,
}

impl KvClient {
    fn get(&self, key: &str) -> io::Result<String> {
        let stream = TcpStream::connect_timeout(&self.server, Duration::from_secs(1))?;
        // Defence in depth: the pool thread must come back even if nobody
        // waits for it any more.
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        writeln!(&stream, "GET {key}")?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }
}

/// A key-value server whose answers take `delay_ms` (changed while it runs).
fn start_server(delay_ms: Arc<AtomicU64>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let delay = Duration::from_millis(delay_ms.load(Relaxed));
            std::thread::spawn(move || {
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_ok() {
                    std::thread::sleep(delay);
                    let key = line.trim_end().trim_start_matches("GET ");
                    let _ = writeln!(&stream, "value-of-{key}");
                }
            });
        }
    });
    Ok(address)
}

#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    timeout: AtomicU64,
    full: AtomicU64,
    open: AtomicU64,
    failed: AtomicU64,
}

impl Seen {
    fn count(&self, result: &Result<String, Error<io::Error>>) {
        let counter = match result {
            Ok(_) => &self.ok,
            Err(Error::Timeout(_)) => &self.timeout,
            Err(Error::BulkheadFull(_)) => &self.full,
            Err(Error::CircuitOpen(_)) => &self.open,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    fn take(&self) -> [u64; 5] {
        [
            &self.ok,
            &self.timeout,
            &self.full,
            &self.open,
            &self.failed,
        ]
        .map(|n| n.swap(0, Relaxed))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let delay_ms = Arc::new(AtomicU64::new(2));
    let client = Arc::new(KvClient {
        server: start_server(delay_ms.clone())?,
    });

    let pool = BlockingPool::builder()
        .name("kv")
        .threads(8)
        .queue(8)
        .build()?;
    let bulkhead = Bulkhead::builder().name("kv").max_concurrent(6).build()?;
    let breaker = CircuitBreaker::builder()
        .name("kv")
        .window(Window::time(Duration::from_secs(5), 5))
        .minimum_calls(10)
        .error_threshold(50.0)
        .open_duration(seawall::circuit_breaker::OpenDuration::Fixed(
            Duration::from_secs(2),
        ))
        .build()?;

    // One level of `Error<io::Error>` through all four: the breaker sees a
    // timeout below it as a timeout, a full bulkhead or pool as a refusal.
    let kv = ServiceBuilder::new()
        .circuit_breaker(&breaker)
        .bulkhead(&bulkhead)
        .call_timeout(Duration::from_millis(150))
        .service(BlockingService::new(pool.clone(), move |key: String| {
            client.get(&key)
        }));

    let mut transitions = breaker.subscribe();
    tokio::spawn(async move {
        while let Some(t) = transitions.recv().await {
            println!("        -> breaker {} to {}: {}", t.from, t.to, t.reason);
        }
    });

    // 100 calls a second.
    let seen = Arc::new(Seen::default());
    let load = {
        let (kv, seen) = (kv.clone(), seen.clone());
        tokio::spawn(async move {
            let mut tick = interval(Duration::from_millis(10));
            for n in 0u64.. {
                tick.tick().await;
                let (kv, seen) = (kv.clone(), seen.clone());
                tokio::spawn(async move { seen.count(&kv.oneshot(format!("key{n}")).await) });
            }
        })
    };

    println!(
        "second  server   ok  timeout  bulkhead-full  circuit-open  abandoned-threads  breaker"
    );
    let start = Instant::now();
    for second in 1..=12u64 {
        match second {
            4 => delay_ms.store(400, Relaxed),
            8 => delay_ms.store(2, Relaxed),
            _ => {}
        }
        sleep((start + Duration::from_secs(second)).saturating_duration_since(Instant::now()))
            .await;
        let [ok, timeout, full, open, failed] = seen.take();
        let server = if (4..8).contains(&second) {
            "slow"
        } else {
            "fast"
        };
        println!(
            "{second:>6}  {server:<6} {ok:>4}  {timeout:>7}  {full:>13}  {open:>12}  {:>17}  {}{}",
            pool.figures().abandoned_running,
            breaker.state(),
            if failed > 0 {
                format!(" ({failed} other failures)")
            } else {
                String::new()
            },
        );
    }
    load.abort();
    let figures = pool.figures();
    println!(
        "\npool: {} calls completed, {} abandoned by callers that timed out, {} refused; \
         bulkhead: never more than {} in flight at once",
        figures.completed,
        figures.abandoned,
        figures.rejected,
        bulkhead.figures().max_in_flight_seen
    );
    Ok(())
}
