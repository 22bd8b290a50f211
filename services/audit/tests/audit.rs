//! The audit service against a real nats-server: every event gets exactly one
//! record in one linear chain (also with two instances and across restarts),
//! verification checks completeness against KRISBUD_EVENTS, queries filter and
//! page, and the crisis report and the recipient lookup answer from the chain.

mod common;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use common::*;
use krisbud_audit::chain;
use krisbud_kit::bus::Expect;
use krisbud_proto::audit::{AddressKind, GENESIS_HASH, ReportFormat};
use krisbud_proto::command::AuditQuery;
use krisbud_proto::event::DeliveryState;
use krisbud_proto::{Channel, Role, spec, subject};

#[tokio::test]
async fn every_event_gets_a_record_and_the_chain_verifies() {
    let world = World::new().await;
    let audit = start_audit(&world).await;

    let first = confirmed("c1", "anna", "banner live");
    world.append(&first).await;
    world.append(&delivered("c1", "c1.r1.banner.sv.0")).await;
    world.append(&confirmed("c2", "bo", "klart")).await;
    // A body that is not JSON is recorded too, as a string.
    world
        .js()
        .publish(subject::crisis_events("c3"), "inte json".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Record 1 is the signing key's registration, made at start-up.
    let records = world.wait_for_records(5).await;
    assert_linear_chain(&records, &world.event_sequences().await);
    assert_eq!(records[0].1.event["kind"], "AuditKeyRotated");
    assert_eq!(records[0].1.prev_hash, GENESIS_HASH);
    assert_eq!(records[1].1.event, serde_json::to_value(&first).unwrap());
    assert_eq!(records[4].1.event, serde_json::json!("inte json"));

    world.wait_until_caught_up().await;
    let report = world.verify(auditor()).await.expect("verify answers");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 5);
    assert_eq!(report.head.as_deref(), Some(records[4].1.hash.as_str()));
    let completeness = report.completeness.expect("completeness is checked");
    assert!(completeness.ok, "{completeness:?}");
    assert_eq!((completeness.events, completeness.pending), (5, 0));

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
    let first = start_audit(&world).await;
    let second = start_audit(&world).await;

    // Four writers at once, so events arrive while records are being written.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let bus = world.rt.bus.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                let event = confirmed(&format!("c{writer}"), "anna", &format!("notering {i}"));
                bus.append(&event, Expect::Any).await.expect("append");
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let events = world.event_sequences().await;
    // 200 confirmations and one key registration: both instances sign with the
    // same key, which is registered once.
    assert_eq!(events.len(), 201);

    world.wait_for_records(201).await;
    world.wait_until_caught_up().await;
    let records = world.records().await;
    assert_eq!(records.len(), 201, "exactly one record per event");
    assert_linear_chain(&records, &events);
    let distinct: BTreeSet<u64> = records.iter().map(|(_, r)| r.event_sequence).collect();
    assert_eq!(distinct.len(), 201);

    let report = world
        .verify(person("revisor", &[Role::Auditor]))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 201);
    assert!(report.completeness.unwrap().ok);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_restart_continues_the_chain_without_duplicates() {
    let world = World::new().await;

    let audit = start_audit(&world).await;
    for i in 0..3 {
        world
            .append(&confirmed("c1", "anna", &format!("före {i}")))
            .await;
    }
    world.wait_for_records(4).await;
    world.wait_until_caught_up().await;
    audit.stop().await;

    for i in 0..2 {
        world
            .append(&confirmed("c1", "anna", &format!("medan {i}")))
            .await;
    }
    let audit = start_audit(&world).await;
    for i in 0..2 {
        world
            .append(&confirmed("c1", "anna", &format!("efter {i}")))
            .await;
    }
    world.wait_for_records(8).await;
    world.wait_until_caught_up().await;
    let records = world.records().await;
    assert_eq!(records.len(), 8);
    assert_linear_chain(&records, &world.event_sequences().await);
    audit.stop().await;
}

