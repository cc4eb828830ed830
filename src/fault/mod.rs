//! Faults on demand: inject errors, latency, aborted and hung calls into a
//! running service, to watch its policies work.
//!
//! Nobody trusts a breaker they have never seen trip. Put a [`FaultLayer`]
//! under the parts you want to exercise (under a
//! [`Policy`](crate::policy::Policy), the breaker counts injected errors as
//! the dependency's), on a route or a client, and switch it from its
//! [`Faults`] handle while the service runs: from an admin endpoint, a test,
//! or the tuning lab. Off, a call pays one relaxed load and a branch.
//!
//! Each call (of those [`only`](FaultLayer::only) selects) draws one number
//! and gets at most one fault, by these probabilities (their sum is at
//! most 1):
//!
//! | fault | what the caller sees | the service below |
//! |---|---|---|
//! | [error](FaultsBuilder::outcome) | the outcome you give (an error, or a response such as a 503) | not called |
//! | [latency](FaultsBuilder::latency) | the real answer, late | called after the delay |
//! | [abort](FaultsBuilder::abort) | the outcome you give | called, polled once, then dropped: the call was started, its answer is lost |
//! | [hang](FaultsBuilder::hang) | nothing, ever (a timeout above must end it) | not called |
//!
//! The draws come from a counter hashed with the seed
//! ([`FaultsBuilder::seed`]): the same seed gives the same faults to the
//! same sequence of calls, so a test or a scenario replays exactly. Time
//! goes through tokio, so `tokio::time::pause()` drives the latencies.
//!
//! ```
//! use std::time::Duration;
//! use seawall::fault::{FaultLayer, Faults};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), seawall::ConfigError> {
//! let faults = Faults::builder()
//!     .seed(7)
//!     .outcome(0.5, || Err(std::io::Error::other("injected")))
//!     .latency(0.25, Duration::from_millis(300))
//!     .build()?;
//! let service = FaultLayer::new(faults.clone())
//!     .layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
//! for n in 0..100 {
//!     let _ = service.clone().oneshot(n).await;
//! }
//! let seen = faults.figures();
//! assert_eq!(seen.calls, 100);
//! assert!(seen.outcomes > 30 && seen.latencies > 10);
//!
//! // Off at runtime: the next call is untouched.
//! faults.set_enabled(false);
//! assert_eq!(service.oneshot(7).await.unwrap(), 7);
//! # Ok(())
//! # }
//! ```

mod layer;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub use crate::select::{Every, Selects};
pub use layer::{FaultFuture, FaultLayer, FaultService};

use crate::ConfigError;

/// The kinds of fault, for [`Faults::set_probability`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// The given outcome instead of a call.
    Outcome,
    /// A delay before the call.
    Latency,
    /// The call made, then dropped; the given outcome instead of its
    /// answer.
    Abort,
    /// No answer, ever.
    Hang,
}

impl FaultKind {
    const ALL: [FaultKind; 4] = [
        FaultKind::Outcome,
        FaultKind::Latency,
        FaultKind::Abort,
        FaultKind::Hang,
    ];

    fn name(self) -> &'static str {
        match self {
            FaultKind::Outcome => "outcome",
            FaultKind::Latency => "latency",
            FaultKind::Abort => "abort",
            FaultKind::Hang => "hang",
        }
    }
}

/// What one call gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drawn {
    Nothing,
    Fault(FaultKind),
}

/// Probabilities are kept in millionths: exact to compare and to store.
const SCALE: u32 = 1_000_000;

type MakeOutcome<Res, E> = Arc<dyn Fn() -> Result<Res, E> + Send + Sync>;

/// The handle of a set of faults: shared by every [`FaultLayer`] made from
/// it and every clone, and switched at runtime. `Res` and `E` are the
/// response and error of the service it is put over (the error under
/// seawall's [`Error`](crate::Error)).
pub struct Faults<Res, E> {
    shared: Arc<Shared<Res, E>>,
}

struct Shared<Res, E> {
    enabled: AtomicBool,
    seed: u64,
    draws: AtomicU64,
    // Per kind, in `FaultKind::ALL` order, in millionths.
    probabilities: [AtomicU32; 4],
    latency: Duration,
    outcome: Option<MakeOutcome<Res, E>>,
    injected: [AtomicU64; 4],
    changing: std::sync::Mutex<()>,
}

impl<Res, E> Clone for Faults<Res, E> {
    fn clone(&self) -> Self {
        Faults {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Res, E> fmt::Debug for Faults<Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("enabled", &self.is_enabled())
            .field("latency", &self.shared.latency)
            .field("figures", &self.figures())
            .finish_non_exhaustive()
    }
}

/// What a [`Faults`] has done since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultFigures {
    /// Calls that drew (while enabled).
    pub calls: u64,
    /// Calls answered with the given outcome instead.
    pub outcomes: u64,
    /// Calls delayed.
    pub latencies: u64,
    /// Calls made, dropped, and answered with the given outcome.
    pub aborts: u64,
    /// Calls never answered.
    pub hangs: u64,
}

