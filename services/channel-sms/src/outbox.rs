//! The outbox provider: instead of sending, appends one JSON line per recipient to
//! `<data_dir>/outbox/sms.jsonl`, for demos, exercises and sites without a provider.
//!
//! The outbox stands in for the provider, so it holds the phone numbers; the file
//! is created readable by its owner only. A job's lines are written with one
//! append and synced to disk before the job counts as delivered.

use std::path::Path;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use krisbud_kit::channel::{self, OutboxFile};
use krisbud_proto::Channel;
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
    /// CAP `msgType` and the earlier messages it updates or cancels.
    msg_type: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    references: &'a [String],
    written_at: DateTime<Utc>,
}

/// Writes SMS to a JSON-lines file.
pub struct Outbox {
    file: OutboxFile,
    from: String,
}

impl Outbox {
    /// An outbox at `<data_dir>/outbox/sms.jsonl`, creating the directory.
    pub fn new(data_dir: &Path, from: &str) -> anyhow::Result<Outbox> {
        Ok(Outbox {
            file: OutboxFile::new(data_dir, Channel::Sms)?,
            from: from.to_owned(),
        })
    }

    /// The file the outbox appends to.
    pub fn path(&self) -> &Path {
        self.file.path()
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
                msg_type: job.msg_type.as_str(),
                references: &job.references,
                written_at,
            };
            serde_json::to_writer(&mut buffer, &line)?;
            buffer.push(b'\n');
        }
        self.file.append(buffer).await
    }
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
                    .map(|r| Attempt::Settled(channel::delivered(&r.reference, None)))
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
