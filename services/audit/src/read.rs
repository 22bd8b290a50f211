//! Reading streams back in order: the chain on KRISBUD_AUDIT, the events on
//! KRISBUD_EVENTS, the checkpoints and the key rotations.
//!
//! An ordered consumer streams the messages with flow control, so thousands cost
//! one consumer rather than one request each. A message the server skips (a
//! stream that lost data on disk comes back with holes, and KRISBUD_AUDIT denies
//! deletes, so a hole is never legitimate) is asked for directly and, when the
//! server cannot produce it, handed on as `Err` with the server's answer: the
//! verifier then names that sequence as unreadable instead of calling the chain
//! complete.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use krisbud_proto::audit::{AuditRecord, Checkpoint};
use krisbud_proto::{spec, subject};

/// Longest wait for the next message while reading a stream.
const READ_IDLE: Duration = Duration::from_secs(10);

/// A message's body, or why the stream cannot produce it.
pub type Body = Result<Bytes, String>;

/// The messages of `stream` (on `filter`) with sequences `from..=to`, in order,
/// each with its stream sequence.
pub fn messages(
    js: jetstream::Context,
    stream: &'static str,
    filter: &'static str,
    from: u64,
    to: u64,
) -> impl Stream<Item = anyhow::Result<(u64, Body)>> {
    async_stream::try_stream! {
        if from <= to {
            let handle = js
                .get_stream(stream)
                .await
                .with_context(|| format!("stream {stream} is missing"))?;
            let reader = handle
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: js.client().new_inbox(),
                    filter_subject: filter.to_owned(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    replay_policy: consumer::ReplayPolicy::Instant,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot read stream {stream}"))?;
            // Nothing to wait for when nothing matches (a filter without messages).
            let mut waiting = reader.cached_info().num_pending > 0;
            let mut delivered = reader
                .messages()
                .await
                .with_context(|| format!("cannot read stream {stream}"))?;
            let mut expected = from;
            while waiting {
                let Ok(next) = tokio::time::timeout(READ_IDLE, delivered.next()).await else {
                    // Nothing more arrives: whatever is still missing is asked
                    // for below.
                    break;
                };
                let message = next
                    .with_context(|| format!("stream {stream} ended early"))?
                    .with_context(|| format!("cannot read stream {stream}"))?;
                let info = message
                    .info()
                    .map_err(|e| anyhow::anyhow!("a message of {stream} without metadata: {e}"))?;
                let (sequence, pending) = (info.stream_sequence, info.pending);
                // With a subject filter, sequences of other subjects are no holes.
                if filter == subject_of(stream) {
                    while expected < sequence.min(to + 1) {
                        yield (expected, probe(&handle, expected).await);
                        expected += 1;
                    }
                }
                if sequence > to {
                    break;
                }
                yield (sequence, Ok(message.payload.clone()));
                expected = sequence + 1;
                waiting = sequence < to && pending > 0;
            }
            if filter == subject_of(stream) {
                while expected <= to {
                    yield (expected, probe(&handle, expected).await);
                    expected += 1;
                }
            }
        }
    }
}

/// The stream's only subject (or its wildcard), for streams read whole.
fn subject_of(stream: &str) -> &'static str {
    match stream {
        s if s == spec::AUDIT.name => subject::AUDIT_LOG,
        s if s == spec::EVENTS.name => subject::ALL_EVENTS,
        s if s == spec::AUDIT_CHECKPOINTS.name => subject::AUDIT_CHECKPOINTS,
        _ => "",
    }
}

/// Asks for one message directly: the body, or what the server says about it.
async fn probe(stream: &jetstream::stream::Stream, sequence: u64) -> Body {
    match stream.get_raw_message(sequence).await {
        Ok(message) => Ok(message.payload),
        Err(e) => Err(format!(
            "the stream holds no readable message {sequence} ({e}); it was lost or damaged"
        )),
    }
}

/// The chain's records `from..=to`, each parsed, or why not.
pub fn records(
    js: jetstream::Context,
    from: u64,
    to: u64,
) -> impl Stream<Item = anyhow::Result<(u64, Result<AuditRecord, String>)>> {
    messages(js, spec::AUDIT.name, subject::AUDIT_LOG, from, to).map(|item| {
        item.map(|(sequence, body)| {
            let record = body.and_then(|bytes| {
                serde_json::from_slice::<AuditRecord>(&bytes)
                    .map_err(|e| format!("message {sequence} is not a record: {e}"))
            });
            (sequence, record)
        })
    })
}

/// The last sequence of a stream (0 when empty).
pub async fn last_sequence(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    let mut handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream} is missing"))?;
    Ok(handle
        .info()
        .await
        .with_context(|| format!("cannot read stream {stream}"))?
        .state
        .last_sequence)
}

/// Every checkpoint covering records `from` on, oldest first, at most `limit`.
/// Unreadable checkpoint messages are left out with a warning (they sign
/// nothing, and the verifier reports any gap their absence leaves).
pub async fn checkpoints(
    js: &jetstream::Context,
    from: u64,
    limit: usize,
) -> anyhow::Result<Vec<Checkpoint>> {
    let last = last_sequence(js, spec::AUDIT_CHECKPOINTS.name).await?;
    let mut found = Vec::new();
    let stream = messages(
        js.clone(),
        spec::AUDIT_CHECKPOINTS.name,
        subject::AUDIT_CHECKPOINTS,
        1,
        last,
    );
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let (sequence, body) = item?;
        match body.and_then(|b| serde_json::from_slice::<Checkpoint>(&b).map_err(|e| e.to_string()))
        {
            Ok(checkpoint) if checkpoint.sequence >= from => {
                found.push(checkpoint);
                if found.len() == limit {
                    break;
                }
            }
            Ok(_) => {}
            Err(why) => tracing::warn!(sequence, %why, "unreadable checkpoint message left out"),
        }
    }
    Ok(found)
}