#[tokio::test]
async fn completeness_finds_forged_skipped_and_changed_records() {
    let world = World::new().await;
    let audit = start_audit(&world).await;
    for i in 0..3 {
        world
            .append(&confirmed("c1", "anna", &format!("{i}")))
            .await;
    }
    world.wait_for_records(4).await;
    world.wait_until_caught_up().await;
    audit.stop().await;

    // With the recorder stopped, events wait: the chain is complete, two pending.
    let one = world.append(&confirmed("c1", "anna", "väntar 1")).await;
    let two = world.append(&confirmed("c1", "anna", "väntar 2")).await;
    let report = verify_directly(&world).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.completeness.unwrap().pending, 2);

    // Someone with write access to the stream appends a well-chained record that
    // skips event `one` and records `two`: the chain alone is fine, completeness
    // is not.
    let records = world.records().await;
    let head = &records.last().unwrap().1;
    let forged = chain::seal(
        head.sequence + 1,
        Utc::now(),
        two,
        serde_json::to_value(confirmed("c1", "anna", "väntar 2")).unwrap(),
        head.hash.clone(),
    );
    forge(&world, &forged).await;
    let report = verify_directly(&world).await;
    assert!(!report.ok);
    let bad = report.first_bad.clone().unwrap();
    assert_eq!(
        (bad.sequence, bad.problem.as_str()),
        (forged.sequence, chain::MISSING_RECORD)
    );
    let completeness = report.completeness.unwrap();
    assert_eq!(completeness.missing, [one]);
    // Its event exists but differs from what the forged record holds.
    assert_eq!(completeness.orphans.len(), 1);
    assert_eq!(
        completeness.orphans[0].problem,
        krisbud_audit::EVENT_DIFFERS
    );

    // A record of an event that never was.
    let ghost = chain::seal(
        forged.sequence + 1,
        Utc::now(),
        two + 100,
        serde_json::json!({"kind": "CrisisDeclared"}),
        forged.hash.clone(),
    );
    forge(&world, &ghost).await;
    let report = verify_directly(&world).await;
    let completeness = report.completeness.unwrap();
    assert!(
        completeness
            .orphans
            .iter()
            .any(|o| o.sequence == ghost.sequence && o.problem == krisbud_audit::NO_EVENT)
    );
}

/// Verification of the live chain without an audit instance, so nothing is
/// recorded meanwhile.
async fn verify_directly(world: &World) -> krisbud_proto::audit::VerifyReport {
    krisbud_audit::verify_live(world.js())
        .await
        .expect("the streams can be read")
}

/// Appends a record to the chain directly, as an intruder would.
async fn forge(world: &World, record: &krisbud_proto::audit::AuditRecord) {
    let ack = world
        .js()
        .publish(
            subject::AUDIT_LOG.to_owned(),
            serde_json::to_vec(record).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, record.sequence);
}

