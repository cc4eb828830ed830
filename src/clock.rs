//! The clock seawall reads: cheap on the hot path, and driven by
//! `tokio::time::pause()` in tests.

use std::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Where seawall reads the time.
///
/// Reading a precise clock (`Instant::now()`) costs more than everything
/// else a closed breaker does, so the default reads a coarse clock kept up to date by a background thread
/// (a plain load of an atomic, at most about a millisecond stale). That clock cannot follow tokio's paused time, so
/// [`Clock::tokio`] reads `tokio::time::Instant` instead, which follows
/// `tokio::time::pause()` and `advance` exactly.
///
/// [`Clock::default`] picks for you: when it is created inside a tokio runtime
/// whose time is paused (a `#[tokio::test(start_paused = true)]`, say), it is
/// [`Clock::tokio`]; otherwise [`Clock::coarse`]. Pass one explicitly when a
/// breaker is built outside the test's runtime.
///
/// Latencies (for slow-call rules and percentiles) are always measured with
/// a precise clock: the TSC with the coarse clock, tokio's with the tokio one.
///
/// # The coarse clock's thread
///
/// One process-wide thread, `seawall-clock`, stores the time every
/// millisecond while the time is being read, and only then:
///
/// - It is started by the first read, not before.
/// - After about 100 ms without a read it parks, and wakes no more until a
///   read wants it again. The reads in between take the precise time (a
///   clock read instead of a load): an idle process pays nothing, and a read is never
///   more than about a millisecond stale.
/// - If the thread cannot be started (a container at its limit of threads),
///   reads take the precise time, and a start is tried again each second.
/// - If the time it keeps stops moving for more than 100 ms (a child process
///   after `fork` has no thread but the one that forked; a thread starved of
///   CPU), the windows notice it on their next few calls: reads take the
///   precise time and a new thread is started. A frozen time therefore never
///   keeps a breaker open, or a window from rolling, for more than about
///   64 calls.
/// - It also wakes the calls whose deadline passed: a call still pending
///   after its first poll, under a timeout with this clock, leaves its
///   waker with the thread instead of arming a tokio timer (see
///   [`timeout`](crate::timeout)). While such calls wait and nothing else
///   happens (no read, no new call pending, for 100 ms), the thread sleeps
///   until the first of their deadlines instead of ticking. A call made
///   while it sleeps, is parked or starting, or is not sweeping (for 5 ms:
///   starved, or gone) arms a tokio timer instead, and wakes it.
///   A child process made by `fork` (without `exec`) within those 5 ms of
///   the parent's last sweep could still leave its waker with the thread
///   the child does not have; POSIX allows a forked child of a threaded
///   process little beyond `exec` anyway, and a breaker's time is safe (the
///   point above).
///
/// ```
/// use seawall::Clock;
/// use seawall::circuit_breaker::CircuitBreaker;
///
/// // In a test with paused time, make the breaker follow it explicitly:
/// let breaker = CircuitBreaker::builder().clock(Clock::tokio()).build().unwrap();
/// # drop(breaker);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    /// `origin` is the coarse time (see [`coarse_now`]) at creation.
    Coarse {
        origin: u64,
    },
    Tokio {
        origin: tokio::time::Instant,
    },
    /// Nanoseconds a model test sets by hand: loom needs every run of a
    /// model to see the same time.
    #[cfg(all(test, seawall_loom))]
    Manual {
        now: &'static AtomicU64,
    },
}

/// How often the keeper stores the time while it is read.
const TICK: Duration = Duration::from_millis(1);
/// Ticks without a read after which the keeper parks.
const IDLE_TICKS: u32 = 100;
/// A coarse time older than this, by the precise clock, is frozen.
const STALE_AFTER_NANOS: u64 = 100_000_000;
/// How long after a failed start of the keeper another is tried.
const RETRY_START_NANOS: u64 = 1_000_000_000;

/// The process's coarse time: nanoseconds since [`epoch`], even, with bit 0
/// set by a read since the keeper's last tick (so the keeper knows it is
/// wanted); zero while no keeper keeps it (reads take the precise time).
/// Not quanta's shared "recent" time: another library may own that, with
/// its own interval, and stopping it freezes the value for good.
static COARSE: AtomicU64 = AtomicU64::new(0);
const READ: u64 = 1;

