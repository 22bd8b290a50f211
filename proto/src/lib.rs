//! The wire contract of krisbud: everything that crosses NATS or HTTP is defined here.
//!
//! Services convert these types to and from their own domain types at the border.
//! Serialized types are a compatibility promise: new fields get defaults, and a change
//! of meaning bumps [`SCHEMA_VERSION`].

// A service never panics on what it is handed: no unchecked indexing, no unwrap
// or expect outside tests (an expect that cannot fail says why, where it is).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

pub mod access;
pub mod api;
pub mod audience;
pub mod audit;
pub mod command;
pub mod envelope;
pub mod event;
pub mod job;
pub mod language;
pub mod model;
pub mod publish;
pub mod schema;
pub mod spec;
pub mod status;
pub mod subject;
pub mod template;

pub use command::{CommandReply, CommandRequest, Problem};
pub use envelope::{Actor, Envelope};
pub use event::Event;
pub use model::{AlertStatus, Channel, Role};

/// Version of the JSON shape of envelopes, events, jobs and commands.
pub const SCHEMA_VERSION: u32 = 1;

/// NATS header naming the envelope's kind, so consumers can route without parsing.
pub const HEADER_KIND: &str = "Krisbud-Kind";
/// NATS header carrying [`SCHEMA_VERSION`] of the body.
pub const HEADER_SCHEMA_VERSION: &str = "Krisbud-Schema-Version";
