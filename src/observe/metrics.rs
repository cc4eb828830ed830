//! seawall's figures through the [`metrics`] facade, for any
//! exporter (`metrics-exporter-prometheus` among them).
//!
//! Two sources, each optional:
//!
//! - [`publish`] copies a [`Report`] (lifetime totals, states, gauges) into
//!   the recorder: call it before each scrape, or every few seconds with
//!   [`spawn_publisher`]. It costs the calls nothing, whatever their rate.
//! - [`MetricsListener`], a breaker's [`Listener`], records each call's
//!   latency in a histogram, for quantiles aggregated across instances
//!   (Prometheus's `histogram_quantile`). It costs a histogram record per
//!   call, which is the exporter's price.
//!
//! # Names
//!
//! Every name follows Prometheus's conventions: `seawall_` first, base
//! units (seconds), `_total` on counters. Label `policy` is the policy a
//! part belongs to, empty for a part of its own.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `seawall_breaker_calls_total` | counter | `breaker`, `policy`, `outcome` | every call's outcome since the breaker was made ([`Outcome::as_str`]: `success`, `failure`, `timeout`, `rejected`, `short_circuited`, `fallback_success`, `fallback_failure`, `fallback_rejected`, `cache_hit`, `cache_miss`, `ignored`) |
//! | `seawall_breaker_slow_calls_total` | counter | `breaker`, `policy` | calls slower than the slow-call limit |
//! | `seawall_breaker_state` | gauge | `breaker`, `policy`, `state` | 1 for the current state, 0 for the others ([`State::as_str`]) |
//! | `seawall_breaker_transitions_total` | counter | `breaker`, `policy`, `from`, `to` | changes of state |
//! | `seawall_breaker_time_in_state_seconds` | gauge | `breaker`, `policy`, `state` | time spent in each state since the breaker was made (only grows) |
//! | `seawall_breaker_window_calls` | gauge | `breaker`, `policy`, `outcome` | counts over the rolling window |
//! | `seawall_breaker_window_latency_seconds` | gauge | `breaker`, `policy`, `quantile` | 0.5, 0.9, 0.99 over the window, when the breaker tracks latency |
//! | `seawall_registry_keys` | gauge | `registry`, `policy` | keys held |
//! | `seawall_registry_open_keys` | gauge | `registry`, `policy` | keys whose breaker refuses calls |
//! | `seawall_registry_calls_total` | counter | `registry`, `policy`, `key`, `outcome` | lifetime counts of the [top keys](super::Catalogue::top_keys), and of the rest under `key="other"` |
//! | `seawall_bulkhead_in_flight` | gauge | `bulkhead`, `policy` | calls in flight |
//! | `seawall_bulkhead_max_concurrent` | gauge | `bulkhead`, `policy` | the limit |
//! | `seawall_bulkhead_queued` | gauge | `bulkhead`, `policy` | calls waiting |
//! | `seawall_bulkhead_admitted_total` | counter | `bulkhead`, `policy` | calls let in, at once or after waiting |
//! | `seawall_bulkhead_rejected_total` | counter | `bulkhead`, `policy` | calls refused |
//! | `seawall_bulkhead_limit_changes_total` | counter | `bulkhead`, `policy`, `change` | an adaptive bulkhead's windows that raised (`increase`) or lowered (`decrease`) its limit (`seawall_bulkhead_max_concurrent` is the limit) |
//! | `seawall_bulkhead_drops_total` | counter | `bulkhead`, `policy` | calls an adaptive bulkhead sampled as dropped (timed out, refused below) |
//! | `seawall_bulkhead_latency_seconds`, `seawall_bulkhead_no_load_latency_seconds` | gauge | `bulkhead`, `policy` | an adaptive bulkhead's last window mean latency, and Vegas's latency without load |
//! | `seawall_pool_threads`, `seawall_pool_busy`, `seawall_pool_queued` | gauge | `pool` | threads, threads running a call, calls waiting |
//! | `seawall_pool_completed_total`, `seawall_pool_rejected_total`, `seawall_pool_cancelled_total`, `seawall_pool_abandoned_total` | counter | `pool` | calls run, refused, cancelled before they ran, finished after their caller left |
//! | `seawall_retry_requests_total`, `seawall_retry_attempts_total`, `seawall_retry_retries_total` | counter | `retry`, `policy` | requests a retry rule saw, calls made (first attempts and retries), retries |
//! | `seawall_retry_stopped_total` | counter | `retry`, `policy`, `reason` | retries not made: `budget`, `circuit_open`, `deadline`, `attempts_exhausted` |
//! | `seawall_hedge_requests_total`, `seawall_hedge_sent_total`, `seawall_hedge_won_total` | counter | `hedge` | requests a hedging rule saw, hedges sent, hedges that answered |
//! | `seawall_hedge_budget_refused_total`, `seawall_hedge_refused_total` | counter | `hedge` | hedges not sent for want of budget; hedges refused below (a full bulkhead, an open breaker) |
//! | `seawall_retry_budget_withdrawn_total`, `seawall_retry_budget_refused_total` | counter | the rule's (`retry` and `policy`, or `hedge`) | a rule's budget: tokens granted and refused (a budget shared by several rules appears under each: do not sum them) |
//! | `seawall_retry_budget_balance` | gauge | the rule's | whole tokens available |
//! | `seawall_cache_entries` | gauge | `cache` | answers kept (feature `cache`) |
//! | `seawall_cache_lookups_total` | counter | `cache`, `result` | lookups: `hit`, `miss`, `stale_refused` (found, older than `max_stale`, not served) |
//! | `seawall_cache_stored_total` | counter | `cache` | good answers stored |
//! | `seawall_call_duration_seconds` | histogram | `breaker`, `outcome` | each call's latency, from [`MetricsListener`] |
//!
//! A registry's counters name at most [`top_keys`](super::Catalogue::top_keys)
//! keys, plus `other`, so its label cardinality is bounded. A key that
//! leaves the top (or is evicted) stops being exported; Prometheus's
//! `rate()` and `increase()` treat that as the end of a series.
//!
//! ```
//! use seawall::circuit_breaker::CircuitBreaker;
//! use seawall::observe::{metrics::publish, Catalogue};
//!
//! let breaker = CircuitBreaker::builder().name("payments").build()?;
//! let catalogue = Catalogue::new();
//! catalogue.add(&breaker);
//! // With a recorder installed (an exporter's), before each scrape:
//! publish(&catalogue.report());
//! # Ok::<(), seawall::ConfigError>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use ::metrics::{counter, gauge, histogram, Histogram, Label};

