//! A crisis as it unfolds, end to end on every channel: alert, update, all-clear,
//! close; a cancellation of a message sent in error; two duty officers updating at
//! once; and the refusals of steps that cannot be taken.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestApp, water_variables};
use krisbud_proto::status::{ChannelState, CrisisState, CrisisStatus, RevisionKind};
use krisbud_proto::{Channel, Role};
use krisbud_tests::wait_until_async;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

const FARSTA: [&str; 3] = ["+46701740605", "+46701740606", "+46701740607"];
const SOCIALTJANST: [&str; 2] = ["+46701740610", "+46701740611"];

/// A water-outage declaration to the Farsta residents only, on every channel.
fn farsta_declaration() -> Value {
    json!({
        "template": "vattenlacka",
        "variables": water_variables(),
        "audiences": ["farsta-boende"]
    })
}

/// `POST /api/v1/crises/{id}/{step}` with `token`: the status and the body.
async fn step_as(app: &TestApp, token: &str, id: &str, step: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}/api/v1/crises/{id}/{step}", app.api))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The step as the duty officer.
async fn step(app: &TestApp, id: &str, step: &str, body: Value) -> (u16, Value) {
    step_as(app, &app.token(Role::DutyOfficer), id, step, body).await
}

/// Waits until the crisis shows `revision` with every channel delivered.
async fn wait_revision(app: &TestApp, id: &str, revision: u32) -> CrisisStatus {
    wait_until_async(
        &format!("revision {revision} of {id} delivered on every channel"),
        WAIT,
        || async {
            let s = app.status(id).await;
            (s.revision == revision
                && !s.channels.is_empty()
                && s.channels
                    .values()
                    .all(|c| c.state == ChannelState::Delivered))
            .then_some(s)
        },
    )
    .await
}

/// The SMS outbox lines of one revision of the crisis.
fn sms_of(app: &TestApp, id: &str, revision: u32) -> Vec<Value> {
    app.sms_outbox()
        .into_iter()
        .filter(|l| l["crisis_id"] == id && l["revision"] == revision)
        .collect()
}

