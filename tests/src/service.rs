//! One krisbud service under test: started with a `Runtime` of its own against a
//! real [`NatsServer`], with its own data directory, and stopped the way a process
//! is; plus what the channel tests share: a dispatch job, a recipient, and waiting
//! for a job's `DeliveryReported`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use krisbud_kit::service::PrivacyConfig;
use krisbud_kit::{CancellationToken, Common, Runtime, Secret, Started};
use krisbud_proto::event::DeliveryReported;
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use krisbud_proto::model::{
    AlertStatus, CapInfo, Category, Certainty, ResponseType, Severity, Urgency,
};
use krisbud_proto::{Channel, Envelope, Event, spec, subject};

use crate::{NatsServer, wait_until_async};

/// The recipient key every [`TestService`] runs with, so a test can compute the
/// references the service will report.
pub const RECIPIENT_KEY: &str = "test-recipient-key";

/// How long a service may take to stop: its grace period and a margin.
const STOP_WAIT: Duration = Duration::from_secs(krisbud_kit::shutdown::GRACE.as_secs() + 5);

/// A runtime with a NATS connection of its own, as a separate process would have,
/// with every stream and bucket provisioned by kit as at a service's start.
pub async fn runtime(nats: &NatsServer, common: &Common) -> Runtime {
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to nats");
    let mut rt = Runtime::with_client(client, common)
        .await
        .expect("provision streams and buckets");
    rt.commands = command_keys();
    rt
}

/// The command keys every [`TestService`] signs and checks commands with, as the
/// gateway and a serving service would (one process holds both halves here).
pub fn command_keys() -> krisbud_kit::CommandKeys {
    krisbud_kit::CommandKeys::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&[42; 32]))
}

/// One running service and what a test needs to talk to it.
pub struct TestService {
    /// The nats-server it uses; shared when several instances run on one server.
    pub nats: Arc<NatsServer>,
    /// Its runtime: the bus to dispatch and append with, and its health.
    pub rt: Runtime,
    /// Its data directory (outboxes).
    pub data: tempfile::TempDir,
    shutdown: CancellationToken,
    started: Option<Started>,
}

impl TestService {
    /// Starts a service on a nats-server of its own; `start` is the service's
    /// `start` with its configuration.
    pub async fn start<F, Fut>(start: F) -> TestService
    where
        F: FnOnce(Runtime, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<Started>>,
    {
        TestService::start_on(Arc::new(NatsServer::start()), start).await
    }

    /// Starts another instance on `nats`, as a second replica would run.
    pub async fn start_on<F, Fut>(nats: Arc<NatsServer>, start: F) -> TestService
    where
        F: FnOnce(Runtime, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<Started>>,
    {
        crate::init_test_log();
        let data = tempfile::tempdir().expect("a data directory");
        let common = Common {
            data_dir: data.path().to_path_buf(),
            privacy: PrivacyConfig {
                recipient_key: Secret::new(RECIPIENT_KEY),
            },
            ..Default::default()
        };
        let rt = runtime(&nats, &common).await;
        let shutdown = CancellationToken::new();
        let started = start(rt.clone(), shutdown.clone())
            .await
            .expect("the service starts");
        assert!(rt.health.is_ready(), "the service is ready once started");
        TestService {
            nats,
            rt,
            data,
            shutdown,
            started: Some(started),
        }
    }

    /// The address its listener is bound to, if it has one.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.started.as_ref().and_then(|s| s.addr)
    }

    /// Shuts the service down as a SIGTERM would, and checks that it stops
    /// cleanly within its grace period and no longer says it is ready.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let started = self.started.take().expect("started once");
        tokio::time::timeout(STOP_WAIT, started.wait())
            .await
            .expect("the service stops within its grace period")
            .expect("the service stops cleanly");
        assert!(!self.rt.health.is_ready());
    }

    /// Waits up to `timeout` for the last `DeliveryReported` on `channel` for
    /// `crisis_id`; see [`TestService::outcome_where`].
    pub async fn outcome(&self, channel: Channel, crisis_id: &str, timeout: Duration) -> Reported {
        self.outcome_where(channel, crisis_id, timeout, |_| true)
            .await
    }

    /// Waits up to `timeout` for the outcome of `job`.
    pub async fn outcome_of(&self, job: &DispatchJob, timeout: Duration) -> Reported {
        let id = format!("{}.outcome", job.job_id);
        self.outcome_where(job.channel, &job.crisis_id, timeout, |e| e.id == id)
            .await
    }

    /// Waits up to `timeout` until the last event on the delivery subject of
    /// `channel` and `crisis_id` is one that `wanted` accepts, and checks what
    /// every outcome event must be: a `DeliveryReported` appended by the channel's
    /// service (`channel-<channel>`) with the id `<job>.outcome`, caused by the job.
    pub async fn outcome_where(
        &self,
        channel: Channel,
        crisis_id: &str,
        timeout: Duration,
        wanted: impl Fn(&Envelope) -> bool,
    ) -> Reported {
        let stream = self
            .rt
            .bus
            .js
            .get_stream(spec::EVENTS.name)
            .await
            .expect("the events stream");
        let subject = subject::delivery_events(channel, crisis_id);
        let what = format!("the {channel} DeliveryReported event of {crisis_id}");
        let (envelope, raw) = wait_until_async(&what, timeout, || async {
            let message = stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .ok()?;
            let envelope: Envelope = serde_json::from_slice(&message.payload).expect("an envelope");
            wanted(&envelope).then(|| (envelope, message.payload.to_vec()))
        })
        .await;
        assert_eq!(envelope.actor.user, format!("service:channel-{channel}"));
        let Event::DeliveryReported(event) = envelope.event.clone() else {
            panic!("expected DeliveryReported, got {}", envelope.event.kind());
        };
        assert_eq!(envelope.id, format!("{}.outcome", event.job_id));
        assert_eq!(
            envelope.causation_id.as_deref(),
            Some(event.job_id.as_str())
        );
        Reported {
            envelope,
            event,
            raw,
        }
    }
}

/// A `DeliveryReported` as it was stored.
#[derive(Debug)]
pub struct Reported {
    /// Its envelope.
    pub envelope: Envelope,
    /// The event.
    pub event: DeliveryReported,
    /// The body as stored, to check what it must not contain.
    pub raw: Vec<u8>,
}

/// A recipient with its reference under [`RECIPIENT_KEY`].
pub fn recipient(address: &str) -> Recipient {
    Recipient {
        reference: krisbud_kit::privacy::recipient_ref(RECIPIENT_KEY.as_bytes(), address),
        address: address.into(),
    }
}

/// A job of an actual, severe water leak carrying `message` on `channel`, with the
/// id the planner would give its first batch, no recipients, declared now.
pub fn dispatch_job(
    channel: Channel,
    crisis_id: &str,
    revision: u32,
    language: &str,
    message: ChannelMessage,
) -> DispatchJob {
    DispatchJob {
        job_id: format!("{crisis_id}.r{revision}.{channel}.{language}.0"),
        crisis_id: crisis_id.into(),
        revision,
        channel,
        status: AlertStatus::Actual,
        cap: CapInfo {
            category: Category::Infra,
            event: "Vattenläcka".into(),
            urgency: Urgency::Immediate,
            severity: Severity::Severe,
            certainty: Certainty::Observed,
            response_type: ResponseType::Prepare,
        },
        language: language.into(),
        message,
        recipients: Vec::new(),
        audiences: Vec::new(),
        expires_at: None,
        declared_at: Utc::now(),
        msg_type: Default::default(),
        references: Vec::new(),
        issued_at: None,
    }
}