impl<Res, E> Faults<Res, E> {
    /// A set of faults to configure: none until given.
    pub fn builder() -> FaultsBuilder<Res, E> {
        FaultsBuilder {
            seed: 0,
            enabled: true,
            probabilities: [0.0; 4],
            latency: Duration::ZERO,
            outcome: None,
        }
    }

    /// Turns injection on or off; the next call sees it.
    pub fn set_enabled(&self, enabled: bool) {
        self.shared.enabled.store(enabled, Relaxed);
    }

    /// Whether faults are injected.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Relaxed)
    }

    /// Changes one fault's probability; the next call sees it. Refused if
    /// it is not in `0..=1`, if the probabilities would sum to more than 1,
    /// or if the fault needs an outcome that was never given.
    pub fn set_probability(&self, kind: FaultKind, probability: f64) -> Result<(), ConfigError> {
        // Two changes at once must not both pass the sum check against each
        // other's old value. Draws read the probabilities without it.
        let _changing = self
            .shared
            .changing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all = self.probabilities();
        all[kind as usize] = probability;
        let millionths = check(&all, self.shared.outcome.is_some())?;
        self.shared.probabilities[kind as usize].store(millionths[kind as usize], Relaxed);
        Ok(())
    }

    /// The probabilities now, in [`FaultKind`] order.
    fn probabilities(&self) -> [f64; 4] {
        self.shared
            .probabilities
            .each_ref()
            .map(|p| f64::from(p.load(Relaxed)) / f64::from(SCALE))
    }

    /// What was injected.
    pub fn figures(&self) -> FaultFigures {
        let injected = self.shared.injected.each_ref().map(|n| n.load(Relaxed));
        FaultFigures {
            calls: self.shared.draws.load(Relaxed),
            outcomes: injected[FaultKind::Outcome as usize],
            latencies: injected[FaultKind::Latency as usize],
            aborts: injected[FaultKind::Abort as usize],
            hangs: injected[FaultKind::Hang as usize],
        }
    }

    /// The fault for the next call: one draw, counted.
    #[inline]
    pub(crate) fn draw(&self) -> Drawn {
        if !self.shared.enabled.load(Relaxed) {
            return Drawn::Nothing;
        }
        self.draw_enabled()
    }

    #[inline(never)]
    fn draw_enabled(&self) -> Drawn {
        let shared = &*self.shared;
        let n = shared.draws.fetch_add(1, Relaxed);
        // Uniform in 0..SCALE: the top 32 bits of the hash, scaled.
        let hashed = crate::draw::mix(shared.seed ^ crate::draw::mix(n));
        let point = ((hashed >> 32) * u64::from(SCALE)) >> 32;
        let mut upto = 0u64;
        for kind in FaultKind::ALL {
            upto += u64::from(shared.probabilities[kind as usize].load(Relaxed));
            if point < upto {
                shared.injected[kind as usize].fetch_add(1, Relaxed);
                return Drawn::Fault(kind);
            }
        }
        Drawn::Nothing
    }

    pub(crate) fn latency(&self) -> Duration {
        self.shared.latency
    }

    /// The given outcome. Only drawn when one was given (`check`).
    pub(crate) fn outcome(&self) -> Result<Res, E> {
        let make = self
            .shared
            .outcome
            .as_ref()
            .expect("faults needing an outcome have one");
        make()
    }
}

/// Builds [`Faults`]; [`build`](Self::build) checks the probabilities.
#[must_use = "a builder does nothing until `build` is called"]
pub struct FaultsBuilder<Res, E> {
    seed: u64,
    enabled: bool,
    probabilities: [f64; 4],
    latency: Duration,
    outcome: Option<MakeOutcome<Res, E>>,
}

impl<Res, E> fmt::Debug for FaultsBuilder<Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultsBuilder")
            .field("seed", &self.seed)
            .field("probabilities", &self.probabilities)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl<Res, E> FaultsBuilder<Res, E> {
    /// The seed of the draws. Default 0. The same seed gives the same
    /// faults to the same sequence of calls.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// With probability `probability`, answer `outcome()` instead of calling
    /// the service: an error (`Err(..)`), or a response of your own (an
    /// HTTP 503, say). The same outcome answers [aborted](Self::abort)
    /// calls.
    pub fn outcome<F>(mut self, probability: f64, outcome: F) -> Self
    where
        F: Fn() -> Result<Res, E> + Send + Sync + 'static,
    {
        self.probabilities[FaultKind::Outcome as usize] = probability;
        self.outcome = Some(Arc::new(outcome));
        self
    }

    /// With probability `probability`, wait `delay` before calling the
    /// service.
    pub fn latency(mut self, probability: f64, delay: Duration) -> Self {
        self.probabilities[FaultKind::Latency as usize] = probability;
        self.latency = delay;
        self
    }

    /// With probability `probability`, call the service, poll it once, drop
    /// it, and answer the [outcome](Self::outcome) (which must be given).
    /// One poll starts the call; whether its request reached the wire by
    /// then is up to the client below.
    pub fn abort(mut self, probability: f64) -> Self {
        self.probabilities[FaultKind::Abort as usize] = probability;
        self
    }

    /// With probability `probability`, never answer.
    pub fn hang(mut self, probability: f64) -> Self {
        self.probabilities[FaultKind::Hang as usize] = probability;
        self
    }

    /// Starts switched off: [`Faults::set_enabled`] turns it on.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// The faults, or the setting that cannot work.
    pub fn build(self) -> Result<Faults<Res, E>, ConfigError> {
        let millionths = check(&self.probabilities, self.outcome.is_some())?;
        Ok(Faults {
            shared: Arc::new(Shared {
                enabled: AtomicBool::new(self.enabled),
                seed: self.seed,
                draws: AtomicU64::new(0),
                probabilities: millionths.map(AtomicU32::new),
                latency: self.latency,
                outcome: self.outcome,
                injected: Default::default(),
                changing: std::sync::Mutex::new(()),
            }),
        })
    }
}

