//! A broker process of a test's own: started on a free loopback port, waited
//! for until it accepts connections, stopped by PID. `./scripts/test`
//! installs the binaries; without one, a test skips saying why, except in
//! CI (`CI=true`), where it fails.

#![allow(dead_code)] // each user takes what it needs

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A loopback port nothing listens on now, for a server to be started on.
///
/// Taken below the kernel's ephemeral range, which it hands out for
/// outgoing connections and `bind(…:0)`: a port from that range, released
/// for a server to bind, can be taken in the meantime by any connection any
/// process opens, and again between a server's stop and its restart on the
/// same port. Below the range only explicit binders compete; each process starts
/// its walk at its own offset and no port is handed out twice in one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST).max(1);
    let offset = std::process::id().wrapping_mul(7_919);
    for _ in 0..span {
        let next = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + offset.wrapping_add(next) % span;
        let port = u16::try_from(port).expect("below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range ({ephemeral})")
}

/// How many times a server is started on fresh ports before a test gives
/// up on it: a port can still be taken between its check and the server's
/// bind.
pub const ATTEMPTS: usize = 3;

/// Says why a broker test cannot run: a skip with the reason outside CI, a
/// failure in CI.
pub fn unavailable<T>(reason: &str, package: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{package} is required in CI: {reason}");
    }
    // Straight to stderr: the test harness captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping: {reason} (./scripts/test installs {package})"
    );
    None
}

/// A server on a loopback port of its own, which can be stopped and started
/// again on the same port (and the same data, where it keeps any).
pub struct Server {
    process: Option<Process>,
    port: u16,
    startup: Duration,
    command: Box<dyn Fn(u16) -> Command>,
}

impl Server {
    /// Starts `command(port)` on a free port and waits until it accepts
    /// connections, on fresh ports up to [`ATTEMPTS`] times; `None` if it
    /// cannot, after saying why (and failing, in CI) with the Debian
    /// `package` that provides it.
    pub fn start(
        package: &str,
        startup: Duration,
        command: impl Fn(u16) -> Command + 'static,
    ) -> Option<Server> {
        let command: Rc<dyn Fn(u16) -> Command> = Rc::new(command);
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let command = Rc::clone(&command);
            match Server::try_start(startup, move |port| command(port)) {
                Ok(server) => return Some(server),
                Err(reason) => failures.push(reason),
            }
        }
        unavailable(&failures.join("; then "), package)
    }

    /// Starts `command(port)` on a free port and waits until it accepts
    /// connections, once.
    pub fn try_start(
        startup: Duration,
        command: impl Fn(u16) -> Command + 'static,
    ) -> Result<Server, String> {
        let mut server = Server {
            process: None,
            port: free_port(),
            startup,
            command: Box::new(command),
        };
        server.restart()?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it (by PID); its port stays its own.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Asks it to stop (SIGTERM) and waits until it has, so that it ends
    /// as on an orderly shutdown: with what it keeps on disk written.
    pub fn shut_down(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate();
        }
    }

    /// Starts it again on the same port, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let mut command = (self.command)(self.port);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        self.process = Some(Process::spawn(command, self.port, self.startup)?);
        Ok(())
    }
}

/// A running process; killed when stopped or dropped.
pub struct Process(Option<Child>);

impl Process {
    /// Runs `command` and waits until something accepts connections on
    /// `port`, for at most `startup`; fails as soon as it exits (a server
    /// whose port was taken exits).
    pub fn spawn(mut command: Command, port: u16, startup: Duration) -> Result<Process, String> {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let mut process = Process(Some(child));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(child) = &mut process.0 {
                if let Ok(Some(status)) = child.try_wait() {
                    process.0 = None;
                    return Err(format!(
                        "{program} exited ({status}) before listening on port {port}"
                    ));
                }
            }
            if started.elapsed() > startup {
                process.stop();
                return Err(format!(
                    "{program} did not listen on port {port} in {startup:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(process)
    }

    /// Sends it SIGTERM and reaps it; kills it if it is still running a
    /// minute later.
    pub fn terminate(&mut self) {
        if let Some(child) = &mut self.0 {
            let pid = libc::pid_t::try_from(child.id()).expect("a pid fits");
            // SAFETY: a signal to a child of ours that is not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = child.try_wait() {
                    self.0 = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.stop();
    }

    /// Kills it (by PID) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