/// What the keeper is doing: one of the constants below.
static KEEPER_STATE: AtomicU8 = AtomicU8::new(NO_KEEPER);
const NO_KEEPER: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const PARKED: u8 = 3;
const START_FAILED: u8 = 4;

/// The live keeper's generation: a keeper that sees another stops.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// When (precise nanoseconds) to try again to start a keeper that failed to.
static RETRY_AT: AtomicU64 = AtomicU64::new(0);
/// When (precise nanoseconds) a keeper was last started or woken: one that
/// has not stored the time long after is lost (a forked child woke the
/// parent's parked keeper, which it does not have).
static WOKEN_AT: AtomicU64 = AtomicU64::new(0);
/// The keeper's handle, to unpark it; the lock also serializes starts.
static KEEPER: Mutex<Option<std::thread::Thread>> = Mutex::new(None);

/// The TSC's reading at the process's first look at the time: the times
/// seawall keeps (the coarse time, alarms' due times) count from it.
fn epoch() -> u64 {
    static EPOCH: OnceLock<u64> = OnceLock::new();
    *EPOCH.get_or_init(|| tsc().raw())
}

/// The TSC (or the OS's monotonic clock where it has none), calibrated once
/// for the process. Read through a clock of our own rather than
/// `quanta::Instant::now()`, which looks for a mocked clock in a thread-local
/// first and scales every reading.
#[inline]
fn tsc() -> &'static quanta::Clock {
    static TSC: OnceLock<quanta::Clock> = OnceLock::new();
    TSC.get_or_init(quanta::Clock::new)
}

/// Nanoseconds since [`epoch`], by the TSC.
fn precise_now() -> u64 {
    since_epoch(tsc().raw())
}

/// Nanoseconds from [`epoch`] to a raw TSC reading.
#[inline]
fn since_epoch(raw: u64) -> u64 {
    tsc().delta_as_nanos(epoch(), raw)
}

/// The time alarms are set and swept in (see `crate::alarm`): nanoseconds
/// since [`epoch`], by the TSC.
pub(crate) fn alarm_now() -> u64 {
    precise_now()
}

/// The time alarms are set and swept in, by the coarse clock: never ahead
/// of [`alarm_now`], and behind it by up to a tick while the keeper keeps
/// time (more if it runs late). A load, where [`alarm_now`] reads the TSC.
pub(crate) fn alarm_now_coarse() -> u64 {
    coarse_now()
}

/// Has the keeper run, or replaced if its time stopped moving: a call
/// whose alarm could not be set (the keeper has not swept lately) wants it.
pub(crate) fn want_keeper() {
    check_coarse_moving();
    coarse_now();
}

/// Nanoseconds since `origin` by tokio's clock. Out of line: inlined, its
/// reading of the runtime's clock made every caller of [`Clock::now`] (a
/// breaker's verdict, say) keep more registers, though only tests and
/// paused runtimes use it.
#[inline(never)]
fn tokio_nanos_since(origin: tokio::time::Instant) -> u64 {
    nanos(tokio::time::Instant::now().saturating_duration_since(origin))
}

/// The coarse time, or the precise one while no keeper keeps it.
#[inline]
fn coarse_now() -> u64 {
    let word = COARSE.load(Relaxed);
    if word & READ != 0 {
        return word - READ;
    }
    first_read_of_tick(word)
}

/// The first read since the keeper's last tick says the time is in use; a
/// read that finds no time kept takes the precise time and wakes the keeper.
#[inline(never)]
fn first_read_of_tick(word: u64) -> u64 {
    if word == 0 {
        return wake();
    }
    // Lost to the keeper's next tick or another reader: either way the
    // keeper learns the time is read.
    let _ = COARSE.compare_exchange(word, word | READ, Relaxed, Relaxed);
    word
}

