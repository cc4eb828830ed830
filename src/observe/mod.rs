//! Seeing seawall work: per-call events, a catalogue of a process's named
//! parts with one report of all their figures, health, and exporters.
//!
//! Every breaker keeps monotonic lifetime totals
//! ([`CircuitBreaker::lifetime`](crate::circuit_breaker::CircuitBreaker::lifetime),
//! [`history`](crate::circuit_breaker::CircuitBreaker::history)); bulkheads
//! and pools keep theirs in their figures. Reading them never blocks a call.
//! A [`Catalogue`] lists the parts a process wants seen; its [`Report`] is
//! what the exporters and [`Health`] read.

mod catalogue;
mod health;

pub use crate::circuit_breaker::{CallEvent, Listener};
#[cfg(feature = "cache")]
pub use catalogue::CacheReport;
pub use catalogue::{
    BreakerReport, BulkheadReport, Catalogue, Catalogued, HedgeReport, PoolReport, RegistryReport,
    Report, RetryReport,
};
#[cfg(feature = "axum")]
pub use health::health_handler;
pub use health::{Concern, Health, Status};
#[cfg(feature = "hystrix-stream")]
#[cfg_attr(docsrs, doc(cfg(feature = "hystrix-stream")))]
pub mod hystrix;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
