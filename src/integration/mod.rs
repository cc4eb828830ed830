//! seawall in the frameworks' own terms, behind cargo features.

#[cfg(feature = "axum")]
pub mod axum;

#[cfg(feature = "tonic")]
pub mod tonic;