#[cold]
fn wake() -> u64 {
    // Pairs with the keeper's release of the zero it parks with.
    fence(Acquire);
    let now = precise_now();
    match KEEPER_STATE.load(Acquire) {
        PARKED
            if KEEPER_STATE
                .compare_exchange(PARKED, RUNNING, AcqRel, Acquire)
                .is_ok() =>
        {
            WOKEN_AT.store(now, Relaxed);
            if let Some(keeper) = &*keeper_handle() {
                keeper.unpark();
            }
        }
        NO_KEEPER => start_keeper(now),
        START_FAILED if now >= RETRY_AT.load(Relaxed) => start_keeper(now),
        STARTING | RUNNING if woken_long_ago(now) => {
            {
                let mut handle = keeper_handle();
                let state = KEEPER_STATE.load(Acquire);
                if matches!(state, STARTING | RUNNING)
                    && woken_long_ago(now)
                    && COARSE.load(Acquire) == 0
                {
                    GENERATION.fetch_add(1, AcqRel);
                    KEEPER_STATE.store(NO_KEEPER, Release);
                    *handle = None;
                }
            }
            start_keeper(now);
        }
        _ => {}
    }
    now
}

fn woken_long_ago(now: u64) -> bool {
    now.saturating_sub(WOKEN_AT.load(Relaxed)) > STALE_AFTER_NANOS
}

fn keeper_handle() -> std::sync::MutexGuard<'static, Option<std::thread::Thread>> {
    KEEPER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start_keeper(now: u64) {
    let mut handle = keeper_handle();
    match KEEPER_STATE.load(Acquire) {
        NO_KEEPER => {}
        START_FAILED if now >= RETRY_AT.load(Relaxed) => {}
        _ => return,
    }
    let generation = GENERATION.fetch_add(1, AcqRel) + 1;
    WOKEN_AT.store(now, Relaxed);
    KEEPER_STATE.store(STARTING, Release);
    match spawn_keeper(generation) {
        Ok(thread) => *handle = Some(thread),
        Err(error) => {
            tracing::warn!(target: "seawall::clock", %error, "cannot start the coarse clock's thread: reading the precise clock");
            RETRY_AT.store(now.saturating_add(RETRY_START_NANOS), Relaxed);
            KEEPER_STATE.store(START_FAILED, Release);
        }
    }
}

fn spawn_keeper(generation: u64) -> std::io::Result<std::thread::Thread> {
    #[cfg(test)]
    if tests::SPAWNS_FAIL.load(Relaxed) {
        return Err(std::io::Error::other("refused by the test"));
    }
    std::thread::Builder::new()
        .name("seawall-clock".into())
        .spawn(move || keep(generation))
        .map(|handle| handle.thread().clone())
}

/// The keeper's loop: stores the time each tick while it is read, parks
/// when it is not, stops when a newer keeper replaced it.
fn keep(generation: u64) {
    let current = || GENERATION.load(Acquire) == generation;
    let _ = KEEPER_STATE.compare_exchange(STARTING, RUNNING, AcqRel, Acquire);
    let mut idle_ticks = 0;
    let mut woken = Vec::new();
    while current() {
        let now = precise_now();
        let previous = COARSE.swap(now.max(2) & !READ, Release);
        let alarms_set = sweep_alarms(now, &mut woken);
        if previous & READ != 0 || previous == 0 || alarms_set {
            idle_ticks = 0;
        } else {
            idle_ticks += 1;
        }
        if idle_ticks >= IDLE_TICKS {
            // Calls from now on arm tokio's timer and wake the keeper; the
            // alarms already set are due no sooner than `wake_at`.
            let wake_at = close_alarms();
            KEEPER_STATE.store(PARKED, SeqCst);
            COARSE.store(0, Release);
            while current() && KEEPER_STATE.load(Acquire) == PARKED {
                let Some(wake_at) = wake_at else {
                    std::thread::park();
                    continue;
                };
                let now = precise_now();
                if now >= wake_at {
                    WOKEN_AT.store(now, Relaxed);
                    let _ = KEEPER_STATE.compare_exchange(PARKED, RUNNING, AcqRel, Acquire);
                    break;
                }
                std::thread::park_timeout(Duration::from_nanos(wake_at - now));
            }
            idle_ticks = 0;
            continue;
        }
        std::thread::sleep(TICK);
    }
}

