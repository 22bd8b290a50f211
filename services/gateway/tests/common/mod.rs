//! A gateway on a real nats-server, real HTTP through reqwest, and a small stand-in
//! for the services that answer `krisbud.cmd.*` requests.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use krisbud_gateway::{Config, User};
use krisbud_kit::{Bus, CancellationToken, Health, Runtime, Secret, Started};
use krisbud_proto::{CommandReply, Problem, Role};
use krisbud_tests::NatsServer;
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Bearer tokens of the test users.
pub const TIB: &str = "tib-token";
pub const OPERATOR: &str = "operator-token";
pub const AUDITOR: &str = "auditor-token";
pub const NOBODY: &str = "nobody-token";
pub const EDITOR: &str = "editor-token";
pub const APPROVER: &str = "approver-token";
pub const ADMIN: &str = "admin-token";

/// The body limit the test gateway runs with.
pub const BODY_LIMIT: usize = 2048;

/// A running gateway with its own nats-server.
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub client: async_nats::Client,
    shutdown: CancellationToken,
    started: Option<Started>,
    _nats: NatsServer,
}

impl App {
    /// Starts a nats-server and a gateway with seven users.
    pub async fn spawn() -> App {
        init_tracing();
        let nats = NatsServer::start();
        let client = async_nats::connect(nats.url())
            .await
            .expect("connect to nats");
        // The gateway uses no stream or bucket, so the runtime is built without
        // provisioning them.
        let rt = Runtime {
            bus: Bus::new(client.clone()),
            health: Health::default(),
            data_dir: std::env::temp_dir(),
            recipient_key: Secret::new("gateway-tests"),
            request_timeout: Duration::from_secs(5),
            commands: krisbud_tests::service::command_keys(),
        };
        let config = Config {
            listen: "127.0.0.1:0".into(),
            body_limit_bytes: BODY_LIMIT,
            members_limit_bytes: 1024 * 1024,
            streams_per_user: 20,
            users: vec![
                User::with_token("tib", vec![Role::DutyOfficer], TIB),
                User::with_token("olle", vec![Role::Operator], OPERATOR),
                User::with_token("anna", vec![Role::Auditor], AUDITOR),
                User::with_token("nils", vec![], NOBODY),
                User::with_token("redaktor", vec![Role::TemplateEditor], EDITOR),
                User::with_token("granskare", vec![Role::TemplateApprover], APPROVER),
                User::with_token("admin", vec![Role::Admin], ADMIN),
            ],
            oidc: None,
        };
        let shutdown = CancellationToken::new();
        let started = krisbud_gateway::start(config, rt, shutdown.clone())
            .await
            .expect("the gateway starts");
        let addr = started.addr.expect("the gateway has an address");
        App {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            client,
            shutdown,
            started: Some(started),
            _nats: nats,
        }
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the gateway answers")
    }

    /// `POST path` with a JSON body text.
    pub async fn post_json(&self, path: &str, token: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("the gateway answers")
    }

    /// Cancels the shutdown token and waits for the gateway to stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let started = self.started.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), started.wait())
            .await
            .expect("the gateway stops within its grace period")
            .expect("the gateway stops cleanly");
    }
}

/// A request the stand-in service received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub subject: String,
    pub request: Value,
    pub traceparent: Option<String>,
}

/// Answers `krisbud.cmd.>` requests with what `answer` returns for
/// (subject, request body), recording every request.
pub struct Responder {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    pub async fn start<F>(client: &async_nats::Client, answer: F) -> Responder
    where
        F: Fn(&str, &Value) -> CommandReply<Value> + Send + Sync + 'static,
    {
        let mut requests = client.subscribe("krisbud.cmd.>").await.expect("subscribe");
        // The subscription must be on the server before the test sends anything.
        client.flush().await.expect("flush");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let client = client.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let request: Value =
                    serde_json::from_slice(&message.payload).expect("a JSON request");
                let reply = answer(&message.subject, &request);
                recorded.lock().unwrap().push(Seen {
                    subject: message.subject.to_string(),
                    request,
                    traceparent: message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("traceparent"))
                        .map(|v| v.to_string()),
                });
                if let Some(reply_to) = message.reply {
                    let body = serde_json::to_vec(&reply).unwrap();
                    client.publish(reply_to, body.into()).await.expect("reply");
                }
            }
        });
        Responder { seen, task }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A successful reply.
pub fn ok(value: Value) -> CommandReply<Value> {
    CommandReply::Ok(value)
}

/// A refusal.
pub fn refuse(problem: Problem) -> CommandReply<Value> {
    CommandReply::Error(problem)
}

/// Checks that `response` is problem+json with `status` and the type slug, and
/// returns its body.
pub async fn problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = response.json().await.expect("a JSON problem");
    assert_eq!(
        body["type"],
        format!("https://krisbud.se/problems/{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// A subscriber with the OpenTelemetry layer, so spans get trace ids and
/// `traceparent` is read and written as in production; log lines only with
/// `TEST_LOG`.
fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        use opentelemetry::trace::TracerProvider as _;
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("gateway-tests");
        let fmt = std::env::var_os("TEST_LOG")
            .is_some()
            .then(|| tracing_subscriber::fmt::layer().with_test_writer());
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(fmt)
            .try_init();
    });
}
