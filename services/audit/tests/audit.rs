//! The audit service against a real nats-server: every event gets exactly one
//! record in one linear chain (also with two instances and across restarts),
//! queries filter and page, and verification finds tampering in an export.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use krisbud_audit::{AuditPage, chain};
use krisbud_kit::bus::Expect;
use krisbud_kit::{Common, Runtime};
use krisbud_proto::audit::{AuditRecord, VerifyReport};
use krisbud_proto::command::{AuditQuery, AuditVerify};
use krisbud_proto::event::{ChannelConfirmed, DeliveryReported, DeliveryState, RecipientOutcome};
use krisbud_proto::{
    Actor, Channel, CommandRequest, Envelope, Event, Problem, Role, spec, subject,
};
use krisbud_tests::{NatsServer, TestService, wait_until_async};

const WAIT: Duration = Duration::from_secs(30);

/// A nats-server with krisbud's streams and a client of it.
struct World {
    nats: Arc<NatsServer>,
    rt: Runtime,
}

impl World {
    async fn new() -> World {
        krisbud_tests::init_test_log();
        let nats = Arc::new(NatsServer::start());
        let rt = krisbud_tests::service::runtime(&nats, &Common::default()).await;
        World { nats, rt }
    }

    fn js(&self) -> &jetstream::Context {
        &self.rt.bus.js
    }

    /// Appends one event; returns its sequence in KRISBUD_EVENTS.
    async fn append(&self, event: &Envelope) -> u64 {
        self.rt
            .bus
            .append(event, Expect::Any)
            .await
            .expect("append an event")
    }

    /// Every record on KRISBUD_AUDIT, read message by message, with its stream
    /// sequence.
    async fn records(&self) -> Vec<(u64, AuditRecord)> {
        let stream = self.js().get_stream(spec::AUDIT.name).await.unwrap();
        let last = stream.cached_info().state.last_sequence;
        let mut records = Vec::new();
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.unwrap();
            records.push((sequence, serde_json::from_slice(&message.payload).unwrap()));
        }
        records
    }

    async fn wait_for_records(&self, count: u64) -> Vec<(u64, AuditRecord)> {
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

    /// Waits until the durable `audit` consumer has acknowledged every event, so
    /// any record it would still write is written.
    async fn wait_until_caught_up(&self) {
        let events = self.js().get_stream(spec::EVENTS.name).await.unwrap();
        wait_until_async(
            "the audit consumer to acknowledge every event",
            WAIT,
            || {
                let mut events = events.clone();
                async move {
                    let last = events.info().await.ok()?.state.last_sequence;
                    let mut consumer = events
                        .get_consumer::<jetstream::consumer::pull::Config>(krisbud_audit::DURABLE)
                        .await
                        .ok()?;
                    let info = consumer.info().await.ok()?;
                    (info.ack_floor.stream_sequence == last
                        && info.num_pending == 0
                        && info.num_ack_pending == 0)
                        .then_some(())
                }
            },
        )
        .await;
    }

    async fn query(&self, actor: Actor, query: AuditQuery) -> Result<AuditPage, Problem> {
        let request = CommandRequest {
            actor,
            idempotency_key: None,
            body: query,
        };
        krisbud_kit::command::request(
            &self.rt.bus.client,
            subject::cmd::AUDIT_QUERY,
            &request,
            WAIT,
        )
        .await
    }

    async fn verify(&self, actor: Actor) -> Result<VerifyReport, Problem> {
        let request = CommandRequest {
            actor,
            idempotency_key: None,
            body: AuditVerify {},
        };
        krisbud_kit::command::request(
            &self.rt.bus.client,
            subject::cmd::AUDIT_VERIFY,
            &request,
            WAIT,
        )
        .await
    }
}

/// One running audit service, with a runtime of its own as a separate process
/// would have.
async fn start_audit(nats: &Arc<NatsServer>) -> TestService {
    TestService::start_on(nats.clone(), |rt, shutdown| {
        krisbud_audit::start(krisbud_audit::Config::default(), rt, shutdown)
    })
    .await
}

fn person(user: &str, roles: &[Role]) -> Actor {
    Actor {
        user: user.into(),
        roles: roles.to_vec(),
    }
}

fn auditor() -> Actor {
    person("revisor", &[Role::Auditor])
}

fn confirmed(crisis: &str, user: &str, note: &str) -> Envelope {
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

fn delivered(crisis: &str, job: &str) -> Envelope {
    Envelope::with_id(
        format!("{job}.outcome"),
        Actor::service("channel-banner"),
        Event::DeliveryReported(DeliveryReported {
            crisis_id: crisis.into(),
            revision: 1,
            channel: Channel::Banner,
            job_id: job.into(),
            provider: "banner".into(),
            outcomes: vec![RecipientOutcome {
                recipient: "banner".into(),
                state: DeliveryState::Delivered,
                provider_ref: None,
                reason: None,
            }],
        }),
    )
}

/// Checks the chain as stored: sequences from 1 equal to stream sequences, each
/// event recorded once in stream order, every hash and link right.
fn assert_linear_chain(records: &[(u64, AuditRecord)], events: &[u64]) {
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
    let report = chain::verify(records.iter().map(|(_, r)| Ok(r.clone())));
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, records.len() as u64);
}

