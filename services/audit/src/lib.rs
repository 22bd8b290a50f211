//! The audit service of krisbud: records every event of KRISBUD_EVENTS, in stream
//! order, as one link of a hash chain on KRISBUD_AUDIT, and answers audit queries
//! and verifications (auditors and admins only).
//!
//! [`chain`] holds the encoding and verification as pure functions, so an export
//! can be checked offline without trusting any running part of krisbud.

pub mod chain;
mod query;
mod recorder;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use krisbud_kit::consumer::{self, ConsumerSpec};
use krisbud_kit::shutdown::GRACE;
use krisbud_kit::{CancellationToken, Runtime, Started, command};
use krisbud_proto::{spec, subject};
use serde::Deserialize;

pub use query::AuditPage;

/// Durable consumer name shared by every audit instance.
pub const DURABLE: &str = "audit";

/// How long start-up waits until the command subscriptions answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[audit]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most records one query returns; also the page size when a query names none.
    pub query_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { query_limit: 1000 }
    }
}

/// Starts the recorder and the query and verify commands. Returns once the chain's
/// head is read, the durable consumer exists and both commands answer.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    anyhow::ensure!(
        config.query_limit > 0,
        "audit.query_limit must be at least 1"
    );
    let ready = rt.health.component("audit");
    // Everything started here stops with `stop`; should start-up fail half-way,
    // the guard stops what already runs.
    let stop = shutdown.child_token();
    let stop_on_error = stop.clone().drop_guard();

    let recorder = Arc::new(recorder::Recorder::new(rt.bus.clone()));
    let head = recorder.load().await?;
    tracing::info!(
        sequence = head.sequence,
        event_sequence = head.event_sequence,
        "audit chain head"
    );

    // One event at a time across every instance keeps the chain in stream order.
    let consumer_spec = ConsumerSpec {
        max_ack_pending: 1,
        concurrency: 1,
        ..ConsumerSpec::new(spec::EVENTS.name, DURABLE, subject::ALL_EVENTS)
    };
    // The durable consumer exists once `spawn` returns, so events appended after
    // `start` returns are surely recorded.
    let recording = consumer::spawn(&rt.bus.js, consumer_spec, stop.clone(), move |delivery| {
        let recorder = recorder.clone();
        async move { recorder.handle(delivery).await }
    })
    .await?;

    let reader = query::Reader::new(rt.bus.js.clone(), config.query_limit);
    let querying = {
        let reader = reader.clone();
        tokio::spawn(command::serve(
            rt.bus.client.clone(),
            subject::cmd::AUDIT_QUERY,
            stop.clone(),
            move |request| {
                let reader = reader.clone();
                async move { reader.query(request).await }
            },
        ))
    };
    let verifying = tokio::spawn(command::serve(
        rt.bus.client.clone(),
        subject::cmd::AUDIT_VERIFY,
        stop.clone(),
        move |request| {
            let reader = reader.clone();
            async move { reader.verify(request).await }
        },
    ));
    for subject in [subject::cmd::AUDIT_QUERY, subject::cmd::AUDIT_VERIFY] {
        wait_answering(&rt.bus.client, subject).await?;
    }
    ready.set(true);
    let stop = stop_on_error.disarm();

    let task = tokio::spawn(async move {
        stop.cancelled().await;
        ready.set(false);
        let aborts = [
            recording.abort_handle(),
            querying.abort_handle(),
            verifying.abort_handle(),
        ];
        let drained = tokio::time::timeout(GRACE, async {
            (recording.await, querying.await, verifying.await)
        })
        .await;
        let Ok((recorded, queried, verified)) = drained else {
            tracing::warn!(grace = ?GRACE, "audit did not stop within the grace period; aborting");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            return Ok(());
        };
        recorded.context("the audit recorder panicked")??;
        queried.context("the audit query command panicked")??;
        verified.context("the audit verify command panicked")??;
        Ok(())
    });
    Ok(Started { addr: None, task })
}

/// Waits until `subject` gets an answer. `command::serve` subscribes inside its
/// own task and does not say when it has; a request with an empty body is
/// answered with a 400 problem and proves the subscription is live.
async fn wait_answering(client: &async_nats::Client, subject: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.to_owned(), "{}".into()),
        )
        .await;
        if let Ok(Ok(_)) = answer {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{subject} got no answer within {ANSWER_TIMEOUT:?} of start-up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