fn phones(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| l["to"].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn text_to(lines: &[Value], phone: &str) -> String {
    lines
        .iter()
        .find(|l| l["to"] == phone)
        .and_then(|l| l["message"].as_str())
        .unwrap_or_else(|| panic!("an SMS to {phone} in {lines:?}"))
        .to_owned()
}

/// The banners of the crisis now shown.
async fn banners_of(app: &TestApp, id: &str) -> Vec<Value> {
    app.banners()
        .await
        .into_iter()
        .filter(|b| b["crisis_id"] == id)
        .collect()
}

/// Waits until the Swedish banner of the crisis shows `revision`.
async fn wait_banner(app: &TestApp, id: &str, revision: u32) -> Value {
    wait_until_async(
        &format!("the banner of revision {revision}"),
        WAIT,
        || async {
            banners_of(app, id)
                .await
                .into_iter()
                .find(|b| b["language"] == "sv" && b["revision"] == revision)
        },
    )
    .await
}

/// The intranet articles of one revision of the crisis.
fn articles_of(app: &TestApp, id: &str, revision: u32) -> Vec<Value> {
    app.intranet_outbox()
        .into_iter()
        .filter(|a| a["crisis_id"] == id && a["revision"] == revision)
        .collect()
}

/// The `.eml` files of one revision (their Message-ID names crisis and revision).
fn emails_of(app: &TestApp, id: &str, revision: u32) -> Vec<String> {
    let marker = format!("<{id}.r{revision}.");
    app.email_outbox()
        .into_iter()
        .filter(|e| e.contains(&marker))
        .collect()
}

#[tokio::test]
async fn alert_update_all_clear_and_close_reach_every_channel_in_turn() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&farsta_declaration()).await;

    // Revision 1: the alert, to the three Farsta residents.
    let status = wait_revision(&app, &id, 1).await;
    assert_eq!(status.state, CrisisState::Active);
    let r1 = sms_of(&app, &id, 1);
    assert_eq!(phones(&r1), set(&FARSTA), "{r1:?}");
    assert!(r1.iter().all(|l| l["msg_type"] == "Alert"));
    assert!(text_to(&r1, FARSTA[0]).starts_with("Stockholms stad: Vattnet är avstängt i Farsta"));
    let banner = wait_banner(&app, &id, 1).await;
    assert_eq!(banner["headline"], "Vattnet är avstängt i Farsta");
    let a1 = articles_of(&app, &id, 1);
    assert_eq!(a1.len(), 3, "one article per language");
    assert_eq!(emails_of(&app, &id, 1).len(), 3);

    // Revision 2: a new estimate, and the social services staff added.
    let (code, body) = step(
        &app,
        &id,
        "update",
        json!({
            "expected_revision": 1,
            "variables": { "beraknat_klart": "i morgon kl. 08" },
            "audiences": ["socialtjanst-personal"]
        }),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["revision"].as_u64(), body["state"].as_str()),
        (Some(2), Some("active"))
    );
    let status = wait_revision(&app, &id, 2).await;
    assert_eq!(status.channels[&Channel::Sms].total, 5, "{status:?}");
    let r2 = sms_of(&app, &id, 2);
    let mut everyone = set(&FARSTA);
    everyone.extend(set(&SOCIALTJANST));
    assert_eq!(
        phones(&r2),
        everyone,
        "the earlier recipients and the added audience"
    );
    // The added audience got only the update, never the alert.
    let first = phones(&sms_of(&app, &id, 1));
    assert!(
        SOCIALTJANST.iter().all(|p| !first.contains(*p)),
        "{first:?}"
    );
    let sv = text_to(&r2, FARSTA[0]);
    assert!(sv.starts_with("UPPDATERING: Stockholms stad"), "{sv}");
    assert!(sv.contains("i morgon kl. 08"), "{sv}");
    assert!(text_to(&r2, FARSTA[1]).starts_with("UPDATE: City of Stockholm"));
    assert!(text_to(&r2, FARSTA[2]).starts_with("NY INFORMATION: "));
    for line in &r2 {
        assert_eq!(line["msg_type"], "Update", "{line}");
        assert_eq!(line["references"], json!([format!("{id}.r1")]), "{line}");
    }
    let banner = wait_banner(&app, &id, 2).await;
    assert_eq!(
        banner["headline"],
        "UPPDATERING: Vattnet är avstängt i Farsta"
    );
    assert_eq!(
        banners_of(&app, &id).await.len(),
        3,
        "revision 2 replaced revision 1"
    );
    let a2 = articles_of(&app, &id, 2);
    assert_eq!(a2.len(), 3);
    for article in &a2 {
        let earlier = a1
            .iter()
            .find(|a| a["language"] == article["language"])
            .unwrap();
        assert_eq!(
            article["article_id"], earlier["article_id"],
            "the same article"
        );
        assert_eq!(article["msg_type"], "Update");
    }
    let e2 = emails_of(&app, &id, 2);
    assert_eq!(e2.len(), 5);
    assert!(
        e2.iter()
            .any(|e| e.contains("lena.berg@socialtjanst.example"))
    );

    // Revision 3: the all-clear.
    let (code, body) = step(&app, &id, "all-clear", json!({ "expected_revision": 2 })).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "all_clear");
    let status = wait_revision(&app, &id, 3).await;
    assert_eq!(status.state, CrisisState::AllClear);
    let r3 = sms_of(&app, &id, 3);
    assert_eq!(phones(&r3), everyone);
    // The template's own all-clear, filled in: it says the danger is over and
    // never repeats the alert ("the water is shut off").
    assert_eq!(
        text_to(&r3, FARSTA[0]),
        "Stockholms stad: Faran är över. Vattenläckan i Farsta är lagad och vattnet är \
         tillbaka i kranen. Mer info: stockholm.se/vatten"
    );
    assert!(
        text_to(&r3, FARSTA[1]).starts_with("City of Stockholm: The danger is over."),
        "{}",
        text_to(&r3, FARSTA[1])
    );
    assert!(r3.iter().all(|l| {
        let text = l["message"].as_str().unwrap();
        !text.contains("avstängt") && !text.contains("shut off")
    }));
    assert!(r3.iter().all(|l| l["msg_type"] == "Update"
        && l["references"] == json!([format!("{id}.r1"), format!("{id}.r2")])));
    let banner = wait_banner(&app, &id, 3).await;
    assert_eq!(
        banner["headline"],
        "Faran är över: vattnet är tillbaka i Farsta"
    );
    assert_eq!(banner["level"], "info");
    let clear_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(banner["expires_at"].clone()).expect("the all-clear is cleared");
    let shown_for = clear_at - chrono::Utc::now();
    assert!(
        shown_for > chrono::TimeDelta::minutes(55) && shown_for <= chrono::TimeDelta::hours(1),
        "cleared an hour after the all-clear: {clear_at}"
    );
    assert!(
        articles_of(&app, &id, 3)
            .iter()
            .any(|a| a["title"] == "Faran är över: vattnet är tillbaka i Farsta")
    );
    assert_eq!(emails_of(&app, &id, 3).len(), 5);

    // After the all-clear only closing is possible.
    let (code, body) = step(
        &app,
        &id,
        "update",
        json!({ "expected_revision": 3, "variables": { "beraknat_klart": "nu" } }),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("all_clear"),
        "{body}"
    );

    // Close: nothing is sent, the banner comes down.
    let (code, body) = step(&app, &id, "close", json!({ "expected_revision": 3 })).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["revision"].as_u64(), body["state"].as_str()),
        (Some(3), Some("closed"))
    );
    wait_until_async("the banner taken down", WAIT, || async {
        banners_of(&app, &id).await.is_empty().then_some(())
    })
    .await;
    let status = app.status(&id).await;
    assert_eq!(status.state, CrisisState::Closed);
    assert_eq!(status.closed_by.as_deref(), Some("tib.maria"));
    let kinds: Vec<RevisionKind> = status.revisions.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RevisionKind::Declared,
            RevisionKind::Updated,
            RevisionKind::AllClear
        ]
    );
    assert_eq!(status.revisions[0].channels[&Channel::Sms].delivered, 3);
    assert_eq!(status.revisions[1].channels[&Channel::Sms].delivered, 5);
    assert_eq!(
        status.revisions[1].added_audiences,
        ["socialtjanst-personal"]
    );
    let (code, body) = step(&app, &id, "close", json!({ "expected_revision": 3 })).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("closed"),
        "{body}"
    );

    // The audit lists every step with its actor, in order.
    let records = wait_until_async("the close in the audit", WAIT, || async {
        let records = app.audit(&id).await;
        records
            .iter()
            .any(|r| r["event"]["kind"] == "CrisisClosed")
            .then_some(records)
    })
    .await;
    let steps: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| {
            r["event"]["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("Crisis"))
        })
        .map(|r| {
            (
                r["event"]["kind"].as_str().unwrap(),
                r["event"]["actor"]["user"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("CrisisDeclared", "tib.maria"),
            ("CrisisUpdated", "tib.maria"),
            ("CrisisAllClear", "tib.maria"),
            ("CrisisClosed", "tib.maria"),
        ]
    );
    let planned = records
        .iter()
        .filter(|r| r["event"]["kind"] == "DispatchPlanned")
        .count();
    assert_eq!(planned, 3, "one plan per revision, none for the close");
    // Nothing went out after the close.
    assert!(sms_of(&app, &id, 4).is_empty());
    assert_eq!(app.sms_outbox().len(), 3 + 5 + 5);
}

#[tokio::test]
async fn a_cancellation_takes_the_banner_down_and_corrects_the_earlier_recipients() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&farsta_declaration()).await;
    wait_revision(&app, &id, 1).await;
    wait_banner(&app, &id, 1).await;

    let (code, body) = step(
        &app,
        &id,
        "cancel",
        json!({ "expected_revision": 1, "reason": "Fel område: läckan är i Fagersjö" }),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    let status = wait_revision(&app, &id, 2).await;
    assert_eq!(status.state, CrisisState::Cancelled);
    assert_eq!(
        status.revisions[1].reason.as_deref(),
        Some("Fel område: läckan är i Fagersjö")
    );
    wait_until_async("the banner taken down", WAIT, || async {
        banners_of(&app, &id).await.is_empty().then_some(())
    })
    .await;

    let r2 = sms_of(&app, &id, 2);
    assert_eq!(phones(&r2), set(&FARSTA), "the earlier recipients");
    for line in &r2 {
        assert_eq!(line["msg_type"], "Cancel", "{line}");
        assert_eq!(line["references"], json!([format!("{id}.r1")]), "{line}");
    }
    assert_eq!(
        text_to(&r2, FARSTA[0]),
        "Stockholms stad: RÄTTELSE. Meddelandet om avstängt vatten i Farsta skickades av \
         misstag. Vattnet är inte avstängt. Du behöver inte göra något."
    );
    assert_eq!(
        text_to(&r2, FARSTA[1]),
        "City of Stockholm: CORRECTION. The message about the water being shut off in \
         Farsta was sent by mistake. The water is not shut off. You do not need to do anything."
    );
    let articles = articles_of(&app, &id, 2);
    assert_eq!(articles.len(), 3);
    assert!(articles.iter().all(|a| a["msg_type"] == "Cancel"));
    assert_eq!(emails_of(&app, &id, 2).len(), 3);

    // After a cancellation only closing is possible.
    let (code, body) = step(&app, &id, "all-clear", json!({ "expected_revision": 2 })).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
    let (code, body) = step(&app, &id, "close", json!({ "expected_revision": 2 })).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn of_two_concurrent_updates_one_wins_and_the_other_gets_the_current_revision() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&farsta_declaration()).await;
    wait_revision(&app, &id, 1).await;

    let update = |estimate: &'static str| {
        step(
            &app,
            &id,
            "update",
            json!({ "expected_revision": 1, "variables": { "beraknat_klart": estimate } }),
        )
    };
    let (a, b) = tokio::join!(update("kl. 18"), update("kl. 22"));
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [200, 409], "{a:?} {b:?}");
    let (_, loser) = if a.0 == 409 { &a } else { &b };
    let detail = loser["detail"].as_str().unwrap();
    assert!(detail.contains("at revision 2"), "{detail}");

    let status = wait_revision(&app, &id, 2).await;
    assert_eq!(status.revisions.len(), 2);
    let records = wait_until_async("the update in the audit", WAIT, || async {
        let records = app.audit(&id).await;
        records
            .iter()
            .any(|r| {
                r["event"]["kind"] == "DispatchPlanned" && r["event"]["payload"]["revision"] == 2
            })
            .then_some(records)
    })
    .await;
    let updates: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["kind"] == "CrisisUpdated")
        .collect();
    assert_eq!(updates.len(), 1, "one CrisisUpdated: {updates:?}");
    assert_eq!(updates[0]["event"]["payload"]["revision"], 2);
    // Only the winner's estimate went out.
    let r2 = sms_of(&app, &id, 2);
    assert_eq!(r2.len(), 3);
    let winner = if a.0 == 200 { "kl. 18" } else { "kl. 22" };
    assert!(
        r2.iter()
            .all(|l| l["message"].as_str().unwrap().contains(winner))
    );
}

