//! The recorder: turns every event of KRISBUD_EVENTS, in stream order, into the
//! next record of the chain on KRISBUD_AUDIT.
//!
//! The chain is its own cursor: an instance reads the head (the last record),
//! streams the events after the head's event with an ordered consumer, and
//! appends their records pipelined, many in flight. Each record is published with
//! `Nats-Expected-Last-Sequence` set to the sequence it follows and, after the
//! first of a run, `Nats-Expected-Last-Msg-Id` set to the id of the record it
//! links to; its own id carries its hash. So the server stores a record only
//! directly after the very record it links to: when another instance wrote first,
//! the append fails, this instance stands by for a moment, reloads the head and
//! carries on from there. The chain can neither fork nor record an event twice,
//! and one instance records at full speed while the others wait to take over.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use chrono::Utc;
use futures::StreamExt;
use krisbud_kit::{Bus, CancellationToken, telemetry};
use krisbud_proto::audit::{AuditRecord, GENESIS_HASH};
use krisbud_proto::{HEADER_KIND, HEADER_SCHEMA_VERSION, SCHEMA_VERSION, spec, subject};
use serde_json::Value;
use tracing::Instrument;

use crate::chain;

/// Records in flight at once.
const WINDOW: usize = 1024;
/// How long an instance that lost a race waits before it tries again.
const STANDBY: Duration = Duration::from_millis(1000);
/// The longest wait after a failure before trying again.
const MOST_BACKOFF: Duration = Duration::from_secs(30);

/// The last record of the chain: what the next record links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its sequence (0 before the first record).
    pub sequence: u64,
    /// The event it recorded (0 before the first record).
    pub event_sequence: u64,
    /// Its hash ([`GENESIS_HASH`] before the first record).
    pub hash: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            sequence: 0,
            event_sequence: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    fn of(record: &AuditRecord) -> Head {
        Head {
            sequence: record.sequence,
            event_sequence: record.event_sequence,
            hash: record.hash.clone(),
        }
    }
}

/// Records events until stopped.
pub struct Recorder {
    bus: Bus,
}

/// Why a run of appends ended.
enum Interrupted {
    /// Another instance appended first.
    Lost,
    /// The bus failed; worth another try.
    Failed(anyhow::Error),
}

type Ack = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// A record on its way to the stream.
struct InFlight {
    ack: Ack,
    sequence: u64,
    event_sequence: u64,
}

impl Recorder {
    /// A recorder appending with `bus`.
    pub fn new(bus: Bus) -> Recorder {
        Recorder { bus }
    }

    /// Reads the head from the stream, so a broken stream shows at start-up.
    pub async fn load(&self) -> anyhow::Result<Head> {
        load_head(&self.bus).await
    }

    /// Records until `stop`, standing by while another instance records.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut failures = 0u32;
        loop {
            let pause = match self.record(&stop).await {
                Ok(()) => return Ok(()),
                Err(Interrupted::Lost) => {
                    tracing::debug!("another audit instance is recording; standing by");
                    failures = 0;
                    // Jitter, so two instances that lose to each other part ways.
                    STANDBY + Duration::from_millis(rand::random_range(0..500))
                }
                Err(Interrupted::Failed(e)) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        ?delay,
                        "events not recorded yet; retrying"
                    );
                    delay
                }
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One run: from the head, every event after it, until stopped or interrupted.
    async fn record(&self, stop: &CancellationToken) -> Result<(), Interrupted> {
        let failed = |e: anyhow::Error| Interrupted::Failed(e);
        // The stream's end first: records appended meanwhile only move the head on.
        let stored = crate::read::last_sequence(&self.bus.js, spec::AUDIT.name)
            .await
            .map_err(failed)?;
        let head = load_head(&self.bus).await.map_err(failed)?;
        if stored > head.sequence {
            // Messages after the last readable record were lost (a damaged file
            // store comes back like this): appending would only ever conflict.
            return Err(failed(anyhow::anyhow!(
                "KRISBUD_AUDIT ends at message {stored} but its last readable record is {}; \
                 nothing is recorded until the chain is repaired (run `krisbud audit verify`)",
                head.sequence
            )));
        }
        let events = self
            .bus
            .js
            .get_stream(spec::EVENTS.name)
            .await
            .map_err(|e| {
                failed(anyhow::anyhow!(
                    "stream {} is missing: {e}",
                    spec::EVENTS.name
                ))
            })?
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.bus.client.new_inbox(),
                filter_subject: subject::ALL_EVENTS.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: head.event_sequence + 1,
                },
                replay_policy: consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(anyhow::anyhow!("cannot read the events: {e}")))?;
        let mut messages = events
            .messages()
            .await
            .map_err(|e| failed(anyhow::anyhow!("cannot read the events: {e}")))?;
        tracing::debug!(
            sequence = head.sequence,
            event_sequence = head.event_sequence,
            "recording from the chain's head"
        );

        let mut last = head;
        // The id of the last record, when this run appended it: the next record
        // must follow exactly that one.
        let mut last_id: Option<String> = None;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled(), if in_flight.is_empty() => return Ok(()),
                acked = async { (&mut in_flight.front_mut().expect("one in flight").ack).await }, if !in_flight.is_empty() => {
                    let sent = in_flight.pop_front().expect("one in flight");
                    check_ack(acked, &sent)?;
                    tracing::debug!(sequence = sent.sequence, event_sequence = sent.event_sequence, "event recorded");
                }
                message = messages.next(), if in_flight.len() < WINDOW && !stop.is_cancelled() => {
                    let message = message
                        .ok_or_else(|| failed(anyhow::anyhow!("the events stopped coming")))?
                        .map_err(|e| failed(anyhow::anyhow!("cannot read the events: {e}")))?;
                    let event_sequence = message
                        .info()
                        .map_err(|e| failed(anyhow::anyhow!("an event without metadata: {e}")))?
                        .stream_sequence;
                    if event_sequence <= last.event_sequence {
                        continue;
                    }
                    let span = tracing::info_span!("consume", consumer = "audit", subject = %message.subject, seq = event_sequence);
                    telemetry::follow(&span, message.headers.as_ref());
                    // Record 1 begins the chain and carries its random id.
                    let chain_id = (last.sequence == 0).then(chain::new_chain_id);
                    let record = chain::seal_with_id(
                        last.sequence + 1,
                        Utc::now(),
                        event_sequence,
                        event_value(&message.payload),
                        last.hash.clone(),
                        chain_id,
                    );
                    let id = record_id(&record);
                    let ack = self
                        .publish(&record, &id, last.sequence, last_id.as_deref())
                        .instrument(span)
                        .await?;
                    in_flight.push_back(InFlight {
                        ack,
                        sequence: record.sequence,
                        event_sequence,
                    });
                    last = Head::of(&record);
                    last_id = Some(id);
                }
            }
        }
    }

    /// Sends a record after the record `after` (and, when known, its id).
    async fn publish(
        &self,
        record: &AuditRecord,
        id: &str,
        after: u64,
        after_id: Option<&str>,
    ) -> Result<Ack, Interrupted> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_KIND, "AuditRecord");
        headers.insert(HEADER_SCHEMA_VERSION, SCHEMA_VERSION.to_string().as_str());
        headers.insert("Nats-Msg-Id", id);
        headers.insert("Nats-Expected-Last-Sequence", after.to_string().as_str());
        if let Some(after_id) = after_id {
            headers.insert("Nats-Expected-Last-Msg-Id", after_id);
        }
        telemetry::inject(&mut headers);
        let body = serde_json::to_vec(record).expect("a record serializes");
        let ack = self
            .bus
            .js
            .publish_with_headers(subject::AUDIT_LOG.to_owned(), headers, body.into())
            .await
            .map_err(|e| {
                Interrupted::Failed(anyhow::anyhow!("cannot append to the audit chain: {e}"))
            })?;
        Ok(std::future::IntoFuture::into_future(ack))
    }
}

