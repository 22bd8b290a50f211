//! The walking skeleton end to end: a declaration reaches SMS, email, banner and
//! intranet, operators confirm, and the audit chain records all of it.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, water_declaration};
use krisbud_proto::Role;
use krisbud_proto::status::ChannelState;
use krisbud_tests::{ElksSimulator, SmtpSink, WebhookReceiver, wait_until_async};
use serde_json::{Value, json};

const DEMO_PHONES: [&str; 5] = [
    "+46701740605",
    "+46701740606",
    "+46701740607",
    "+46701740610",
    "+46701740611",
];

#[tokio::test]
async fn a_declaration_reaches_every_outbox_and_the_banner() {
    let app = TestApp::spawn().await;
    let declared_at = Instant::now();
    let id = app.declare_ok(&water_declaration()).await;
    let status = app.wait_delivered(&id, Duration::from_secs(10)).await;
    eprintln!(
        "declared to every channel delivered: {:?}",
        declared_at.elapsed()
    );

    let sms = app.sms_outbox();
    assert_eq!(sms.len(), 5, "one line per SMS recipient: {sms:?}");
    let mut to: Vec<&str> = sms.iter().map(|l| l["to"].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(to, DEMO_PHONES);
    let text_to = |phone: &str| {
        sms.iter()
            .find(|l| l["to"] == phone)
            .and_then(|l| l["message"].as_str())
            .unwrap()
            .to_owned()
    };
    assert!(text_to("+46701740605").contains("Vattnet är avstängt i Farsta"));
    assert!(text_to("+46701740606").contains("The water is shut off in Farsta"));
    assert!(text_to("+46701740607").contains("inget vatten i kranen i Farsta"));

    let emails = app.email_outbox();
    assert_eq!(emails.len(), 5, "one .eml per email recipient");
    assert!(
        emails
            .iter()
            .any(|e| e.contains("anna.lind@farsta.example"))
    );
    assert!(emails.iter().all(|e| e.contains("Message-ID")));

    let banners = app.banners().await;
    let sv = banners
        .iter()
        .find(|b| b["crisis_id"] == id.as_str() && b["language"] == "sv")
        .expect("the Swedish banner is shown");
    assert_eq!(sv["headline"], "Vattnet är avstängt i Farsta");

    let articles = app.intranet_outbox();
    assert_eq!(articles.len(), 3, "one article per language");
    assert!(articles.iter().any(|a| {
        a["title"]
            .as_str()
            .unwrap()
            .contains("Vattenläcka i Farsta")
    }));

    for (channel, expected) in [("sms", 5), ("email", 5), ("banner", 3), ("intranet", 3)] {
        let c = &status.channels[&krisbud_proto::Channel::parse(channel).unwrap()];
        assert_eq!(c.state, ChannelState::Delivered, "{channel}");
        assert_eq!(
            (c.total, c.delivered, c.failed, c.pending),
            (expected, expected, 0, 0),
            "{channel}"
        );
    }
}

#[tokio::test]
async fn the_same_declaration_reaches_smtp_46elks_and_a_signed_webhook() {
    let elks = ElksSimulator::start("elks-user", "elks-secret").await;
    let smtp = SmtpSink::start();
    let hook = WebhookReceiver::start("hook-secret").await;
    let app = TestApp::spawn_with(&format!(
        r#"
[sms]
provider = "46elks"
elks_base_url = "{elks}"
elks_username = "elks-user"
elks_password = "elks-secret"
[email]
transport = "smtp"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
smtp_tls = "none"
[intranet]
mode = "webhook"
webhook_url = "{hook}"
webhook_secret = "hook-secret"
"#,
        elks = elks.base_url(),
        smtp = smtp.port(),
        hook = hook.url()
    ))
    .await;
    let id = app.declare_ok(&water_declaration()).await;
    let status = app.wait_delivered(&id, Duration::from_secs(10)).await;

    let mut to: Vec<String> = elks.received().into_iter().map(|s| s.to).collect();
    to.sort();
    assert_eq!(to, DEMO_PHONES);
    assert!(
        elks.received()
            .iter()
            .any(|s| s.message.contains("Vattnet är avstängt i Farsta"))
    );

    let mails = smtp.messages();
    assert_eq!(mails.len(), 5);
    assert!(
        mails
            .iter()
            .any(|m| m.to.iter().any(|t| t == "lena.berg@socialtjanst.example"))
    );

    let hooks = hook.received();
    assert_eq!(hooks.len(), 3, "one signed article per language");
    assert!(
        hooks.iter().all(|h| h.signature_valid),
        "every signature verifies"
    );
    assert!(hooks.iter().any(
        |h| h.body["language"] == "sv" && h.body["title"].as_str().unwrap().contains("Farsta")
    ));

    let sms = &status.channels[&krisbud_proto::Channel::Sms];
    assert_eq!((sms.total, sms.sent, sms.failed), (5, 5, 0));
    assert_eq!(sms.providers.get("46elks"), Some(&5));
    assert_eq!(status.channels[&krisbud_proto::Channel::Email].sent, 5);
    assert_eq!(
        status.channels[&krisbud_proto::Channel::Intranet].delivered,
        3
    );
}

#[tokio::test]
async fn operators_confirm_and_the_audit_chain_records_everything() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, Duration::from_secs(10)).await;

    let duty = app.token(Role::DutyOfficer);
    let operator = app.token(Role::Operator);
    assert_eq!(app.confirm(Some(&duty), &id, "sms", "").await.status(), 403);
    assert_eq!(app.confirm(None, &id, "sms", "").await.status(), 401);
    assert_eq!(
        app.confirm(Some("kb_wrong"), &id, "sms", "").await.status(),
        401
    );

    for channel in ["sms", "email", "banner", "intranet"] {
        let response = app
            .confirm(
                Some(&operator),
                &id,
                channel,
                &format!("{channel} kontrollerad"),
            )
            .await;
        assert_eq!(response.status(), 200, "confirm {channel}");
    }
    let status = app.status(&id).await;
    for (channel, c) in &status.channels {
        let confirmation = c
            .confirmations
            .last()
            .unwrap_or_else(|| panic!("{channel} confirmed"));
        assert_eq!(confirmation.by, "operator.ali");
        assert!(confirmation.at <= chrono::Utc::now());
        assert_eq!(
            confirmation.note.as_deref(),
            Some(format!("{channel} kontrollerad").as_str())
        );
    }

    // The audit lists declaration, plan, every delivery outcome and every
    // confirmation, in order, with the actor.
    let records = wait_until_async(
        "the audit to hold every event",
        Duration::from_secs(10),
        || async {
            let records = app.audit(&id).await;
            let confirmations = records
                .iter()
                .filter(|r| r["event"]["kind"] == "ChannelConfirmed")
                .count();
            (confirmations == 4).then_some(records)
        },
    )
    .await;
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "CrisisDeclared");
    assert_eq!(records[0]["event"]["actor"]["user"], "tib.maria");
    assert_eq!(kinds.iter().filter(|k| **k == "DispatchPlanned").count(), 1);
    // SMS and email: sv, en, lättläst jobs; banner and intranet one per language.
    assert_eq!(
        kinds.iter().filter(|k| **k == "DeliveryReported").count(),
        12
    );
    assert_eq!(&kinds[kinds.len() - 4..], ["ChannelConfirmed"; 4]);
    assert!(records[records.len() - 1]["event"]["actor"]["user"] == "operator.ali");
    let sequences: Vec<u64> = records
        .iter()
        .map(|r| r["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "records in order: {sequences:?}"
    );

    let verify: Value = app
        .http
        .get(format!("{}/api/v1/audit/verify", app.api))
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(verify["checked"].as_u64().unwrap() >= records.len() as u64);

    // No phone number or email address in clear anywhere in the audit log.
    let export = app
        .http
        .get(format!("{}/api/v1/audit", app.api))
        .query(&[("format", "jsonl")])
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.lines().count() >= records.len());
    for phone in DEMO_PHONES {
        assert!(
            !export.contains(phone) && !export.contains(&phone[3..]),
            "{phone} in the audit log"
        );
    }
    assert!(!export.contains("@farsta.example") && !export.contains("@socialtjanst.example"));
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_it_and_nothing_is_dispatched() {
    let app = TestApp::spawn().await;
    // The demo templates' lifecycle events are there from the start.
    let events_before = app.stream_messages("KRISBUD_EVENTS").await;
    let mut cases: Vec<(&str, reqwest::Response, u16, Option<&str>)> = Vec::new();

    let mut unknown = water_declaration();
    unknown["template"] = json!("finns-inte");
    cases.push((
        "unknown template",
        app.declare(&unknown).await,
        422,
        Some("template"),
    ));

    let mut missing = water_declaration();
    missing["variables"]
        .as_object_mut()
        .unwrap()
        .remove("omrade");
    cases.push((
        "missing variable",
        app.declare(&missing).await,
        422,
        Some("variables.omrade"),
    ));

    let mut wrong_type = water_declaration();
    wrong_type["variables"]["omrade"] = json!(5);
    cases.push((
        "wrong type",
        app.declare(&wrong_type).await,
        422,
        Some("variables.omrade"),
    ));

    let mut too_long = water_declaration();
    too_long["variables"]["omrade"] = json!("x".repeat(41));
    cases.push((
        "too long",
        app.declare(&too_long).await,
        422,
        Some("variables.omrade"),
    ));

    let mut no_audience = water_declaration();
    no_audience["audiences"] = json!(["finns-inte"]);
    cases.push((
        "unknown audience",
        app.declare(&no_audience).await,
        422,
        Some("audiences[0]"),
    ));

    let duty = app.token(Role::DutyOfficer);
    let malformed = app
        .http
        .post(format!("{}/api/v1/crises", app.api))
        .bearer_auth(&duty)
        .header("content-type", "application/json")
        .body("{\"template\": \"vattenlacka\", ")
        .send()
        .await
        .unwrap();
    cases.push(("malformed JSON", malformed, 400, None));

    let mut huge = water_declaration();
    huge["variables"]["omrade"] = json!("x".repeat(200_000));
    let oversize = app
        .http
        .post(format!("{}/api/v1/crises", app.api))
        .bearer_auth(&duty)
        .json(&huge)
        .send()
        .await
        .unwrap();
    cases.push(("oversize body", oversize, 413, None));

    for (name, response, status, field) in cases {
        assert_eq!(response.status().as_u16(), status, "{name}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{name}: {content_type}"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            !problem["detail"].as_str().unwrap_or_default().is_empty(),
            "{name}: {problem}"
        );
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{name}: {problem}");
        }
    }
    assert_eq!(
        app.stream_messages("KRISBUD_DISPATCH").await,
        0,
        "nothing dispatched"
    );
    assert_eq!(
        app.stream_messages("KRISBUD_EVENTS").await,
        events_before,
        "nothing declared"
    );
}