use super::{BreakerReport, CallEvent, Catalogue, Listener, Report};
use crate::circuit_breaker::State;
use crate::window::Outcome;

/// Copies every figure of `report` into the installed `metrics` recorder:
/// counters as absolute values, gauges as they are now.
pub fn publish(report: &Report) {
    for breaker in &report.breakers {
        publish_breaker(breaker);
    }
    for registry in &report.registries {
        let policy = registry.policy.clone().unwrap_or_default();
        let labels = [
            Label::new("registry", registry.name.clone()),
            Label::new("policy", policy),
        ];
        gauge!("seawall_registry_keys", labels.iter()).set(registry.keys as f64);
        gauge!("seawall_registry_open_keys", labels.iter()).set(registry.open_keys as f64);
        let keys = registry
            .top
            .iter()
            .map(|key| (key_of(&registry.name, &key.name), &key.lifetime.counts))
            .chain([("other", &registry.others_lifetime)]);
        for (key, counts) in keys {
            for outcome in Outcome::ALL {
                let labels = and(
                    &labels,
                    [
                        Label::new("key", key.to_owned()),
                        Label::from_static_parts("outcome", outcome.as_str()),
                    ],
                );
                counter!("seawall_registry_calls_total", labels).absolute(counts.of(outcome));
            }
        }
    }
    for bulkhead in &report.bulkheads {
        let labels = [
            Label::new("bulkhead", bulkhead.name.clone()),
            Label::new("policy", bulkhead.policy.clone().unwrap_or_default()),
        ];
        let figures = &bulkhead.figures;
        gauge!("seawall_bulkhead_in_flight", labels.iter()).set(figures.in_flight as f64);
        gauge!("seawall_bulkhead_max_concurrent", labels.iter()).set(figures.max_concurrent as f64);
        gauge!("seawall_bulkhead_queued", labels.iter()).set(figures.queued as f64);
        counter!("seawall_bulkhead_admitted_total", labels.iter()).absolute(figures.admitted);
        counter!("seawall_bulkhead_rejected_total", labels.iter()).absolute(figures.rejected);
        if let Some(adaptive) = &figures.adaptive {
            for (change, count) in [
                ("increase", adaptive.increases),
                ("decrease", adaptive.decreases),
            ] {
                let labels = and(&labels, [Label::from_static_parts("change", change)]);
                counter!("seawall_bulkhead_limit_changes_total", labels).absolute(count);
            }
            counter!("seawall_bulkhead_drops_total", labels.iter()).absolute(adaptive.drops);
            gauge!("seawall_bulkhead_latency_seconds", labels.iter())
                .set(adaptive.short_latency.as_secs_f64());
            gauge!("seawall_bulkhead_no_load_latency_seconds", labels.iter())
                .set(adaptive.no_load_latency.as_secs_f64());
        }
    }
    for pool in &report.pools {
        let labels = [Label::new("pool", pool.name.clone())];
        let figures = &pool.figures;
        gauge!("seawall_pool_threads", labels.iter()).set(figures.threads as f64);
        gauge!("seawall_pool_busy", labels.iter()).set(figures.busy as f64);
        gauge!("seawall_pool_queued", labels.iter()).set(figures.queued as f64);
        counter!("seawall_pool_completed_total", labels.iter()).absolute(figures.completed);
        counter!("seawall_pool_rejected_total", labels.iter()).absolute(figures.rejected);
        counter!("seawall_pool_cancelled_total", labels.iter()).absolute(figures.cancelled);
        counter!("seawall_pool_abandoned_total", labels.iter()).absolute(figures.abandoned);
    }
    for retry in &report.retries {
        let labels = [
            Label::new("retry", retry.name.clone()),
            Label::new("policy", retry.policy.clone().unwrap_or_default()),
        ];
        let figures = &retry.figures;
        counter!("seawall_retry_requests_total", labels.iter()).absolute(figures.requests);
        counter!("seawall_retry_attempts_total", labels.iter()).absolute(figures.attempts);
        counter!("seawall_retry_retries_total", labels.iter()).absolute(figures.retries);
        for (reason, count) in [
            ("budget", figures.budget_refused),
            ("circuit_open", figures.circuit_open),
            ("deadline", figures.deadline),
            ("attempts_exhausted", figures.attempts_exhausted),
        ] {
            let labels = and(&labels, [Label::from_static_parts("reason", reason)]);
            counter!("seawall_retry_stopped_total", labels).absolute(count);
        }
        publish_budget(&labels, retry.budget.as_ref());
    }
    for hedge in &report.hedges {
        let labels = [Label::new("hedge", hedge.name.clone())];
        let figures = &hedge.figures;
        counter!("seawall_hedge_requests_total", labels.iter()).absolute(figures.requests);
        counter!("seawall_hedge_sent_total", labels.iter()).absolute(figures.hedged);
        counter!("seawall_hedge_won_total", labels.iter()).absolute(figures.hedge_won);
        counter!("seawall_hedge_budget_refused_total", labels.iter())
            .absolute(figures.budget_refused);
        counter!("seawall_hedge_refused_total", labels.iter()).absolute(figures.hedge_refused);
        publish_budget(&labels, hedge.budget.as_ref());
    }
    #[cfg(feature = "cache")]
    for cache in &report.caches {
        let labels = [Label::new("cache", cache.name.clone())];
        let figures = &cache.figures;
        gauge!("seawall_cache_entries", labels.iter()).set(figures.entries as f64);
        for (lookup, count) in [
            ("hit", figures.hits),
            ("miss", figures.misses),
            ("stale_refused", figures.stale_refused),
        ] {
            let labels = and(&labels, [Label::from_static_parts("result", lookup)]);
            counter!("seawall_cache_lookups_total", labels).absolute(count);
        }
        counter!("seawall_cache_stored_total", labels.iter()).absolute(figures.stored);
    }
}

