//! The one consumer loop every service uses, applying DESIGN.md's ack rules:
//! ack after the effect is durable, Nak with delay on a transient failure, Term a
//! message that can never succeed, and send Progress while long work runs.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::telemetry;

/// What the handler decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The effect is durable: acknowledge.
    Done,
    /// A transient failure: deliver again after the delay.
    Retry(Duration),
    /// The message can never succeed: terminate it. The handler has recorded why.
    Reject(String),
}

/// One message handed to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
    /// Sequence of the message in its stream.
    pub stream_sequence: u64,
    /// How many times it has been delivered, 1 the first time.
    pub delivered: i64,
}

impl Delivery {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    }
}

/// A durable pull consumer and how to run it.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: &'static str,
    /// Durable name, shared by every instance of the service.
    pub durable: String,
    pub filter: String,
    /// Messages handed out but not yet acknowledged, across all instances; 1 keeps
    /// strict order even with several instances.
    pub max_ack_pending: i64,
    pub ack_wait: Duration,
    /// Messages handled at once by this instance.
    pub concurrency: usize,
}

impl ConsumerSpec {
    /// A spec with krisbud's defaults: 30 s ack wait, 1,000 pending, 16 at once.
    pub fn new(stream: &'static str, durable: &str, filter: &str) -> ConsumerSpec {
        ConsumerSpec {
            stream,
            durable: durable.to_owned(),
            filter: filter.to_owned(),
            max_ack_pending: 1_000,
            ack_wait: Duration::from_secs(30),
            concurrency: 16,
        }
    }
}

/// Consumes until `shutdown` is cancelled, then lets the messages in hand finish.
pub async fn run<F, Fut>(
    js: &jetstream::Context,
    spec: ConsumerSpec,
    shutdown: CancellationToken,
    handler: F,
) -> anyhow::Result<()>
where
    F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Ack> + Send,
{
    let stream = js
        .get_stream(spec.stream)
        .await
        .with_context(|| format!("stream {} is missing", spec.stream))?;
    let consumer = stream
        .get_or_create_consumer(
            &spec.durable,
            pull::Config {
                durable_name: Some(spec.durable.clone()),
                filter_subject: spec.filter.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                max_ack_pending: spec.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("cannot create consumer {}", spec.durable))?;
    while !shutdown.is_cancelled() {
        let messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = %spec.durable, error = %e, "cannot pull; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        messages
            .take_until(shutdown.clone().cancelled_owned())
            .for_each_concurrent(spec.concurrency, |message| {
                let handler = handler.clone();
                let spec = &spec;
                async move {
                    match message {
                        Ok(message) => handle(spec, message, handler).await,
                        Err(e) => {
                            tracing::warn!(consumer = %spec.durable, error = %e, "pull interrupted");
                        }
                    }
                }
            })
            .await;
    }
    Ok(())
}

async fn handle<F, Fut>(spec: &ConsumerSpec, message: jetstream::Message, handler: F)
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = Ack>,
{
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(_) => (0, 1),
    };
    let span = tracing::info_span!(
        "consume",
        consumer = %spec.durable,
        subject = %message.subject,
        seq = stream_sequence,
        delivered,
    );
    telemetry::follow(&span, message.headers.as_ref());
    let delivery = Delivery {
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        headers: message.headers.clone(),
        stream_sequence,
        delivered,
    };
    let work = handler(delivery).instrument(span.clone());
    tokio::pin!(work);
    let mut progress = tokio::time::interval(spec.ack_wait / 3);
    progress.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = progress.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(parent: &span, error = %e, "cannot send progress");
                }
            }
        }
    };
    let result = match &outcome {
        Ack::Done => message.double_ack().await,
        Ack::Retry(delay) => message.ack_with(AckKind::Nak(Some(*delay))).await,
        Ack::Reject(reason) => {
            tracing::warn!(parent: &span, %reason, "message rejected for good");
            message.ack_with(AckKind::Term).await
        }
    };
    if let Err(e) = result {
        // The message will be delivered again after the ack wait; handlers are
        // idempotent, so this costs time, not correctness.
        tracing::warn!(parent: &span, error = %e, ?outcome, "cannot acknowledge");
    }
}
