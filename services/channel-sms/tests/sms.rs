//! The SMS channel against a real nats-server: jobs in, outbox lines or 46elks
//! requests out, and one `DeliveryReported` per job without phone numbers in it.

use std::path::Path;
use std::time::Duration;

use krisbud_channel_sms::{Config, ProviderKind};
use krisbud_kit::Secret;
use krisbud_proto::event::{DeliveryReported, DeliveryState};
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use krisbud_proto::template::{EmailMessage, SmsMessage};
use krisbud_proto::{Channel, spec};
use krisbud_tests::service::{dispatch_job, recipient};
use krisbud_tests::{ElksSimulator, TestService, wait_until_async};

const WAIT: Duration = Duration::from_secs(20);
const TEXT: &str =
    "Stockholms stad: vattenläcka i Farsta. Koka vattnet före användning. Mer på stockholm.se/kris";

/// The SMS channel with `config` on a nats-server of its own.
async fn start(config: Config) -> TestService {
    TestService::start(|rt, shutdown| krisbud_channel_sms::start(config, rt, shutdown)).await
}

/// The crisis's `DeliveryReported`, and its body as stored.
async fn outcome(app: &TestService, crisis_id: &str) -> (DeliveryReported, Vec<u8>) {
    let reported = app.outcome(Channel::Sms, crisis_id, WAIT).await;
    (reported.event, reported.raw)
}

fn job(crisis_id: &str, recipients: Vec<Recipient>) -> DispatchJob {
    let message = ChannelMessage::Sms(SmsMessage {
        text: TEXT.into(),
        encoding: "gsm7".into(),
        segments: 1,
    });
    DispatchJob {
        recipients,
        ..dispatch_job(Channel::Sms, crisis_id, 1, "sv", message)
    }
}

fn elks_config(sim: &ElksSimulator, password: &str) -> Config {
    Config {
        provider: ProviderKind::Elks46,
        from: "Stockholm".into(),
        elks_base_url: sim.base_url(),
        elks_username: "u0123".into(),
        elks_password: Secret::new(password),
        delivery_callback_url: Some("https://krisbud.example.se/hooks/46elks".into()),
        ..Config::default()
    }
}

fn read_outbox(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("outbox/sms.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every outbox line is json"))
        .collect()
}

