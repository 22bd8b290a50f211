//! What the audit service's tests share: a nats-server with krisbud's streams, a
//! signing key, audit instances started on it, and typed helpers for the audit
//! commands and the streams.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use krisbud_audit::AuditPage;
use krisbud_kit::bus::Expect;
use krisbud_kit::{Common, Runtime};
use krisbud_proto::audit::{
    AuditKeys, AuditPublicKey, AuditRecord, BUNDLE_FORMAT, BundleHeader, Checkpoint,
    CheckpointPage, CheckpointQuery, CrisisReportQuery, CrisisReportReply, PublicKeyQuery,
    RecipientLookup, RecipientLookupAnswer, ReportFormat, VerifyReport,
};
use krisbud_proto::command::{AuditQuery, AuditVerify};
use krisbud_proto::event::{ChannelConfirmed, DeliveryReported, DeliveryState, RecipientOutcome};
use krisbud_proto::{
    Actor, Channel, CommandRequest, Envelope, Event, Problem, Role, spec, subject,
};
use krisbud_tests::{NatsServer, TestService, wait_until_async};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const WAIT: Duration = Duration::from_secs(30);

/// A nats-server with krisbud's streams, a client of it, and signing keys.
pub struct World {
    pub nats: Arc<NatsServer>,
    pub rt: Runtime,
    pub keys: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        krisbud_tests::init_test_log();
        let nats = Arc::new(NatsServer::start());
        let rt = krisbud_tests::service::runtime(&nats, &Common::default()).await;
        World {
            nats,
            rt,
            keys: tempfile::tempdir().unwrap(),
        }
    }

    /// The signing key file `name`, created on first use.
    pub fn key_file(&self, name: &str) -> PathBuf {
        let path = self.keys.path().join(format!("{name}.key"));
        krisbud_audit::signing::load_or_create(&path).unwrap();
        path
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.rt.bus.js
    }

    /// Appends one event; returns its sequence in KRISBUD_EVENTS.
    pub async fn append(&self, event: &Envelope) -> u64 {
        self.rt
            .bus
            .append(event, Expect::Any)
            .await
            .expect("append an event")
    }

    /// Every record on KRISBUD_AUDIT, read message by message, with its stream
    /// sequence.
    pub async fn records(&self) -> Vec<(u64, AuditRecord)> {
        let stream = self.js().get_stream(spec::AUDIT.name).await.unwrap();
        let last = stream.cached_info().state.last_sequence;
        let mut records = Vec::new();
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.unwrap();
            records.push((sequence, serde_json::from_slice(&message.payload).unwrap()));
        }
        records
    }

    /// Every message body of a stream, raw.
    pub async fn raw_messages(&self, stream: &str) -> Vec<Vec<u8>> {
        let stream = self.js().get_stream(stream).await.unwrap();
        let last = stream.cached_info().state.last_sequence;
        let mut bodies = Vec::new();
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.unwrap();
            bodies.push(message.payload.to_vec());
        }
        bodies
    }

    /// Every event sequence in KRISBUD_EVENTS.
    pub async fn event_sequences(&self) -> Vec<u64> {
        let mut stream = self.js().get_stream(spec::EVENTS.name).await.unwrap();
        (1..=stream.info().await.unwrap().state.last_sequence).collect()
    }

    pub async fn wait_for_records(&self, count: u64) -> Vec<(u64, AuditRecord)> {
        let stream = self.js().get_stream(spec::AUDIT.name).await.unwrap();
        wait_until_async(&format!("{count} audit records"), WAIT, || {
            let mut stream = stream.clone();
            async move {
                let info = stream.info().await.ok()?;
                (info.state.last_sequence >= count).then_some(())
            }
        })
        .await;
        self.records().await
    }

    /// Waits until the chain holds a record of the last event, so nothing is
    /// still to be recorded.
    pub async fn wait_until_caught_up(&self) {
        let events = self.js().get_stream(spec::EVENTS.name).await.unwrap();
        let audit = self.js().get_stream(spec::AUDIT.name).await.unwrap();
        wait_until_async("the chain to record every event", WAIT, || {
            let (mut events, audit) = (events.clone(), audit.clone());
            async move {
                let last = events.info().await.ok()?.state.last_sequence;
                let head = audit
                    .get_last_raw_message_by_subject(subject::AUDIT_LOG)
                    .await
                    .ok()?;
                let record: AuditRecord = serde_json::from_slice(&head.payload).ok()?;
                (record.event_sequence == last).then_some(())
            }
        })
        .await;
    }

    /// Waits until a checkpoint covers the chain's last record, and returns it.
    pub async fn wait_for_checkpoint_of_head(&self) -> Checkpoint {
        wait_until_async("a checkpoint of the chain's head", WAIT, || async {
            let head = self.records().await.last()?.1.sequence;
            let page = self.checkpoints().await.ok()?;
            page.checkpoints.into_iter().find(|c| c.sequence == head)
        })
        .await
    }

    pub async fn command<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        actor: Actor,
        body: Req,
    ) -> Result<Resp, Problem> {
        let request = CommandRequest {
            actor,
            idempotency_key: None,
            body,
        };
        krisbud_kit::command::request(
            &self.rt.bus.client,
            &self.rt.commands,
            subject,
            &request,
            WAIT,
        )
        .await
    }

    pub async fn query(&self, actor: Actor, query: AuditQuery) -> Result<AuditPage, Problem> {
        self.command(subject::cmd::AUDIT_QUERY, actor, query).await
    }

    pub async fn verify(&self, actor: Actor) -> Result<VerifyReport, Problem> {
        self.command(subject::cmd::AUDIT_VERIFY, actor, AuditVerify::default())
            .await
    }

    pub async fn checkpoints(&self) -> Result<CheckpointPage, Problem> {
        self.command(
            subject::cmd::AUDIT_CHECKPOINTS,
            auditor(),
            CheckpointQuery::default(),
        )
        .await
    }

    pub async fn keys(&self) -> Result<AuditKeys, Problem> {
        self.command(subject::cmd::AUDIT_KEYS, anyone(), PublicKeyQuery {})
            .await
    }

    pub async fn report(
        &self,
        crisis: &str,
        format: ReportFormat,
    ) -> Result<CrisisReportReply, Problem> {
        self.command(
            subject::cmd::AUDIT_REPORT,
            auditor(),
            CrisisReportQuery {
                crisis_id: crisis.into(),
                format,
            },
        )
        .await
    }

    pub async fn lookup(
        &self,
        address: &str,
        crisis: Option<&str>,
    ) -> Result<RecipientLookupAnswer, Problem> {
        self.command(
            subject::cmd::AUDIT_LOOKUP,
            auditor(),
            RecipientLookup {
                address: address.into(),
                crisis: crisis.map(Into::into),
            },
        )
        .await
    }

    /// Every record through the query command, page by page.
    pub async fn all_records(&self) -> Vec<AuditRecord> {
        let mut records = Vec::new();
        let mut from = Some(1);
        while let Some(from_sequence) = from {
            let page = self
                .query(
                    auditor(),
                    AuditQuery {
                        from_sequence: Some(from_sequence),
                        limit: Some(4),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            records.extend(page.records);
            from = page.next_sequence;
        }
        records
    }

    /// An export bundle as the gateway writes it, from the audit commands.
    pub async fn bundle(&self) -> Vec<u8> {
        let keys = self.keys().await.unwrap();
        let checkpoints = self.checkpoints().await.unwrap().checkpoints;
        let records = self.all_records().await;
        let header = BundleHeader {
            format: BUNDLE_FORMAT.into(),
            version: krisbud_audit::bundle::VERSION,
            exported_at: chrono::Utc::now(),
            last_sequence: records.last().map_or(0, |r| r.sequence),
        };
        let mut out = Vec::new();
        let public: Vec<AuditPublicKey> = keys.history;
        krisbud_audit::bundle::write(&mut out, header, &public, &checkpoints, &records).unwrap();
        out
    }
}

/// An audit configuration signing with `key`, with frequent checkpoints.
pub fn config(key: &Path) -> krisbud_audit::Config {
    krisbud_audit::Config {
        signing_key_file: Some(key.to_path_buf()),
        checkpoint_every: 3,
        checkpoint_interval_secs: 1,
        ..Default::default()
    }
}

/// One running audit service, with a runtime of its own as a separate process
/// would have.
pub async fn start_audit(world: &World) -> TestService {
    start_audit_with(world, config(&world.key_file("audit"))).await
}

pub async fn start_audit_with(world: &World, config: krisbud_audit::Config) -> TestService {
    TestService::start_on(world.nats.clone(), move |rt, shutdown| {
        krisbud_audit::start(config, rt, shutdown)
    })
    .await
}

pub fn person(user: &str, roles: &[Role]) -> Actor {
    Actor {
        user: user.into(),
        roles: roles.to_vec(),
        channels: Vec::new(),
    }
}

pub fn auditor() -> Actor {
    person("revisor", &[Role::Auditor])
}

pub fn anyone() -> Actor {
    person("anonymous", &[])
}

pub fn confirmed(crisis: &str, user: &str, note: &str) -> Envelope {
    Envelope::new(
        person(user, &[Role::Operator]),
        Event::ChannelConfirmed(ChannelConfirmed {
            crisis_id: crisis.into(),
            revision: 1,
            channel: Channel::Banner,
            note: Some(note.into()),
        }),
    )
}

pub fn delivered(crisis: &str, job: &str) -> Envelope {
    reported(
        crisis,
        job,
        Channel::Banner,
        vec![("banner".into(), DeliveryState::Delivered, None)],
    )
}

/// A `DeliveryReported` of `job` with one outcome per (recipient, state, reason).
pub fn reported(
    crisis: &str,
    job: &str,
    channel: Channel,
    outcomes: Vec<(String, DeliveryState, Option<&str>)>,
) -> Envelope {
    Envelope::with_id(
        format!("{job}.outcome"),
        Actor::service(&format!("channel-{channel}")),
        Event::DeliveryReported(DeliveryReported {
            crisis_id: crisis.into(),
            revision: 1,
            channel,
            job_id: job.into(),
            provider: "outbox".into(),
            outcomes: outcomes
                .into_iter()
                .map(|(recipient, state, reason)| RecipientOutcome {
                    recipient,
                    state,
                    provider_ref: None,
                    reason: reason.map(Into::into),
                    possible_duplicate: false,
                })
                .collect(),
            retries: 0,
        }),
    )
}

/// Checks the chain as stored: sequences from 1 equal to stream sequences, each
/// event recorded once in stream order, every hash and link right.
pub fn assert_linear_chain(records: &[(u64, AuditRecord)], events: &[u64]) {
    for (stream_sequence, record) in records {
        assert_eq!(
            record.sequence, *stream_sequence,
            "record sequence is its stream sequence"
        );
    }
    let recorded: Vec<u64> = records.iter().map(|(_, r)| r.event_sequence).collect();
    let mut expected = events.to_vec();
    expected.sort_unstable();
    assert_eq!(
        recorded, expected,
        "every event recorded once, in stream order"
    );
    let report = krisbud_audit::chain::verify(records.iter().map(|(_, r)| Ok(r.clone())));
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, records.len() as u64);
}
