//! A Prometheus server of a test's own: its config and data under a
//! directory of its own, on a free loopback port, scraping one target every
//! second; stopped by PID.

#![allow(dead_code)] // each user takes what it needs

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::server::Server;

pub struct PrometheusServer {
    server: Server,
    _dir: Dir,
}

/// Removed when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl PrometheusServer {
    /// Starts a server scraping `target` (`host:port`, path `/metrics`);
    /// `None` if `prometheus` is missing, after saying so (and failing, in
    /// CI).
    pub fn start(target: &str) -> Option<PrometheusServer> {
        let dir = std::env::temp_dir().join(format!("seawall-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: seawall\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("the config is written");
        let data = dir.join("data");
        let server = Server::start("prometheus", Duration::from_secs(30), move |port| {
            let mut command = Command::new("prometheus");
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            command
        })?;
        Some(PrometheusServer {
            server,
            _dir: Dir(dir),
        })
    }

    /// The query API's address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }
}
