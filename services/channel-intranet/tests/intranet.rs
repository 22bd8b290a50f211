//! The intranet channel against a real nats-server: jobs in, signed webhook calls
//! or outbox lines out, and one `DeliveryReported` (recipient `intranet`) per job.

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use krisbud_channel_intranet::{Config, Mode};
use krisbud_kit::Secret;
use krisbud_proto::Channel;
use krisbud_proto::event::DeliveryReported;
use krisbud_proto::event::DeliveryState;
use krisbud_proto::job::{ChannelMessage, DispatchJob};
use krisbud_proto::model::{AlertStatus, Severity};
use krisbud_proto::publish::IntranetArticle;
use krisbud_proto::template::{IntranetMessage, SmsMessage};
use krisbud_tests::service::dispatch_job;
use krisbud_tests::{TestService, WebhookReceiver};

const WAIT: Duration = Duration::from_secs(20);
const TITLE: &str = "Vattenläcka i Farsta: koka vattnet";
const BODY: &str = "## Vad har hänt?\n\nEn vattenledning har gått sönder i Farsta.\n\n## Vad ska jag göra?\n\nKoka vattnet före användning.";

/// The intranet channel with `config` on a nats-server of its own.
async fn start(config: Config) -> TestService {
    TestService::start(|rt, shutdown| krisbud_channel_intranet::start(config, rt, shutdown)).await
}

/// The crisis's `DeliveryReported`, which has the one recipient `intranet`.
async fn outcome(app: &TestService, crisis_id: &str) -> DeliveryReported {
    let reported = app.outcome(Channel::Intranet, crisis_id, WAIT).await.event;
    assert_eq!(reported.outcomes.len(), 1);
    assert_eq!(reported.outcomes[0].recipient, "intranet");
    reported
}

fn job(crisis_id: &str) -> DispatchJob {
    let message = ChannelMessage::Intranet(IntranetMessage {
        title: TITLE.into(),
        body: BODY.into(),
    });
    DispatchJob {
        status: AlertStatus::Exercise,
        declared_at: Utc.with_ymd_and_hms(2026, 11, 26, 9, 30, 0).unwrap(),
        ..dispatch_job(Channel::Intranet, crisis_id, 2, "sv", message)
    }
}

fn expected_article(crisis_id: &str) -> IntranetArticle {
    IntranetArticle {
        crisis_id: crisis_id.into(),
        revision: 2,
        language: "sv".into(),
        status: AlertStatus::Exercise,
        severity: Severity::Severe,
        title: TITLE.into(),
        body: BODY.into(),
        published_at: Utc.with_ymd_and_hms(2026, 11, 26, 9, 30, 0).unwrap(),
        article_id: format!("{crisis_id}.sv"),
        msg_type: Default::default(),
        references: Vec::new(),
    }
}

fn webhook_config(hook: &WebhookReceiver, secret: &str) -> Config {
    Config {
        mode: Mode::Webhook,
        webhook_url: hook.url(),
        webhook_secret: Secret::new(secret),
        timeout_secs: 5,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_a_signed_article_and_it_is_delivered() {
    let hook = WebhookReceiver::start("hook-secret").await;
    let app = start(webhook_config(&hook, "hook-secret")).await;
    let job = job("vattenlacka-farsta");
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "vattenlacka-farsta").await;
    assert_eq!(reported.provider, "webhook");
    assert_eq!(reported.outcomes[0].state, DeliveryState::Delivered);
    let received = hook.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert!(request.signature_valid, "the signature verifies");
    let article: IntranetArticle = serde_json::from_value(request.body.clone()).unwrap();
    assert_eq!(article, expected_article("vattenlacka-farsta"));
    assert_eq!(
        request
            .headers
            .get("x-krisbud-delivery")
            .map(String::as_str),
        Some(job.job_id.as_str())
    );
    assert_eq!(
        request.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_with_the_same_signed_bytes() {
    let hook = WebhookReceiver::start("hook-secret").await;
    let app = start(webhook_config(&hook, "hook-secret")).await;
    hook.fail_next(2, 503);
    app.rt.bus.dispatch(&job("storm-sodermalm")).await.unwrap();

    let reported = outcome(&app, "storm-sodermalm").await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Delivered);
    assert_eq!(hook.requests(), 3, "two failures, then the delivery");
    let received = hook.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].signature_valid);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_signature_fails_with_the_webhooks_reason() {
    let hook = WebhookReceiver::start("hook-secret").await;
    let app = start(webhook_config(&hook, "not-the-secret")).await;
    app.rt.bus.dispatch(&job("gasutslapp-kista")).await.unwrap();

    let reported = outcome(&app, "gasutslapp-kista").await;
    let outcome = &reported.outcomes[0];
    assert_eq!(outcome.state, DeliveryState::Failed);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("webhook 401: bad signature")
    );
    assert_eq!(hook.requests(), 1, "a 4xx is not retried");
    assert!(!hook.received()[0].signature_valid);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_writes_one_line_per_article() {
    let app = start(Config::default()).await;
    app.rt
        .bus
        .dispatch(&job("vattenlacka-farsta"))
        .await
        .unwrap();
    let mut other = job("brand-hjulsta");
    other.job_id = "brand-hjulsta.r2.intranet.en.0".into();
    other.language = "en".into();
    app.rt.bus.dispatch(&other).await.unwrap();

    let reported = outcome(&app, "vattenlacka-farsta").await;
    assert_eq!(reported.provider, "outbox");
    assert_eq!(reported.outcomes[0].state, DeliveryState::Delivered);
    outcome(&app, "brand-hjulsta").await;

    let text = std::fs::read_to_string(app.data.path().join("outbox/intranet.jsonl")).unwrap();
    let mut articles: Vec<IntranetArticle> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is an article"))
        .collect();
    articles.sort_by(|a, b| a.crisis_id.cmp(&b.crisis_id));
    assert_eq!(articles.len(), 2);
    assert_eq!(articles[1], expected_article("vattenlacka-farsta"));
    assert_eq!(articles[0].language, "en");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_an_intranet_message_is_recorded_and_rejected() {
    let app = start(Config::default()).await;
    let mut job = job("fel-kanal");
    job.message = ChannelMessage::Sms(SmsMessage {
        text: "text".into(),
        encoding: "gsm7".into(),
        segments: 1,
    });
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "fel-kanal").await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Failed);
    assert_eq!(
        reported.outcomes[0].reason.as_deref(),
        Some("the job carries no intranet message")
    );
    assert!(!app.data.path().join("outbox/intranet.jsonl").exists());
    app.stop().await;
}