#[tokio::test]
async fn queries_filter_by_crisis_actor_kind_and_time_and_page() {
    let world = World::new().await;
    let audit = start_audit(&world).await;
    world.append(&confirmed("c1", "anna", "1")).await;
    world.append(&delivered("c1", "c1.r1.banner.sv.0")).await;
    world.append(&confirmed("c2", "bo", "2")).await;
    let mut late = confirmed("c1", "bo", "3");
    late.occurred_at = "2030-01-01T12:00:00Z".parse().unwrap();
    world.append(&late).await;
    world.append(&delivered("c2", "c2.r1.banner.sv.0")).await;
    world.append(&confirmed("c1", "anna", "4")).await;
    // Record 1 registers the key; the events above are records 2 to 7.
    world.wait_for_records(7).await;

    let query = |crisis: Option<&str>, actor: Option<&str>, kind: Option<&str>| AuditQuery {
        crisis: crisis.map(Into::into),
        actor: actor.map(Into::into),
        kind: kind.map(Into::into),
        ..Default::default()
    };
    let sequences = |page: &krisbud_audit::AuditPage| {
        page.records.iter().map(|r| r.sequence).collect::<Vec<_>>()
    };

    let all = world
        .query(auditor(), query(None, None, None))
        .await
        .unwrap();
    assert_eq!(sequences(&all), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(all.next_sequence, None);
    let c1 = world
        .query(auditor(), query(Some("c1"), None, None))
        .await
        .unwrap();
    assert_eq!(sequences(&c1), [2, 3, 5, 7]);
    let bo = world
        .query(auditor(), query(None, Some("bo"), None))
        .await
        .unwrap();
    assert_eq!(sequences(&bo), [4, 5]);
    let outcomes = world
        .query(auditor(), query(None, None, Some("DeliveryReported")))
        .await
        .unwrap();
    assert_eq!(sequences(&outcomes), [3, 6]);
    let anna_c1 = world
        .query(
            auditor(),
            query(Some("c1"), Some("anna"), Some("ChannelConfirmed")),
        )
        .await
        .unwrap();
    assert_eq!(sequences(&anna_c1), [2, 7]);

    let at = |t: &str| Some(t.parse::<DateTime<Utc>>().unwrap());
    let in_2030 = world
        .query(
            auditor(),
            AuditQuery {
                from: at("2030-01-01T00:00:00Z"),
                to: at("2031-01-01T00:00:00Z"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(sequences(&in_2030), [5]);
    let before_2030 = world
        .query(
            auditor(),
            AuditQuery {
                crisis: Some("c1".into()),
                to: at("2030-01-01T00:00:00Z"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(sequences(&before_2030), [2, 3, 7]);
    let backwards = world
        .query(
            auditor(),
            AuditQuery {
                from: at("2030-01-01T00:00:00Z"),
                to: at("2029-01-01T00:00:00Z"),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (backwards.status, backwards.field.as_deref()),
        (422, Some("to"))
    );

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
    assert_eq!(pages, [vec![2, 3], vec![5, 7]]);

    let beyond = world
        .query(
            auditor(),
            AuditQuery {
                from_sequence: Some(8),
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
async fn a_notified_person_is_found_by_the_lookup_and_never_in_the_chain() {
    let world = World::new().await;
    let audit = start_audit(&world).await;
    let phone = "+46701234567";
    let email = "anna.lind@example.se";
    let rcp = |address: &str| krisbud_tests::service::recipient(address).reference;
    world
        .append(&reported(
            "c1",
            "c1.r1.sms.sv.0",
            Channel::Sms,
            vec![
                (rcp(phone), DeliveryState::Sent, None),
                (
                    rcp("+46701111111"),
                    DeliveryState::Failed,
                    Some("46elks 400: Invalid to"),
                ),
            ],
        ))
        .await;
    world
        .append(&reported(
            "c1",
            "c1.r1.email.sv.0",
            Channel::Email,
            vec![(rcp(email), DeliveryState::Delivered, None)],
        ))
        .await;
    world
        .append(&reported(
            "c2",
            "c2.r1.sms.sv.0",
            Channel::Sms,
            vec![(rcp(phone), DeliveryState::Delivered, None)],
        ))
        .await;
    world.wait_for_records(4).await;

    // The national form is normalised to the E.164 form audiences hold.
    let answer = world.lookup("070-123 45 67", None).await.unwrap();
    assert_eq!(answer.recipient, rcp(phone));
    assert_eq!(answer.address_kind, AddressKind::Phone);
    let found: Vec<(&str, Channel, DeliveryState)> = answer
        .outcomes
        .iter()
        .map(|o| (o.crisis_id.as_str(), o.channel, o.state))
        .collect();
    assert_eq!(
        found,
        [
            ("c1", Channel::Sms, DeliveryState::Sent),
            ("c2", Channel::Sms, DeliveryState::Delivered)
        ]
    );
    assert_eq!(answer.outcomes[0].sequence, 2);
    let only_c2 = world.lookup("+46 70 123 45 67", Some("c2")).await.unwrap();
    assert_eq!(only_c2.outcomes.len(), 1);
    let by_email = world.lookup(" Anna.Lind@Example.se", None).await.unwrap();
    assert_eq!(by_email.outcomes[0].state, DeliveryState::Delivered);
    let nobody = world.lookup("08-508 000 00", None).await.unwrap();
    assert!(nobody.outcomes.is_empty());

    let bad = world.lookup("070-123 45 6x", None).await.unwrap_err();
    assert_eq!((bad.status, bad.field.as_deref()), (422, Some("address")));
    assert!(!bad.detail.contains("45"), "{}", bad.detail);
    let forbidden = world
        .command::<_, krisbud_proto::audit::RecipientLookupAnswer>(
            subject::cmd::AUDIT_LOOKUP,
            person("tib", &[Role::DutyOfficer]),
            krisbud_proto::audit::RecipientLookup {
                address: phone.into(),
                crisis: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(forbidden.status, 403);

    // Every lookup is on record, with the hash and the auditor, never the address.
    world.wait_for_records(8).await;
    world.wait_until_caught_up().await;
    let lookups = world
        .query(
            auditor(),
            AuditQuery {
                kind: Some("RecipientLookedUp".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(lookups.records.len(), 4);
    let first = &lookups.records[0].event;
    assert_eq!(first["actor"]["user"], "revisor");
    assert_eq!(first["payload"]["recipient"], rcp(phone).as_str());
    assert_eq!(first["payload"]["outcomes"], 2);
    assert_eq!(lookups.records[1].event["crisis_id"], "c2");

    for body in world.raw_messages(spec::AUDIT.name).await {
        let text = String::from_utf8_lossy(&body).to_lowercase();
        for needle in ["46701234567", "0701234567", "070-123", "anna.lind"] {
            assert!(
                !text.contains(needle),
                "{needle} in the audit stream: {text}"
            );
        }
    }
    audit.stop().await;
}

#[tokio::test]
async fn the_crisis_report_counts_outcomes_and_lists_confirmations() {
    let world = World::new().await;
    let audit = start_audit(&world).await;
    let rcp = |address: &str| krisbud_tests::service::recipient(address).reference;
    world
        .append(&reported(
            "c1",
            "c1.r1.sms.sv.0",
            Channel::Sms,
            vec![
                (rcp("+46701234567"), DeliveryState::Sent, None),
                (
                    rcp("+46701111111"),
                    DeliveryState::Failed,
                    Some("ogiltigt nummer"),
                ),
            ],
        ))
        .await;
    world
        .append(&confirmed("c1", "operator.ali", "bannern syns"))
        .await;
    world
        .append(&confirmed("c2", "operator.bo", "annan kris"))
        .await;
    world.wait_for_records(4).await;

    let json = world.report("c1", ReportFormat::Json).await.unwrap();
    assert!(json.text.is_none());
    let report = json.report;
    assert_eq!(report.chain_head.as_ref().map(|h| h.sequence), Some(4));
    let sms = &report.channels[0];
    assert_eq!((sms.channel, sms.sent, sms.failed), (Channel::Sms, 1, 1));
    assert_eq!(report.confirmations.len(), 1);
    assert_eq!(report.confirmations[0].by, "operator.ali");

    let markdown = world
        .report("c1", ReportFormat::Markdown)
        .await
        .unwrap()
        .text
        .unwrap();
    assert!(markdown.contains("operator.ali"), "{markdown}");
    assert!(!markdown.contains("operator.bo"), "{markdown}");
    let html = world
        .report("c1", ReportFormat::Html)
        .await
        .unwrap()
        .text
        .unwrap();
    assert!(html.contains("<td>operator.ali</td>"), "{html}");

    let missing = world.report("nope", ReportFormat::Json).await.unwrap_err();
    assert_eq!(missing.status, 404);
    audit.stop().await;
}
