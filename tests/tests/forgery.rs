//! An attacker on the same host with a NATS client: what krisbud refuses. Every
//! test runs the whole system on a nats-server configured from
//! `krisbud_proto::access`, as `krisbud up` and `deploy/nats` are.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestApp, water_declaration};
use krisbud_proto::event::ChannelConfirmed;
use krisbud_proto::{Actor, CommandRequest, Envelope, Event, Role, spec, subject};
use krisbud_tests::wait_until_async;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// A connection as `user` that collects the server's permission violations.
struct Watched {
    client: async_nats::Client,
    violations: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    async fn connect(app: &TestApp, user: &str) -> Watched {
        let violations = Arc::new(Mutex::new(Vec::new()));
        let seen = violations.clone();
        let client = app
            .nats_options(user)
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string());
                    }
                }
            })
            .connect(app.nats.url())
            .await
            .unwrap();
        Watched { client, violations }
    }

    /// Publishes to `subject` and waits until the server says it was refused.
    async fn publish_refused(&self, subject: &str, payload: &'static [u8]) {
        self.client
            .publish(subject.to_owned(), payload.into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.wait_refused(&format!("Publish to \"{subject}\""))
            .await;
    }

    /// Subscribes to `subject` and waits until the server says it was refused.
    async fn subscribe_refused(&self, subject: &str) {
        let _sub = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        self.wait_refused(&format!("Subscription to \"{subject}\""))
            .await;
    }

    /// Waits until the server reports a permissions violation naming `what`.
    async fn wait_refused(&self, what: &str) {
        wait_until_async(&format!("the server to refuse {what}"), WAIT, || async {
            self.violations
                .lock()
                .unwrap()
                .iter()
                .any(|v| v.contains("Permissions Violation") && v.contains(what))
                .then_some(())
        })
        .await;
    }
}

fn envelope_bytes(actor: &str, event: Event) -> Vec<u8> {
    let envelope = Envelope::new(
        Actor {
            user: actor.into(),
            roles: vec![Role::DutyOfficer, Role::Operator],
            channels: Vec::new(),
        },
        event,
    );
    serde_json::to_vec(&envelope).unwrap()
}

