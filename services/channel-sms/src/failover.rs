//! Provider failover: the primary carries the messages until its requests have
//! failed transiently (after their retries) `threshold` times in a row; from then
//! on the secondary carries the rest: the recipients the primary failed go out
//! when their job is tried again (the channel's first retry, half a second
//! later), and every job after.
//!
//! Which provider carried whom is in every outcome: the provider reference is
//! `<provider>:<id>` (e.g. `twilio:SM…`), and failures name their provider at the
//! start of the reason. A job's `DeliveryReported::provider` is the provider active
//! when its last delivery ended; only a job split at the moment of failover has
//! recipients of both, told apart by their references. Once failed over, the
//! channel stays with the secondary until it restarts, so a flapping primary does
//! not split every job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;

use crate::provider::{Attempt, SmsProvider};

/// Two providers, the second taking over when the first keeps failing.
pub struct Failover {
    primary: Arc<dyn SmsProvider>,
    secondary: Arc<dyn SmsProvider>,
    threshold: u32,
    failures: AtomicU32,
    failed_over: AtomicBool,
}

impl Failover {
    /// `primary` until it fails transiently `threshold` times in a row (at least
    /// once), then `secondary`.
    pub fn new(
        primary: Arc<dyn SmsProvider>,
        secondary: Arc<dyn SmsProvider>,
        threshold: u32,
    ) -> Failover {
        Failover {
            primary,
            secondary,
            threshold: threshold.max(1),
            failures: AtomicU32::new(0),
            failed_over: AtomicBool::new(false),
        }
    }

    /// Whether the secondary has taken over.
    pub fn failed_over(&self) -> bool {
        self.failed_over.load(Ordering::Relaxed)
    }

    /// Counts the primary's answers; says whether it is time to fail over.
    fn count(&self, attempts: &[Attempt]) -> bool {
        for attempt in attempts {
            match attempt {
                Attempt::Settled(_) => self.failures.store(0, Ordering::Relaxed),
                Attempt::Transient(_) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if self.failures.load(Ordering::Relaxed) >= self.threshold
            && !self.failed_over.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                primary = self.primary.name(),
                secondary = self.secondary.name(),
                "the primary sms provider keeps failing; failing over"
            );
        }
        self.failed_over()
    }
}

/// Marks which provider carried an outcome, in its provider reference.
fn tagged(provider: &str, attempt: Attempt) -> Attempt {
    match attempt {
        Attempt::Settled(mut outcome) => {
            outcome.provider_ref = Some(match outcome.provider_ref.take() {
                Some(id) => format!("{provider}:{id}"),
                None => format!("{provider}:"),
            });
            Attempt::Settled(outcome)
        }
        transient => transient,
    }
}

impl SmsProvider for Failover {
    fn name(&self) -> &'static str {
        if self.failed_over() {
            self.secondary.name()
        } else {
            self.primary.name()
        }
    }

    fn send<'a>(
        &'a self,
        job: &'a DispatchJob,
        message: &'a SmsMessage,
        recipients: &'a [Recipient],
    ) -> BoxFuture<'a, Vec<Attempt>> {
        async move {
            let secondary = self.secondary.name();
            if self.failed_over() {
                let attempts = self.secondary.send(job, message, recipients).await;
                return attempts.into_iter().map(|a| tagged(secondary, a)).collect();
            }
            let primary = self.primary.name();
            let mut attempts: Vec<Attempt> = self
                .primary
                .send(job, message, recipients)
                .await
                .into_iter()
                .map(|a| tagged(primary, a))
                .collect();
            if self.count(&attempts) {
                // The rest goes through the secondary when the job is tried again,
                // moments from now, so that delivery is reported under its name.
                for attempt in &mut attempts {
                    if let Attempt::Transient(reason) = attempt {
                        *reason = format!("{reason}; failing over to {secondary}");
                    }
                }
            }
            attempts
        }
        .boxed()
    }
}