#[tokio::test]
async fn steps_that_cannot_be_taken_are_refused_naming_why() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&farsta_declaration()).await;
    wait_revision(&app, &id, 1).await;

    let (code, body) = step(
        &app,
        "finns-inte",
        "update",
        json!({ "expected_revision": 1, "variables": { "beraknat_klart": "nu" } }),
    )
    .await;
    assert_eq!(code, 404, "{body}");

    let (code, body) = step(
        &app,
        &id,
        "update",
        json!({ "expected_revision": 7, "variables": { "beraknat_klart": "nu" } }),
    )
    .await;
    assert_eq!(code, 409, "stale revision: {body}");
    assert!(
        body["detail"].as_str().unwrap().contains("at revision 1"),
        "{body}"
    );

    let (code, body) = step(&app, &id, "cancel", json!({ "expected_revision": 1 })).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "reason", "{body}");
    let (code, body) = step(
        &app,
        &id,
        "cancel",
        json!({ "expected_revision": 1, "reason": "  " }),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "reason", "{body}");

    let (code, body) = step(&app, &id, "update", json!({ "expected_revision": 1 })).await;
    assert_eq!(code, 422, "an update that changes nothing: {body}");
    let (code, body) = step(&app, &id, "update", json!({ "variables": {} })).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "expected_revision", "{body}");
    let (code, body) = step(
        &app,
        &id,
        "update",
        json!({ "expected_revision": 1, "audiences": ["finns-inte"] }),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "audiences[0]", "{body}");
    let (code, _) = step_as(
        &app,
        &app.token(Role::Operator),
        &id,
        "close",
        json!({ "expected_revision": 1 }),
    )
    .await;
    assert_eq!(code, 403, "only a duty officer");

    let (code, body) = step(&app, &id, "close", json!({ "expected_revision": 1 })).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = step(
        &app,
        &id,
        "update",
        json!({ "expected_revision": 1, "variables": { "beraknat_klart": "nu" } }),
    )
    .await;
    assert_eq!(code, 409, "update of a closed crisis: {body}");
    assert!(
        body["detail"].as_str().unwrap().contains("closed"),
        "{body}"
    );
    // Nothing of the refused steps went out.
    assert!(sms_of(&app, &id, 2).is_empty());
    assert_eq!(app.status(&id).await.revision, 1);
}
