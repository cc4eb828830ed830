#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod blocking;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod classify;
mod clock;
pub mod error;
mod ext;
pub mod fallback;
pub mod integration;
#[cfg(feature = "messaging")]
pub mod messaging;
pub mod policy;
mod sync;
pub mod timeout;
pub mod window;

pub use clock::Clock;
pub use error::{ConfigError, Error, IntoError, Leaf, Refusal};
pub use ext::ResilienceExt;

/// moka refuses (by panicking) time-to-live and time-to-idle settings longer
/// than this; builders refuse them with a `ConfigError` instead.
#[cfg(feature = "cache")]
const MAX_CACHE_DURATION: std::time::Duration =
    std::time::Duration::from_secs(1000 * 365 * 24 * 3600);

/// The boxed error tower, axum and tonic pass around; every seawall
/// [`Error`] converts into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