#[tokio::test]
async fn every_event_gets_a_record_and_the_chain_verifies() {
    let world = World::new().await;
    let audit = start_audit(&world.nats).await;

    let first = confirmed("c1", "anna", "banner live");
    let mut events = vec![
        world.append(&first).await,
        world.append(&delivered("c1", "c1.r1.banner.sv.0")).await,
        world.append(&confirmed("c2", "bo", "klart")).await,
    ];
    // A body that is not JSON is recorded too, as a string.
    let ack = world
        .js()
        .publish(subject::crisis_events("c3"), "inte json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    events.push(ack.sequence);

    let records = world.wait_for_records(4).await;
    assert_linear_chain(&records, &events);
    assert_eq!(records[0].1.event, serde_json::to_value(&first).unwrap());
    assert_eq!(records[0].1.prev_hash, krisbud_proto::audit::GENESIS_HASH);
    assert_eq!(records[3].1.event, serde_json::json!("inte json"));

    let report = world.verify(auditor()).await.expect("verify answers");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 4);
    assert_eq!(report.head.as_deref(), Some(records[3].1.hash.as_str()));

    let refused = world
        .verify(person("tib", &[Role::DutyOfficer]))
        .await
        .unwrap_err();
    assert_eq!(refused.status, 403);
    audit.stop().await;
}

#[tokio::test]
async fn two_instances_write_one_chain_without_forks_or_duplicates() {
    let world = World::new().await;
    let first = start_audit(&world.nats).await;
    let second = start_audit(&world.nats).await;

    // Four writers at once, so events arrive while records are being written.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let bus = world.rt.bus.clone();
        writers.push(tokio::spawn(async move {
            let mut sequences = Vec::new();
            for i in 0..50 {
                let event = confirmed(&format!("c{writer}"), "anna", &format!("notering {i}"));
                sequences.push(bus.append(&event, Expect::Any).await.expect("append"));
            }
            sequences
        }));
    }
    let mut events = Vec::new();
    for writer in writers {
        events.extend(writer.await.unwrap());
    }
    assert_eq!(events.len(), 200);

    world.wait_for_records(200).await;
    world.wait_until_caught_up().await;
    let records = world.records().await;
    assert_eq!(records.len(), 200, "exactly one record per event");
    assert_linear_chain(&records, &events);
    let distinct: BTreeSet<u64> = records.iter().map(|(_, r)| r.event_sequence).collect();
    assert_eq!(distinct.len(), 200);

    let report = world.verify(person("admin", &[Role::Admin])).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 200);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_restart_continues_the_chain_without_duplicates() {
    let world = World::new().await;
    let mut events = Vec::new();

    let audit = start_audit(&world.nats).await;
    for i in 0..3 {
        events.push(
            world
                .append(&confirmed("c1", "anna", &format!("före {i}")))
                .await,
        );
    }
    world.wait_for_records(3).await;
    world.wait_until_caught_up().await;
    audit.stop().await;

    for i in 0..2 {
        events.push(
            world
                .append(&confirmed("c1", "anna", &format!("medan {i}")))
                .await,
        );
    }
    // As after a lost consumer state: every event is delivered again from the
    // start, and those already in the chain must be skipped.
    world
        .js()
        .get_stream(spec::EVENTS.name)
        .await
        .unwrap()
        .delete_consumer(krisbud_audit::DURABLE)
        .await
        .unwrap();

    let audit = start_audit(&world.nats).await;
    for i in 0..2 {
        events.push(
            world
                .append(&confirmed("c1", "anna", &format!("efter {i}")))
                .await,
        );
    }
    world.wait_for_records(7).await;
    world.wait_until_caught_up().await;
    let records = world.records().await;
    assert_eq!(records.len(), 7);
    assert_linear_chain(&records, &events);
    audit.stop().await;
}

