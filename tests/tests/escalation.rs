//! Confirmation deadlines, escalation and expiry end to end: a channel left
//! unconfirmed past its deadline raises `EscalationRaised` level by level until it
//! is confirmed, the duty officers get SMS and email notices that are not counted
//! as the crisis's recipients, two systems on one NATS raise each level once, a
//! restart loses no deadline, and a crisis with `expires_at` takes its banner down
//! on time, on record.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestApp, water_variables};
use krisbud::system::UpOptions;
use krisbud_kit::CancellationToken;
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::{Channel, Role};
use krisbud_tests::wait_until_async;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Deadlines of one second (the demo water template is `Moderate`), levels three
/// seconds apart, swept ten times a second, the duty officers' audience notified.
const FAST: &str = r#"
[coordinator.confirmation]
moderate_secs = 1
severe_secs = 1
repeat_secs = 3
sweep_interval_ms = 100
notify_audiences = ["tib-jour"]
"#;

const TIB_PHONES: [&str; 2] = ["+46701740650", "+46701740651"];
const TIB_EMAILS: [&str; 2] = ["tib.anna@stad.example", "tib.backup@stad.example"];

/// Creates the duty officers' audience with two members.
async fn create_tib_audience(app: &TestApp) {
    let response = app
        .http
        .post(format!("{}/api/v1/audiences", app.api))
        .bearer_auth(app.token(Role::Admin))
        .json(&json!({ "id": "tib-jour", "name": "Tjänsteperson i beredskap" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let csv = format!(
        "Telefon,E-post,Språk,Namn\n{},{},sv,Anna TiB\n{},{},sv,Backup TiB\n",
        TIB_PHONES[0], TIB_EMAILS[0], TIB_PHONES[1], TIB_EMAILS[1]
    );
    let response = app
        .http
        .put(format!("{}/api/v1/audiences/tib-jour/members", app.api))
        .bearer_auth(app.token(Role::Admin))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// A water-outage declaration to the Farsta residents on `channels`.
fn declaration(channels: &[&str]) -> Value {
    json!({
        "template": "vattenlacka",
        "variables": water_variables(),
        "audiences": ["farsta-boende"],
        "channels": channels
    })
}

/// The escalation levels raised for `channel` of the current revision.
fn levels(status: &CrisisStatus, channel: Channel) -> Vec<u32> {
    status
        .channels
        .get(&channel)
        .map(|c| c.escalations.iter().map(|e| e.level).collect())
        .unwrap_or_default()
}

/// Waits until `channel` of the crisis has raised at least `level`.
async fn wait_level(app: &TestApp, id: &str, channel: Channel, level: u32) -> CrisisStatus {
    wait_until_async(
        &format!("escalation level {level} of {channel} in the status"),
        WAIT,
        || async {
            let s = app.status(id).await;
            levels(&s, channel).iter().any(|l| *l >= level).then_some(s)
        },
    )
    .await
}

/// The `EscalationRaised` records of the crisis in the audit: (channel, level) →
/// how many records.
async fn audited_escalations(app: &TestApp, id: &str) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for record in app.audit(id).await {
        let event = &record["event"];
        if event["kind"] == "EscalationRaised" {
            let key = (
                event["payload"]["channel"].as_str().unwrap().to_owned(),
                event["payload"]["level"].as_u64().unwrap(),
            );
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

/// The SMS outbox lines of the notices of the crisis (their job ids name the
/// escalation).
fn sms_notices(app: &TestApp, id: &str) -> Vec<Value> {
    app.sms_outbox()
        .into_iter()
        .filter(|l| {
            l["crisis_id"] == id
                && l["job_id"]
                    .as_str()
                    .is_some_and(|j| j.contains(".escalation."))
        })
        .collect()
}

/// The SMS notices of one channel's level.
fn notices_of(app: &TestApp, id: &str, channel: &str, level: u32) -> Vec<Value> {
    let prefix = format!("{id}.r1.{channel}.escalation.{level}.sms.");
    sms_notices(app, id)
        .into_iter()
        .filter(|l| l["job_id"].as_str().unwrap().starts_with(&prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_channel_escalates_level_by_level_until_confirmed() {
    let app = TestApp::spawn_with(FAST).await;
    create_tib_audience(&app).await;
    let id = app.declare_ok(&declaration(&["sms", "banner"])).await;
    app.wait_delivered(&id, WAIT).await;

    // Level 1 after the deadline, level 2 after the repeat, both in the status ...
    let status = wait_level(&app, &id, Channel::Sms, 2).await;
    let sms_levels = levels(&status, Channel::Sms);
    assert_eq!(&sms_levels[..2], &[1, 2], "{status:?}");
    let escalations = &status.channels[&Channel::Sms].escalations;
    assert!(escalations[1].deadline > escalations[0].deadline);
    assert_eq!(
        (escalations[1].deadline - escalations[0].deadline).num_seconds(),
        3
    );
    let declared = status.revisions[0].at.unwrap();
    assert_eq!(
        (escalations[0].deadline - declared).num_milliseconds(),
        1000,
        "the deadline counts from the revision, by severity"
    );
    assert!(escalations[0].at >= escalations[0].deadline);

    // ... and in the audit, once per level.
    let audited = wait_until_async("levels 1 and 2 of sms in the audit", WAIT, || async {
        let a = audited_escalations(&app, &id).await;
        (a.contains_key(&("sms".into(), 1)) && a.contains_key(&("sms".into(), 2))).then_some(a)
    })
    .await;
    assert!(audited.values().all(|n| *n == 1), "{audited:?}");

    // The duty officers got the notices by SMS and email, in Swedish.
    let level_one = wait_until_async("the SMS notices of level 1", WAIT, || async {
        let n = notices_of(&app, &id, "sms", 1);
        (n.len() == 2).then_some(n)
    })
    .await;
    let mut to: Vec<&str> = level_one
        .iter()
        .map(|l| l["to"].as_str().unwrap())
        .collect();
    to.sort();
    assert_eq!(to, TIB_PHONES);
    let text = level_one[0]["message"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "ESKALERING nivå 1: kanalen sms för kris {id} (Vattnet är avstängt i Farsta"
        )),
        "{text}"
    );
    // The deadline in Stockholm time, marked with its zone.
    assert!(
        text.contains("Tidsgränsen gick ut kl. ")
            && (text.ends_with(" CET. Bekräfta i krisbud.")
                || text.ends_with(" CEST. Bekräfta i krisbud.")),
        "{text}"
    );
    wait_until_async("the SMS notices of level 2", WAIT, || async {
        (notices_of(&app, &id, "sms", 2).len() == 2).then_some(())
    })
    .await;
    wait_until_async("the email notices to both duty officers", WAIT, || async {
        let mails = app.email_outbox();
        TIB_EMAILS
            .iter()
            .all(|address| mails.iter().any(|m| m.contains(&format!("To: {address}"))))
            .then_some(())
    })
    .await;
    let mails = app.email_outbox();
    let notice = mails
        .iter()
        .find(|m| m.contains(&format!("To: {}", TIB_EMAILS[0])))
        .unwrap();
    assert!(notice.contains("Subject: "), "{notice}");

    // The notices count under their escalation, not among the crisis's recipients.
    let status = wait_until_async("the notices counted under level 1", WAIT, || async {
        let s = app.status(&id).await;
        let first = s.channels[&Channel::Sms].escalations.first().cloned()?;
        (first.notices_sent == 4).then_some(s)
    })
    .await;
    let sms = &status.channels[&Channel::Sms];
    assert_eq!(
        (sms.total, sms.delivered, sms.sent, sms.failed, sms.pending),
        (3, 3, 0, 0, 0),
        "{sms:?}"
    );
    assert_eq!(sms.providers.values().sum::<u64>(), 3, "{sms:?}");
    let crisis_lines = app
        .sms_outbox()
        .into_iter()
        .filter(|l| l["crisis_id"] == id.as_str())
        .count();
    assert!(crisis_lines > 3, "notices went through the same outbox");

    // Confirming sms stops its levels; the banner, unconfirmed, keeps escalating
    // and serves as the clock that the sweeps went on.
    let response = app
        .confirm(
            Some(&app.token(Role::Operator)),
            &id,
            "sms",
            "SMS har gått ut",
        )
        .await;
    assert_eq!(response.status(), 200);
    let confirmed: CrisisStatus = response.json().await.unwrap();
    let at_confirmation = levels(&confirmed, Channel::Sms).into_iter().max().unwrap();
    let banner_then = levels(&confirmed, Channel::Banner)
        .into_iter()
        .max()
        .unwrap_or(0);
    let status = wait_level(&app, &id, Channel::Banner, banner_then + 3).await;
    let after = levels(&status, Channel::Sms).into_iter().max().unwrap();
    assert!(
        after <= at_confirmation + 1,
        "at most a level already in flight at the confirmation: {at_confirmation} then {after}"
    );
    let status = wait_level(&app, &id, Channel::Banner, banner_then + 4).await;
    assert_eq!(
        levels(&status, Channel::Sms).into_iter().max().unwrap(),
        after,
        "no level after the confirmation"
    );
    let audited = audited_escalations(&app, &id).await;
    assert!(audited.values().all(|n| *n == 1), "{audited:?}");
}

/// A second whole system (coordinator, channels, audit, gateway) on the same NATS,
/// as a second replica runs, with its own data directory.
struct Replica {
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    async fn start(app: &TestApp) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let mut config = app.config();
        config.common.data_dir = dir.path().to_path_buf();
        config.audit.signing_key_file = Some(app.data_dir.path().join("audit-signing.key"));
        // Replicas of one installation share the gateway's command key.
        config.common.commands.signing_key_file =
            Some(app.data_dir.path().join("command-signing.key"));
        let shutdown = CancellationToken::new();
        let system = krisbud::system::up(config, UpOptions { demo: false }, shutdown.clone())
            .await
            .expect("the second system starts");
        Replica {
            _dir: dir,
            shutdown,
            task: tokio::spawn(system.wait()),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the second system stops")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_raise_each_level_exactly_once() {
    let mut app = TestApp::spawn_with(FAST).await;
    create_tib_audience(&app).await;
    let replica = Replica::start(&app).await;
    let id = app.declare_ok(&declaration(&["banner"])).await;
    let status = wait_level(&app, &id, Channel::Banner, 3).await;
    let raised = levels(&status, Channel::Banner);
    let audited = wait_until_async("three banner levels in the audit", WAIT, || async {
        let a = audited_escalations(&app, &id).await;
        (a.len() >= 3).then_some(a)
    })
    .await;
    for ((channel, level), n) in &audited {
        assert_eq!(channel, "banner");
        assert_eq!(*n, 1, "level {level} raised {n} times: {audited:?}");
    }
    let mut unique = raised.clone();
    unique.dedup();
    assert_eq!(unique, raised, "the status records each level once");
    // Each notice job went out once, whichever instance's channel sent it.
    let notice_jobs = |lines: Vec<Value>| {
        let mut jobs: BTreeMap<String, usize> = BTreeMap::new();
        for l in lines {
            *jobs
                .entry(l["job_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        jobs
    };
    wait_until_async("the notices of level 1", WAIT, || async {
        (notices_of(&app, &id, "banner", 1).len()
            + replica_notices(&replica, &id, "banner", 1).len()
            == 2)
            .then_some(())
    })
    .await;
    let mut lines = sms_notices(&app, &id);
    lines.extend(replica_sms(&replica, &id));
    assert!(
        notice_jobs(lines).values().all(|n| *n == 2),
        "two members, once each"
    );
    replica.stop().await;
    app.stop().await;
}

fn replica_sms(replica: &Replica, id: &str) -> Vec<Value> {
    std::fs::read_to_string(replica._dir.path().join("outbox").join("sms.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["crisis_id"] == id && l["job_id"].as_str().unwrap().contains(".escalation."))
        .collect()
}

fn replica_notices(replica: &Replica, id: &str, channel: &str, level: u32) -> Vec<Value> {
    let prefix = format!("{id}.r1.{channel}.escalation.{level}.sms.");
    replica_sms(replica, id)
        .into_iter()
        .filter(|l| l["job_id"].as_str().unwrap().starts_with(&prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_pending_over_a_restart_fires_once() {
    let slow = FAST.replace("moderate_secs = 1", "moderate_secs = 5");
    let mut app = TestApp::spawn_with(&slow).await;
    create_tib_audience(&app).await;
    let id = app.declare_ok(&declaration(&["banner"])).await;
    let before = app.status(&id).await;
    assert!(levels(&before, Channel::Banner).is_empty());
    app.restart().await;
    let status = wait_level(&app, &id, Channel::Banner, 1).await;
    assert_eq!(levels(&status, Channel::Banner)[0], 1);
    let audited = wait_until_async("level 1 in the audit", WAIT, || async {
        let a = audited_escalations(&app, &id).await;
        a.contains_key(&("banner".into(), 1)).then_some(a)
    })
    .await;
    assert_eq!(audited[&("banner".into(), 1)], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_crisis_takes_its_banner_down_on_record() {
    let app = TestApp::spawn().await;
    let expires_at = chrono::Utc::now() + chrono::TimeDelta::seconds(4);
    let mut body = declaration(&["banner"]);
    body["expires_at"] = json!(expires_at);
    let id = app.declare_ok(&body).await;
    wait_until_async("the banner shown", WAIT, || async {
        app.banners()
            .await
            .iter()
            .any(|b| b["crisis_id"] == id.as_str())
            .then_some(())
    })
    .await;
    assert_eq!(
        app.status(&id).await.expires_at.map(|t| t.timestamp()),
        Some(expires_at.timestamp())
    );

    let status = wait_until_async("the crisis expired in the status", WAIT, || async {
        let s = app.status(&id).await;
        s.expired.is_some().then_some(s)
    })
    .await;
    let expired = status.expired.unwrap();
    assert_eq!(expired.revision, 1);
    assert!(expired.at >= expires_at, "not before its time");
    assert!(chrono::Utc::now() >= expires_at);
    assert!(
        !app.banners()
            .await
            .iter()
            .any(|b| b["crisis_id"] == id.as_str()),
        "the banner is gone"
    );
    // The banner channel withdrew it in its bucket, not only hid it.
    let client = app.nats_as("provision").await;
    let kv = async_nats::jetstream::new(client)
        .get_key_value("KRISBUD_BANNERS")
        .await
        .unwrap();
    let key = format!("{id}.sv");
    wait_until_async("the banner withdrawn as expired", WAIT, || async {
        let value = kv.get(key.as_str()).await.ok()??;
        let value: Value = serde_json::from_slice(&value).ok()?;
        (value["withdrawn"] == "expired").then_some(())
    })
    .await;
    let audited = wait_until_async("CrisisExpired in the audit", WAIT, || async {
        let records: Vec<Value> = app
            .audit(&id)
            .await
            .into_iter()
            .filter(|r| r["event"]["kind"] == "CrisisExpired")
            .collect();
        (!records.is_empty()).then_some(records)
    })
    .await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["event"]["id"], format!("{id}.r1.expired"));
    assert!(
        app.status(&id).await.channels[&Channel::Banner]
            .escalations
            .is_empty(),
        "no escalation with the default deadlines"
    );
}
