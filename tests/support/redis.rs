//! A `redis-server` of a test's (or an example's) own, on a free loopback
//! port, started and stopped by PID: so a test can take it down and bring
//! it back. `./scripts/test` installs the binary.

#![allow(dead_code)] // each user takes what it needs

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port; `None` if `redis-server` is missing,
    /// after saying so (and failing, in CI).
    pub fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut server = RedisServer { child: None, port };
        match server.restart() {
            Ok(()) => Some(server),
            Err(reason) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("redis-server is required in CI: {reason}")
            }
            Err(reason) => {
                // Straight to stderr: the test harness captures `eprintln!`
                // of passing tests, and a skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping: {reason} (./scripts/test installs redis-server)"
                );
                None
            }
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (by PID); its port stays this server's.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > STARTUP {
                return Err(format!(
                    "redis-server did not listen on port {} in {STARTUP:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
