//! Shared service runtime of krisbud: what every service needs and no service owns.
//!
//! Config loading, NATS connect and provisioning, the event bus, the one consumer
//! loop with DESIGN.md's ack rules, command request/reply, telemetry with W3C trace
//! context across NATS, health endpoints, shutdown, and recipient pseudonyms.

pub mod bus;
pub mod channel;
pub mod command;
pub mod config;
pub mod consumer;
pub mod health;
pub mod nats;
pub mod privacy;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod text;

pub use bus::Bus;
pub use config::{NatsConfig, Secret, TelemetryConfig};
pub use health::Health;
pub use service::{Common, Runtime, Started};
pub use tokio_util::sync::CancellationToken;
