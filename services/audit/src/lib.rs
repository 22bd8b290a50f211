//! The audit service of krisbud: records every event of KRISBUD_EVENTS, in stream
//! order, as one link of a hash chain on KRISBUD_AUDIT; signs checkpoints of the
//! chain with Ed25519; and answers audit queries, verifications (with
//! completeness against KRISBUD_EVENTS), crisis reports and recipient lookups
//! (auditors only; an admin only when also an auditor).
//!
//! [`chain`], [`signing`] and [`bundle`] hold the encoding, the signatures and the
//! export bundle as pure functions, so an export can be checked offline without
//! trusting any running part of krisbud.

pub mod bundle;
pub mod chain;
mod checkpoint;
mod keys;
pub mod lookup;
mod query;
pub use query::LOOKUPS_PER_MINUTE;
mod read;
mod recorder;
pub mod report;
pub mod signing;
mod verify;
pub mod witness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use krisbud_kit::shutdown::GRACE;
use krisbud_kit::{CancellationToken, Runtime, Started, command};
use krisbud_proto::{Problem, subject};
use serde::Deserialize;

pub use query::AuditPage;
pub use verify::{EVENT_DIFFERS, NO_EVENT};

/// The `[audit]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most records one query returns; also the page size when a query names none.
    pub query_limit: usize,
    /// The Ed25519 key checkpoints are signed with: a file holding the 32-byte
    /// seed as 64 hex digits (`krisbud audit keygen` writes one). Required;
    /// `krisbud up` creates one in its data directory when none is configured.
    pub signing_key_file: Option<PathBuf>,
    /// The key signing before `signing_key_file`, when the key is being changed:
    /// it endorses the new key in the chain, so trust in the old key carries over.
    pub previous_signing_key_file: Option<PathBuf>,
    /// Sign a checkpoint after this many new records.
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often (seconds) while records are added.
    pub checkpoint_interval_secs: u64,
    /// Files outside the NATS store (another volume) that every signed
    /// checkpoint is appended to, one JSON line each: `krisbud audit verify
    /// --since <file>` checks the chain against them.
    pub witness_files: Vec<PathBuf>,
    /// HTTP endpoints every signed checkpoint is POSTed to as JSON.
    pub witness_urls: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            query_limit: 1000,
            signing_key_file: None,
            previous_signing_key_file: None,
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
            witness_files: Vec::new(),
            witness_urls: Vec::new(),
        }
    }
}

/// Starts the recorder, the checkpointer and the audit commands. Returns once the
/// chain's head is read, the signing key is registered in the chain and every
/// command answers.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    anyhow::ensure!(
        config.query_limit > 0,
        "bad configuration: key `audit.query_limit` must be at least 1"
    );
    anyhow::ensure!(
        config.checkpoint_every > 0 && config.checkpoint_interval_secs > 0,
        "bad configuration: keys `audit.checkpoint_every` and `audit.checkpoint_interval_secs` must be at least 1"
    );
    let key_file = config.signing_key_file.as_deref().context(
        "bad configuration: key `audit.signing_key_file` is required by the audit service \
         (create a key with `krisbud audit keygen --out <file>`)",
    )?;
    let key = signing::read_key_file(key_file)?;
    let previous = config
        .previous_signing_key_file
        .as_deref()
        .map(signing::read_key_file)
        .transpose()?;
    let ready = rt.health.component("audit");
    // Everything started here stops with `stop`; should start-up fail half-way,
    // the guard stops what already runs.
    let stop = shutdown.child_token();
    let stop_on_error = stop.clone().drop_guard();

    let recorder = recorder::Recorder::new(rt.bus.clone());
    let head = recorder.load().await?;
    tracing::info!(
        sequence = head.sequence,
        event_sequence = head.event_sequence,
        "audit chain head"
    );
    keys::register(&rt.bus, &key, previous.as_ref()).await?;

    // The chain is the recorder's cursor: whatever the events stream holds after
    // the head's event is recorded, including events appended before `start`.
    let recording = tokio::spawn(recorder.run(stop.clone()));

    let key = Arc::new(key);
    let checkpointing = tokio::spawn(
        checkpoint::Checkpointer {
            bus: rt.bus.clone(),
            key: (*key).clone(),
            every: config.checkpoint_every,
            interval: Duration::from_secs(config.checkpoint_interval_secs),
            witnesses: witness::Witnesses::new(witness::Witness::configured(
                &config.witness_files,
                &config.witness_urls,
            )?),
        }
        .run(stop.clone()),
    );

    let reader = query::Reader::new(
        rt.bus.clone(),
        config.query_limit,
        key,
        rt.recipient_key.expose().as_bytes().to_vec(),
    );
    let guard = command::Guard::new("audit", &rt)?;
    macro_rules! serve {
        ($subject:expr, $method:ident) => {{
            let reader = reader.clone();
            command::spawn(guard.clone(), $subject, stop.clone(), move |request| {
                let reader = reader.clone();
                async move { reader.$method(request).await }
            })
            .await?
        }};
    }
    let commands = vec![
        serve!(subject::cmd::AUDIT_QUERY, query),
        serve!(subject::cmd::AUDIT_VERIFY, verify),
        serve!(subject::cmd::AUDIT_CHECKPOINTS, checkpoints),
        serve!(subject::cmd::AUDIT_KEYS, keys),
        serve!(subject::cmd::AUDIT_REPORT, report),
        serve!(subject::cmd::AUDIT_LOOKUP, lookup),
        serve!(subject::cmd::AUDIT_SESSION, session),
    ];
    // `command::spawn` returns once the server knows each subscription.
    ready.set(true);
    let stop = stop_on_error.disarm();

    let task = tokio::spawn(async move {
        stop.cancelled().await;
        ready.set(false);
        let mut tasks = vec![("recorder", recording), ("checkpointer", checkpointing)];
        tasks.extend(commands.into_iter().map(|c| ("command", c)));
        let aborts: Vec<_> = tasks.iter().map(|(_, t)| t.abort_handle()).collect();
        let drained = tokio::time::timeout(
            GRACE,
            futures::future::join_all(
                tasks
                    .into_iter()
                    .map(|(name, task)| async move { (name, task.await) }),
            ),
        )
        .await;
        let Ok(results) = drained else {
            tracing::warn!(grace = ?GRACE, "audit did not stop within the grace period; aborting");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            return Ok(());
        };
        for (name, result) in results {
            result.with_context(|| format!("the audit {name} panicked"))??;
        }
        Ok(())
    });
    Ok(Started { addr: None, task })
}

/// Verifies the chain as stored now: records, checkpoints and completeness
/// against KRISBUD_EVENTS (what `krisbud.cmd.audit.verify` answers).
pub async fn verify_live(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<krisbud_proto::audit::VerifyReport> {
    Box::pin(verify::live(js)).await
}

/// A problem for a chain that cannot be read now; the cause goes to the log.
pub(crate) fn unavailable(e: &anyhow::Error) -> Problem {
    tracing::error!(error = format!("{e:#}"), "cannot read the audit chain");
    Problem::unavailable("granskningsloggen kan inte läsas just nu; försök igen")
}
