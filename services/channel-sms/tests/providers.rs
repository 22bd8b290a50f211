//! The SMS providers against their simulators and a real nats-server: Sinch and
//! Twilio fan-outs of 10,000 recipients, outages and Retry-After, failover, the
//! per-crisis deadline, and delivery-report callbacks turned into outcomes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt as _;
use krisbud_channel_sms::{Config, ProviderKind};
use krisbud_kit::consumer::{self, ConsumerSpec};
use krisbud_kit::{Common, Secret};
use krisbud_proto::event::{DeliveryReported, DeliveryState};
use krisbud_proto::job::{ChannelMessage, DispatchJob};
use krisbud_proto::template::SmsMessage;
use krisbud_proto::{Channel, Envelope, Event, spec, subject};
use krisbud_tests::service::{dispatch_job, recipient, runtime};
use krisbud_tests::{
    ElksSimulator, NatsServer, SinchSimulator, TestService, TwilioSimulator, wait_until_async,
};

/// A ceiling, not a pace: waits end as soon as the condition holds, and the tests
/// of a file run at once on a machine that may be compiling.
const WAIT: Duration = Duration::from_secs(60);
/// The deadline of the 10,000-recipient fan-outs: each takes under 10 s alone in
/// a debug build, but the tests of this file run at once on a shared machine.
const FAN_OUT_WAIT: Duration = Duration::from_secs(90);
const TEXT: &str =
    "Stockholms stad: värmebölja. Drick vatten och håll dig i skuggan. Mer på stockholm.se/kris";
const SECRET: &str = "cb-secret-0123456789abcdef";
const PLAN: &str = "plan0123";
const SINCH_TOKEN: &str = "sinch-token";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-auth-token";

/// The SMS channel with `config` on a nats-server of its own.
async fn start(config: Config) -> TestService {
    TestService::start(|rt, shutdown| krisbud_channel_sms::start(config, rt, shutdown)).await
}

fn number(i: usize) -> String {
    format!("+4670{:07}", i)
}

/// `jobs` jobs of `per_job` recipients each for `crisis_id`, numbers counted from 0.
fn jobs(crisis_id: &str, jobs: usize, per_job: usize) -> Vec<DispatchJob> {
    let message = ChannelMessage::Sms(SmsMessage {
        text: TEXT.into(),
        encoding: "gsm7".into(),
        segments: 1,
    });
    (0..jobs)
        .map(|j| {
            let mut job = dispatch_job(Channel::Sms, crisis_id, 1, "sv", message.clone());
            job.job_id = format!("{crisis_id}.r1.sms.sv.{j}");
            job.recipients = (j * per_job..(j + 1) * per_job)
                .map(|i| recipient(&number(i)))
                .collect();
            job
        })
        .collect()
}

fn callbacks(config: Config) -> Config {
    Config {
        callback_listen: Some("127.0.0.1:0".into()),
        callback_secret: Secret::new(SECRET),
        // Every job of a test in hand at once: the provider's pacing bounds the
        // requests, and no job waits in a pulled batch behind slower ones.
        concurrency: 16,
        ..config
    }
}

fn sinch_config(sim: &SinchSimulator) -> Config {
    callbacks(Config {
        provider: ProviderKind::Sinch,
        sinch_base_url: sim.base_url(),
        sinch_service_plan_id: PLAN.into(),
        sinch_api_token: Secret::new(SINCH_TOKEN),
        ..Config::default()
    })
}

fn twilio_config(sim: &TwilioSimulator) -> Config {
    callbacks(Config {
        provider: ProviderKind::Twilio,
        twilio_base_url: sim.base_url(),
        twilio_account_sid: ACCOUNT.into(),
        twilio_auth_token: Secret::new(TWILIO_TOKEN),
        parallel_requests: 32,
        ..Config::default()
    })
}

/// Every delivery event of `crisis_id` stored so far, in order.
async fn events(app: &TestService, crisis_id: &str) -> Vec<Envelope> {
    let stream = app.rt.bus.js.get_stream(spec::EVENTS.name).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject::delivery_events(Channel::Sms, crisis_id),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut consumer = consumer;
    let pending = consumer.info().await.unwrap().num_pending as usize;
    let mut out = Vec::with_capacity(pending);
    while out.len() < pending {
        let mut batch = consumer
            .fetch()
            .max_messages(1_000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            out.push(serde_json::from_slice(&message.payload).expect("an envelope"));
        }
    }
    out
}