#[tokio::test]
async fn a_restart_right_after_the_declaration_loses_no_recipient() {
    let mut app = TestApp::spawn().await;
    let id = app.declare_ok(&water_declaration()).await;
    // Stop as soon as the declaration is stored, before the channels are done.
    app.restart().await;
    let status = app.wait_delivered(&id, Duration::from_secs(15)).await;
    assert_eq!(status.channels[&krisbud_proto::Channel::Sms].delivered, 5);
    let sms = app.sms_outbox();
    let mut unique: Vec<&str> = sms.iter().map(|l| l["to"].as_str().unwrap()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, DEMO_PHONES, "every recipient reached");
    let counted = status.channels[&krisbud_proto::Channel::Sms].possible_duplicates;
    eprintln!(
        "sms outbox lines {} for 5 recipients; {counted} counted as possible duplicates",
        sms.len()
    );
    assert!(
        (sms.len() - unique.len()) as u64 <= counted,
        "every message sent twice is counted in the status"
    );
}

#[tokio::test]
async fn a_batch_in_flight_at_a_crash_is_sent_again_and_counted_in_status_and_report() {
    use sha2::Digest as _;
    let app = TestApp::spawn().await;
    // The crisis id an idempotency key gives is known before the declaration, so
    // the send claim a crashed channel instance would have left behind can be put
    // in place first: batch 0 of the Swedish SMS job claimed, without outcomes.
    let key = "krasch-mitt-i-utskicket";
    let digest = sha2::Sha256::digest(format!("tib.maria\0{key}").as_bytes());
    let id = format!("ik-{}", hex::encode(&digest[..6]));
    let claims = async_nats::jetstream::new(app.nats_as("channel-sms").await)
        .get_key_value("KRISBUD_SEND_CLAIMS")
        .await
        .unwrap();
    claims
        .put(
            format!("{id}.r1.sms.sv.0.b0"),
            json!({ "claimed": true, "outcomes": [] })
                .to_string()
                .into(),
        )
        .await
        .unwrap();

    let response = app
        .http
        .post(format!("{}/api/v1/crises", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .header("Idempotency-Key", key)
        .json(&water_declaration())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let declared: Value = response.json().await.unwrap();
    assert_eq!(declared["crisis_id"], id.as_str(), "the id of the key");

    let status = app.wait_delivered(&id, Duration::from_secs(15)).await;
    let sms = &status.channels[&krisbud_proto::Channel::Sms];
    // The three Swedish-speaking recipients were in the claimed batch; the
    // English and easy-to-read ones are in other jobs.
    assert_eq!((sms.total, sms.delivered), (5, 5));
    assert_eq!(sms.possible_duplicates, 3, "{sms:?}");
    for (channel, c) in &status.channels {
        if *channel != krisbud_proto::Channel::Sms {
            assert_eq!(c.possible_duplicates, 0, "{channel}");
        }
    }
    let json: Value = app
        .http
        .get(format!("{}/api/v1/crises/{id}", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["channels"]["sms"]["possible_duplicates"], 3, "{json}");

    // The events carry the flag, not a changed reason; the crisis report counts it.
    let records = wait_until_async(
        "the delivery reports in the audit",
        Duration::from_secs(10),
        || async {
            let records = app.audit(&id).await;
            let flagged: Vec<Value> = records
                .iter()
                .filter(|r| r["event"]["kind"] == "DeliveryReported")
                .flat_map(|r| {
                    // Stored grouped: recipients with the same outcome share an entry.
                    krisbud_proto::event::outcome_groups::deserialize(
                        r["event"]["payload"]["outcomes"].clone(),
                    )
                    .unwrap()
                })
                .filter(|o| o.possible_duplicate)
                .map(|o| serde_json::to_value(o).unwrap())
                .collect();
            (flagged.len() == 3).then_some(flagged)
        },
    )
    .await;
    assert!(
        records.iter().all(|o| o.get("reason").is_none()),
        "{records:?}"
    );
    // | Kanal | Planerade | Skickade | Levererade | Misslyckade | Väntar | Möjliga dubbletter | Rapporter |
    let sms_row = |report: &str| -> Option<Vec<String>> {
        let row = report.lines().find(|l| l.starts_with("| sms |"))?;
        Some(row.split('|').map(|c| c.trim().to_owned()).collect())
    };
    let report = wait_until_async(
        "the crisis report to count every sms outcome",
        Duration::from_secs(10),
        || async {
            let text = app
                .http
                .get(format!("{}/api/v1/audit/crises/{id}/report", app.api))
                .query(&[("format", "markdown")])
                .bearer_auth(app.token(Role::Auditor))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (sms_row(&text)?[1..7] == ["sms", "5", "0", "5", "0", "0"]).then_some(text)
        },
    )
    .await;
    assert_eq!(sms_row(&report).unwrap()[7], "3", "{report}");
    assert!(report.contains("Möjliga dubbletter:"), "{report}");
}

#[tokio::test]
async fn a_retried_declaration_with_the_same_idempotency_key_declares_once() {
    let app = TestApp::spawn().await;
    let declare = || async {
        let response = app
            .http
            .post(format!("{}/api/v1/crises", app.api))
            .bearer_auth(app.token(Role::DutyOfficer))
            .header("Idempotency-Key", "tib-2026-11-26-farsta")
            .json(&water_declaration())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json::<Value>().await.unwrap()["crisis_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = declare().await;
    let second = declare().await;
    assert_eq!(first, second, "the retry answers with the first crisis");
    let status = app.wait_delivered(&first, Duration::from_secs(10)).await;
    assert_eq!(status.channels[&krisbud_proto::Channel::Sms].total, 5);
    assert_eq!(app.sms_outbox().len(), 5, "nobody got the message twice");
    let list: Vec<Value> = app
        .http
        .get(format!("{}/api/v1/crises", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "one crisis");
}

/// After a declaration in three languages on every channel, the crisis report
/// counts what the status counts, channel by channel: banner and intranet have
/// one target per language, and the report must not fold them into one.
#[tokio::test]
async fn the_crisis_report_and_the_status_agree_on_every_channel() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&water_declaration()).await;
    let status = app.wait_delivered(&id, Duration::from_secs(20)).await;
    let report: serde_json::Value = wait_until_async(
        "the report to hold every delivery",
        Duration::from_secs(20),
        || async {
            let report: serde_json::Value = app
                .http
                .get(format!("{}/api/v1/audit/crises/{id}/report", app.api))
                .bearer_auth(app.token(Role::Auditor))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let channels = report["channels"].as_array()?;
            let done = channels.len() == status.channels.len()
                && channels.iter().all(|c| c["pending"].as_u64() == Some(0));
            done.then_some(report)
        },
    )
    .await;
    for (channel, counted) in &status.channels {
        let reported = report["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == channel.as_str())
            .unwrap_or_else(|| panic!("{channel} in the report: {report}"));
        assert_eq!(
            (
                reported["planned"].as_u64(),
                reported["delivered"].as_u64(),
                reported["sent"].as_u64(),
                reported["failed"].as_u64(),
            ),
            (
                Some(counted.total),
                Some(counted.delivered),
                Some(counted.sent),
                Some(counted.failed)
            ),
            "{channel}: report {reported} status {counted:?}"
        );
    }
    let banner = &status.channels[&krisbud_proto::Channel::Banner];
    assert!(banner.total >= 3, "one banner per language: {banner:?}");
}
