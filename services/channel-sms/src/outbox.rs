//! The outbox provider: instead of sending, appends one JSON line per recipient to
//! `<data_dir>/outbox/sms.jsonl`, for demos, exercises and sites without a provider.
//!
//! The outbox stands in for the provider, so it holds the phone numbers; the file
//! is created readable by its owner only. A job's lines are written with one
//! append and synced to disk before the job counts as delivered.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use krisbud_proto::event::{DeliveryState, RecipientOutcome};
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;
use serde::Serialize;

use crate::provider::{Attempt, SmsProvider};

/// One line of the SMS outbox.
#[derive(Debug, Serialize)]
struct OutboxLine<'a> {
    crisis_id: &'a str,
    revision: u32,
    job_id: &'a str,
    /// The recipient's keyed hash.
    recipient: &'a str,
    /// The phone number, as a provider would get it.
    to: &'a str,
    from: &'a str,
    message: &'a str,
    encoding: &'a str,
    segments: u32,
    written_at: DateTime<Utc>,
}

/// Writes SMS to a JSON-lines file.
pub struct Outbox {
    path: PathBuf,
    from: String,
    // Jobs handled at once must not interleave their lines; the lock keeps one
    // append at a time within this process.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Outbox {
    /// An outbox at `<data_dir>/outbox/sms.jsonl`, creating the directory.
    pub fn new(data_dir: &Path, from: &str) -> anyhow::Result<Outbox> {
        let dir = data_dir.join("outbox");
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the sms outbox directory {}: {e}",
                dir.display()
            )
        })?;
        Ok(Outbox {
            path: dir.join("sms.jsonl"),
            from: from.to_owned(),
            lock: Arc::default(),
        })
    }

    /// The file the outbox appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write(
        &self,
        job: &DispatchJob,
        message: &SmsMessage,
        recipients: &[Recipient],
    ) -> std::io::Result<()> {
        let written_at = Utc::now();
        let mut buffer = Vec::new();
        for recipient in recipients {
            let line = OutboxLine {
                crisis_id: &job.crisis_id,
                revision: job.revision,
                job_id: &job.job_id,
                recipient: &recipient.reference,
                to: &recipient.address,
                from: &self.from,
                message: &message.text,
                encoding: &message.encoding,
                segments: message.segments,
                written_at,
            };
            serde_json::to_writer(&mut buffer, &line)?;
            buffer.push(b'\n');
        }
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append_synced(&path, &buffer))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Appends `bytes` with one write to a file opened with `O_APPEND`, then syncs it.
fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

impl SmsProvider for Outbox {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn send<'a>(
        &'a self,
        job: &'a DispatchJob,
        message: &'a SmsMessage,
        recipients: &'a [Recipient],
    ) -> BoxFuture<'a, Vec<Attempt>> {
        async move {
            match self.write(job, message, recipients).await {
                Ok(()) => recipients
                    .iter()
                    .map(|r| {
                        Attempt::Settled(RecipientOutcome {
                            recipient: r.reference.clone(),
                            state: DeliveryState::Delivered,
                            provider_ref: None,
                            reason: None,
                        })
                    })
                    .collect(),
                Err(e) => {
                    let reason = format!("cannot write the sms outbox: {e}");
                    recipients
                        .iter()
                        .map(|_| Attempt::Transient(reason.clone()))
                        .collect()
                }
            }
        }
        .boxed()
    }
}