/// The `Nats-Msg-Id` of a record: its event and its hash, so a retry of the very
/// same record is dropped as a duplicate while another instance's record of the
/// same event (recorded at another time, so with another hash) is not.
fn record_id(record: &AuditRecord) -> String {
    format!("audit-{}-{}", record.event_sequence, record.hash)
}

/// Whether the stream stored `sent` where it was meant to go.
fn check_ack(acked: Result<PublishAck, PublishError>, sent: &InFlight) -> Result<(), Interrupted> {
    match acked {
        // A duplicate is this very record, sent before (its id holds its hash).
        Ok(ack) if ack.sequence == sent.sequence => Ok(()),
        Ok(ack) => Err(Interrupted::Failed(anyhow::anyhow!(
            "record {} was stored at {}",
            sent.sequence,
            ack.sequence
        ))),
        Err(e)
            if matches!(
                e.kind(),
                PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId
            ) =>
        {
            Err(Interrupted::Lost)
        }
        Err(e) => Err(Interrupted::Failed(anyhow::anyhow!(
            "cannot append to the audit chain: {e}"
        ))),
    }
}

/// The head of the chain as stored: its last record, or genesis when empty.
pub async fn load_head(bus: &Bus) -> anyhow::Result<Head> {
    let stream = bus
        .js
        .get_stream(spec::AUDIT.name)
        .await
        .with_context(|| format!("stream {} is missing", spec::AUDIT.name))?;
    match stream
        .get_last_raw_message_by_subject(subject::AUDIT_LOG)
        .await
    {
        Ok(message) => {
            let record: AuditRecord = serde_json::from_slice(&message.payload).with_context(|| {
                format!(
                    "the last message of {} (sequence {}) is not an audit record; the chain cannot be continued",
                    spec::AUDIT.name,
                    message.sequence
                )
            })?;
            anyhow::ensure!(
                record.sequence == message.sequence,
                "the last audit record says sequence {} but is stored at {}; the chain cannot be continued",
                record.sequence,
                message.sequence
            );
            Ok(Head::of(&record))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Head::genesis()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the head of the audit chain: {e}"
        )),
    }
}

/// The event as a JSON value; a body that is not JSON is kept as a string, so the
/// chain records every event, readable or not.
pub fn event_value(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

/// 500 ms, 1 s, 2 s ... up to 30 s.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.clamp(1, 7) - 1;
    (Duration::from_millis(500) * 2u32.pow(exponent)).min(MOST_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparseable_bodies_are_kept_as_strings() {
        assert_eq!(event_value(br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(event_value(b"not json"), Value::String("not json".into()));
        assert_eq!(event_value(b"\xffx"), Value::String("\u{fffd}x".into()));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(50), Duration::from_secs(30));
    }

    #[test]
    fn a_record_id_names_its_event_and_hash() {
        let record = chain::seal(3, Utc::now(), 9, serde_json::json!({}), GENESIS_HASH.into());
        assert_eq!(record_id(&record), format!("audit-9-{}", record.hash));
    }
}
