//! A `nats-server` of a test's own, on a free loopback port, with JetStream
//! storing in a directory of its own (kept across restarts, removed on drop).

#![allow(dead_code)] // each user takes what it needs

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::server::Server;

pub struct NatsServer {
    server: Server,
    store: PathBuf,
}

impl NatsServer {
    /// Starts a server on a free port; `None` if `nats-server` is missing,
    /// after saying so (and failing, in CI).
    pub fn start() -> Option<NatsServer> {
        let server = Server::start("nats-server", Duration::from_secs(10), |port| {
            let mut command = Command::new("nats-server");
            command
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(store(port));
            command
        })?;
        let store = store(server.port());
        Some(NatsServer { server, store })
    }

    /// The server's address.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}

fn store(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("seawall-nats-{port}"))
}

impl Deref for NatsServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl DerefMut for NatsServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
