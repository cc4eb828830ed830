//! A broker process of a test's own: started on a free loopback port, waited
//! for until it accepts connections, stopped by PID. `./scripts/test`
//! installs the binaries; without one, a test skips saying why, except in
//! CI (`CI=true`), where it fails.

#![allow(dead_code)] // each user takes what it needs

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("the loopback interface has a free port")
}

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
    /// connections; `None` if it cannot, after saying why (and failing, in
    /// CI) with the Debian `package` that provides it.
    pub fn start(
        package: &str,
        startup: Duration,
        command: impl Fn(u16) -> Command + 'static,
    ) -> Option<Server> {
        let mut server = Server {
            process: None,
            port: free_port(),
            startup,
            command: Box::new(command),
        };
        match server.restart() {
            Ok(()) => Some(server),
            Err(reason) => unavailable(&reason, package),
        }
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
    /// `port`, for at most `startup`.
    pub fn spawn(mut command: Command, port: u16, startup: Duration) -> Result<Process, String> {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let mut process = Process(Some(child));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
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
