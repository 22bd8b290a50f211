//! The krisbud test harness: real servers for tests to talk to.
//!
//! A real `nats-server` per test (own port, own store directory), a real SMTP
//! server, the provider simulators of `krisbud-sim` (46elks, Sinch, Twilio), a webhook
//! receiver that checks signatures, [`wait_until`] for waiting on effects with a deadline, and
//! [`TestService`] for running one service against its own server. This library
//! depends on `proto` and `kit` but on no krisbud service, so every service crate
//! can use it in its own tests; the end-to-end tests live in `tests/tests/`.

pub mod nats;
pub mod service;
pub mod smtp;
pub mod wait;
pub mod webhook;

pub use krisbud_sim::{ElksSimulator, ElksSms, elks, faults, sinch, twilio};
pub use krisbud_sim::{SinchBatch, SinchSimulator};
pub use krisbud_sim::{TwilioMessage, TwilioSimulator};
pub use nats::NatsServer;
pub use service::{Reported, TestService};
pub use smtp::{ReceivedMail, SmtpSink};
pub use wait::{wait_until, wait_until_async};
pub use webhook::{ReceivedHook, WebhookReceiver};

/// Installs a log subscriber when `TEST_LOG` is set, so tests are quiet by default.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("TEST_LOG")
                    .ok()
                    .filter(|v| v != "1")
                    .unwrap_or_else(|| "info".into()),
            )
            .with_test_writer()
            .try_init();
    }
}
