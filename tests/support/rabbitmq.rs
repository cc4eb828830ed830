//! A RabbitMQ node of a test's own: its own `epmd`, node name, ports and
//! data directory, all on loopback, so it can be stopped and restarted (its
//! durable queues and persistent messages survive, as on a real restart).

#![allow(dead_code)] // each user takes what it needs

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::server::{free_port, unavailable, Process, Server, ATTEMPTS};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// Booting takes 3 to 8 s here; more on a busy machine.
const STARTUP: Duration = Duration::from_secs(90);

pub struct RabbitMq {
    broker: Server,
    // Dropped after the broker, which registers with it.
    epmd: Process,
    dir: PathBuf,
}

impl RabbitMq {
    /// Starts a node on free ports, on fresh ones up to [`ATTEMPTS`]
    /// times; `None` if RabbitMQ is missing or will not start, after saying
    /// so (and failing, in CI).
    pub fn start() -> Option<RabbitMq> {
        if !std::path::Path::new(SERVER).exists() {
            return unavailable(&format!("{SERVER} is missing"), "rabbitmq-server");
        }
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match RabbitMq::try_start() {
                Ok(node) => return Some(node),
                Err(reason) => failures.push(reason),
            }
        }
        unavailable(&failures.join("; then "), "rabbitmq-server")
    }

    fn try_start() -> Result<RabbitMq, String> {
        let (epmd_port, dist_port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("seawall-rabbitmq-{epmd_port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let started = RabbitMq::start_in(&dir, epmd_port, dist_port);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(dir: &Path, epmd_port: u16, dist_port: u16) -> Result<RabbitMq, String> {
        std::fs::create_dir_all(dir.join("home"))
            .and_then(|()| std::fs::write(dir.join("enabled_plugins"), "[]."))
            .map_err(|error| format!("cannot prepare {}: {error}", dir.display()))?;
        // epmd of our own, in the foreground, so it stops by PID too.
        let mut epmd = Command::new("epmd");
        epmd.args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let epmd = Process::spawn(epmd, epmd_port, Duration::from_secs(10))?;
        let data = dir.to_path_buf();
        let broker = Server::try_start(STARTUP, move |port| {
            let at = |name: &str| data.join(name);
            let mut command = Command::new(SERVER);
            command
                .env("HOME", at("home"))
                .env(
                    "RABBITMQ_NODENAME",
                    format!("seawall-{epmd_port}@localhost"),
                )
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", port.to_string())
                .env("RABBITMQ_DIST_PORT", dist_port.to_string())
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .env("ERL_EPMD_PORT", epmd_port.to_string())
                .env("RABBITMQ_MNESIA_BASE", at("mnesia"))
                .env("RABBITMQ_LOG_BASE", at("log"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", at("enabled_plugins"))
                .env("RABBITMQ_CONFIG_FILE", at("none"))
                // A node that fails to start dumps its state; in its own
                // directory, not the working one (the repository).
                .env("ERL_CRASH_DUMP", at("erl_crash.dump"))
                // The script then execs the Erlang VM, so the child's PID is
                // the broker's own; the VM's shell reads the pipe held open
                // by the child handle.
                .env("RABBITMQ_ALLOW_INPUT", "1")
                .stdin(Stdio::piped());
            command
        })?;
        let dir = dir.to_path_buf();
        Ok(RabbitMq { broker, epmd, dir })
    }

    /// The broker's URI.
    pub fn uri(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.port())
    }
}

impl Deref for RabbitMq {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.broker
    }
}

impl DerefMut for RabbitMq {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.broker
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.broker.stop();
        self.epmd.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
