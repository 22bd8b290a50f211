//! `TestApp`: the whole krisbud system in this process against a real nats-server,
//! with typed helpers for the HTTP API and the outboxes.

#![allow(dead_code)]

pub mod console;

use std::path::PathBuf;
use std::time::Duration;

use krisbud::config::Config;
use krisbud::demo::DemoTokens;
use krisbud::system::{self, UpOptions};
use krisbud_kit::CancellationToken;
use krisbud_proto::Role;
use krisbud_proto::status::{ChannelState, CrisisStatus};
use krisbud_tests::NatsServer;
use serde_json::{Value, json};

/// The running system and what a test needs to talk to it.
pub struct TestApp {
    pub nats: NatsServer,
    pub api: String,
    pub banner: String,
    pub tokens: DemoTokens,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    system: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    extra: String,
    /// Where the gateway listens: a free port unless a test needs to know it
    /// before the start (a redirect URL given to an identity provider).
    gateway_listen: String,
}

/// The variables of a water-outage declaration.
pub fn water_variables() -> Value {
    json!({
        "omrade": "Farsta",
        "beraknat_klart": "i kväll kl. 20",
        "vattenpunkt": "Farsta centrum"
    })
}

/// A water-outage declaration to both demo audiences on every channel.
pub fn water_declaration() -> Value {
    json!({
        "template": "vattenlacka",
        "variables": water_variables(),
        "audiences": ["farsta-boende", "socialtjanst-personal"]
    })
}

