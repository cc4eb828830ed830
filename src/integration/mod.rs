//! seawall in the frameworks' own terms, behind cargo features.
//!
//! Use these when seawall guards an axum or tonic service, or a client
//! called from one: they answer seawall's refusals with the status codes
//! clients expect, fit the frameworks' layer slots, and classify responses
//! by status.
//!
//! | module | feature | what it has |
//! |---|---|---|
//! | [`axum`] | `axum` | [`ErrorResponseLayer`](axum::ErrorResponseLayer) for `Router::layer` (503 + `Retry-After`, 429, 504), `IntoResponse` for [`Error`](crate::Error) (`?` in handlers), [`server_errors()`](axum::server_errors) |
//! | [`tonic`] | `tonic` | [`StatusLayer`](tonic::StatusLayer) for clients and servers (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`), `From<Error>` for `Status`, [`GrpcTimeout`](tonic::GrpcTimeout), [`server_errors()`](tonic::server_errors) |
//!
//! Both classifiers are tower-http's, through
//! [`classify::Http`](crate::classify::Http): any other tower-http
//! classifier fits the same way (feature `tower-http`).

#[cfg(feature = "axum")]
pub mod axum;

#[cfg(feature = "tonic")]
pub mod tonic;
