//! The recorder: turns every event of KRISBUD_EVENTS, in stream order, into the
//! next record of the chain on KRISBUD_AUDIT.
//!
//! Several instances may run. The consumer hands out one event at a time across
//! all of them (`max_ack_pending = 1`), and every record is published with
//! `Nats-Expected-Last-Sequence` set to the head it links to, so a writer with a
//! stale head gets a conflict, reloads the head from the stream and tries again:
//! the chain can neither fork nor record an event twice.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use chrono::Utc;
use krisbud_kit::Bus;
use krisbud_kit::bus::{AppendError, Expect};
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_proto::audit::{AuditRecord, GENESIS_HASH};
use krisbud_proto::{HEADER_KIND, spec, subject};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::chain;

/// Conflicts tolerated for one event before giving it back for a later retry.
const MAX_CONFLICTS: usize = 20;

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

/// Records events; the consumer calls [`Recorder::handle`] one event at a time.
pub struct Recorder {
    bus: Bus,
    /// The head as this instance last saw it; `None` means "read it from the
    /// stream before use". Another instance may have moved on since.
    head: Mutex<Option<Head>>,
}

impl Recorder {
    /// A recorder appending with `bus`; the head is read on first use.
    pub fn new(bus: Bus) -> Recorder {
        Recorder {
            bus,
            head: Mutex::new(None),
        }
    }

    /// Reads the head from the stream now, so a broken stream shows at start-up.
    pub async fn load(&self) -> anyhow::Result<Head> {
        let head = load_head(&self.bus).await?;
        *self.head.lock().await = Some(head.clone());
        Ok(head)
    }

    /// Records one event, or skips it when the chain already holds it.
    pub async fn handle(&self, delivery: Delivery) -> Ack {
        let event_sequence = delivery.stream_sequence;
        if event_sequence == 0 {
            // The kit could not read the message's metadata; without the event's
            // sequence there is nothing to link, and a redelivery may carry it.
            return retry(&delivery, "the event's stream sequence is unknown");
        }
        let event = event_value(&delivery.payload);
        let mut cached = self.head.lock().await;
        if delivery.delivered > 1 {
            // Delivered before: this or another instance may have recorded it
            // already, so trust only the stream.
            *cached = None;
        }
        for _ in 0..MAX_CONFLICTS {
            let head = match cached.clone() {
                Some(head) => head,
                None => match load_head(&self.bus).await {
                    Ok(head) => head,
                    Err(e) => return retry(&delivery, &format!("{e:#}")),
                },
            };
            if event_sequence <= head.event_sequence {
                tracing::debug!(event_sequence, "event already recorded");
                *cached = Some(head);
                return Ack::Done;
            }
            let record = chain::seal(
                head.sequence + 1,
                Utc::now(),
                event_sequence,
                event.clone(),
                head.hash.clone(),
            );
            match self.append(&record, head.sequence).await {
                Ok(true) => {
                    tracing::debug!(sequence = record.sequence, event_sequence, "event recorded");
                    *cached = Some(Head::of(&record));
                    return Ack::Done;
                }
                Ok(false) | Err(AppendError::Conflict { .. }) => {
                    tracing::debug!(event_sequence, "the chain moved on; reloading its head");
                    *cached = None;
                }
                Err(AppendError::Unavailable(e)) => {
                    *cached = None;
                    return retry(&delivery, &e);
                }
            }
        }
        retry(&delivery, "the chain kept changing under this instance")
    }

    /// Publishes `record` after `expected_last`; true when the stream now holds
    /// exactly this record at its sequence.
    async fn append(&self, record: &AuditRecord, expected_last: u64) -> Result<bool, AppendError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_KIND, "AuditRecord");
        let body = serde_json::to_vec(record).expect("a record serializes");
        let stored = self
            .bus
            .publish(
                subject::AUDIT_LOG.to_owned(),
                &format!("audit-{}", record.event_sequence),
                headers,
                body,
                Expect::LastSequence(expected_last),
            )
            .await?;
        // JetStream checks `Nats-Msg-Id` before the expected sequence, so a
        // duplicate (the event was recorded already, by a writer whose head we
        // did not know) is acknowledged with the earlier record's sequence and
        // no conflict. `Bus::publish` does not say "duplicate", so compare with
        // what is stored before taking our record as the head.
        if stored != record.sequence {
            return Ok(false);
        }
        let stream = self
            .bus
            .js
            .get_stream(spec::AUDIT.name)
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        let message = stream
            .get_raw_message(stored)
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        let ours = serde_json::from_slice::<AuditRecord>(&message.payload)
            .is_ok_and(|r| r.hash == record.hash);
        Ok(ours)
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

fn retry(delivery: &Delivery, error: &str) -> Ack {
    let delay = backoff(delivery.delivered);
    tracing::warn!(
        event_sequence = delivery.stream_sequence,
        delivered = delivery.delivered,
        ?delay,
        %error,
        "event not recorded yet; retrying"
    );
    Ack::Retry(delay)
}

/// 500 ms, 1 s, 2 s ... up to 30 s: the chain waits for this event, so retry soon.
fn backoff(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    (Duration::from_millis(500) * 2u32.pow(exponent)).min(Duration::from_secs(30))
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
}
