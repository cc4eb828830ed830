pub mod nats;
pub mod rabbitmq;
pub mod redis;
pub mod server;
