//! Simulators of the SMS providers krisbud speaks to: 46elks, Sinch and Twilio,
//! each on a real HTTP listener, checking what the provider checks and answering
//! in its wire format, with failure injection ([`faults`]).
//!
//! The end-to-end tests (through `krisbud-tests`) and `krisbud bench` use them. A
//! product crate may depend on this crate; none may depend on `krisbud-tests`,
//! which carries an SMTP server and certificate generation.

pub mod elks;
pub mod faults;
pub mod sinch;
pub mod twilio;

pub use elks::{ElksSimulator, ElksSms};
pub use sinch::{SinchBatch, SinchSimulator};
pub use twilio::{TwilioMessage, TwilioSimulator};