fn reported(envelope: &Envelope) -> &DeliveryReported {
    match &envelope.event {
        Event::DeliveryReported(e) => e,
        other => panic!("expected DeliveryReported, got {}", other.kind()),
    }
}

/// Waits until every job of `jobs` has its `<job>.outcome`; returns them by job.
async fn job_outcomes(
    app: &TestService,
    jobs: &[DispatchJob],
    timeout: Duration,
) -> HashMap<String, DeliveryReported> {
    let crisis = &jobs[0].crisis_id;
    wait_until_async("every job's outcome", timeout, || async {
        // Reading the events costs the server a consumer; look a few times a second.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let found: HashMap<String, DeliveryReported> = events(app, crisis)
            .await
            .into_iter()
            .filter(|e| e.id.ends_with(".outcome"))
            .map(|e| {
                let r = reported(&e).clone();
                (r.job_id.clone(), r)
            })
            .collect();
        (found.len() == jobs.len()).then_some(found)
    })
    .await
}

/// The delivery-report events (`<job>.dlr.…`) of `crisis_id`.
async fn reports(app: &TestService, crisis_id: &str) -> Vec<(Envelope, DeliveryReported)> {
    events(app, crisis_id)
        .await
        .into_iter()
        .filter(|e| e.id.contains(".dlr."))
        .map(|e| {
            let r = reported(&e).clone();
            (e, r)
        })
        .collect()
}

