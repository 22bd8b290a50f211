//! A fan-out of 10,000 recipients through the whole system and each SMS provider
//! (46elks, Sinch, Twilio) against its simulator: an audience imported over the
//! API, a water-outage declaration to it, every recipient submitted exactly once
//! with the rendered Swedish text, and the outcomes counted in the status.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::{TestApp, water_variables};
use futures::FutureExt as _;
use krisbud_proto::status::{ChannelState, ChannelStatus};
use krisbud_proto::{Channel, Role};
use krisbud_tests::{ElksSimulator, SinchSimulator, TwilioSimulator, wait_until_async};
use serde_json::json;

/// Members of the audience, each with a phone number of their own.
const MEMBERS: usize = 10_000;
/// The size of a real crisis, where the auditor's tools once failed.
const LARGE: usize = 200_000;
/// From the declaration to every outcome in the status, per 10,000 recipients.
/// A fan-out of 10,000 takes a few seconds alone in a debug build; the margin is
/// for a shared machine.
const FAN_OUT_WAIT: Duration = Duration::from_secs(60);
const AUDIENCE: &str = "farsta-fanout";
/// The Swedish SMS of `vattenlacka` rendered with [`water_variables`].
const SWEDISH_SMS: &str = "Stockholms stad: Vattnet är avstängt i Farsta efter en vattenläcka. \
Beräknat klart i kväll kl. 20. Hämta vatten vid Farsta centrum. Mer info: stockholm.se/vatten";

/// Member `i`'s number as written in the file, the Swedish way (`070-000 00 07`).
fn written_number(i: usize) -> String {
    let d = format!("{i:07}");
    format!("070-{} {} {}", &d[..3], &d[3..5], &d[5..])
}

/// Member `i`'s number as the provider must get it (E.164).
fn e164(i: usize) -> String {
    format!("+4670{i:07}")
}

/// The members file: a header and one Swedish-speaking member per line.
fn members_csv(members: usize) -> String {
    let mut csv = String::from("Telefon,Språk\n");
    for i in 0..members {
        csv.push_str(&written_number(i));
        csv.push_str(",sv\n");
    }
    csv
}

/// Creates the audience and imports the members over the API.
async fn create_audience(app: &TestApp, members: usize) {
    let response = app
        .create_audience(AUDIENCE, "Farsta, alla med mobil")
        .await;
    assert_eq!(response.status(), 201);
    let (status, report) = app
        .import_csv(AUDIENCE, Role::Admin, members_csv(members))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["rows"].as_u64(), report["imported"].as_u64()),
        (Some(members as u64), Some(members as u64)),
        "{report}"
    );
    assert_eq!(report["rejected"], 0, "{report}");
}

/// Declares the water outage on SMS to the audience, waits until the status
/// counts every recipient as handed over, and returns the SMS channel's status.
async fn declare_and_wait(app: &TestApp, members: usize) -> ChannelStatus {
    let id = declare(app).await;
    wait_settled(app, &id, members).await
}

/// Declares the water outage on SMS to the audience and returns the crisis id.
async fn declare(app: &TestApp) -> String {
    app.declare_ok(&json!({
        "template": "vattenlacka",
        "variables": water_variables(),
        "audiences": [AUDIENCE],
        "channels": ["sms"]
    }))
    .await
}

/// Waits until the status of crisis `id` counts every one of `members` recipients
/// as handed over, and returns the SMS channel's status.
async fn wait_settled(app: &TestApp, id: &str, members: usize) -> ChannelStatus {
    let last = Mutex::new(None);
    let waited = std::panic::AssertUnwindSafe(wait_until_async(
        "every recipient sent or delivered in the status",
        FAN_OUT_WAIT * (members / MEMBERS).max(1) as u32,
        || async {
            // While the bus restarts the status may answer 503 or 504.
            let status = app.try_status(id).await.ok()?;
            let sms = status.channels.get(&Channel::Sms)?.clone();
            *last.lock().unwrap() = Some(serde_json::to_string(&sms).unwrap());
            let settled = sms.planned
                && sms.total == members as u64
                && sms.sent + sms.delivered + sms.failed == sms.total;
            settled.then_some(sms)
        },
    ))
    .catch_unwind()
    .await;
    match waited {
        Ok(sms) => sms,
        Err(panic) => {
            let last = last.lock().unwrap().take();
            eprintln!(
                "last sms status of {id}: {}\nconsumers: {}",
                last.as_deref().unwrap_or("none"),
                app.consumers().await
            );
            std::panic::resume_unwind(panic)
        }
    }
}

