//! A RabbitMQ node of a test's own: its own `epmd`, node name, ports and
//! data directory, all on loopback, so it can be stopped and restarted (its
//! durable queues and persistent messages survive, as on a real restart).

#![allow(dead_code)] // each user takes what it needs

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::server::{free_port, unavailable, Process};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// Booting takes 3 to 8 s here; more on a busy machine.
const STARTUP: Duration = Duration::from_secs(90);

pub struct RabbitMq {
    broker: Option<Process>,
    epmd: Process,
    port: u16,
    epmd_port: u16,
    dist_port: u16,
    dir: PathBuf,
}

impl RabbitMq {
    /// Starts a node on free ports; `None` if RabbitMQ is missing, after
    /// saying so (and failing, in CI).
    pub fn start() -> Option<RabbitMq> {
        match RabbitMq::try_start() {
            Ok(rabbit) => Some(rabbit),
            Err(reason) => unavailable(&reason, "rabbitmq-server"),
        }
    }

    fn try_start() -> Result<RabbitMq, String> {
        if !std::path::Path::new(SERVER).exists() {
            return Err(format!("{SERVER} is missing"));
        }
        let (port, epmd_port, dist_port) = (free_port(), free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("seawall-rabbitmq-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("enabled_plugins"), "[].").map_err(|e| e.to_string())?;
        // epmd of our own, in the foreground, so it stops by PID too.
        let mut epmd = Command::new("epmd");
        epmd.args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let epmd = Process::spawn(epmd, epmd_port, Duration::from_secs(10))?;
        let mut rabbit = RabbitMq {
            broker: None,
            epmd,
            port,
            epmd_port,
            dist_port,
            dir,
        };
        rabbit.restart()?;
        Ok(rabbit)
    }

    /// The broker's URI.
    pub fn uri(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.port)
    }

    /// Kills the node (by PID); its port and data stay this node's.
    pub fn stop(&mut self) {
        self.broker = None;
    }

    /// Starts the node again on the same port and data, and waits until it
    /// accepts connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let dir = |name: &str| self.dir.join(name);
        let mut command = Command::new(SERVER);
        command
            .env("HOME", dir("home"))
            .env(
                "RABBITMQ_NODENAME",
                format!("seawall-{}@localhost", self.port),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir("none"))
            // The script then execs the Erlang VM, so the child's PID is the
            // broker's own; the VM's shell reads the pipe held open here.
            .env("RABBITMQ_ALLOW_INPUT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.broker = Some(Process::spawn(command, self.port, STARTUP)?);
        Ok(())
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.stop();
        self.epmd.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
