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

/// How long one pull request waits for messages; also the longest a shutdown waits
/// for an idle pull to end.
const PULL_EXPIRY: Duration = Duration::from_secs(2);

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
    /// The spec of krisbud's durable consumer `name` as provisioning creates it
    /// (`krisbud_proto::access::durables`), handled 16 at once.
    pub fn provisioned(name: &str) -> anyhow::Result<ConsumerSpec> {
        krisbud_proto::access::durable_named(name)
            .map(ConsumerSpec::of)
            .with_context(|| format!("krisbud has no durable consumer `{name}`"))
    }

    /// The spec of durable consumer `d`, handled 16 at once.
    pub fn of(d: krisbud_proto::access::Durable) -> ConsumerSpec {
        ConsumerSpec {
            stream: d.stream,
            durable: d.name,
            filter: d.filter,
            max_ack_pending: d.max_ack_pending,
            ack_wait: Duration::from_secs(d.ack_wait_secs),
            concurrency: 16,
        }
    }

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
    Fut: Future<Output = Ack> + Send + 'static,
{
    let consumer = ensure(js, &spec).await?;
    consume(consumer, spec, shutdown, handler).await
}

/// Creates the durable consumer, then consumes in a task. When this returns, the
/// consumer exists, so nothing published from now on is missed.
pub async fn spawn<F, Fut>(
    js: &jetstream::Context,
    spec: ConsumerSpec,
    shutdown: CancellationToken,
    handler: F,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>>
where
    F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Ack> + Send + 'static,
{
    let consumer = ensure(js, &spec).await?;
    Ok(tokio::spawn(consume(consumer, spec, shutdown, handler)))
}

/// Binds to the durable pull consumer of `spec`. krisbud's service users may
/// not create consumers: provisioning made them. A user allowed to (a test on
/// an open server) creates one that is missing.
pub async fn ensure(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = js
        .get_stream_no_info(spec.stream)
        .await
        .with_context(|| format!("stream {} is missing", spec.stream))?;
    if let Ok(consumer) = stream.get_consumer(&spec.durable).await {
        return Ok(consumer);
    }
    stream
        .get_or_create_consumer(&spec.durable, pull_config(spec))
        .await
        .with_context(|| {
            format!(
                "consumer {} on {} is missing and cannot be created here; \
                 the provisioning step creates it (krisbud nats provision)",
                spec.durable, spec.stream
            )
        })
}

/// The server-side configuration of `spec`'s consumer.
pub fn pull_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subject: spec.filter.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    }
}

async fn consume<F, Fut>(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    spec: ConsumerSpec,
    shutdown: CancellationToken,
    handler: F,
) -> anyhow::Result<()>
where
    F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Ack> + Send + 'static,
{
    // Fetch-style pulls for exactly as many messages as there are free slots: a
    // message is only ever asked for when a handler can start on it at once, so none
    // waits in a local buffer without progress acks until its ack wait runs out, and
    // a graceful shutdown leaves nothing handed to this instance unanswered.
    let spec = std::sync::Arc::new(spec);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(spec.concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    while !shutdown.is_cancelled() {
        // Wait for at least one free slot (or shutdown), then ask for that many.
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // closed: never, but then nothing can run
            },
        };
        let wanted = 1 + slots.available_permits();
        drop(first);
        while running.try_join_next().is_some() {}
        let mut messages = match consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = %spec.durable, error = %e, "cannot pull; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // The pull is read to its end even after shutdown, so the server has no
        // open request left that would swallow redeliveries.
        while let Some(message) = messages.next().await {
            match message {
                // Arrived after shutdown began: hand it back, delayed past the end of
                // this pull so it is not redelivered into it.
                Ok(message) if shutdown.is_cancelled() => {
                    tracing::debug!(consumer = %spec.durable, subject = %message.subject, "handing back a message after shutdown");
                    let delay = PULL_EXPIRY + Duration::from_secs(1);
                    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                }
                Ok(message) => {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break; // closed: never, but then nothing can run
                    };
                    let (spec, handler) = (spec.clone(), handler.clone());
                    running.spawn(async move {
                        handle(&spec, message, handler).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::debug!(consumer = %spec.durable, error = %e, "pull interrupted");
                }
            }
        }
    }
    // Let the messages in hand finish; the caller bounds how long that may take.
    while running.join_next().await.is_some() {}
    tracing::debug!(consumer = %spec.durable, "consumer stopped");
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