fn assert_each_once(submitted: &[String], expected: usize) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in submitted {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), expected, "distinct recipients submitted");
    let repeated: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} recipients got more than one sms",
        repeated.len()
    );
    for i in 0..expected {
        assert!(
            counts.contains_key(number(i).as_str()),
            "{} was not submitted",
            i
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinch_fan_out_submits_every_recipient_once_and_reports_come_back() {
    let sim = SinchSimulator::start(PLAN, SINCH_TOKEN).await;
    let app = start(sinch_config(&sim)).await;
    let jobs = jobs("varmebolja", 10, 1_000);
    for job in &jobs {
        app.rt.bus.dispatch(job).await.unwrap();
    }
    let outcomes = job_outcomes(&app, &jobs, FAN_OUT_WAIT).await;
    assert_each_once(&sim.recipients(), 10_000);
    let batches = sim.batches();
    assert_eq!(batches.len(), 10, "one batch of 1,000 per job");
    for batch in &batches {
        assert_eq!(batch.from, "Stockholm");
        assert_eq!(batch.body, TEXT);
        assert_eq!(batch.delivery_report, "per_recipient");
        let job = batch
            .client_reference
            .as_deref()
            .expect("the job id as client_reference");
        let url = batch.callback_url.as_deref().expect("a callback url");
        assert!(url.contains(SECRET) && url.contains(job), "{url}");
        let reported = &outcomes[job];
        assert_eq!(reported.provider, "sinch");
        assert_eq!(reported.outcomes.len(), 1_000);
        assert!(
            reported
                .outcomes
                .iter()
                .all(|o| o.state == DeliveryState::Sent
                    && o.provider_ref.as_deref() == Some(batch.id.as_str()))
        );
    }

    // Sinch reports every recipient delivered; each becomes a delivered outcome.
    let answers = sim.report_all("Delivered", 0).await;
    assert_eq!(answers.len(), 10_000);
    assert!(
        answers.iter().all(|s| *s == 200),
        "every report answered 200"
    );
    let dlrs = reports(&app, "varmebolja").await;
    assert_eq!(dlrs.len(), 10_000);
    let refs: std::collections::HashSet<&str> = dlrs
        .iter()
        .map(|(_, r)| r.outcomes[0].recipient.as_str())
        .collect();
    assert_eq!(refs.len(), 10_000, "one report per recipient");
    for (envelope, r) in dlrs.iter().take(50) {
        assert_eq!(r.provider, "sinch");
        assert_eq!(r.outcomes[0].state, DeliveryState::Delivered);
        assert_eq!(r.outcomes[0].reason.as_deref(), Some("sinch Delivered (0)"));
        assert_eq!(
            envelope.causation_id.as_deref(),
            Some(format!("{}.outcome", r.job_id).as_str())
        );
        // No phone number in clear: hashes and ids are hex and may hold "4670"
        // by chance, so look for the numbers themselves.
        let json = serde_json::to_string(envelope).unwrap();
        assert!(!json.contains("+4670"), "{json}");
        assert!(
            (0..10_000).all(|i| !json.contains(&number(i)[1..])),
            "{json}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_fan_out_submits_every_recipient_once() {
    let sim = TwilioSimulator::start(ACCOUNT, TWILIO_TOKEN).await;
    let app = start(twilio_config(&sim)).await;
    let jobs = jobs("evakuering", 10, 1_000);
    for job in &jobs {
        app.rt.bus.dispatch(job).await.unwrap();
    }
    let outcomes = job_outcomes(&app, &jobs, FAN_OUT_WAIT).await;
    let messages = sim.messages();
    let submitted: Vec<String> = messages.iter().map(|m| m.to.clone()).collect();
    assert_each_once(&submitted, 10_000);
    let sids: HashMap<&str, &str> = messages
        .iter()
        .map(|m| (m.to.as_str(), m.sid.as_str()))
        .collect();
    for job in &jobs {
        let reported = &outcomes[&job.job_id];
        assert_eq!(reported.provider, "twilio");
        for (o, r) in reported.outcomes.iter().zip(&job.recipients) {
            assert_eq!(o.state, DeliveryState::Sent);
            assert_eq!(o.reason.as_deref(), Some("queued"));
            assert_eq!(o.provider_ref.as_deref(), Some(sids[r.address.as_str()]));
        }
    }
    let m = &messages[0];
    assert_eq!((m.from.as_str(), m.body.as_str()), ("Stockholm", TEXT));
    assert!(m.status_callback.as_deref().unwrap().contains(SECRET));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinch_outage_is_ridden_out_without_duplicates() {
    let sim = SinchSimulator::start(PLAN, SINCH_TOKEN).await;
    let app = start(Config {
        sinch_batch_size: 500,
        ..sinch_config(&sim)
    })
    .await;
    sim.fail_for(Duration::from_secs(5), 503);
    let jobs = jobs("storm", 10, 1_000);
    for job in &jobs {
        app.rt.bus.dispatch(job).await.unwrap();
    }
    let outcomes = job_outcomes(&app, &jobs, FAN_OUT_WAIT).await;
    assert_each_once(&sim.recipients(), 10_000);
    assert!(
        outcomes
            .values()
            .all(|r| r.outcomes.iter().all(|o| o.state == DeliveryState::Sent))
    );
    let requests = sim.requests();
    let failed = requests.iter().filter(|r| r.status == 503).count();
    let accepted = requests.iter().filter(|r| r.status == 201).count();
    assert_eq!(accepted, 20, "20 batches of 500, each accepted once");
    // The outage opened the provider's circuit: after a few 503s in a row the
    // batches waited (a probe a second) instead of each hammering Sinch.
    let threshold = krisbud_channel_sms::provider::BREAKER_THRESHOLD as usize;
    assert!(
        (threshold..=threshold + 20).contains(&failed),
        "{failed} 503s during a 5 s outage"
    );
    // The retries are counted in the jobs' reports (and so in status and audit):
    // the jobs in hand during the outage were delivered again (a job taken up
    // after it ended needs no retry).
    let retried = outcomes.values().filter(|r| r.retries >= 1).count();
    assert!(
        retried >= 4,
        "jobs retried: {:?}",
        outcomes.values().map(|r| r.retries).collect::<Vec<_>>()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_retry_after_is_waited_out() {
    let sim = TwilioSimulator::start(ACCOUNT, TWILIO_TOKEN).await;
    let app = start(Config {
        parallel_requests: 1,
        ..twilio_config(&sim)
    })
    .await;
    sim.set_retry_after(Some(Duration::from_secs(2)));
    sim.fail_next(1, 429);
    let jobs = jobs("retry-after", 1, 5);
    app.rt.bus.dispatch(&jobs[0]).await.unwrap();
    let outcomes = job_outcomes(&app, &jobs, WAIT).await;
    assert!(
        outcomes[&jobs[0].job_id]
            .outcomes
            .iter()
            .all(|o| o.state == DeliveryState::Sent)
    );
    let requests = sim.requests();
    assert_eq!(requests[0].status, 429);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_secs(2),
        "the next call came {gap:?} after the 429"
    );
    assert_eq!(requests.len(), 6, "one 429 and five messages");
    assert_eq!(sim.messages().len(), 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_primary_fails_over_to_the_secondary() {
    let sinch = SinchSimulator::start(PLAN, SINCH_TOKEN).await;
    let twilio = TwilioSimulator::start(ACCOUNT, TWILIO_TOKEN).await;
    let app = start(Config {
        secondary_provider: Some(ProviderKind::Twilio),
        twilio_base_url: twilio.base_url(),
        twilio_account_sid: ACCOUNT.into(),
        twilio_auth_token: Secret::new(TWILIO_TOKEN),
        parallel_requests: 16,
        failover_after: 2,
        request_attempts: 2,
        sinch_batch_size: 100,
        ..sinch_config(&sinch)
    })
    .await;
    sinch.fail_for(Duration::from_secs(3600), 503);
    let jobs = jobs("failover", 4, 250);
    for job in &jobs {
        app.rt.bus.dispatch(job).await.unwrap();
    }
    let outcomes = job_outcomes(&app, &jobs, WAIT).await;
    assert!(sinch.recipients().is_empty());
    let submitted: Vec<String> = twilio.messages().iter().map(|m| m.to.clone()).collect();
    assert_each_once(&submitted, 1_000);
    for reported in outcomes.values() {
        assert_eq!(reported.provider, "twilio", "{}", reported.job_id);
        for o in &reported.outcomes {
            assert_eq!(o.state, DeliveryState::Sent);
            let carrier = o.provider_ref.as_deref().unwrap();
            assert!(carrier.starts_with("twilio:SM"), "{carrier}");
        }
    }
    assert!(sinch.requests().iter().all(|r| r.status == 503));
    app.stop().await;
}

/// A dead primary costs a few dozen requests, not every recipient's retries: its
/// circuit opens after a handful of failures in a row, the secondary takes over,
/// and the primary gets one probe a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_provider_gets_a_few_requests_not_thousands() {
    let elks = ElksSimulator::start("u0123", "p4ss").await;
    let twilio = TwilioSimulator::start(ACCOUNT, TWILIO_TOKEN).await;
    elks.fail_next(usize::MAX, 503);
    let app = start(Config {
        provider: ProviderKind::Elks46,
        elks_base_url: elks.base_url(),
        elks_username: "u0123".into(),
        elks_password: Secret::new("p4ss"),
        secondary_provider: Some(ProviderKind::Twilio),
        failover_after: 20,
        parallel_requests: 16,
        ..twilio_config(&twilio)
    })
    .await;
    let jobs = jobs("dod-leverantor", 3, 1_000);
    for job in &jobs {
        app.rt.bus.dispatch(job).await.unwrap();
    }
    let outcomes = job_outcomes(&app, &jobs, WAIT).await;
    let submitted: Vec<String> = twilio.messages().iter().map(|m| m.to.clone()).collect();
    assert_each_once(&submitted, 3_000);
    // Every recipient's outcome names the provider that carried it.
    for reported in outcomes.values() {
        for o in &reported.outcomes {
            let carrier = o.provider_ref.as_deref().unwrap_or_default();
            assert!(carrier.starts_with("twilio:SM"), "{carrier}");
        }
    }
    let to_the_dead = elks.requests();
    assert!(
        to_the_dead <= 50,
        "{to_the_dead} requests went to the dead primary for 3,000 recipients"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_past_the_deadline_fail_as_expired() {
    let sim = TwilioSimulator::start(ACCOUNT, TWILIO_TOKEN).await;
    let app = start(Config {
        max_age_secs: 600,
        ..twilio_config(&sim)
    })
    .await;
    let mut jobs = jobs("gammal", 1, 3);
    jobs[0].declared_at = chrono::Utc::now() - chrono::Duration::hours(1);
    app.rt.bus.dispatch(&jobs[0]).await.unwrap();
    let outcomes = job_outcomes(&app, &jobs, WAIT).await;
    for o in &outcomes[&jobs[0].job_id].outcomes {
        assert_eq!(o.state, DeliveryState::Failed);
        assert_eq!(o.reason.as_deref(), Some("expired"));
    }
    assert!(sim.requests().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_status_callbacks_become_outcomes_and_bad_ones_are_refused() {
    let sim = TwilioSimulator::start(ACCOUNT, TWILIO_TOKEN).await;
    let app = start(twilio_config(&sim)).await;
    let jobs = jobs("dlr-twilio", 1, 4);
    app.rt.bus.dispatch(&jobs[0]).await.unwrap();
    job_outcomes(&app, &jobs, WAIT).await;
    let messages = sim.messages();
    let url = messages[0].status_callback.clone().unwrap();
    assert!(
        url.starts_with(&format!("http://{}/", app.addr().unwrap())),
        "{url}"
    );

    // Intermediate statuses are answered but not recorded.
    assert!(sim.report_all("sent", None).await.iter().all(|s| *s == 200));
    assert!(reports(&app, "dlr-twilio").await.is_empty());
    // A wrong signature and a wrong secret are refused.
    assert_eq!(
        sim.report_to(&url, &messages[0], "delivered", "not-the-token")
            .await,
        403
    );
    let wrong = url.replace(SECRET, "wrong-secret-0123456789ab");
    assert_eq!(
        sim.report_to(&wrong, &messages[0], "delivered", TWILIO_TOKEN)
            .await,
        403
    );
    assert!(reports(&app, "dlr-twilio").await.is_empty());

    for m in &messages[..2] {
        let url = m.status_callback.as_deref().unwrap();
        assert_eq!(sim.report_to(url, m, "delivered", TWILIO_TOKEN).await, 200);
    }
    // Twilio repeating a callback stores it once.
    assert_eq!(
        sim.report_to(&url, &messages[0], "delivered", TWILIO_TOKEN)
            .await,
        200
    );
    let answers = sim.report_all("undelivered", Some("30003")).await;
    assert!(answers.iter().all(|s| *s == 200));
    let dlrs = reports(&app, "dlr-twilio").await;
    assert_eq!(dlrs.len(), 6, "two delivered, four undelivered");
    let state_of = |to: &str, state: DeliveryState| {
        let reference = recipient(to).reference;
        dlrs.iter()
            .find(|(_, r)| r.outcomes[0].recipient == reference && r.outcomes[0].state == state)
            .map(|(_, r)| r.outcomes[0].clone())
    };
    let delivered = state_of(&messages[0].to, DeliveryState::Delivered).unwrap();
    assert_eq!(
        delivered.provider_ref.as_deref(),
        Some(messages[0].sid.as_str())
    );
    assert_eq!(delivered.reason.as_deref(), Some("twilio delivered"));
    let failed = state_of(&messages[3].to, DeliveryState::Failed).unwrap();
    assert_eq!(failed.reason.as_deref(), Some("twilio undelivered (30003)"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinch_and_46elks_reports_become_outcomes() {
    let sim = SinchSimulator::start(PLAN, SINCH_TOKEN).await;
    let app = start(sinch_config(&sim)).await;
    let jobs = jobs("dlr-sinch", 1, 3);
    app.rt.bus.dispatch(&jobs[0]).await.unwrap();
    job_outcomes(&app, &jobs, WAIT).await;
    let batch = sim.batches().remove(0);
    let url = batch.callback_url.clone().unwrap();
    let wrong = url.replace(SECRET, "wrong-secret-0123456789ab");
    assert_eq!(
        sim.report_to(&wrong, &batch, &batch.to[0], "Delivered", 0)
            .await,
        403
    );
    assert_eq!(
        sim.report_to(&url, &batch, &batch.to[0], "Dispatched", 401)
            .await,
        200
    );
    assert_eq!(
        sim.report_to(&url, &batch, &batch.to[0], "Delivered", 0)
            .await,
        200
    );
    assert_eq!(
        sim.report_to(&url, &batch, &batch.to[1], "Failed", 402)
            .await,
        200
    );
    let dlrs = reports(&app, "dlr-sinch").await;
    assert_eq!(dlrs.len(), 2);
    let first = &dlrs[0].1.outcomes[0];
    assert_eq!(first.recipient, recipient(&batch.to[0]).reference);
    assert_eq!(first.state, DeliveryState::Delivered);
    let second = &dlrs[1].1.outcomes[0];
    assert_eq!(second.state, DeliveryState::Failed);
    assert_eq!(second.reason.as_deref(), Some("sinch Failed (402)"));
    app.stop().await;

    // 46elks posts `id`, `status` and `delivered` to the message's whendelivered.
    let elks = ElksSimulator::start("u0123", "p4ss").await;
    let app = start(callbacks(Config {
        provider: ProviderKind::Elks46,
        elks_base_url: elks.base_url(),
        elks_username: "u0123".into(),
        elks_password: Secret::new("p4ss"),
        ..Config::default()
    }))
    .await;
    let jobs = jobs_for_elks();
    app.rt.bus.dispatch(&jobs[0]).await.unwrap();
    job_outcomes(&app, &jobs, WAIT).await;
    let sms = elks.received().remove(0);
    let url = sms.whendelivered.clone().unwrap();
    let client = reqwest::Client::new();
    let post = |url: String, status: &'static str| {
        let client = client.clone();
        let id = sms.id.clone();
        async move {
            client
                .post(url)
                .form(&[
                    ("id", id.as_str()),
                    ("status", status),
                    ("delivered", "2026-11-26T10:00:00.000000"),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(
            url.replace(SECRET, "wrong-secret-0123456789ab"),
            "delivered"
        )
        .await,
        403
    );
    assert_eq!(post(url.clone(), "delivered").await, 200);
    let dlrs = reports(&app, "dlr-elks").await;
    assert_eq!(dlrs.len(), 1);
    let outcome = &dlrs[0].1.outcomes[0];
    assert_eq!(outcome.recipient, recipient(&sms.to).reference);
    assert_eq!(outcome.state, DeliveryState::Delivered);
    assert_eq!(outcome.provider_ref.as_deref(), Some(sms.id.as_str()));
    app.stop().await;
}

fn jobs_for_elks() -> Vec<DispatchJob> {
    jobs("dlr-elks", 1, 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_only_the_batches_in_flight_are_sent_again_and_counted() {
    let sim = SinchSimulator::start(PLAN, SINCH_TOKEN).await;
    let app = start(Config {
        sinch_batch_size: 100,
        ..sinch_config(&sim)
    })
    .await;
    let jobs = jobs("krasch", 1, 300);
    let job = &jobs[0];
    // What an instance that died in the middle of this job left behind: batch 0
    // claimed and in flight, batch 1 sent and recorded, batch 2 not started.
    let claims = app
        .rt
        .bus
        .js
        .get_key_value(spec::SEND_CLAIMS.name)
        .await
        .unwrap();
    let in_flight = serde_json::json!({ "claimed": true, "outcomes": [] });
    claims
        .put(format!("{}.b0", job.job_id), in_flight.to_string().into())
        .await
        .unwrap();
    let sent: Vec<_> = job.recipients[100..200]
        .iter()
        .map(|r| serde_json::json!({ "recipient": r.reference, "state": "sent", "provider_ref": "01earlier" }))
        .collect();
    let recorded = serde_json::json!({ "claimed": false, "outcomes": sent });
    claims
        .put(format!("{}.b1", job.job_id), recorded.to_string().into())
        .await
        .unwrap();

    app.rt.bus.dispatch(job).await.unwrap();
    let outcomes = job_outcomes(&app, &jobs, WAIT).await;
    let reported = &outcomes[&job.job_id];
    assert_eq!(reported.outcomes.len(), 300);
    let submitted = sim.recipients();
    assert_eq!(
        submitted.len(),
        200,
        "batches 0 and 2 sent, batch 1 not again"
    );
    for (i, (outcome, recipient)) in reported.outcomes.iter().zip(&job.recipients).enumerate() {
        assert_eq!(outcome.recipient, recipient.reference);
        assert_eq!(outcome.state, DeliveryState::Sent);
        // The provider's own reason is left as it is (Sinch gives none).
        assert_eq!(outcome.reason, None);
        match i / 100 {
            0 => {
                assert!(outcome.possible_duplicate, "batch 0 was in flight");
                assert!(submitted.contains(&recipient.address));
            }
            1 => {
                assert!(!outcome.possible_duplicate);
                assert_eq!(outcome.provider_ref.as_deref(), Some("01earlier"));
                assert!(!submitted.contains(&recipient.address));
            }
            _ => {
                assert!(!outcome.possible_duplicate);
                assert!(submitted.contains(&recipient.address));
            }
        }
    }
    for n in 0..3 {
        let entry = claims
            .get(format!("{}.b{n}", job.job_id))
            .await
            .unwrap()
            .unwrap();
        let claim: serde_json::Value = serde_json::from_slice(&entry).unwrap();
        assert_eq!(claim["claimed"], false, "batch {n} is recorded");
        let recorded =
            krisbud_proto::event::outcome_groups::deserialize(claim["outcomes"].clone()).unwrap();
        assert_eq!(recorded.len(), 100);
        // The flag is recorded with the outcomes, so a repeated delivery of the
        // job reports the same.
        let flagged = recorded.iter().filter(|o| o.possible_duplicate).count();
        assert_eq!(flagged, if n == 0 { 100 } else { 0 }, "batch {n}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_channel_mid_fan_out_loses_nobody_and_counts_the_duplicates() {
    let nats = Arc::new(NatsServer::start());
    // The durable consumer the channel will find, with a short ack wait, so the
    // jobs the killed instance held come back within the test rather than after
    // the default 30 s. Jobs here finish well within it.
    let provisioned = runtime(&nats, &Common::default()).await;
    let durable = ConsumerSpec {
        ack_wait: Duration::from_secs(2),
        ..ConsumerSpec::new(
            spec::DISPATCH.name,
            krisbud_channel_sms::DURABLE,
            &subject::dispatch_filter(Channel::Sms),
        )
    };
    consumer::ensure(&provisioned.bus.js, &durable)
        .await
        .unwrap();

    let sim = SinchSimulator::start(PLAN, SINCH_TOKEN).await;
    sim.set_latency(Duration::from_millis(300));
    let config = Config {
        sinch_batch_size: 100,
        parallel_requests: 4,
        concurrency: 2,
        ..sinch_config(&sim)
    };
    // The first instance runs on a runtime of its own, so it can be killed the
    // way a process dies: every task stops where it is, nothing is acknowledged.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (doomed, first) = {
        let nats = nats.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let first = doomed.block_on(TestService::start_on(nats, |rt, shutdown| {
                krisbud_channel_sms::start(config, rt, shutdown)
            }));
            (doomed, first)
        })
        .await
        .unwrap()
    };
    let jobs = jobs("avbrott", 10, 200);
    for job in &jobs {
        provisioned.bus.dispatch(job).await.unwrap();
    }
    wait_until_async("a few batches accepted", WAIT, || async {
        (sim.batches().len() >= 5).then_some(())
    })
    .await;
    // The provider stops answering, so the kill surely finds batches in flight.
    sim.set_latency(Duration::from_secs(60));
    wait_until_async(
        "batches in flight that will not be answered",
        WAIT,
        || async {
            (sim.in_flight() >= 2 && sim.requests().len() + sim.in_flight() >= 7).then_some(())
        },
    )
    .await;
    doomed.shutdown_background();
    sim.set_latency(Duration::from_millis(50));
    std::mem::forget(first);
    let at_kill = sim.batches().len();

    let second = TestService::start_on(nats.clone(), |rt, shutdown| {
        krisbud_channel_sms::start(config, rt, shutdown)
    })
    .await;
    let outcomes = job_outcomes(&second, &jobs, WAIT).await;
    let submitted = sim.recipients();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in &submitted {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 2_000, "every recipient submitted");
    let duplicated: Vec<&str> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    let flagged: std::collections::HashSet<String> = outcomes
        .values()
        .flat_map(|r| r.outcomes.iter())
        .filter(|o| o.possible_duplicate)
        .map(|o| o.recipient.clone())
        .collect();
    // At most the batches in flight at the kill: two jobs, two batches each.
    assert!(
        flagged.len() <= 400,
        "{} flagged of {at_kill} batches at the kill",
        flagged.len()
    );
    for number in &duplicated {
        assert!(
            flagged.contains(&recipient(number).reference),
            "a recipient texted twice is reported as a possible duplicate"
        );
    }
    assert!(
        !flagged.is_empty(),
        "the batches in flight at the kill are reported"
    );
    for reported in outcomes.values() {
        assert_eq!(reported.outcomes.len(), 200);
        assert!(
            reported
                .outcomes
                .iter()
                .all(|o| o.state == DeliveryState::Sent && o.reason.is_none())
        );
    }
    second.stop().await;
}
