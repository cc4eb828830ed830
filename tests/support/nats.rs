//! A `nats-server` of a test's own, on a free loopback port, with JetStream
//! storing in a directory of its own (kept across restarts, removed on drop).

#![allow(dead_code)] // each user takes what it needs

use std::process::{Command, Stdio};
use std::time::Duration;

use super::server::{free_port, unavailable, Process};

pub struct NatsServer {
    process: Option<Process>,
    port: u16,
    store: std::path::PathBuf,
}

impl NatsServer {
    /// Starts a server on a free port; `None` if `nats-server` is missing,
    /// after saying so (and failing, in CI).
    pub fn start() -> Option<NatsServer> {
        let port = free_port();
        let mut server = NatsServer {
            process: None,
            port,
            store: std::env::temp_dir().join(format!("seawall-nats-{port}")),
        };
        match server.restart() {
            Ok(()) => Some(server),
            Err(reason) => unavailable(&reason, "nats-server"),
        }
    }

    /// The server's address.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (by PID); its port stays this server's.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let mut command = Command::new("nats-server");
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(Process::spawn(command, self.port, Duration::from_secs(10))?);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
