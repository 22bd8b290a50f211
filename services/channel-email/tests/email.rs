//! The email channel against a real nats-server: jobs in, `.eml` files or real SMTP
//! transactions out, and one `DeliveryReported` per job without addresses in it.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt as _;
use krisbud_channel_email::{Config, TlsMode, TransportKind};
use krisbud_proto::event::{DeliveryReported, DeliveryState};
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use krisbud_proto::template::EmailMessage;
use krisbud_proto::{Channel, Envelope, Event, spec, subject};
use krisbud_tests::service::{dispatch_job, recipient};
use krisbud_tests::{SmtpSink, TestService, wait_until, wait_until_async};
use mail_parser::{MessageParser, MimeHeaders as _};

const WAIT: Duration = Duration::from_secs(20);
const SUBJECT: &str = "Vattenläcka i Farsta – koka vattnet";
const TEXT: &str = "Vattnet i Farsta kan vara förorenat. Koka vattnet före användning.\n\nMer information: https://stockholm.se/kris";
const HTML: &str = "<p lang=\"sv\">Vattnet i Farsta kan vara förorenat. <strong>Koka vattnet</strong> före användning.</p>";

/// The email channel with `config` on a nats-server of its own.
async fn start(config: Config) -> TestService {
    TestService::start(|rt, shutdown| krisbud_channel_email::start(config, rt, shutdown)).await
}

/// The crisis's `DeliveryReported`, and its body as stored.
async fn outcome(app: &TestService, crisis_id: &str) -> (DeliveryReported, Vec<u8>) {
    let reported = app.outcome(Channel::Email, crisis_id, WAIT).await;
    (reported.event, reported.raw)
}

fn job(crisis_id: &str, recipients: Vec<Recipient>) -> DispatchJob {
    let message = ChannelMessage::Email(EmailMessage {
        subject: SUBJECT.into(),
        text: TEXT.into(),
        html: HTML.into(),
    });
    DispatchJob {
        recipients,
        ..dispatch_job(Channel::Email, crisis_id, 1, "sv", message)
    }
}

fn smtp_config(sink: &SmtpSink) -> Config {
    Config {
        transport: TransportKind::Smtp,
        smtp_host: "127.0.0.1".into(),
        smtp_port: Some(sink.port()),
        smtp_tls: TlsMode::None,
        timeout_secs: 5,
        ..Config::default()
    }
}

/// The Message-ID the channel must use for `recipient` in `job` (without `<>`):
/// one per crisis revision and recipient, whichever job carries them.
fn expected_message_id(job: &DispatchJob, recipient: &Recipient) -> String {
    let hash = recipient.reference.strip_prefix("rcp:").unwrap();
    format!("{}.r{}.{hash}@krisbud", job.crisis_id, job.revision)
}

/// Every `DeliveryReported` of `crisis_id`'s email jobs, waiting until there are
/// `jobs` of them, with their bodies as stored.
async fn reports(
    app: &TestService,
    crisis_id: &str,
    jobs: usize,
    timeout: Duration,
) -> Vec<(DeliveryReported, Vec<u8>)> {
    let stream = app.rt.bus.js.get_stream(spec::EVENTS.name).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject::delivery_events(Channel::Email, crisis_id),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(jobs);
    while out.len() < jobs {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {jobs} email outcomes of {crisis_id}, got {}",
            out.len()
        );
        // A long poll: it returns as soon as an event is there.
        let mut batch = consumer
            .fetch()
            .max_messages(jobs)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            let envelope: Envelope = serde_json::from_slice(&message.payload).unwrap();
            let Event::DeliveryReported(event) = envelope.event else {
                panic!("expected DeliveryReported, got {}", envelope.event.kind());
            };
            out.push((event, message.payload.to_vec()));
        }
    }
    out
}

