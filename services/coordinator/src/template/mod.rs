//! The template aggregate: versions with their lifecycle (draft, submit,
//! approve or reject, retire), four eyes, and the read model of templates.
//!
//! `aggregate` is the pure core (the template folded from its events and the
//! decision of every step); `catalog` the shell that reads events, appends with
//! optimistic concurrency and keeps `KRISBUD_TEMPLATES`; `commands` answers the
//! template commands; `diff` compares two versions.

pub mod aggregate;
pub mod catalog;
pub mod commands;
pub mod diff;

pub use aggregate::{DEMO, parse};
pub use catalog::Catalog;
