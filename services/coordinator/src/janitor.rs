//! The dispatch work queue's janitor: it removes jobs a channel has acknowledged
//! but the stream still holds.
//!
//! In a work-queue stream an acknowledged job is removed. nats-server (2.9 and
//! later) keeps the consumer's acknowledgements and the stream's removals in two
//! files, synced apart; killed at the wrong moment (SIGKILL, a power cut), it comes
//! back with a consumer whose acknowledgement floor is past jobs the stream still
//! holds. The consumer never delivers them again, so they would stay for good, with
//! their recipients' phone numbers and addresses in clear.
//!
//! A job at or below its channel's acknowledgement floor was acknowledged: the
//! channel's handler finished it (done or refused for good; a retry does not move
//! the floor). The janitor removes such a job when it has seen it stranded in two
//! sweeps in a row, so a job being removed at that moment in the ordinary way is
//! never counted. It reads sequence numbers only; what the job holds is not logged.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use krisbud_kit::CancellationToken;
use krisbud_proto::{access, spec};

/// How often the queue is looked at: a stranded job is gone within two of these.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Sweeps the dispatch queue of `js` every [`SWEEP_INTERVAL`] until `shutdown`.
pub async fn run(js: jetstream::Context, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match sweep(&js, &mut seen).await {
            Ok(0) => {}
            Ok(removed) => tracing::warn!(
                removed,
                "removed dispatch jobs left in the work queue after their channel acknowledged them"
            ),
            // The bus may be down; the next sweep tries again.
            Err(e) => tracing::debug!(error = format!("{e:#}"), "cannot sweep the dispatch queue"),
        }
    }
}

/// One sweep: removes the jobs found stranded now that were already stranded in
/// the sweep before (`seen`, which then holds this sweep's finds). Returns how many
/// it removed.
pub async fn sweep(js: &jetstream::Context, seen: &mut HashSet<u64>) -> anyhow::Result<usize> {
    let mut stream = js
        .get_stream(spec::DISPATCH.name)
        .await
        .context("dispatch stream")?;
    let state = stream
        .info()
        .await
        .context("dispatch stream info")?
        .state
        .clone();
    if state.messages == 0 {
        seen.clear();
        return Ok(0);
    }
    let mut stranded = HashSet::new();
    for durable in access::durables()
        .into_iter()
        .filter(|d| d.stream == spec::DISPATCH.name)
    {
        let info = stream
            .consumer_info(&durable.name)
            .await
            .with_context(|| format!("consumer {}", durable.name))?;
        let floor = info.ack_floor.stream_sequence;
        let mut next = state.first_sequence;
        while next <= floor {
            let found = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(durable.filter.clone())
                .send()
                .await;
            let message = match found {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(e).context("reading the dispatch queue"),
            };
            if message.sequence > floor {
                break;
            }
            stranded.insert(message.sequence);
            next = message.sequence + 1;
        }
    }
    let mut removed = 0;
    for sequence in stranded.intersection(seen) {
        if stream
            .delete_message(*sequence)
            .await
            .with_context(|| format!("removing dispatch job {sequence}"))?
        {
            removed += 1;
        }
    }
    *seen = stranded;
    Ok(removed)
}
