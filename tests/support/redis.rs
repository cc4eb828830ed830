//! A `redis-server` of a test's (or an example's) own, on a free loopback
//! port, started and stopped by PID: so a test can take it down and bring
//! it back.

#![allow(dead_code)] // each user takes what it needs

use std::process::{Command, Stdio};
use std::time::Duration;

use super::server::{free_port, unavailable, Process};

pub struct RedisServer {
    process: Option<Process>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port; `None` if `redis-server` is missing,
    /// after saying so (and failing, in CI).
    pub fn start() -> Option<RedisServer> {
        let mut server = RedisServer {
            process: None,
            port: free_port(),
        };
        match server.restart() {
            Ok(()) => Some(server),
            Err(reason) => unavailable(&reason, "redis-server"),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (by PID); its port stays this server's.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(Process::spawn(command, self.port, Duration::from_secs(10))?);
        Ok(())
    }
}