/// Wakes the alarms due by `now`; says whether any was set since the last
/// tick.
#[cfg(not(seawall_loom))]
fn sweep_alarms(now: u64, woken: &mut Vec<std::task::Waker>) -> bool {
    crate::alarm::alarms().sweep(now, woken)
}

/// Sets no more alarms until the keeper sweeps again; when the first one
/// set is due, if any.
#[cfg(not(seawall_loom))]
fn close_alarms() -> Option<u64> {
    crate::alarm::alarms().close()
}

// The models make alarms of their own; the process's keeper has none.
#[cfg(seawall_loom)]
fn sweep_alarms(_: u64, _: &mut Vec<std::task::Waker>) -> bool {
    false
}

#[cfg(seawall_loom)]
fn close_alarms() -> Option<u64> {
    None
}

/// Has a keeper whose time stopped moving replaced.
#[cold]
#[inline(never)]
fn check_coarse_moving() {
    let word = COARSE.load(Relaxed);
    if word == 0 || precise_now().saturating_sub(word & !READ) <= STALE_AFTER_NANOS {
        return;
    }
    // Given up for lost: reads take the precise time, and the next one
    // starts another keeper. The lost one, if it ever runs again, sees a
    // newer generation and stops.
    let mut handle = keeper_handle();
    // Unchanged since: nobody fixed it meanwhile.
    if COARSE.compare_exchange(word, 0, AcqRel, Relaxed).is_ok() {
        tracing::warn!(target: "seawall::clock", "the coarse clock stopped (a forked child, or a starved thread): starting another");
        GENERATION.fetch_add(1, AcqRel);
        KEEPER_STATE.store(NO_KEEPER, Release);
        *handle = None;
    }
}

impl Clock {
    /// The coarse, cheap clock (the default outside paused tests). See the
    /// notes on its thread above.
    pub fn coarse() -> Clock {
        check_coarse_moving();
        Clock {
            source: Source::Coarse {
                origin: coarse_now(),
            },
        }
    }

    /// `tokio::time::Instant`: follows `tokio::time::pause()` and `advance`.
    pub fn tokio() -> Clock {
        Clock {
            source: Source::Tokio {
                origin: tokio::time::Instant::now(),
            },
        }
    }

    /// A clock that reads `now`, for model tests.
    #[cfg(all(test, seawall_loom))]
    pub(crate) fn manual(now: &'static AtomicU64) -> Clock {
        Clock {
            source: Source::Manual { now },
        }
    }

    /// Whether this clock follows tokio's time.
    pub fn is_tokio(&self) -> bool {
        matches!(self.source, Source::Tokio { .. })
    }

    /// Nanoseconds since this clock was created, from the cheap clock.
    /// Always inlined: the policy's future left it out of line, a call's
    /// worth of instructions for a load and a subtraction.
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        match &self.source {
            Source::Coarse { origin } => coarse_now().saturating_sub(*origin),
            Source::Tokio { origin } => tokio_nanos_since(*origin),
            #[cfg(all(test, seawall_loom))]
            Source::Manual { now } => now.load(Relaxed),
        }
    }

    /// Checks that the coarse time still moves, and has it replaced if not
    /// (see the notes on its thread). Called by the windows every so many
    /// calls: a precise read, too dear for every call.
    #[inline]
    pub(crate) fn check_moving(&self) {
        if let Source::Coarse { .. } = self.source {
            check_coarse_moving();
        }
    }

    /// A precise reading to time a call from, for [`nanos_since`]: the raw
    /// TSC with the coarse clock (scaled to nanoseconds only once, for the
    /// difference), tokio's time with the tokio one.
    ///
    /// [`nanos_since`]: Clock::nanos_since
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        match &self.source {
            Source::Coarse { .. } => tsc().raw(),
            Source::Tokio { origin } => tokio_nanos_since(*origin),
            #[cfg(all(test, seawall_loom))]
            Source::Manual { now } => now.load(Relaxed),
        }
    }

    /// When a call started, from `start` (a reading of
    /// [`start`](Clock::start)), in alarm time (see [`alarm_now`]); none
    /// with the tokio clock, whose deadlines are tokio's timers (they
    /// follow paused time).
    #[inline]
    pub(crate) fn alarm_start(&self, start: u64) -> Option<u64> {
        match &self.source {
            Source::Coarse { .. } => Some(since_epoch(start)),
            _ => None,
        }
    }

    /// Nanoseconds since `start` (a reading of [`start`](Clock::start)), by
    /// the precise clock; zero if the clock went backwards.
    #[inline]
    pub(crate) fn nanos_since(&self, start: u64) -> u64 {
        match &self.source {
            Source::Coarse { .. } => {
                // One look at the once-cell: each is an acquire load.
                let tsc = tsc();
                tsc.delta_as_nanos(start, tsc.raw())
            }
            Source::Tokio { .. } => self.now().saturating_sub(start),
            #[cfg(all(test, seawall_loom))]
            Source::Manual { .. } => self.now().saturating_sub(start),
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        if tokio_time_is_paused() {
            Clock::tokio()
        } else {
            Clock::coarse()
        }
    }
}

