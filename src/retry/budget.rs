//! The retry budget: retries (and hedges) at most a share of recent
//! requests, plus a small reserve, in the manner of Finagle's `RetryBudget`.

use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::sync::{model_point, AtomicU64};

/// Tokens are counted in thousandths, so a share of 10% is 100 per request.
const MILLI: u64 = 1_000;
/// The window is cut into this many steps; deposits leave it a step at a
/// time.
const STEPS: u64 = 10;
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A budget of retries shared by every clone: each request deposits a
/// share of a token, each retry (or hedge) withdraws a whole one, and
/// deposits older than the budget's `ttl` no longer count. A retry the
/// budget cannot pay for is not made.
///
/// Over any `ttl`, retries are at most `ratio` × requests +
/// `min_per_second` × `ttl`: under a total outage, a budget of 10% lets
/// the dependency see at most 10% more calls than it is sent (plus the
/// reserve), however many callers retry.
///
/// Requests deposit, not only successful ones, as Finagle's does: a budget
/// fed by successes is empty in an outage and full in health, so it cannot
/// state what an outage costs the dependency; this one can.
///
/// Lock-free: a deposit is one clock read and one compare-and-swap on the
/// current step's counter; a withdrawal is a compare-and-swap on one
/// counter of every withdrawal, so concurrent retries never spend a token
/// twice. (tower's `TpsBudget` takes a lock on every deposit, and checks
/// its balance and withdraws in two steps that concurrent retries can
/// interleave to overdraw: hence a budget of seawall's own.)
///
/// Share one budget between several [`Retry`](super::Retry) rules, or
/// policies, to give a whole dependency one allowance (not between a
/// [hedge](crate::hedge) and the retry rule below it: each hedge is a
/// request to that rule, which would credit it again).
///
/// ```
/// use std::time::Duration;
/// use seawall::retry::RetryBudget;
///
/// let budget = RetryBudget::builder()
///     .ratio(0.1)
///     .min_per_second(0)
///     .ttl(Duration::from_secs(10))
///     .build()?;
/// for _ in 0..100 {
///     budget.deposit();
/// }
/// let granted = (0..20).filter(|_| budget.withdraw()).count();
/// assert_eq!(granted, 10, "10% of 100 requests");
/// assert_eq!(budget.figures().refused, 10);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    shared: Arc<Shared>,
}

struct Shared {
    /// Deposits per step: `epoch << 32 | count`. A step's epoch is the
    /// clock's time divided by the step, plus one (zero: never used).
    steps: Box<[Step]>,
    step_nanos: u64,
    /// Thousandths of a token each request deposits.
    share: u64,
    /// Thousandths of a token always available over the window.
    reserve: u64,
    /// Every withdrawal since the budget was made: the one word every
    /// withdrawal takes turns on.
    withdrawn: AtomicU64,
    refused: AtomicU64,
    clock: Clock,
    ttl: Duration,
    ratio: f64,
    min_per_second: u32,
}

#[derive(Default)]
struct Step {
    deposits: AtomicU64,
    /// `withdrawn` when this step began: withdrawals after it count
    /// against the window while the step is in it.
    withdrawn_before: AtomicU64,
}

/// What a [`RetryBudget`] has granted and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetFigures {
    /// Tokens withdrawn since the budget was made: retries and hedges made.
    pub withdrawn: u64,
    /// Withdrawals refused since the budget was made.
    pub refused: u64,
    /// Whole tokens available now.
    pub balance: u64,
}

