//! The crisis aggregate: declaration, confirmations and the lifecycle steps
//! (update, all-clear, cancel, close), with what follows from its events: the
//! dispatch plan, the status read model, and the confirmation deadlines.
//!
//! `lifecycle` is the pure core (the crisis folded from its events, the table
//! of allowed steps, and the texts of the closing messages); `commands` and
//! `steps` are the shell that loads, decides, appends and answers.

pub mod commands;
pub mod deadlines;
pub mod lifecycle;
pub mod planner;
pub mod projection;
pub mod steps;
pub mod wording;

pub use commands::Coordinator;