/// A paused tokio clock does not move between two reads; a running one always
/// does (it has nanosecond resolution and a read takes longer than that).
fn tokio_time_is_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    tokio::time::Instant::now() == tokio::time::Instant::now()
}

#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use super::*;

    /// Makes the keeper's thread fail to start.
    pub(crate) static SPAWNS_FAIL: AtomicBool = AtomicBool::new(false);
    /// The tests below change the process's clock: one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn until(what: &str, done: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < give_up, "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the keeper as a `fork` would: no thread, the time left as it was.
    fn lose_the_keeper() {
        GENERATION.fetch_add(1, AcqRel);
    }

    fn moves(clock: &Clock) -> bool {
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        clock.now() > start
    }

    #[test]
    fn the_coarse_clock_moves_on_its_own() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let clock = Clock::coarse();
        until("the coarse clock moves", || moves(&clock));
        let Source::Coarse { origin } = clock.source else {
            panic!("Clock::coarse made another clock");
        };
        // The coarse reading first: the keeper may tick between the two.
        let coarse = clock.now();
        assert!(
            precise_now().saturating_sub(origin) >= coarse,
            "the coarse clock never runs ahead"
        );
    }

    #[test]
    fn without_a_thread_reads_take_the_precise_time_and_a_start_is_retried() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let clock = Clock::coarse();
        SPAWNS_FAIL.store(true, Relaxed);
        lose_the_keeper();
        until("the lost keeper is noticed", || {
            clock.now();
            clock.check_moving();
            KEEPER_STATE.load(Acquire) == START_FAILED
        });
        assert!(moves(&clock), "the precise time stands in");
        SPAWNS_FAIL.store(false, Relaxed);
        RETRY_AT.store(0, Relaxed);
        clock.now();
        until("a keeper runs again", || COARSE.load(Relaxed) != 0);
        // A loaded machine may not run the new keeper within one 5 ms look.
        until("the kept time moves", || moves(&clock));
    }

    #[test]
    fn a_frozen_coarse_time_is_noticed_and_a_keeper_started_again() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let clock = Clock::coarse();
        until("a keeper runs", || {
            clock.now();
            KEEPER_STATE.load(Acquire) == RUNNING && COARSE.load(Relaxed) != 0
        });
        lose_the_keeper();
        // Noticed when the keeper is replaced. Not when the time's word
        // changes: a read sets its flag, and the lost keeper, preempted
        // before it saw it was lost, may store the time once more.
        let lost = GENERATION.load(Acquire);
        until("the frozen time is noticed", || {
            clock.now();
            clock.check_moving();
            GENERATION.load(Acquire) != lost
        });
        until("a new keeper keeps the time", || {
            clock.now();
            KEEPER_STATE.load(Acquire) == RUNNING && COARSE.load(Relaxed) != 0
        });
        until("the kept time moves", || moves(&clock));
    }
}