fn assert_no_numbers(event: &[u8], numbers: &[&str]) {
    let text = String::from_utf8_lossy(event);
    for number in numbers {
        let digits = number.trim_start_matches('+');
        assert!(
            !text.contains(digits),
            "the event must not carry the phone number {number}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_writes_one_line_per_recipient_and_reports_delivered() {
    let app = start(Config::default()).await;
    let numbers = ["+46701234567", "+46709876543"];
    let mut recipients: Vec<Recipient> = numbers.iter().map(|n| recipient(n)).collect();
    recipients.push(recipient("070-123 45 67"));
    let job = job("vattenlacka-farsta", recipients.clone());
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "vattenlacka-farsta").await;
    assert_eq!(reported.provider, "outbox");
    assert_eq!(reported.job_id, job.job_id);
    assert_eq!(reported.outcomes.len(), 3);
    for (outcome, recipient) in reported.outcomes.iter().zip(&recipients[..2]) {
        assert_eq!(outcome.recipient, recipient.reference);
        assert_eq!(outcome.state, DeliveryState::Delivered);
    }
    let invalid = &reported.outcomes[2];
    assert_eq!(invalid.state, DeliveryState::Failed);
    assert!(invalid.reason.as_deref().unwrap().contains("e.164"));
    assert_no_numbers(&raw, &numbers);
    assert!(!String::from_utf8_lossy(&raw).contains("070-123"));

    let lines = read_outbox(app.data.path());
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, recipient) in lines.iter().zip(&recipients) {
        assert_eq!(line["to"], recipient.address.as_str());
        assert_eq!(line["recipient"], recipient.reference.as_str());
        assert_eq!(line["message"], TEXT);
        assert_eq!(line["from"], "Stockholm");
        assert_eq!(line["job_id"], job.job_id.as_str());
        assert_eq!(line["crisis_id"], "vattenlacka-farsta");
        assert_eq!(line["revision"], 1);
        assert_eq!(line["encoding"], "gsm7");
        assert_eq!(line["segments"], 1);
        assert!(line["written_at"].is_string());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elks_receives_each_number_and_outcomes_are_sent() {
    let sim = ElksSimulator::start("u0123", "p4ss").await;
    let app = start(elks_config(&sim, "p4ss")).await;
    let numbers = ["+46701234567", "+46709876543"];
    let job = job(
        "brand-hjulsta",
        numbers.iter().map(|n| recipient(n)).collect(),
    );
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "brand-hjulsta").await;
    assert_eq!(reported.provider, "46elks");
    let received = sim.received();
    assert_eq!(received.len(), 2);
    for number in numbers {
        let sms = received
            .iter()
            .find(|s| s.to == number)
            .expect("each number got its sms");
        assert_eq!(sms.from, "Stockholm");
        assert_eq!(sms.message, TEXT);
        assert_eq!(
            sms.whendelivered.as_deref(),
            Some("https://krisbud.example.se/hooks/46elks")
        );
        let outcome = reported
            .outcomes
            .iter()
            .find(|o| o.recipient == recipient(number).reference)
            .unwrap();
        assert_eq!(outcome.state, DeliveryState::Sent);
        assert_eq!(outcome.provider_ref.as_deref(), Some(sms.id.as_str()));
    }
    assert_no_numbers(&raw, &numbers);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_without_texting_anyone_twice() {
    let sim = ElksSimulator::start("u0123", "p4ss").await;
    let app = start(elks_config(&sim, "p4ss")).await;
    let numbers = ["+46701234567", "+46709876543", "+46731112233"];
    // One of the three requests fails; the retry must reach only that recipient.
    sim.fail_next(1, 503);
    let job = job(
        "storm-sodermalm",
        numbers.iter().map(|n| recipient(n)).collect(),
    );
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "storm-sodermalm").await;
    assert_eq!(reported.outcomes.len(), 3);
    assert!(
        reported
            .outcomes
            .iter()
            .all(|o| o.state == DeliveryState::Sent),
        "{reported:?}"
    );
    assert_eq!(sim.requests(), 4, "three sends and one retry");
    let received = sim.received();
    for number in numbers {
        assert_eq!(
            received.iter().filter(|s| s.to == number).count(),
            1,
            "{number} got exactly one sms"
        );
    }
    assert_no_numbers(&raw, &numbers);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_fails_the_recipient_with_the_providers_reason() {
    let sim = ElksSimulator::start("u0123", "p4ss").await;
    let app = start(elks_config(&sim, "wrong")).await;
    let job = job("gasutslapp-kista", vec![recipient("+46701234567")]);
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "gasutslapp-kista").await;
    let outcome = &reported.outcomes[0];
    assert_eq!(outcome.state, DeliveryState::Failed);
    let reason = outcome.reason.as_deref().unwrap();
    assert!(reason.starts_with("46elks 401: "), "{reason}");
    assert!(sim.received().is_empty());
    assert_eq!(sim.requests(), 1, "a 4xx is not retried");
    assert_no_numbers(&raw, &["+46701234567"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_an_sms_message_is_recorded_and_rejected() {
    let app = start(Config::default()).await;
    let mut job = job("fel-kanal", vec![recipient("+46701234567")]);
    job.message = ChannelMessage::Email(EmailMessage {
        subject: "Ämne".into(),
        text: "text".into(),
        html: "<p>text</p>".into(),
    });
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, _) = outcome(&app, "fel-kanal").await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Failed);
    assert_eq!(
        reported.outcomes[0].reason.as_deref(),
        Some("the job carries no sms message")
    );
    assert!(read_outbox(app.data.path()).is_empty());
    // The rejected job leaves the work queue for good.
    let stream = app.rt.bus.js.get_stream(spec::DISPATCH.name).await.unwrap();
    wait_until_async("the rejected job to leave the work queue", WAIT, || {
        let mut stream = stream.clone();
        async move {
            let info = stream.info().await.ok()?;
            (info.state.messages == 0).then_some(())
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_job_reaching_a_public_audience_is_refused_and_recorded() {
    use krisbud_proto::AlertStatus;
    use krisbud_proto::audience::Audience;

    let app = start(Config::default()).await;
    let audiences = app
        .rt
        .bus
        .js
        .get_key_value(spec::AUDIENCES.name)
        .await
        .unwrap();
    for (id, exercise) in [("ovningsgrupp", true), ("allmanheten", false)] {
        let audience = Audience {
            id: id.into(),
            name: id.into(),
            exercise,
            members: 1,
            with_phone: 1,
            with_email: 0,
            generation: 1,
            chunks: 1,
            updated_at: None,
            updated_by: None,
        };
        audiences
            .put(id, serde_json::to_vec(&audience).unwrap().into())
            .await
            .unwrap();
    }
    let exercise_job =
        |crisis: &str, status: AlertStatus, audiences: &[&str], number: &str| DispatchJob {
            status,
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            ..job(crisis, vec![recipient(number)])
        };
    // The coordinator let these through (a bug, or a forged job): the channel
    // still refuses them.
    let leaking = exercise_job(
        "ovning-lacka",
        AlertStatus::Exercise,
        &["ovningsgrupp", "allmanheten"],
        "+46701740640",
    );
    let nameless = exercise_job("test-utan-publik", AlertStatus::Test, &[], "+46701740641");
    let allowed = exercise_job(
        "ovning-ok",
        AlertStatus::Exercise,
        &["ovningsgrupp"],
        "+46701740642",
    );
    for job in [&leaking, &nameless, &allowed] {
        app.rt.bus.dispatch(job).await.unwrap();
    }
    for crisis in ["ovning-lacka", "test-utan-publik"] {
        let (reported, _) = outcome(&app, crisis).await;
        assert_eq!(reported.outcomes.len(), 1);
        assert_eq!(reported.outcomes[0].state, DeliveryState::Failed);
        assert_eq!(
            reported.outcomes[0].reason.as_deref(),
            Some(krisbud_kit::channel::EXERCISE_REFUSED)
        );
    }
    let (reported, _) = outcome(&app, "ovning-ok").await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Delivered);

    // Only the exercise audience's member got a message.
    let to: Vec<String> = read_outbox(app.data.path())
        .iter()
        .map(|l| l["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(to, ["+46701740642"]);

    // Each refusal is on record, naming the public audience.
    let events = app.rt.bus.js.get_stream(spec::EVENTS.name).await.unwrap();
    let mut refused = Vec::new();
    let info = events.get_info().await.unwrap();
    for seq in 1..=info.state.last_sequence {
        let Ok(message) = events.get_raw_message(seq).await else {
            continue;
        };
        if message.subject.as_str() == krisbud_proto::subject::EXERCISE_GUARD_EVENTS {
            let envelope: krisbud_proto::Envelope =
                serde_json::from_slice(&message.payload).unwrap();
            if let krisbud_proto::Event::ExerciseRefused(e) = envelope.event {
                refused.push((e.crisis_id.unwrap(), e.audiences, envelope.actor.user));
            }
        }
    }
    refused.sort();
    assert_eq!(
        refused,
        [
            (
                "ovning-lacka".to_owned(),
                vec!["allmanheten".to_owned()],
                "service:channel-sms".to_owned()
            ),
            (
                "test-utan-publik".to_owned(),
                vec!["(none named)".to_owned()],
                "service:channel-sms".to_owned()
            ),
        ]
    );
    app.stop().await;
}
