//! A synchronous messaging client as a resilient notification service:
//! its blocking calls run on a `BlockingPool` of their own, under a Policy,
//! and what it cannot publish goes to an outbox.
//!
//! The client here is a minimal blocking NATS publisher over a `TcpStream`
//! in verbose mode, where the server answers `+OK` to every message (a
//! receipt), standing in for whatever synchronous client you have. It needs
//! a NATS server on loopback:
//!
//! ```text
//! apt-get install nats-server      # ./scripts/test installs it too
//! nats-server -a 127.0.0.1 -p 4222 &
//! cargo run --example messaging_sync --features messaging
//! ```
//!
//! `NATS_ADDR` points it elsewhere (default `127.0.0.1:4222`). Halfway
//! through, it sends to a port where nothing listens, to show the breaker
//! opening and the outbox keeping the messages.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::blocking::{BlockingPool, BlockingService};
use seawall::circuit_breaker::CircuitBreaker;
use seawall::messaging::{Message, Notified, Notifier, Outbox};
use seawall::policy::Policy;
use seawall::BoxError;
use tower::{Layer, Service, ServiceExt};

/// A blocking NATS publisher: one connection, one message at a time.
struct SyncPublisher {
    connection: Mutex<Option<(TcpStream, BufReader<TcpStream>)>>,
    address: Mutex<String>,
}

impl SyncPublisher {
    fn connect(address: &str) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut info = String::new();
        reader.read_line(&mut info)?; // INFO {...}
        let mut writer = stream.try_clone()?;
        writer.write_all(b"CONNECT {\"verbose\":true}\r\n")?;
        expect_ok(&mut reader)?;
        Ok((stream, reader))
    }

    /// Publishes and waits for the server's `+OK`.
    fn publish(&self, message: &Message) -> std::io::Result<()> {
        let mut connection = self.connection.lock().unwrap();
        if connection.is_none() {
            *connection = Some(SyncPublisher::connect(&self.address.lock().unwrap())?);
        }
        let (stream, reader) = connection.as_mut().unwrap();
        let sent = (|| {
            write!(
                stream,
                "PUB {} {}\r\n",
                message.subject,
                message.payload.len()
            )?;
            stream.write_all(&message.payload)?;
            stream.write_all(b"\r\n")?;
            expect_ok(reader)
        })();
        if sent.is_err() {
            *connection = None; // connect again next time
        }
        sent
    }
}

fn expect_ok(reader: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.starts_with("+OK") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("server said {line:?}")))
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let address = std::env::var("NATS_ADDR").unwrap_or_else(|_| "127.0.0.1:4222".into());
    let client = Arc::new(SyncPublisher {
        connection: Mutex::new(None),
        address: Mutex::new(address.clone()),
    });
    SyncPublisher::connect(&address).map_err(|e| {
        format!("no NATS server at {address} ({e}); start one: nats-server -a 127.0.0.1 -p 4222")
    })?;

    // Two threads of its own, a queue of 8: a slow server cannot take the
    // runtime's threads.
    let pool = BlockingPool::builder()
        .name("nats-sync")
        .threads(2)
        .queue(8)
        .build()?;
    let publish = {
        let client = Arc::clone(&client);
        BlockingService::new(pool, move |message: Message| client.publish(&message))
    };
    let policy = Policy::builder()
        .name("events")
        .timeout(Duration::from_secs(1))
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(3))
        .build()?;
    let outbox = Outbox::new(100)?;
    let mut notifier = Notifier::new(policy.layer(publish), outbox.clone());

    for n in 1..=10 {
        if n == 5 {
            // Nothing listens on port 1: every connection is refused.
            *client.address.lock().unwrap() = "127.0.0.1:1".into();
            *client.connection.lock().unwrap() = None;
        }
        let sent = notifier
            .ready()
            .await?
            .call(Message::new("example.sync", format!("event {n}")))
            .await?;
        match sent {
            Notified::Published => println!("event {n}: published (+OK)"),
            Notified::Diverted(error) => println!("event {n}: kept in the outbox ({error})"),
        }
    }
    println!(
        "breaker: {:?}; outbox holds {}",
        policy.breaker().state(),
        outbox.len()
    );

    // The server is reachable again: send what the outbox kept.
    *client.address.lock().unwrap() = address;
    let pool = BlockingPool::builder()
        .name("nats-flush")
        .threads(1)
        .queue(1)
        .build()?;
    let mut direct = BlockingService::new(pool, move |message: Message| client.publish(&message));
    let sent = outbox.flush(&mut direct).await?;
    println!("flushed {sent} kept events; outbox holds {}", outbox.len());
    Ok(())
}
