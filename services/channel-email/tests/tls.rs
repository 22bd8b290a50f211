//! The email channel over TLS and with a login, against a real SMTP server
//! (mailin-embedded) that offers STARTTLS or speaks TLS from the first byte, with a
//! certificate signed by a CA of its own, and a wire watcher in front of it that
//! tells what the client sent in clear.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use krisbud_channel_email::{Config, TlsMode, TransportKind};
use krisbud_kit::Secret;
use krisbud_proto::event::{DeliveryReported, DeliveryState};
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use krisbud_proto::template::EmailMessage;
use krisbud_proto::{Channel, spec, subject};
use krisbud_tests::service::{dispatch_job, recipient};
use krisbud_tests::smtp::SinkConnection;
use krisbud_tests::{SmtpSink, TestService, wait_until, wait_until_async};
use mail_parser::MessageParser;

const WAIT: Duration = Duration::from_secs(20);
const SUBJECT: &str = "Vattenläcka i Farsta – koka vattnet";
const TEXT: &str = "Vattnet i Farsta kan vara förorenat. Koka vattnet före användning.";
const HTML: &str = "<p lang=\"sv\">Vattnet i Farsta kan vara förorenat. <strong>Koka vattnet</strong> före användning.</p>";
const USER: &str = "krisbud-relay";
const PASSWORD: &str = "rätt-lösenord-2025";

async fn start(config: Config) -> TestService {
    TestService::start(|rt, shutdown| krisbud_channel_email::start(config, rt, shutdown)).await
}

fn job(crisis_id: &str, addresses: &[&str]) -> (DispatchJob, Vec<Recipient>) {
    let recipients: Vec<Recipient> = addresses.iter().map(|a| recipient(a)).collect();
    let message = ChannelMessage::Email(EmailMessage {
        subject: SUBJECT.into(),
        text: TEXT.into(),
        html: HTML.into(),
    });
    let job = DispatchJob {
        recipients: recipients.clone(),
        ..dispatch_job(Channel::Email, crisis_id, 1, "sv", message)
    };
    (job, recipients)
}

/// SMTP to `sink` on 127.0.0.1 with `tls`, trusting the sink's CA.
fn tls_config(sink: &SmtpSink, tls: TlsMode) -> Config {
    Config {
        transport: TransportKind::Smtp,
        smtp_host: "127.0.0.1".into(),
        smtp_port: Some(sink.port()),
        smtp_tls: tls,
        smtp_tls_ca_file: Some(sink.ca_file()),
        timeout_secs: 5,
        ..Config::default()
    }
}

async fn outcome(app: &TestService, crisis_id: &str) -> DeliveryReported {
    app.outcome(Channel::Email, crisis_id, WAIT).await.event
}

/// Asserts that a connection sent nothing but the greeting's EHLO and STARTTLS in
/// clear, then went over to TLS.
fn assert_only_starttls_in_clear(connection: &SinkConnection, secrets: &[&str]) {
    assert!(
        connection.tls,
        "the connection went over to TLS: {connection:?}"
    );
    let commands: Vec<String> = connection
        .cleartext
        .lines()
        .map(|line| line.split_whitespace().next().unwrap_or("").to_uppercase())
        .collect();
    assert_eq!(commands, ["EHLO", "STARTTLS"], "{connection:?}");
    for secret in secrets {
        assert!(
            !connection.cleartext.contains(secret),
            "{secret:?} went in clear: {connection:?}"
        );
    }
}

