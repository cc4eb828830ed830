//! The breaker against a reference model of its state machine: random calls,
//! outcomes, clock advances and operator actions, with tokio's clock paused.

use std::time::Duration;

use proptest::prelude::*;
use seawall::circuit_breaker::{CircuitBreaker, State};
use seawall::classify::Verdict;
use seawall::window::Window;
use seawall::Clock;

const MINIMUM_CALLS: u64 = 4;
const OPEN_MS: u64 = 1_000;
const BUCKET_MS: u64 = 100;
const BUCKETS: u64 = 10;
const RING: usize = 8;

#[derive(Clone, Copy, Debug)]
enum Op {
    Call { fail: bool },
    Advance { ms: u64 },
    ForceOpen,
    ForceClosed,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => any::<bool>().prop_map(|fail| Op::Call { fail }),
        5 => (0..1_500u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::ForceClosed),
        1 => Just(Op::Reset),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Count,
    Time,
}

/// The state machine as the documentation describes it, kept naively: every
/// call in a list, the window recomputed from scratch.
struct Model {
    kind: Kind,
    state: State,
    now_ms: u64,
    open_until_ms: u64,
    calls: Vec<(u64, bool)>,
}

impl Model {
    fn window(&self) -> (u64, u64) {
        let in_window: Vec<_> = match self.kind {
            Kind::Count => self.calls.iter().rev().take(RING).collect(),
            Kind::Time => {
                let current = self.now_ms / BUCKET_MS;
                self.calls
                    .iter()
                    .filter(|(at, _)| at / BUCKET_MS + BUCKETS > current)
                    .collect()
            }
        };
        let failures = in_window.iter().filter(|(_, fail)| *fail).count() as u64;
        (in_window.len() as u64 - failures, failures)
    }

    fn open(&mut self) {
        self.state = State::Open;
        self.open_until_ms = self.now_ms + OPEN_MS;
    }

    /// Whether the call was let through.
    fn call(&mut self, fail: bool) -> bool {
        match self.state {
            State::Closed => {
                self.calls.push((self.now_ms, fail));
                let (successes, failures) = self.window();
                let calls = successes + failures;
                if fail && calls >= MINIMUM_CALLS && failures * 100 >= 50 * calls {
                    self.open();
                }
                true
            }
            State::ForcedClosed => {
                self.calls.push((self.now_ms, fail));
                true
            }
            State::Open if self.now_ms >= self.open_until_ms => {
                self.calls.push((self.now_ms, fail));
                if fail {
                    self.open();
                } else {
                    self.state = State::Closed;
                    self.calls.clear();
                }
                true
            }
            _ => false,
        }
    }
}

fn check(kind: Kind, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let window = match kind {
            Kind::Count => Window::count(RING as u32),
            Kind::Time => Window::time(Duration::from_millis(BUCKET_MS * BUCKETS), BUCKETS as u32),
        };
        let breaker = CircuitBreaker::builder()
            .window(window)
            .minimum_calls(MINIMUM_CALLS)
            .error_threshold(50.0)
            .open_duration(seawall::circuit_breaker::OpenDuration::Fixed(
                Duration::from_millis(OPEN_MS),
            ))
            .clock(Clock::tokio())
            .build()
            .unwrap();
        let mut model = Model {
            kind,
            state: State::Closed,
            now_ms: 0,
            open_until_ms: 0,
            calls: Vec::new(),
        };
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Call { fail } => {
                    let admitted = match breaker.try_acquire() {
                        Ok(permit) => {
                            permit.record(if fail {
                                Verdict::Failure
                            } else {
                                Verdict::Success
                            });
                            true
                        }
                        Err(_) => false,
                    };
                    prop_assert_eq!(admitted, model.call(fail), "step {}: {:?}", step, op);
                }
                Op::Advance { ms } => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now_ms += ms;
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    model.state = State::ForcedOpen;
                }
                Op::ForceClosed => {
                    breaker.force_closed();
                    model.state = State::ForcedClosed;
                }
                Op::Reset => {
                    breaker.reset();
                    model.state = State::Closed;
                    model.calls.clear();
                }
            }
            prop_assert_eq!(breaker.state(), model.state, "step {}: {:?}", step, op);
            let counts = breaker.counts();
            prop_assert_eq!(
                (counts.success, counts.failure),
                model.window(),
                "step {}: {:?}",
                step,
                op
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn count_window_breaker_follows_the_model(ops in prop::collection::vec(op(), 1..200)) {
        check(Kind::Count, ops)?;
    }

    #[test]
    fn time_window_breaker_follows_the_model(ops in prop::collection::vec(op(), 1..200)) {
        check(Kind::Time, ops)?;
    }
}