impl RetryBudget {
    /// A builder: 20% of requests, 10 a second in reserve, over 10 s (the
    /// defaults of Finagle and tower).
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            ttl: Duration::from_secs(10),
            min_per_second: 10,
            ratio: 0.2,
            clock: None,
        }
    }

    /// Credits one request: each adds `ratio` of a token.
    #[inline]
    pub fn deposit(&self) {
        let shared = &*self.shared;
        let epoch = shared.epoch_now();
        let step = shared.step(epoch);
        let mut word = step.deposits.load(Relaxed);
        loop {
            // This step, or a newer one a faster clock read began.
            let current = word >> COUNT_BITS >= epoch;
            // Read before the step is claimed: a mark older than the claim
            // counts more withdrawals against the step, never fewer.
            let before = if current {
                0
            } else {
                shared.withdrawn.load(Acquire)
            };
            let new = if current {
                if word & COUNT_MASK == COUNT_MASK {
                    return;
                }
                word + 1
            } else {
                epoch << COUNT_BITS | 1
            };
            model_point();
            match step
                .deposits
                .compare_exchange_weak(word, new, Relaxed, Relaxed)
            {
                Ok(_) if !current => return shared.began(step, before),
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
    }

    /// Takes one token for a retry or a hedge, if the budget has one.
    pub fn withdraw(&self) -> bool {
        let shared = &*self.shared;
        let epoch = shared.epoch_now();
        shared.begin(epoch);
        let mut withdrawn = shared.withdrawn.load(Acquire);
        loop {
            if shared.balance(epoch, withdrawn) < MILLI {
                shared.refused.fetch_add(1, Relaxed);
                return false;
            }
            model_point();
            match shared
                .withdrawn
                .compare_exchange_weak(withdrawn, withdrawn + 1, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) => withdrawn = now,
            }
        }
    }

    /// Withdrawals granted and refused, and the balance now.
    pub fn figures(&self) -> BudgetFigures {
        let shared = &*self.shared;
        let withdrawn = shared.withdrawn.load(Acquire);
        BudgetFigures {
            withdrawn,
            refused: shared.refused.load(Relaxed),
            balance: shared.balance(shared.epoch_now(), withdrawn) / MILLI,
        }
    }

    /// Whether two handles are the same budget.
    pub fn same_as(&self, other: &RetryBudget) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Shared {
    #[inline]
    fn epoch_now(&self) -> u64 {
        self.clock.now() / self.step_nanos + 1
    }

    #[inline]
    fn step(&self, epoch: u64) -> &Step {
        &self.steps[(epoch % STEPS) as usize]
    }

    /// Marks where a step's withdrawals begin, once its first deposit (or
    /// withdrawal) claimed it, with `withdrawn` as read before the claim. A
    /// reader that sees the step before the mark reads the previous lap's,
    /// which is older and smaller: either way it counts more withdrawals,
    /// never fewer.
    #[cold]
    fn began(&self, step: &Step, withdrawn: u64) {
        step.withdrawn_before.store(withdrawn, Release);
    }

    /// Claims the current step for withdrawals made in it, if no deposit has.
    fn begin(&self, epoch: u64) {
        let step = self.step(epoch);
        let word = step.deposits.load(Acquire);
        if word >> COUNT_BITS < epoch {
            let before = self.withdrawn.load(Acquire);
            if step
                .deposits
                .compare_exchange(word, epoch << COUNT_BITS, AcqRel, Relaxed)
                .is_ok()
            {
                self.began(step, before);
            }
        }
    }

    /// Thousandths of a token available: the reserve, plus the deposits of
    /// the steps still in the window, less the withdrawals made since the
    /// oldest of them began.
    fn balance(&self, epoch: u64, withdrawn: u64) -> u64 {
        let mut deposits = 0u64;
        let mut since = withdrawn;
        for step in self.steps.iter() {
            let word = step.deposits.load(Acquire);
            let age = epoch.wrapping_sub(word >> COUNT_BITS);
            if word >> COUNT_BITS != 0 && (age < STEPS || word >> COUNT_BITS > epoch) {
                deposits += word & COUNT_MASK;
                since = since.min(step.withdrawn_before.load(Acquire));
            }
        }
        let spent = (withdrawn - since).saturating_mul(MILLI);
        (self.reserve + deposits.saturating_mul(self.share)).saturating_sub(spent)
    }
}

/// The same budget for tower's own `Retry` (feature `tower-retry`):
/// `deposit` on each request (not only each success, as tower's examples
/// do with `TpsBudget`, so that the budget bounds an outage), `withdraw`
/// before each retry. tower's policy has no hook for a new request but
/// `clone_request`, which it also calls before each retry: depositing
/// there credits retries as requests, a share of a share more.
#[cfg(feature = "tower-retry")]
impl tower::retry::budget::Budget for RetryBudget {
    fn deposit(&self) {
        RetryBudget::deposit(self);
    }

    fn withdraw(&self) -> bool {
        RetryBudget::withdraw(self)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.shared.ttl)
            .field("ratio", &self.shared.ratio)
            .field("min_per_second", &self.shared.min_per_second)
            .field("figures", &self.figures())
            .finish()
    }
}

/// Builds a [`RetryBudget`]; [`build`](Self::build) checks the values.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryBudgetBuilder {
    ttl: Duration,
    min_per_second: u32,
    ratio: f64,
    clock: Option<Clock>,
}