/// Waits until the job is acknowledged: nothing left pending or unacknowledged on
/// the channel's consumer, so it is never tried again.
async fn wait_until_acknowledged(app: &TestService) {
    let stream = app.rt.bus.js.get_stream(spec::DISPATCH.name).await.unwrap();
    let consumer: PullConsumer = stream.get_consumer("channel-email").await.unwrap();
    wait_until_async("the job to be acknowledged", WAIT, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.ok()?;
            (info.delivered.stream_sequence >= 1
                && info.num_ack_pending == 0
                && info.num_pending == 0)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_delivers_over_tls_to_a_relay_signed_by_a_private_ca() {
    let sink = SmtpSink::start_starttls();
    let app = start(tls_config(&sink, TlsMode::Starttls)).await;
    let addresses = ["anna.lind@farsta.example", "lena.berg@socialtjanst.example"];
    let (job, recipients) = job("vattenlacka-farsta", &addresses);
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "vattenlacka-farsta").await;
    assert_eq!(reported.provider, "smtp");
    assert_eq!(reported.outcomes.len(), 2);
    assert!(
        reported
            .outcomes
            .iter()
            .all(|o| o.state == DeliveryState::Sent),
        "{reported:?}"
    );
    let mails = sink.messages();
    assert_eq!(mails.len(), 2);
    for recipient in &recipients {
        let mail = mails
            .iter()
            .find(|m| m.to == [recipient.address.clone()])
            .expect("one mail per recipient");
        let message = MessageParser::default().parse(&mail.data).unwrap();
        assert_eq!(message.subject(), Some(SUBJECT));
        assert_eq!(mail.user, None, "no login was asked for");
    }
    let connections = sink.connections();
    assert!(!connections.is_empty());
    assert_eq!(connections.len(), sink.sessions());
    for connection in &connections {
        assert_only_starttls_in_clear(connection, &addresses);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_login_sends_as_the_configured_user() {
    let sink = SmtpSink::start_starttls_with_auth(USER, PASSWORD);
    let app = start(Config {
        smtp_username: USER.into(),
        smtp_password: Secret::new(PASSWORD),
        ..tls_config(&sink, TlsMode::Starttls)
    })
    .await;
    let addresses = ["omar.haddad@farsta.example"];
    let (job, _) = job("brand-hjulsta", &addresses);
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "brand-hjulsta").await;
    assert_eq!(reported.outcomes.len(), 1);
    assert_eq!(reported.outcomes[0].state, DeliveryState::Sent);
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].user.as_deref(), Some(USER));
    assert!(!sink.logins().is_empty());
    assert!(sink.logins().iter().all(|user| user == USER));
    assert_eq!(sink.refused_logins(), 0);
    for connection in &sink.connections() {
        // The login came after STARTTLS: neither AUTH nor the password in clear.
        assert_only_starttls_in_clear(connection, &[PASSWORD, addresses[0]]);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_recipients_once_with_the_reason() {
    let sink = SmtpSink::start_starttls_with_auth(USER, PASSWORD);
    let app = start(Config {
        smtp_username: USER.into(),
        smtp_password: Secret::new("fel-lösenord"),
        connections: 1,
        ..tls_config(&sink, TlsMode::Starttls)
    })
    .await;
    let addresses = [
        "anna.lind@farsta.example",
        "lena.berg@socialtjanst.example",
        "omar.haddad@farsta.example",
    ];
    let (job, _) = job("stromavbrott-kista", &addresses);
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "stromavbrott-kista").await;
    assert_eq!(reported.outcomes.len(), 3);
    for outcome in &reported.outcomes {
        assert_eq!(outcome.state, DeliveryState::Failed, "{outcome:?}");
        let reason = outcome.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("login") && reason.contains("535"),
            "the reason names the refused login and the relay's code: {reason}"
        );
        assert!(!reason.contains("fel-lösenord"), "{reason}");
    }
    // Settled and acknowledged: the job is not tried again.
    wait_until_acknowledged(&app).await;
    assert_eq!(sink.message_count(), 0);
    assert_eq!(sink.mail_commands(), 0);
    assert!(sink.logins().is_empty());
    // One refused login for the whole job, not one per recipient: a relay locks
    // out (or bans) a client that keeps trying a wrong password.
    assert_eq!(sink.refused_logins(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_but_not_offered_sends_nothing_in_clear() {
    // A relay without STARTTLS (it would take mail in clear, and logins too).
    let sink = SmtpSink::start();
    let app = start(Config {
        transport: TransportKind::Smtp,
        smtp_host: "127.0.0.1".into(),
        smtp_port: Some(sink.port()),
        smtp_tls: TlsMode::Starttls,
        smtp_username: USER.into(),
        smtp_password: Secret::new(PASSWORD),
        timeout_secs: 5,
        ..Config::default()
    })
    .await;
    let (job, _) = job("storm-sodermalm", &["anna.lind@farsta.example"]);
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "storm-sodermalm").await;
    assert_eq!(reported.outcomes.len(), 1);
    assert_eq!(reported.outcomes[0].state, DeliveryState::Failed);
    let reason = reported.outcomes[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("STARTTLS"), "{reason}");
    wait_until_acknowledged(&app).await;
    assert!(sink.sessions() >= 1, "the relay was asked");
    assert_eq!(sink.mail_commands(), 0, "no MAIL FROM in clear");
    assert_eq!(sink.transactions(), 0);
    assert_eq!(sink.message_count(), 0);
    assert_eq!(sink.refused_logins(), 0, "no login in clear");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_trusted_stops_the_message_and_is_tried_again() {
    let sink = SmtpSink::start_starttls();
    // The system's roots only: the sink's CA is not among them.
    let app = start(Config {
        smtp_tls_ca_file: None,
        ..tls_config(&sink, TlsMode::Starttls)
    })
    .await;
    let (job, _) = job("ovning-skarholmen", &["anna.lind@farsta.example"]);
    app.rt.bus.dispatch(&job).await.unwrap();

    // Tried, refused in the handshake, and tried again later.
    wait_until("the relay to be tried twice", WAIT, || {
        (sink.connections().iter().filter(|c| c.tls).count() >= 2).then_some(())
    });
    for connection in &sink.connections() {
        assert!(
            !connection.cleartext.to_uppercase().contains("MAIL FROM"),
            "{connection:?}"
        );
    }
    assert_eq!(sink.mail_commands(), 0);
    assert_eq!(sink.message_count(), 0);
    let events = app.rt.bus.js.get_stream(spec::EVENTS.name).await.unwrap();
    let subject = subject::delivery_events(Channel::Email, "ovning-skarholmen");
    assert!(
        events
            .get_last_raw_message_by_subject(&subject)
            .await
            .is_err(),
        "no outcome while the relay's certificate is not trusted"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_delivers_to_a_relay_signed_by_a_private_ca() {
    let sink = SmtpSink::start_implicit_tls();
    let app = start(tls_config(&sink, TlsMode::Tls)).await;
    let addresses = ["anna.lind@farsta.example"];
    let (job, _) = job("vattenlacka-farsta", &addresses);
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "vattenlacka-farsta").await;
    assert_eq!(reported.outcomes.len(), 1);
    assert_eq!(reported.outcomes[0].state, DeliveryState::Sent);
    assert_eq!(sink.message_count(), 1);
    let connections = sink.connections();
    assert!(!connections.is_empty());
    for connection in &connections {
        assert!(connection.tls, "{connection:?}");
        assert_eq!(connection.cleartext, "", "nothing in clear with SMTPS");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_watcher_sees_a_session_in_clear() {
    // The check of the harness itself: a client told to use no TLS goes on in
    // clear even though STARTTLS is offered, and the watcher shows it.
    let sink = SmtpSink::start_starttls();
    let app = start(Config {
        smtp_tls_ca_file: None,
        ..tls_config(&sink, TlsMode::None)
    })
    .await;
    let (job, _) = job("ovning-kista", &["anna.lind@farsta.example"]);
    app.rt.bus.dispatch(&job).await.unwrap();

    let reported = outcome(&app, "ovning-kista").await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Sent);
    let connections = sink.connections();
    assert_eq!(connections.len(), 1);
    assert!(!connections[0].tls);
    assert!(connections[0].cleartext.contains("MAIL FROM"));
    assert!(
        connections[0]
            .cleartext
            .contains("anna.lind@farsta.example")
    );
    // The message itself too (its subject is encoded, as non-ASCII).
    assert!(connections[0].cleartext.contains("\r\nSubject: "));
    app.stop().await;
}
