//! The event bus: appending events and publishing dispatch jobs with the headers
//! every message carries (`Nats-Msg-Id`, kind, schema version, `traceparent`).

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, context::PublishErrorKind};
use krisbud_proto::job::DispatchJob;
use krisbud_proto::{Envelope, HEADER_KIND, HEADER_SCHEMA_VERSION, SCHEMA_VERSION, subject};

use crate::telemetry;

/// A connected client with its JetStream context.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended to the aggregate first.
    #[error("the aggregate changed concurrently (expected last subject sequence {expected})")]
    Conflict {
        /// The sequence the writer expected.
        expected: u64,
    },
    /// JetStream did not store the message.
    #[error("cannot append to jetstream: {0}")]
    Unavailable(String),
}

/// Where an append expects the aggregate to be.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// No expectation: append whatever is there.
    Any,
    /// The subject's last message has this stream sequence (0: no message yet).
    LastSubjectSequence(u64),
    /// The stream's last message has this sequence (0: the stream is empty).
    LastSequence(u64),
}

impl Bus {
    /// Wraps a connected client.
    pub fn new(client: async_nats::Client) -> Bus {
        let js = jetstream::new(client.clone());
        Bus { client, js }
    }

    /// Appends an event to its aggregate's subject and waits until it is stored.
    /// Returns the event's stream sequence.
    pub async fn append(&self, envelope: &Envelope, expect: Expect) -> Result<u64, AppendError> {
        #[allow(
            clippy::expect_used,
            reason = "derived Serialize with string keys cannot fail"
        )]
        let body = serde_json::to_vec(envelope).expect("an envelope serializes");
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_KIND, envelope.event.kind());
        let subject = envelope.subject();
        self.publish(subject, &envelope.id, headers, body, expect)
            .await
    }

    /// Reads every event on `subject` of KRISBUD_EVENTS in stream order and hands
    /// each to `apply` with its stream sequence: the one way an aggregate is
    /// loaded. An event that does not read as an envelope on its subject is
    /// logged and handed as `None` (the audit records it as it is; the aggregate
    /// goes on without it, but knows it was there).
    pub async fn fold_events(
        &self,
        subject: &str,
        mut apply: impl FnMut(u64, Option<&Envelope>),
    ) -> anyhow::Result<()> {
        let stream = self
            .js
            .get_stream_no_info(krisbud_proto::spec::EVENTS.name)
            .await?;
        let mut next = 1;
        loop {
            let message = match stream.get_first_raw_message_by_subject(subject, next).await {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read the events on {subject}"));
                }
            };
            next = message.sequence + 1;
            match Envelope::read_on(&message.subject, &message.payload) {
                Ok(envelope) => apply(message.sequence, Some(&envelope)),
                Err(e) => {
                    tracing::warn!(%subject, sequence = message.sequence, error = %e, "unreadable event skipped");
                    apply(message.sequence, None);
                }
            }
        }
    }

    /// Publishes a dispatch job to its channel's work queue. The job id is the
    /// `Nats-Msg-Id`, so planning the same job twice stores it once.
    pub async fn dispatch(&self, job: &DispatchJob) -> Result<u64, AppendError> {
        #[allow(
            clippy::expect_used,
            reason = "derived Serialize with string keys cannot fail"
        )]
        let body = serde_json::to_vec(job).expect("a job serializes");
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_KIND, "DispatchJob");
        let subject = subject::dispatch(job.channel, &job.crisis_id);
        self.publish(subject, &job.job_id, headers, body, Expect::Any)
            .await
    }

    /// Publishes raw bytes with krisbud's headers and waits for the stream's ack.
    pub async fn publish(
        &self,
        subject: String,
        msg_id: &str,
        mut headers: HeaderMap,
        body: Vec<u8>,
        expect: Expect,
    ) -> Result<u64, AppendError> {
        headers.insert("Nats-Msg-Id", msg_id);
        headers.insert(HEADER_SCHEMA_VERSION, SCHEMA_VERSION.to_string().as_str());
        match expect {
            Expect::Any => {}
            Expect::LastSubjectSequence(n) => {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    n.to_string().as_str(),
                );
            }
            Expect::LastSequence(n) => {
                headers.insert("Nats-Expected-Last-Sequence", n.to_string().as_str());
            }
        }
        telemetry::inject(&mut headers);
        let ack = self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                let expected = match expect {
                    Expect::LastSubjectSequence(n) | Expect::LastSequence(n) => n,
                    Expect::Any => 0,
                };
                Err(AppendError::Conflict { expected })
            }
            Err(e) => Err(AppendError::Unavailable(e.to_string())),
        }
    }
}