impl RetryBudgetBuilder {
    /// How long a request's deposit counts (it leaves the window a tenth
    /// of `ttl` at a time: after 0.9 to 1 `ttl`). Default 10 s; from 1 s to
    /// an hour.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Retries a second allowed whatever the traffic, so that a quiet
    /// service can still retry. Default 10.
    pub fn min_per_second(mut self, min_per_second: u32) -> Self {
        self.min_per_second = min_per_second;
        self
    }

    /// Tokens each request deposits: 0.1 lets retries add 10% to the
    /// requests. Default 0.2; from 0 to 10, in thousandths.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// The clock the window follows. Default [`Clock::default`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the values and builds the budget.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        // Steps of 100 ms or more: 32 bits of them last 13 years.
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.ttl) {
            return Err(ConfigError::new(
                "ttl",
                self.ttl,
                "must be from 1 s to an hour",
            ));
        }
        if !(0.0..=10.0).contains(&self.ratio) {
            return Err(ConfigError::new(
                "ratio",
                self.ratio,
                "must be a number from 0 to 10",
            ));
        }
        let step_nanos = (self.ttl.as_nanos() / u128::from(STEPS)) as u64;
        let reserve = u64::from(self.min_per_second)
            .saturating_mul(self.ttl.as_millis() as u64)
            .min(u64::MAX / 4);
        Ok(RetryBudget {
            shared: Arc::new(Shared {
                steps: (0..STEPS).map(|_| Step::default()).collect(),
                step_nanos,
                share: (self.ratio * MILLI as f64).round() as u64,
                reserve,
                withdrawn: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                clock: self.clock.unwrap_or_default(),
                ttl: self.ttl,
                ratio: self.ratio,
                min_per_second: self.min_per_second,
            }),
        })
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_second(min_per_second)
            .ttl(Duration::from_secs(10))
            .clock(Clock::tokio())
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_leave_the_window_after_its_ttl() {
        let budget = budget(0.5, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.figures().balance, 5);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(budget.figures().balance, 5, "still within the ttl");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(budget.figures().balance, 0, "gone after it");
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_count_until_the_step_they_were_made_in_leaves() {
        let budget = budget(1.0, 0);
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw() && budget.withdraw());
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(budget.figures().balance, 6);
        tokio::time::advance(Duration::from_secs(6)).await;
        // The first four deposits and the two withdrawals made with them
        // are out of the window; the last four are in.
        assert_eq!(budget.figures().balance, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_lets_a_quiet_service_retry_and_is_spent() {
        let budget = budget(0.1, 2);
        let granted = (0..30).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 20, "2 a second over 10 s");
        let figures = budget.figures();
        assert_eq!((figures.withdrawn, figures.refused), (20, 10));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(budget.figures().balance, 20, "the window moved on");
    }

    #[test]
    fn the_builder_names_a_rejected_field() {
        let error = RetryBudget::builder().ratio(-0.5).build().unwrap_err();
        assert_eq!((error.field(), error.value()), ("ratio", "-0.5"));
        let error = RetryBudget::builder().ratio(f64::NAN).build().unwrap_err();
        assert_eq!(error.field(), "ratio");
        let error = RetryBudget::builder()
            .ttl(Duration::from_millis(1))
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "ttl");
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use super::*;
    use loom::thread;

    static NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn budget(ratio: f64) -> RetryBudget {
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_second(0)
            .clock(Clock::manual(&NOW))
            .build()
            .unwrap()
    }

    /// Two retries race for the last token: exactly one gets it.
    #[test]
    fn concurrent_withdrawals_never_spend_a_token_twice() {
        loom::model(|| {
            let budget = budget(1.0);
            budget.deposit();
            let other = budget.clone();
            let racer = thread::spawn(move || other.withdraw());
            let mine = budget.withdraw();
            let theirs = racer.join().unwrap();
            assert!(mine ^ theirs, "one of the two, not both: {mine} {theirs}");
            assert_eq!(budget.figures().withdrawn, 1);
        });
    }

    /// Two requests start a step together, with a retry racing them: both
    /// deposits count, and the retry is paid for by one of them or refused.
    #[test]
    fn deposits_that_begin_a_step_together_both_count() {
        loom::model(|| {
            let budget = budget(1.0);
            let (a, b) = (budget.clone(), budget.clone());
            let first = thread::spawn(move || a.deposit());
            let second = thread::spawn(move || b.deposit());
            let granted = budget.withdraw();
            first.join().unwrap();
            second.join().unwrap();
            let figures = budget.figures();
            assert_eq!(figures.withdrawn, u64::from(granted));
            assert_eq!(figures.balance, 2 - u64::from(granted));
        });
    }
}
