#[cfg(feature = "messaging")]
pub mod jobs;
pub mod nats;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod server;