/// The probabilities in millionths, or what is wrong with them.
fn check(probabilities: &[f64; 4], has_outcome: bool) -> Result<[u32; 4], ConfigError> {
    for kind in FaultKind::ALL {
        let p = probabilities[kind as usize];
        if !(0.0..=1.0).contains(&p) {
            return Err(ConfigError::new(
                kind.name(),
                p,
                "must be a probability in 0..=1",
            ));
        }
    }
    for kind in [FaultKind::Outcome, FaultKind::Abort] {
        let p = probabilities[kind as usize];
        if p > 0.0 && !has_outcome {
            return Err(ConfigError::new(
                kind.name(),
                p,
                "needs an outcome to answer with: give one with `outcome`",
            ));
        }
    }
    let millionths = probabilities.map(|p| (p * f64::from(SCALE)).round() as u32);
    let sum: u32 = millionths.iter().sum();
    if sum > SCALE {
        return Err(ConfigError::new(
            "probabilities",
            probabilities,
            "must sum to at most 1: a call gets one fault at most",
        ));
    }
    Ok(millionths)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Io = Faults<(), std::io::Error>;

    fn seeded(seed: u64) -> Io {
        Faults::builder()
            .seed(seed)
            .outcome(0.1, || Err(std::io::Error::other("x")))
            .latency(0.2, Duration::from_millis(1))
            .hang(0.05)
            .build()
            .unwrap()
    }

    #[test]
    fn rates_hold_within_binomial_bounds_and_a_seed_replays() {
        let faults = seeded(42);
        let draws: Vec<Drawn> = (0..100_000).map(|_| faults.draw()).collect();
        let seen = faults.figures();
        // Four standard deviations of a binomial of 100,000 draws.
        for (count, p) in [
            (seen.outcomes, 0.1_f64),
            (seen.latencies, 0.2),
            (seen.hangs, 0.05),
        ] {
            let (mean, sd) = (100_000.0 * p, (100_000.0_f64 * p * (1.0 - p)).sqrt());
            assert!((count as f64 - mean).abs() < 4.0 * sd, "{count} for {p}");
        }
        assert_eq!(seen.calls, 100_000);
        let again = seeded(42);
        assert!((0..100_000).map(|_| again.draw()).eq(draws.iter().copied()));
        let other = seeded(43);
        assert!(!(0..100_000).map(|_| other.draw()).eq(draws));
    }

    #[test]
    fn settings_that_cannot_work_are_refused_and_switches_apply_at_once() {
        let refused = |b: FaultsBuilder<(), std::io::Error>| b.build().unwrap_err().field();
        assert_eq!(refused(Faults::builder().hang(1.5)), "hang");
        assert_eq!(
            refused(Faults::builder().latency(-0.1, Duration::ZERO)),
            "latency"
        );
        assert_eq!(refused(Faults::builder().abort(0.1)), "abort");
        assert_eq!(
            refused(Faults::builder().hang(0.6).latency(0.6, Duration::ZERO)),
            "probabilities"
        );
        assert_eq!(
            refused(Faults::builder().latency(f64::NAN, Duration::ZERO)),
            "latency"
        );

        let faults: Io = Faults::builder().hang(1.0).build().unwrap();
        assert_eq!(faults.draw(), Drawn::Fault(FaultKind::Hang));
        faults.set_enabled(false);
        assert_eq!(faults.draw(), Drawn::Nothing);
        faults.set_enabled(true);
        faults.set_probability(FaultKind::Hang, 0.0).unwrap();
        assert_eq!(faults.draw(), Drawn::Nothing);
        let err = faults.set_probability(FaultKind::Abort, 0.5).unwrap_err();
        assert_eq!(err.field(), "abort");
        let err = faults.set_probability(FaultKind::Outcome, 0.5).unwrap_err();
        assert_eq!(err.field(), "outcome");
        assert_eq!(faults.figures().calls, 2, "a disabled call draws nothing");
    }
}