/// Asserts the status counts every member as handed over by `provider`, and that
/// the provider got each member's number exactly once with the Swedish text.
fn assert_fanned_out(
    provider: &str,
    sms: &ChannelStatus,
    received: &[(String, String)],
    members: usize,
) {
    let all = members as u64;
    assert_eq!(sms.state, ChannelState::Delivered, "{sms:?}");
    assert_eq!(sms.total, all, "{sms:?}");
    assert_eq!(sms.sent + sms.delivered, all, "{sms:?}");
    assert_eq!((sms.failed, sms.pending), (0, 0), "{sms:?}");
    assert!(sms.failed_by_reason.is_empty(), "{sms:?}");
    assert_eq!(sms.possible_duplicates, 0, "{sms:?}");
    assert_eq!(
        sms.providers,
        [(provider.to_owned(), all)].into_iter().collect(),
        "{sms:?}"
    );

    let mut counts: HashMap<&str, usize> = HashMap::with_capacity(members);
    for (to, _) in received {
        *counts.entry(to.as_str()).or_default() += 1;
    }
    let repeated = counts.values().filter(|c| **c > 1).count();
    assert_eq!(
        repeated, 0,
        "members who got more than one sms via {provider}"
    );
    let missing: Vec<usize> = (0..members)
        .filter(|i| !counts.contains_key(e164(*i).as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} members never reached {provider}, the first member {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(received.len(), members, "messages {provider} received");
    let other_texts: Vec<&str> = received
        .iter()
        .map(|(_, text)| text.as_str())
        .filter(|text| *text != SWEDISH_SMS)
        .collect();
    assert!(
        other_texts.is_empty(),
        "{} messages via {provider} were not the Swedish text, e.g. {:?}",
        other_texts.len(),
        other_texts.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_10000_through_46elks_submits_each_once_and_shows_in_status() {
    let elks = ElksSimulator::start("elks-user", "elks-secret").await;
    let app = TestApp::spawn_with(&format!(
        r#"
[sms]
provider = "46elks"
elks_base_url = "{}"
elks_username = "elks-user"
elks_password = "elks-secret"
parallel_requests = 32
"#,
        elks.base_url()
    ))
    .await;
    create_audience(&app, MEMBERS).await;
    let sms = declare_and_wait(&app, MEMBERS).await;
    let received: Vec<(String, String)> = elks
        .received()
        .into_iter()
        .map(|s| (s.to, s.message))
        .collect();
    assert_fanned_out("46elks", &sms, &received, MEMBERS);
    assert_the_audit_exports_and_verifies(&app, MEMBERS).await;
}

/// The whole system sending SMS through `sinch`.
async fn sinch_app(sinch: &SinchSimulator) -> TestApp {
    TestApp::spawn_with(&format!(
        r#"
[sms]
provider = "sinch"
sinch_base_url = "{}"
sinch_service_plan_id = "plan0123"
sinch_api_token = "sinch-token"
"#,
        sinch.base_url()
    ))
    .await
}

/// The auditor's tools at the size of a fan-out: one `DeliveryReported` of a
/// 1,000-recipient 46elks job holds a message id per recipient (~115 KB), so a
/// page of records is far more than one NATS message carries. The export, a
/// JSON-lines page and the offline verification of the bundle all work.
async fn assert_the_audit_exports_and_verifies(app: &TestApp, members: usize) {
    let get = |path: &str| {
        app.http
            .get(format!("{}/api/v1{path}", app.api))
            .bearer_auth(app.token(Role::Auditor))
            .send()
    };
    let page = get("/audit?format=jsonl&limit=100").await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.lines().count() >= 10, "{} lines", page.lines().count());
    let bundle = get("/audit/export").await.unwrap();
    assert_eq!(bundle.status(), 200);
    let bytes = bundle.bytes().await.unwrap();
    assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
    let published =
        krisbud_audit::signing::read_key_file(&app.data_dir.path().join("audit-signing.key"))
            .unwrap()
            .verifying_key();
    let report = krisbud_audit::bundle::verify_reader(&bytes[..], &[published]);
    assert!(report.ok, "{report:?}");
    let reported = String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains("\"kind\":\"DeliveryReported\""))
        .count();
    assert!(
        reported >= members / 1000,
        "{reported} DeliveryReported records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_10000_through_sinch_submits_each_once_and_shows_in_status() {
    let sinch = SinchSimulator::start("plan0123", "sinch-token").await;
    let app = sinch_app(&sinch).await;
    create_audience(&app, MEMBERS).await;
    let sms = declare_and_wait(&app, MEMBERS).await;
    let batches = sinch.batches();
    assert!(
        batches
            .iter()
            .all(|b| b.to.len() <= krisbud_tests::sinch::MAX_RECIPIENTS),
        "no batch over Sinch's limit"
    );
    let received: Vec<(String, String)> = batches
        .into_iter()
        .flat_map(|b| {
            let body = b.body;
            b.to.into_iter().map(move |to| (to, body.clone()))
        })
        .collect();
    assert_fanned_out("sinch", &sms, &received, MEMBERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_10000_through_twilio_submits_each_once_and_shows_in_status() {
    let twilio = TwilioSimulator::start("AC0123456789abcdef0123456789abcdef", "twilio-token").await;
    let app = TestApp::spawn_with(&format!(
        r#"
[sms]
provider = "twilio"
twilio_base_url = "{}"
twilio_account_sid = "AC0123456789abcdef0123456789abcdef"
twilio_auth_token = "twilio-token"
parallel_requests = 32
"#,
        twilio.base_url()
    ))
    .await;
    create_audience(&app, MEMBERS).await;
    let sms = declare_and_wait(&app, MEMBERS).await;
    let received: Vec<(String, String)> = twilio
        .messages()
        .into_iter()
        .map(|m| (m.to, m.body))
        .collect();
    assert_fanned_out("twilio", &sms, &received, MEMBERS);
}

/// The auditor's tools at the size of a real crisis: 200,000 recipients through
/// Sinch, then a JSON-lines page, the CSV and the export bundle of the audit
/// (once each failed at this size: one record of a 1,000-recipient job is more
/// than a NATS message), and the bundle verifies offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_200000_leaves_an_audit_that_exports_and_verifies() {
    let sinch = SinchSimulator::start("plan0123", "sinch-token").await;
    sinch.set_recording(false);
    let app = sinch_app(&sinch).await;
    create_audience(&app, LARGE).await;
    let sms = declare_and_wait(&app, LARGE).await;
    assert_eq!(sms.sent, LARGE as u64);
    assert_eq!(
        sinch.submitted(),
        LARGE as u64,
        "each recipient submitted once"
    );
    assert_the_audit_exports_and_verifies(&app, LARGE).await;
    let csv = app
        .http
        .get(format!("{}/api/v1/audit?format=csv", app.api))
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    assert!(
        csv.lines().count() > LARGE / 1000,
        "{} CSV lines",
        csv.lines().count()
    );
}

/// The bus killed (SIGKILL) in the middle of a fan-out and started again: the
/// fan-out finishes, every member is reached, and every dispatch job ends, acked
/// when done, so the work queue (which holds phone numbers) empties. Once 27 jobs
/// stayed in it for good after such a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_killed_mid_fan_out_leaves_no_job_behind() {
    const PEOPLE: usize = 30_000;
    let sinch = SinchSimulator::start("plan0123", "sinch-token").await;
    sinch.set_latency(Duration::from_millis(40));
    let mut app = sinch_app(&sinch).await;
    create_audience(&app, PEOPLE).await;
    let id = declare(&app).await;
    wait_until_async("a part of the fan-out submitted", FAN_OUT_WAIT, || async {
        (sinch.submitted() >= PEOPLE as u64 / 5).then_some(())
    })
    .await;
    let before = sinch.submitted();
    app.nats.restart();
    assert!(
        before < PEOPLE as u64,
        "killed in the middle: {before} sent"
    );
    let sms = wait_settled(&app, &id, PEOPLE).await;
    assert_eq!(sms.total, PEOPLE as u64, "{sms:?}");
    assert_eq!(sms.failed, 0, "{sms:?}");
    let reached: std::collections::HashSet<String> = sinch.recipients().into_iter().collect();
    assert_eq!(reached.len(), PEOPLE, "distinct members reached");
    // A job redelivered after the kill is done within one ack wait (30 s); one
    // acknowledged but left in the queue is removed by the coordinator's janitor
    // within two of its sweeps.
    wait_until_async(
        "the dispatch work queue to empty",
        Duration::from_secs(90),
        || async { (app.stream_messages("KRISBUD_DISPATCH").await == 0).then_some(()) },
    )
    .await;
    eprintln!(
        "{before} of {PEOPLE} submitted before the kill, {} submissions in all",
        sinch.submitted()
    );
}