#[tokio::test]
async fn queries_filter_by_crisis_actor_and_kind_and_page() {
    let world = World::new().await;
    let audit = start_audit(&world.nats).await;
    world.append(&confirmed("c1", "anna", "1")).await;
    world.append(&delivered("c1", "c1.r1.banner.sv.0")).await;
    world.append(&confirmed("c2", "bo", "2")).await;
    world.append(&confirmed("c1", "bo", "3")).await;
    world.append(&delivered("c2", "c2.r1.banner.sv.0")).await;
    world.append(&confirmed("c1", "anna", "4")).await;
    world.wait_for_records(6).await;

    let query = |crisis: Option<&str>, actor: Option<&str>, kind: Option<&str>| AuditQuery {
        crisis: crisis.map(Into::into),
        actor: actor.map(Into::into),
        kind: kind.map(Into::into),
        ..Default::default()
    };
    let sequences = |page: &AuditPage| page.records.iter().map(|r| r.sequence).collect::<Vec<_>>();

    let all = world
        .query(auditor(), query(None, None, None))
        .await
        .unwrap();
    assert_eq!(sequences(&all), [1, 2, 3, 4, 5, 6]);
    assert_eq!(all.next_sequence, None);
    let c1 = world
        .query(auditor(), query(Some("c1"), None, None))
        .await
        .unwrap();
    assert_eq!(sequences(&c1), [1, 2, 4, 6]);
    let bo = world
        .query(auditor(), query(None, Some("bo"), None))
        .await
        .unwrap();
    assert_eq!(sequences(&bo), [3, 4]);
    let outcomes = world
        .query(auditor(), query(None, None, Some("DeliveryReported")))
        .await
        .unwrap();
    assert_eq!(sequences(&outcomes), [2, 5]);
    let anna_c1 = world
        .query(
            auditor(),
            query(Some("c1"), Some("anna"), Some("ChannelConfirmed")),
        )
        .await
        .unwrap();
    assert_eq!(sequences(&anna_c1), [1, 6]);

    // Pages of two matching records, following `next_sequence`.
    let mut pages = Vec::new();
    let mut from = Some(1);
    while let Some(from_sequence) = from {
        let page = world
            .query(
                auditor(),
                AuditQuery {
                    crisis: Some("c1".into()),
                    from_sequence: Some(from_sequence),
                    limit: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        pages.push(sequences(&page));
        from = page.next_sequence;
    }
    assert_eq!(pages, [vec![1, 2], vec![4, 6]]);

    let beyond = world
        .query(
            auditor(),
            AuditQuery {
                from_sequence: Some(7),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(beyond.records.is_empty() && beyond.next_sequence.is_none());

    let forbidden = world
        .query(person("tib", &[Role::DutyOfficer]), query(None, None, None))
        .await
        .unwrap_err();
    assert_eq!(forbidden.status, 403);
    let zero = world
        .query(
            auditor(),
            AuditQuery {
                limit: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!((zero.status, zero.field.as_deref()), (422, Some("limit")));
    audit.stop().await;
}

#[tokio::test]
async fn verifying_an_export_finds_changed_deleted_and_swapped_records() {
    let world = World::new().await;
    let audit = start_audit(&world.nats).await;
    for i in 1..=6 {
        world
            .append(&confirmed("c1", "anna", &format!("anteckning {i}")))
            .await;
    }
    world.wait_for_records(6).await;

    // Export through the query command, page by page, as JSON lines.
    let mut lines = Vec::new();
    let mut from = Some(1);
    while let Some(from_sequence) = from {
        let page = world
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
        lines.extend(
            page.records
                .iter()
                .map(|r| serde_json::to_string(r).unwrap()),
        );
        from = page.next_sequence;
    }
    audit.stop().await;
    assert_eq!(lines.len(), 6);

    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, lines: &[String]| -> VerifyReport {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        chain::verify_file(&path).expect("the export can be read")
    };

    let untouched = check("untouched.jsonl", &lines);
    assert!(untouched.ok, "{untouched:?}");
    assert_eq!(untouched.checked, 6);

    let mut flipped = lines.clone();
    assert!(flipped[2].contains("anteckning 3"));
    flipped[2] = flipped[2].replace("anteckning 3", "anteckninG 3");
    let report = check("flipped.jsonl", &flipped);
    let bad = report.first_bad.expect("a changed payload is found");
    assert_eq!(
        (bad.sequence, bad.problem.as_str()),
        (3, chain::HASH_MISMATCH)
    );
    assert!(!report.ok);

    let mut deleted = lines.clone();
    deleted.remove(3);
    let bad = check("deleted.jsonl", &deleted)
        .first_bad
        .expect("a deleted line is found");
    assert_eq!((bad.sequence, bad.problem.as_str()), (4, chain::GAP));

    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let bad = check("swapped.jsonl", &swapped)
        .first_bad
        .expect("swapped lines are found");
    assert_eq!((bad.sequence, bad.problem.as_str()), (2, chain::GAP));

    let mut garbled = lines.clone();
    garbled[4] = "{\"sequence\": 5".into();
    let bad = check("garbled.jsonl", &garbled)
        .first_bad
        .expect("a broken line is found");
    assert_eq!((bad.sequence, bad.problem.as_str()), (5, chain::UNREADABLE));
    assert!(bad.detail.contains("line 5"), "{}", bad.detail);

    assert!(chain::verify_file(&dir.path().join("missing.jsonl")).is_err());
}