/// Whether KRISBUD_EVENTS holds anything on `subject`.
async fn stored_on(app: &TestApp, subject: &str) -> bool {
    let js = async_nats::jetstream::new(app.nats_as("provision").await);
    let stream = js.get_stream(spec::EVENTS.name).await.unwrap();
    stream
        .get_last_raw_message_by_subject(subject)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_client_without_credentials_is_refused_at_connect() {
    let app = TestApp::spawn().await;
    let anonymous = async_nats::ConnectOptions::new()
        .connect(app.nats.url())
        .await;
    let error = anonymous.expect_err("an anonymous connection is refused");
    assert!(
        error.to_string().to_lowercase().contains("authorization"),
        "{error}"
    );
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("coordinator".into(), "guessed".into())
        .connect(app.nats.url())
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn a_forged_confirmation_or_declaration_is_refused_by_nats() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;
    let crisis_subject = subject::crisis_events(&id);
    let forged_confirmation = Event::ChannelConfirmed(ChannelConfirmed {
        crisis_id: id.clone(),
        channel: krisbud_proto::Channel::Banner,
        revision: 1,
        note: Some("forged".into()),
    });
    let forged_id = "20261202-bad000";
    let forged_declaration = json!({
        "id": "forged", "schema_version": 1, "occurred_at": "2026-12-02T03:00:00Z",
        "actor": {"user": "mallory", "roles": ["duty_officer"]},
        "event": {"kind": "CrisisDeclared", "payload": {"crisis_id": forged_id}}
    });
    for user in [
        "gateway",
        "channel-sms",
        "channel-email",
        "channel-banner",
        "channel-intranet",
        "audit",
    ] {
        let watched = Watched::connect(&app, user).await;
        let confirmation = envelope_bytes("operator.ali", forged_confirmation.clone());
        watched
            .client
            .publish(crisis_subject.clone(), confirmation.into())
            .await
            .unwrap();
        watched
            .publish_refused(&crisis_subject, b"not even json")
            .await;
        watched
            .client
            .publish(
                subject::crisis_events(forged_id),
                serde_json::to_vec(&forged_declaration).unwrap().into(),
            )
            .await
            .unwrap();
        watched
            .publish_refused(&subject::crisis_events(forged_id), b"{}")
            .await;
        // Dispatch jobs carry addresses and are the coordinator's alone.
        watched
            .publish_refused("krisbud.dispatch.sms.20261202-bad000", b"{}")
            .await;
    }
    assert!(
        !stored_on(&app, &subject::crisis_events(forged_id)).await,
        "no forged declaration stored"
    );
    let status = app.status(&id).await;
    for (channel, state) in &status.channels {
        assert!(
            state.confirmations.is_empty(),
            "no forged confirmation on {channel:?}: {state:?}"
        );
    }
    let events = app.audit(&id).await;
    assert!(
        !events.iter().any(|r| r["kind"] == "ChannelConfirmed"),
        "the audit holds no confirmation"
    );
}

#[tokio::test]
async fn each_service_is_refused_everything_outside_its_own_work() {
    let app = TestApp::spawn().await;
    // Subjects each owner alone may publish on.
    let owned: [(&str, &str); 8] = [
        ("coordinator", "krisbud.evt.crisis.20261202-000001"),
        ("coordinator", "krisbud.evt.template.vattenlacka"),
        ("coordinator", "krisbud.dispatch.email.20261202-000001"),
        ("channel-sms", "krisbud.evt.delivery.sms.20261202-000001"),
        (
            "channel-email",
            "krisbud.evt.delivery.email.20261202-000001",
        ),
        ("channel-banner", "$KV.KRISBUD_BANNERS.20261202-000001"),
        ("audit", "krisbud.audit.log"),
        ("gateway", "krisbud.cmd.crisis.declare"),
    ];
    for user in krisbud_proto::access::SERVICES {
        let watched = Watched::connect(&app, user).await;
        for (owner, subject) in owned {
            if owner != user {
                watched.publish_refused(subject, b"{}").await;
            }
        }
        for stream in spec::STREAMS {
            for action in ["DELETE", "PURGE", "UPDATE", "CREATE"] {
                watched
                    .publish_refused(&format!("$JS.API.STREAM.{action}.{}", stream.name), b"{}")
                    .await;
            }
            // The coordinator's janitor removes acknowledged dispatch jobs a
            // crashed server left behind (coordinator::janitor); nothing else.
            if !(user == "coordinator" && stream.name == spec::DISPATCH.name) {
                watched
                    .publish_refused(&format!("$JS.API.STREAM.MSG.DELETE.{}", stream.name), b"{}")
                    .await;
            }
        }
        // Another service's consumer: its jobs hold addresses.
        let other = if user == "channel-email" {
            "channel-sms"
        } else {
            "channel-email"
        };
        watched
            .publish_refused(
                &format!("$JS.API.CONSUMER.MSG.NEXT.KRISBUD_DISPATCH.{other}"),
                b"{}",
            )
            .await;
        watched
            .publish_refused(
                &format!("$JS.API.CONSUMER.DELETE.KRISBUD_DISPATCH.{other}"),
                b"{}",
            )
            .await;
        // No consumer is created, changed or deleted by a service, not even its
        // own: provisioning made them all.
        for durable in krisbud_proto::access::durables() {
            for api in [
                format!("CONSUMER.CREATE.{}.{}", durable.stream, durable.name),
                format!(
                    "CONSUMER.CREATE.{}.{}.{}",
                    durable.stream, durable.name, durable.filter
                ),
                format!(
                    "CONSUMER.DURABLE.CREATE.{}.{}",
                    durable.stream, durable.name
                ),
                format!("CONSUMER.DELETE.{}.{}", durable.stream, durable.name),
            ] {
                watched
                    .publish_refused(&format!("$JS.API.{api}"), b"{}")
                    .await;
            }
        }
        // Nobody reads events or another's inbox as a plain subscriber.
        watched.subscribe_refused("krisbud.evt.>").await;
        if user != "gateway" {
            watched.subscribe_refused("_INBOX_gateway.>").await;
        }
        if user != "coordinator" {
            watched
                .subscribe_refused("krisbud.cmd.crisis.declare")
                .await;
        }
    }
    // ...and every service still does its own work.
    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;
}

#[tokio::test]
async fn no_user_may_delete_or_purge_the_audit_chain() {
    let app = TestApp::spawn().await;
    let provision = Watched::connect(&app, "provision").await;
    for stream in [
        "KRISBUD_AUDIT",
        "KRISBUD_AUDIT_CHECKPOINTS",
        "KRISBUD_EVENTS",
    ] {
        for action in ["DELETE", "PURGE", "UPDATE"] {
            provision
                .publish_refused(&format!("$JS.API.STREAM.{action}.{stream}"), b"{}")
                .await;
        }
    }
    let js = async_nats::jetstream::new(provision.client.clone());
    assert!(js.delete_stream("KRISBUD_AUDIT").await.is_err());
    let mut audit = js.get_stream("KRISBUD_AUDIT").await.unwrap();
    assert!(
        audit.info().await.unwrap().state.messages > 0,
        "the chain is still there"
    );
}

/// A command request as the gateway's user would send it, signed with `keys`.
async fn command(
    client: &async_nats::Client,
    keys: &krisbud_kit::CommandKeys,
    subject: &str,
    body: &Value,
) -> Result<Value, krisbud_proto::Problem> {
    let request = CommandRequest {
        actor: Actor {
            user: "mallory".into(),
            roles: vec![Role::DutyOfficer],
            channels: Vec::new(),
        },
        idempotency_key: None,
        body: body.clone(),
    };
    krisbud_kit::command::request(client, keys, subject, &request, Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_command_not_signed_by_the_gateway_is_refused_and_recorded() {
    let app = TestApp::spawn().await;
    // Even with the gateway's NATS password (leaked, say), a command needs the
    // gateway's signing key, which no other process holds.
    let gateway = app.nats_as("gateway").await;
    let declaration = json!({
        "template": "vattenlacka",
        "variables": common::water_variables(),
        "audiences": ["farsta-boende"]
    });
    let unsigned = krisbud_kit::CommandKeys::default();
    let refused = command(&gateway, &unsigned, subject::cmd::DECLARE, &declaration)
        .await
        .unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.detail.contains("unsigned"), "{refused:?}");

    let other_key =
        krisbud_kit::CommandKeys::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
    let refused = command(&gateway, &other_key, subject::cmd::DECLARE, &declaration)
        .await
        .unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.detail.contains("bad signature"), "{refused:?}");

    // An audit command is checked the same way by the audit service.
    let refused = command(&gateway, &unsigned, subject::cmd::AUDIT_QUERY, &json!({}))
        .await
        .unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");

    // A message replayed as it was captured: the same bytes and headers.
    let keys = app.gateway_command_keys();
    let body = serde_json::to_vec(&CommandRequest {
        actor: Actor {
            user: "tib.maria".into(),
            roles: vec![Role::DutyOfficer],
            channels: Vec::new(),
        },
        idempotency_key: None,
        body: json!({"crisis_id": "20261202-000000"}),
    })
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    keys.sign(subject::cmd::GET_CRISIS, &body, &mut headers);
    let first = gateway
        .request_with_headers(
            subject::cmd::GET_CRISIS.to_owned(),
            headers.clone(),
            body.clone().into(),
        )
        .await
        .unwrap();
    let first: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_ne!(
        first["error"]["status"], 403,
        "the original passes: {first}"
    );
    let again = gateway
        .request_with_headers(subject::cmd::GET_CRISIS.to_owned(), headers, body.into())
        .await
        .unwrap();
    let again: Value = serde_json::from_slice(&again.payload).unwrap();
    assert_eq!(again["error"]["status"], 403, "{again}");
    assert!(
        again["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("replayed"),
        "{again}"
    );

    // Nothing was declared, and each refusal is in the audit log.
    let response = app
        .http
        .get(format!("{}/api/v1/audit", app.api))
        .query(&[("kind", "CommandRefused")])
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    let records = page["records"].as_array().unwrap();
    let text = serde_json::to_string(records).unwrap();
    for reason in ["unsigned", "bad signature", "replayed"] {
        assert!(text.contains(reason), "{reason} recorded: {text}");
    }
    assert!(
        text.contains("mallory"),
        "the claimed actor is recorded: {text}"
    );
    assert!(
        text.contains("\"audit\""),
        "the audit's own refusal: {text}"
    );
    let crises: Value = app
        .http
        .get(format!("{}/api/v1/crises", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        crises.as_array().map_or(usize::MAX, Vec::len),
        0,
        "nothing declared: {crises}"
    );
}

#[tokio::test]
async fn an_event_on_a_subject_its_kind_does_not_belong_on_is_ignored() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;
    // channel-sms may publish on its own delivery subject, but a confirmation
    // there is not the coordinator's: the status must not take it.
    let js = async_nats::jetstream::new(app.nats_as("channel-sms").await);
    let forged = envelope_bytes(
        "operator.ali",
        Event::ChannelConfirmed(ChannelConfirmed {
            crisis_id: id.clone(),
            channel: krisbud_proto::Channel::Sms,
            revision: 1,
            note: Some("forged on a delivery subject".into()),
        }),
    );
    let ack = js
        .publish(
            subject::delivery_events(krisbud_proto::Channel::Sms, &id),
            forged.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // The status projector has handled it once its ack floor passes it.
    let provision = async_nats::jetstream::new(app.nats_as("provision").await);
    wait_until_async("the status projector to pass the event", WAIT, || async {
        let mut consumer = provision
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                krisbud_proto::access::durable::STATUS,
                spec::EVENTS.name,
            )
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        (info.ack_floor.stream_sequence >= ack.sequence).then_some(())
    })
    .await;
    let status = app.status(&id).await;
    for (channel, state) in &status.channels {
        assert!(
            state.confirmations.is_empty(),
            "no forged confirmation on {channel:?}: {state:?}"
        );
    }
}
