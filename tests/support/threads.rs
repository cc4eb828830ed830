//! What the kernel counts of a process's own threads.

/// The `/proc` directories of the process's threads named `name`; none
/// if `/proc` cannot be read.
fn tasks_named(name: &str) -> Option<Vec<std::path::PathBuf>> {
    let mut named = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?.path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            named.push(task);
        }
    }
    Some(named)
}

/// The context switches (voluntary and not) of the process's threads
/// named `name`, from `/proc`; none if no thread has that name.
pub fn switches_of(name: &str) -> Option<u64> {
    let tasks = tasks_named(name)?;
    let switches = tasks.iter().map(|task| {
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>()
    });
    (!tasks.is_empty()).then(|| switches.sum())
}

/// The number the kernel gives `futex`, the call a parked thread waits in.
#[cfg(target_arch = "x86_64")]
const FUTEX: Option<&str> = Some("202");
#[cfg(target_arch = "aarch64")]
const FUTEX: Option<&str> = Some("98");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const FUTEX: Option<&str> = None;

/// Whether every thread named `name` waits in `futex` (where
/// `std::thread::park` waits), from `/proc/<tid>/syscall`: a thread that
/// sleeps between ticks waits in `clock_nanosleep` instead. None where the
/// kernel does not say (no such thread, no such file, another
/// architecture).
pub fn parked(name: &str) -> Option<bool> {
    let futex = FUTEX?;
    let tasks = tasks_named(name)?;
    let mut all = None;
    for task in tasks {
        let syscall = std::fs::read_to_string(task.join("syscall")).ok()?;
        let waits = syscall.split_whitespace().next() == Some(futex);
        all = Some(all.unwrap_or(true) && waits);
    }
    all
}

/// Waits until the threads named `name` are parked (where the kernel says
/// so) and their context switches stay put for `settle`, and returns the
/// switches; panics with `never` after 30 s. A thread that is ready to run
/// but not given a core also stays put, so on a loaded machine the
/// switches alone could take a ticking thread for a parked one.
pub fn switches_once_parked(name: &str, settle: std::time::Duration, never: &str) -> u64 {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = switches_of(name);
    loop {
        std::thread::sleep(settle);
        let now = switches_of(name);
        if now.is_some() && now == last && parked(name) != Some(false) {
            return now.unwrap_or_default();
        }
        assert!(std::time::Instant::now() < give_up, "{never}");
        last = now;
    }
}
