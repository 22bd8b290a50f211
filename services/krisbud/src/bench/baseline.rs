//! The raw JetStream baseline: what the same nats-server does with N bare
//! messages, each the size of one recipient's share of an SMS dispatch job.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use krisbud_proto::job::DispatchJob;

/// The stream the baseline publishes to; deleted before and after.
pub const STREAM: &str = "KRISBUD_BENCH_BASELINE";
const SUBJECT: &str = "krisbud.bench.baseline";

/// Publish acks awaited at once (async-nats allows 5,000 by default).
pub const PUBLISH_WINDOW: usize = 4_096;
/// Messages per pull request.
pub const FETCH_BATCH: usize = 1_000;
/// Unacknowledged messages the consumer may have out (the server's default, 1,000,
/// would stall a consumer that acks without waiting).
pub const MAX_ACK_PENDING: i64 = 10_000;

/// What the baseline measured.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The nats-server's version.
    pub server: String,
    pub messages: u64,
    pub message_bytes: usize,
    pub publish: Duration,
    pub consume: Duration,
}

impl Baseline {
    /// Messages per second through publish and consume one after the other.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / (self.publish + self.consume).as_secs_f64()
    }

    pub fn publish_rate(&self) -> f64 {
        self.messages as f64 / self.publish.as_secs_f64()
    }

    pub fn consume_rate(&self) -> f64 {
        self.messages as f64 / self.consume.as_secs_f64()
    }
}

/// One recipient's share of an SMS dispatch job of `batch` recipients: the
/// serialized job divided by its recipients, rounded up. The job is built as the
/// planner builds it (a 160-character GSM-7 text, `rcp:` references, Swedish
/// mobile numbers), so the per-job overhead is spread as it is in a real job.
pub fn recipient_share(batch: usize) -> anyhow::Result<usize> {
    let batch = batch.max(1);
    let recipients: Vec<serde_json::Value> = (0..batch)
        .map(|i| {
            let address = super::phone(i as u64);
            serde_json::json!({
                "reference": krisbud_kit::privacy::recipient_ref(b"bench", &address),
                "address": address,
            })
        })
        .collect();
    let job: DispatchJob = serde_json::from_value(serde_json::json!({
        "job_id": "20260101-abcdef.r1.sms.sv.0",
        "crisis_id": "20260101-abcdef",
        "revision": 1,
        "channel": "sms",
        "status": "Actual",
        "language": "sv",
        "cap": {"category": "Infra", "event": "Vattenläcka", "urgency": "Immediate",
                "severity": "Moderate", "certainty": "Observed", "response_type": "Prepare"},
        "message": {"channel": "sms", "text": "x".repeat(160), "encoding": "gsm7", "segments": 1},
        "recipients": recipients,
        "declared_at": chrono::Utc::now(),
    }))
    .context("the sample dispatch job no longer matches DispatchJob")?;
    let bytes = serde_json::to_vec(&job)?.len();
    Ok(bytes.div_ceil(batch))
}

/// Publishes `n` messages of `size` bytes to a work-queue file stream (as
/// KRISBUD_DISPATCH is) with at most [`PUBLISH_WINDOW`] acks outstanding, then
/// pulls them with one durable pull consumer in batches of [`FETCH_BATCH`],
/// acking each, until the stream is empty (every ack applied).
pub async fn run(
    nats_url: &str,
    user: Option<&(String, String)>,
    n: u64,
    size: usize,
) -> anyhow::Result<Baseline> {
    let client = connect(nats_url, user).await?;
    let js = jetstream::new(client.clone());
    let _ = js.delete_stream(STREAM).await;
    let mut stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("cannot create the baseline stream")?;
    let payload = Bytes::from(vec![b'x'; size]);

    let started = Instant::now();
    let mut acks: FuturesUnordered<<PublishAckFuture as IntoFuture>::IntoFuture> =
        FuturesUnordered::new();
    for _ in 0..n {
        if acks.len() >= PUBLISH_WINDOW
            && let Some(ack) = acks.next().await
        {
            ack.context("a baseline publish was not stored")?;
        }
        let ack = js
            .publish(SUBJECT, payload.clone())
            .await
            .context("cannot publish")?;
        acks.push(ack.into_future());
    }
    while let Some(ack) = acks.next().await {
        ack.context("a baseline publish was not stored")?;
    }
    let publish = started.elapsed();

    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        })
        .await
        .context("cannot create the baseline consumer")?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(FETCH_BATCH)
        .messages()
        .await
        .context("cannot pull")?;
    let mut received = 0u64;
    while received < n {
        let message = messages
            .next()
            .await
            .context("the baseline pull ended early")?
            .map_err(|e| anyhow::anyhow!("cannot pull: {e}"))?;
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("cannot ack: {e}"))?;
        received += 1;
    }
    drop(messages);
    // Acks are sent without waiting; the work queue is empty once all are applied.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = stream.info().await?.state.messages;
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} baseline messages still unacknowledged after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let consume = started.elapsed();
    let _ = js.delete_stream(STREAM).await;
    client.flush().await.ok();
    Ok(Baseline {
        server: client.server_info().version,
        messages: n,
        message_bytes: size,
        publish,
        consume,
    })
}

/// A connection as `user` (user, password), or anonymous.
pub async fn connect(
    nats_url: &str,
    user: Option<&(String, String)>,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    options
        .connect(nats_url)
        .await
        .with_context(|| format!("cannot connect to {nats_url}"))
}