/// Parses one message and checks everything the channel promises about it.
fn check_message(raw: &[u8], job: &DispatchJob, recipient: &Recipient) {
    let message = MessageParser::default()
        .parse(raw)
        .expect("a parseable message");
    assert_eq!(message.subject(), Some(SUBJECT));
    let from = message.from().and_then(|a| a.first()).expect("a From");
    assert_eq!(from.address(), Some("krisinformation@stockholm.se"));
    assert_eq!(from.name(), Some("Stockholms stad"));
    let to: Vec<&str> = message
        .to()
        .expect("a To")
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(
        to,
        [recipient.address.as_str()],
        "each recipient alone in To"
    );
    assert_eq!(
        message.message_id(),
        Some(expected_message_id(job, recipient).as_str())
    );
    assert_eq!(
        message.header_raw("Content-Language").map(str::trim),
        Some("sv")
    );
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    assert!(message.date().is_some(), "a Date header");
    let content_type = message.content_type().expect("a Content-Type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("alternative"));
    assert_eq!(message.text_body_count(), 1);
    assert_eq!(message.html_body_count(), 1);
    // MIME text travels with CRLF line ends.
    let unix = |s: &str| s.replace("\r\n", "\n").trim_end().to_owned();
    assert_eq!(unix(&message.body_text(0).unwrap()), TEXT);
    assert_eq!(unix(&message.body_html(0).unwrap()), HTML);
}

fn assert_no_addresses(event: &[u8], addresses: &[&str]) {
    let text = String::from_utf8_lossy(event).to_lowercase();
    for address in addresses {
        let local = address.split('@').next().unwrap().to_lowercase();
        assert!(
            !text.contains(&local),
            "the event must not carry the address {address}: {text}"
        );
    }
}

fn eml_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir.join("outbox/email")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_writes_one_eml_per_recipient_and_reports_delivered() {
    let app = start(Config::default()).await;
    let addresses = ["anna.lind@farsta.example", "lena.berg@socialtjanst.example"];
    let mut recipients: Vec<Recipient> = addresses.iter().map(|a| recipient(a)).collect();
    recipients.push(recipient("inte en adress"));
    let job = job("vattenlacka-farsta", recipients.clone());
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "vattenlacka-farsta").await;
    assert_eq!(reported.provider, "outbox");
    assert_eq!(reported.outcomes.len(), 3);
    for (outcome, recipient) in reported.outcomes.iter().zip(&recipients[..2]) {
        assert_eq!(outcome.recipient, recipient.reference);
        assert_eq!(outcome.state, DeliveryState::Delivered);
    }
    assert_eq!(reported.outcomes[2].state, DeliveryState::Failed);
    assert_eq!(
        reported.outcomes[2].reason.as_deref(),
        Some("the address is not a valid email address")
    );
    assert_no_addresses(&raw, &addresses);
    assert!(!String::from_utf8_lossy(&raw).contains("inte en adress"));

    let files = eml_files(app.data.path());
    assert_eq!(files.len(), 2);
    for recipient in &recipients[..2] {
        let file = files
            .iter()
            .find(|f| String::from_utf8_lossy(f).contains(&recipient.address))
            .expect("an .eml for each recipient");
        check_message(file, &job, recipient);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_delivers_each_recipient_and_outcomes_are_sent() {
    let sink = SmtpSink::start();
    let app = start(smtp_config(&sink)).await;
    let addresses = ["anna.lind@farsta.example", "lena.berg@socialtjanst.example"];
    let recipients: Vec<Recipient> = addresses.iter().map(|a| recipient(a)).collect();
    let job = job("brand-hjulsta", recipients.clone());
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "brand-hjulsta").await;
    assert_eq!(reported.provider, "smtp");
    let mails = sink.messages();
    assert_eq!(mails.len(), 2);
    for recipient in &recipients {
        let mail = mails
            .iter()
            .find(|m| m.to == [recipient.address.clone()])
            .expect("one transaction per recipient");
        assert_eq!(mail.from, "krisinformation@stockholm.se");
        check_message(&mail.data, &job, recipient);
        let outcome = reported
            .outcomes
            .iter()
            .find(|o| o.recipient == recipient.reference)
            .unwrap();
        assert_eq!(outcome.state, DeliveryState::Sent);
        assert_eq!(
            outcome.provider_ref.as_deref(),
            Some(format!("<{}>", expected_message_id(&job, recipient)).as_str())
        );
    }
    assert_no_addresses(&raw, &addresses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_retried_without_mailing_anyone_twice() {
    let sink = SmtpSink::start();
    let app = start(smtp_config(&sink)).await;
    let addresses = [
        "anna.lind@farsta.example",
        "lena.berg@socialtjanst.example",
        "omar.haddad@farsta.example",
    ];
    sink.fail_next(1, 451);
    let job = job(
        "storm-sodermalm",
        addresses.iter().map(|a| recipient(a)).collect(),
    );
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "storm-sodermalm").await;
    assert!(
        reported
            .outcomes
            .iter()
            .all(|o| o.state == DeliveryState::Sent),
        "{reported:?}"
    );
    assert_eq!(sink.transactions(), 4, "three sends and one retry");
    let mails = sink.messages();
    for address in addresses {
        assert_eq!(
            mails
                .iter()
                .filter(|m| m.to == [address.to_owned()])
                .count(),
            1,
            "{address} got exactly one email"
        );
    }
    assert_no_addresses(&raw, &addresses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_for_one_recipient_retries_only_that_recipient() {
    let sink = SmtpSink::start();
    let app = start(smtp_config(&sink)).await;
    let addresses = [
        "anna.lind@farsta.example",
        "lena.berg@socialtjanst.example",
        "omar.haddad@farsta.example",
    ];
    // Mailbox full twice, then it takes the mail.
    sink.refuse_recipient(addresses[1], 2, 452);
    let job = job(
        "storm-kungsholmen",
        addresses.iter().map(|a| recipient(a)).collect(),
    );
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "storm-kungsholmen").await;
    assert!(
        reported
            .outcomes
            .iter()
            .all(|o| o.state == DeliveryState::Sent),
        "{reported:?}"
    );
    assert_eq!(
        sink.rcpt_attempts(addresses[1]),
        3,
        "tried until it took it"
    );
    for address in [addresses[0], addresses[2]] {
        assert_eq!(sink.rcpt_attempts(address), 1, "{address} was not retried");
    }
    let mails = sink.messages();
    assert_eq!(mails.len(), 3, "one email each");
    assert_no_addresses(&raw, &addresses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_fails_the_recipient_with_the_relays_reason() {
    let sink = SmtpSink::start();
    let app = start(smtp_config(&sink)).await;
    sink.fail_next(1, 554);
    let job = job(
        "gasutslapp-kista",
        vec![recipient("anna.lind@farsta.example")],
    );
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "gasutslapp-kista").await;
    let outcome = &reported.outcomes[0];
    assert_eq!(outcome.state, DeliveryState::Failed);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("smtp permanent error (554): Transaction failed: mailbox unavailable"),
        "the relay's code and text"
    );
    assert!(sink.messages().is_empty());
    assert_eq!(sink.transactions(), 1, "a 5xx is not retried");
    assert_no_addresses(&raw, &["anna.lind@farsta.example"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_fails_with_the_relays_reason_and_the_address_masked() {
    let sink = SmtpSink::start();
    let app = start(smtp_config(&sink)).await;
    let addresses = [
        "anna.lind@farsta.example",
        "Lena.Berg@Socialtjanst.example",
        "omar.haddad@farsta.example",
    ];
    sink.refuse_recipient(addresses[1], usize::MAX, 550);
    let recipients: Vec<Recipient> = addresses.iter().map(|a| recipient(a)).collect();
    let job = job("gasutslapp-rinkeby", recipients.clone());
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "gasutslapp-rinkeby").await;
    let state = |r: &Recipient| {
        reported
            .outcomes
            .iter()
            .find(|o| o.recipient == r.reference)
            .unwrap()
    };
    assert_eq!(state(&recipients[0]).state, DeliveryState::Sent);
    assert_eq!(state(&recipients[2]).state, DeliveryState::Sent);
    let refused = state(&recipients[1]);
    assert_eq!(refused.state, DeliveryState::Failed);
    assert_eq!(refused.provider_ref, None);
    // The relay quoted the address; the reason keeps its code and words, masked.
    assert_eq!(
        refused.reason.as_deref(),
        Some(
            "smtp permanent error (550): 5.1.1 <L***@Socialtjanst.example>: \
             Recipient address rejected: User unknown"
        )
    );
    assert_eq!(sink.rcpt_attempts(addresses[1]), 1, "a 5xx is not retried");
    assert_eq!(sink.messages().len(), 2);
    assert_no_addresses(&raw, &addresses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_the_relay_cannot_take_fails_without_retries() {
    // The sink offers no SMTPUTF8, so no relay path exists for this address;
    // trying again would never help.
    let sink = SmtpSink::start();
    let app = start(smtp_config(&sink)).await;
    let addresses = ["åsa.öberg@farsta.example", "anna.lind@farsta.example"];
    let recipients: Vec<Recipient> = addresses.iter().map(|a| recipient(a)).collect();
    let job = job("ras-hammarby", recipients.clone());
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, raw) = outcome(&app, "ras-hammarby").await;
    assert_eq!(reported.outcomes[0].recipient, recipients[0].reference);
    assert_eq!(reported.outcomes[0].state, DeliveryState::Failed);
    let reason = reported.outcomes[0].reason.as_deref().unwrap();
    assert!(reason.contains("SMTPUTF8"), "{reason}");
    assert_eq!(reported.outcomes[1].state, DeliveryState::Sent);
    assert_eq!(sink.messages().len(), 1);
    assert_no_addresses(&raw, &addresses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_stops_answering_is_given_up_on_and_tried_again() {
    let sink = SmtpSink::start();
    let app = start(Config {
        timeout_secs: 1,
        ..smtp_config(&sink)
    })
    .await;
    // The relay hangs at DATA for far longer than the test waits for the outcome:
    // only giving up on the session and trying again gets the mail through.
    sink.stall_next(1, Duration::from_secs(600));
    let job = job(
        "stromavbrott-farsta",
        vec![recipient("anna.lind@farsta.example")],
    );
    app.rt.bus.dispatch(&job).await.unwrap();

    let (reported, _) = outcome(&app, "stromavbrott-farsta").await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Sent);
    assert_eq!(sink.transactions(), 2, "the hung try and the retry");
    assert_eq!(sink.messages().len(), 1);
    app.stop().await;
}

/// One crisis's email to 10,000 residents, in ten jobs of 1,000 as the planner
/// publishes them, through the real SMTP sink over at most eight sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_recipients_get_one_email_each_over_at_most_the_configured_sessions() {
    const JOBS: usize = 10;
    const PER_JOB: usize = 1_000;
    const CONNECTIONS: usize = 8;
    let crisis = "evakuering-skarholmen";
    let sink = SmtpSink::start();
    let app = start(Config {
        connections: CONNECTIONS,
        ..smtp_config(&sink)
    })
    .await;
    let jobs: Vec<DispatchJob> = (0..JOBS)
        .map(|n| {
            let recipients = (0..PER_JOB)
                .map(|i| {
                    recipient(&format!(
                        "invanare.{:05}@skarholmen.example",
                        n * PER_JOB + i
                    ))
                })
                .collect();
            DispatchJob {
                job_id: format!("{crisis}.r1.email.sv.{n}"),
                ..job(crisis, recipients)
            }
        })
        .collect();

    let started = Instant::now();
    for job in &jobs {
        app.rt.bus.dispatch(job).await.unwrap();
    }
    let reports = reports(&app, crisis, JOBS, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();

    // Every job reported once, every recipient sent, with their Message-ID.
    let job_ids: HashSet<&str> = reports.iter().map(|(r, _)| r.job_id.as_str()).collect();
    assert_eq!(job_ids.len(), JOBS, "one report per job");
    for job in &jobs {
        let (report, raw) = reports
            .iter()
            .find(|(r, _)| r.job_id == job.job_id)
            .unwrap();
        assert_eq!(report.outcomes.len(), PER_JOB);
        for (outcome, recipient) in report.outcomes.iter().zip(&job.recipients) {
            assert_eq!(outcome.recipient, recipient.reference);
            assert_eq!(outcome.state, DeliveryState::Sent, "{outcome:?}");
            assert_eq!(
                outcome.provider_ref.as_deref(),
                Some(format!("<{}>", expected_message_id(job, recipient)).as_str())
            );
        }
        assert!(!String::from_utf8_lossy(raw).contains("skarholmen.example"));
    }

    // Exactly one email per recipient at the relay.
    let mails = sink.messages();
    assert_eq!(mails.len(), JOBS * PER_JOB);
    let to: HashSet<&str> = mails
        .iter()
        .map(|m| match m.to.as_slice() {
            [to] => to.as_str(),
            other => panic!("one recipient per transaction, not {other:?}"),
        })
        .collect();
    let expected: HashSet<&str> = jobs
        .iter()
        .flat_map(|j| j.recipients.iter().map(|r| r.address.as_str()))
        .collect();
    assert_eq!(to, expected, "every recipient, none twice");
    let message_ids: HashSet<String> = mails
        .iter()
        .map(|m| m.header("Message-ID").expect("a Message-ID"))
        .collect();
    assert_eq!(message_ids.len(), JOBS * PER_JOB, "distinct Message-IDs");

    // The sessions: several at once, never more than configured, kept open.
    let peak = sink.peak_sessions();
    let sessions = sink.sessions();
    eprintln!(
        "{} emails in {JOBS} jobs over {sessions} SMTP sessions (at most {peak} at once) in {elapsed:.2?}",
        JOBS * PER_JOB
    );
    assert!(peak > 1, "the jobs were sent over one session only");
    assert!(
        peak <= CONNECTIONS,
        "{peak} sessions were open at once, more than the {CONNECTIONS} configured"
    );
    assert!(
        sessions <= CONNECTIONS,
        "{sessions} sessions were opened: sessions are not kept between messages"
    );

    app.stop().await;
    wait_until(
        "the SMTP sessions to be closed once the service stopped",
        WAIT,
        || (sink.open_sessions() == 0).then_some(()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_relay_is_retried_and_nothing_is_reported_yet() {
    // A port where nobody listens: every attempt is a connection error.
    let port = krisbud_tests::nats::free_port();
    let config = Config {
        transport: TransportKind::Smtp,
        smtp_host: "127.0.0.1".into(),
        smtp_port: Some(port),
        smtp_tls: TlsMode::None,
        timeout_secs: 2,
        ..Config::default()
    };
    let app = start(config).await;
    let job = job(
        "stromavbrott-kista",
        vec![recipient("anna.lind@farsta.example")],
    );
    app.rt.bus.dispatch(&job).await.unwrap();

    // The job is delivered again and again, and stays on the work queue.
    let stream = app.rt.bus.js.get_stream(spec::DISPATCH.name).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("channel-email").await.unwrap();
    wait_until_async("the job to be delivered a second time", WAIT, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.ok()?;
            (info.delivered.stream_sequence >= 1 && info.num_redelivered >= 1).then_some(())
        }
    })
    .await;
    let events = app.rt.bus.js.get_stream(spec::EVENTS.name).await.unwrap();
    let subject = subject::delivery_events(Channel::Email, "stromavbrott-kista");
    assert!(
        events
            .get_last_raw_message_by_subject(&subject)
            .await
            .is_err(),
        "no outcome while the relay is unreachable"
    );
    app.stop().await;
}