/// A retry or hedging rule's budget, under the rule's labels.
fn publish_budget(labels: &[Label], budget: Option<&crate::retry::BudgetFigures>) {
    if let Some(budget) = budget {
        counter!("seawall_retry_budget_withdrawn_total", labels.iter()).absolute(budget.withdrawn);
        counter!("seawall_retry_budget_refused_total", labels.iter()).absolute(budget.refused);
        gauge!("seawall_retry_budget_balance", labels.iter()).set(budget.balance as f64);
    }
}

/// A part's labels and a series' own.
fn and<const N: usize>(part: &[Label], own: [Label; N]) -> Vec<Label> {
    part.iter().cloned().chain(own).collect()
}

/// A registry's breaker is named `registry:key`; the label is the key.
fn key_of<'a>(registry: &str, breaker: &'a str) -> &'a str {
    breaker
        .strip_prefix(registry)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(breaker)
}

fn publish_breaker(breaker: &BreakerReport) {
    let labels = [
        Label::new("breaker", breaker.name.clone()),
        Label::new("policy", breaker.policy.clone().unwrap_or_default()),
    ];
    let with = |name, value| and(&labels, [Label::from_static_parts(name, value)]);
    for outcome in Outcome::ALL {
        let labels = with("outcome", outcome.as_str());
        gauge!("seawall_breaker_window_calls", labels.iter())
            .set(breaker.window.counts.of(outcome) as f64);
        counter!("seawall_breaker_calls_total", labels)
            .absolute(breaker.lifetime.counts.of(outcome));
    }
    counter!("seawall_breaker_slow_calls_total", labels.iter())
        .absolute(breaker.lifetime.counts.slow);
    for state in State::ALL {
        let current = f64::from(u8::from(state == breaker.state));
        gauge!("seawall_breaker_state", with("state", state.as_str())).set(current);
        gauge!(
            "seawall_breaker_time_in_state_seconds",
            with("state", state.as_str())
        )
        .set(breaker.history.time_in(state).as_secs_f64());
    }
    for (from, to, times) in breaker.history.each_transition() {
        let labels = and(
            &labels,
            [
                Label::from_static_parts("from", from.as_str()),
                Label::from_static_parts("to", to.as_str()),
            ],
        );
        counter!("seawall_breaker_transitions_total", labels).absolute(times);
    }
    if let Some(latency) = &breaker.window.latency {
        for (quantile, label) in [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")] {
            gauge!(
                "seawall_breaker_window_latency_seconds",
                with("quantile", label)
            )
            .set(latency.quantile(quantile).as_secs_f64());
        }
    }
}

