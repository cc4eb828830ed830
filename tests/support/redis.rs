//! A `redis-server` of a test's (or an example's) own, on a free loopback
//! port, started and stopped by PID: so a test can take it down and bring
//! it back.

#![allow(dead_code)] // each user takes what it needs

use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::Duration;

use super::server::Server;

pub struct RedisServer(Server);

impl RedisServer {
    /// Starts a server on a free port; `None` if `redis-server` is missing,
    /// after saying so (and failing, in CI).
    pub fn start() -> Option<RedisServer> {
        Server::start("redis-server", Duration::from_secs(10), |port| {
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"]);
            command
        })
        .map(RedisServer)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }
}

impl Deref for RedisServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.0
    }
}