impl TestApp {
    /// Starts nats-server and the demo system with outboxes.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with("").await
    }

    /// Starts nats-server and the demo system; `extra` is TOML added to the config.
    pub async fn spawn_with(extra: &str) -> TestApp {
        TestApp::spawn_listening("127.0.0.1:0", extra).await
    }

    /// [`TestApp::spawn_with`], the gateway listening on `listen`.
    pub async fn spawn_listening(listen: &str, extra: &str) -> TestApp {
        krisbud_tests::init_test_log();
        let data_dir = tempfile::tempdir().unwrap();
        // A closed bus, as deployed: deploy/nats's users, every service its own.
        let nats = NatsServer::start_closed(&data_dir.path().join("nats-credentials"));
        let mut app = TestApp {
            nats,
            api: String::new(),
            banner: String::new(),
            tokens: DemoTokens::generate(),
            data_dir,
            http: reqwest::Client::new(),
            shutdown: CancellationToken::new(),
            system: None,
            extra: extra.to_owned(),
            gateway_listen: listen.to_owned(),
        };
        app.start().await;
        app
    }

    /// The configuration the system runs with.
    pub fn config(&self) -> Config {
        let text = format!(
            r#"
data_dir = "{dir}"
[nats]
url = "{url}"
credentials_dir = "{dir}/nats-credentials"
[privacy]
recipient_key = "test-recipient-key"
[gateway]
listen = "{gateway}"
[banner]
listen = "127.0.0.1:0"
{extra}
"#,
            dir = self.data_dir.path().display(),
            url = self.nats.url(),
            gateway = self.gateway_listen,
            extra = self.extra
        );
        Config::from_toml(&text).expect("a valid test configuration")
    }

    async fn start(&mut self) {
        self.shutdown = CancellationToken::new();
        let system = system::up(
            self.config(),
            UpOptions { demo: true },
            self.shutdown.clone(),
        )
        .await
        .expect("the system starts");
        self.api = format!("http://{}", system.api);
        self.banner = format!("http://{}", system.banner);
        self.tokens = system.demo_tokens.clone().expect("demo tokens");
        self.system = Some(tokio::spawn(system.wait()));
    }

    /// Shuts every service down gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.system.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the system stops within 20 s")
                .unwrap()
                .unwrap();
        }
    }

    /// Starts the services (after [`TestApp::stop`]) on the same NATS and data dir.
    pub async fn start_services(&mut self) {
        self.start().await;
    }

    /// Stops and starts the services again on the same NATS and data dir.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// A token of the demo user holding `role`.
    pub fn token(&self, role: Role) -> String {
        self.tokens.token_for(role).to_owned()
    }

    /// `POST /api/v1/crises` as the duty officer.
    pub async fn declare(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/crises", self.api))
            .bearer_auth(self.token(Role::DutyOfficer))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Declares and returns the crisis id, asserting 201.
    pub async fn declare_ok(&self, body: &Value) -> String {
        let response = self.declare(body).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "declare answered {status}: {body}");
        body["crisis_id"].as_str().unwrap().to_owned()
    }

    /// `GET /api/v1/crises/{id}` as the duty officer.
    pub async fn status(&self, id: &str) -> CrisisStatus {
        self.try_status(id)
            .await
            .unwrap_or_else(|e| panic!("status of {id}: {e}"))
    }

    /// `GET /api/v1/crises/{id}` as the duty officer, or the answer when it was
    /// not 200 (while the bus is down, say).
    pub async fn try_status(&self, id: &str) -> Result<CrisisStatus, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/crises/{id}", self.api))
            .bearer_auth(self.token(Role::DutyOfficer))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status != 200 {
            return Err(format!(
                "{status}: {}",
                response.text().await.unwrap_or_default()
            ));
        }
        response.json().await.map_err(|e| e.to_string())
    }

    /// Waits until every channel of the crisis has an outcome for every recipient;
    /// on timeout the panic shows the last status seen.
    pub async fn wait_delivered(&self, id: &str, timeout: Duration) -> CrisisStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status(id).await;
            if !s.channels.is_empty()
                && s.channels
                    .values()
                    .all(|c| c.state == ChannelState::Delivered)
            {
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for every channel of {id} delivered; last status: {}\nconsumers: {}",
                    serde_json::to_string(&s).unwrap(),
                    self.consumers().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST .../confirm` with the given token.
    pub async fn confirm(
        &self,
        token: Option<&str>,
        id: &str,
        channel: &str,
        note: &str,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!(
                "{}/api/v1/crises/{id}/channels/{channel}/confirm",
                self.api
            ))
            .json(&json!({ "note": note }));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send().await.unwrap()
    }

    /// `GET /api/v1/audit?crisis=..` as the auditor: the records.
    pub async fn audit(&self, crisis: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/audit", self.api))
            .query(&[("crisis", crisis)])
            .bearer_auth(self.token(Role::Auditor))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        page["records"].as_array().unwrap().clone()
    }

    /// The active banners, from the public listener.
    pub async fn banners(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/v1/banners", self.banner))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn outbox(&self) -> PathBuf {
        self.data_dir.path().join("outbox")
    }

    /// The lines of `outbox/sms.jsonl`.
    pub fn sms_outbox(&self) -> Vec<Value> {
        read_lines(&self.outbox().join("sms.jsonl"))
    }

    /// The lines of `outbox/intranet.jsonl`.
    pub fn intranet_outbox(&self) -> Vec<Value> {
        read_lines(&self.outbox().join("intranet.jsonl"))
    }

    /// The `.eml` files of `outbox/email`, as text.
    pub fn email_outbox(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.outbox().join("email")) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    }

    /// A NATS connection as `user` (a service, or `provision` to look at
    /// everything), with that user's own inbox prefix.
    pub async fn nats_as(&self, user: &str) -> async_nats::Client {
        self.nats_options(user)
            .connect(self.nats.url())
            .await
            .unwrap()
    }

    /// The connect options of `user`: its password and its own inbox prefix.
    pub fn nats_options(&self, user: &str) -> async_nats::ConnectOptions {
        let password = std::fs::read_to_string(
            self.data_dir
                .path()
                .join("nats-credentials")
                .join(format!("{user}.password")),
        )
        .unwrap();
        async_nats::ConnectOptions::new()
            .user_and_password(user.to_owned(), password.trim().to_owned())
            .custom_inbox_prefix(krisbud_proto::access::inbox_prefix(user))
    }

    /// The gateway's command keys, as `krisbud up` created them.
    pub fn gateway_command_keys(&self) -> krisbud_kit::CommandKeys {
        krisbud_kit::CommandKeys::from_signing_key(
            krisbud_kit::command_auth::read_signing_key(
                &self.data_dir.path().join("command-signing.key"),
            )
            .unwrap(),
        )
    }

    /// Every durable consumer with its pending and unacknowledged counts.
    pub async fn consumers(&self) -> String {
        let client = self.nats_as("provision").await;
        let js = async_nats::jetstream::new(client);
        let mut out = String::new();
        for durable in krisbud_proto::access::durables() {
            let name = durable.stream;
            let Ok(mut stream) = js.get_stream(name).await else {
                continue;
            };
            let Ok(mut consumer) = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&durable.name)
                .await
            else {
                out.push_str(&format!("\n  {name}/{}: missing", durable.name));
                continue;
            };
            if let Ok(info) = consumer.info().await {
                let state = stream.info().await.map(|i| i.state.clone());
                let (first, last, messages) = state
                    .map(|s| (s.first_sequence, s.last_sequence, s.messages))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "\n  {name} (messages {messages}, sequences {first}..={last})/{}: \
                     pending {}, ack pending {}, redelivered {}, ack floor {}, delivered {}",
                    info.name,
                    info.num_pending,
                    info.num_ack_pending,
                    info.num_redelivered,
                    info.ack_floor.stream_sequence,
                    info.delivered.stream_sequence
                ));
            }
        }
        if out.is_empty() {
            out.push_str(" none");
        }
        out
    }
    /// Messages stored in a stream.
    pub async fn stream_messages(&self, stream: &str) -> u64 {
        let client = self.nats_as("provision").await;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("outbox lines are JSON"))
        .collect()
}

impl TestApp {
    /// Creates an audience as the admin.
    pub async fn create_audience(&self, id: &str, name: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/audiences", self.api))
            .bearer_auth(self.token(Role::Admin))
            .json(&json!({ "id": id, "name": name }))
            .send()
            .await
            .unwrap()
    }

    /// Imports members from CSV as `role`; the status and the report.
    pub async fn import_csv(
        &self,
        id: &str,
        role: Role,
        csv: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}/api/v1/audiences/{id}/members", self.api))
            .bearer_auth(self.token(role))
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}