/// Publishes `catalogue`'s report every `period` on the current tokio
/// runtime, until the returned task is aborted. For exporters that serve
/// what the recorder holds (a scrape then sees figures at most `period`
/// old); an exporter with a scrape hook can call [`publish`] itself.
pub fn spawn_publisher(catalogue: Catalogue, period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            publish(&catalogue.report());
        }
    })
}

/// A [`Listener`] that records each call's latency in the histogram
/// `seawall_call_duration_seconds{breaker, outcome}`. Register it with
/// [`CircuitBreakerBuilder::listener`](crate::circuit_breaker::CircuitBreakerBuilder::listener).
///
/// Histogram handles are looked up once per breaker and outcome and kept,
/// so a call costs one histogram record; a registry's breakers are all
/// recorded under the registry's name, keeping the labels bounded.
#[derive(Debug)]
pub struct MetricsListener {
    breaker: Arc<str>,
    histograms: [Histogram; Outcome::ALL.len()],
}

impl MetricsListener {
    /// Records the calls of the breaker (or registry) named `breaker`.
    pub fn new(breaker: impl Into<Arc<str>>) -> Arc<MetricsListener> {
        let breaker: Arc<str> = breaker.into();
        let histograms = Outcome::ALL.map(|outcome| {
            histogram!(
                "seawall_call_duration_seconds",
                "breaker" => breaker.to_string(),
                "outcome" => outcome.as_str(),
            )
        });
        Arc::new(MetricsListener {
            breaker,
            histograms,
        })
    }

    /// The name its histograms carry.
    pub fn breaker(&self) -> &str {
        &self.breaker
    }
}

impl Listener for MetricsListener {
    fn on_call(&self, event: &CallEvent<'_>) {
        if let Some(latency) = event.latency {
            // `Outcome::ALL` lists the outcomes in the order of their values.
            self.histograms[event.outcome as usize].record(latency.as_secs_f64());
        }
    }
}
