//! The shape every service shares: a [`Runtime`] handed to `start`, a [`Started`]
//! handle coming back, and [`main`] for the thin per-service binaries.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command_auth::CommandKeys;
use crate::config::{self, CommandsConfig, NatsConfig, NatsCredentials, Secret, TelemetryConfig};
use crate::{Bus, Health, nats, shutdown, telemetry};

/// `[privacy]`: the key of the recipient pseudonyms.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// HMAC key for recipient references; `krisbud up` creates one in the data dir
    /// when none is configured.
    pub recipient_key: Secret,
}

/// The sections every service reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Common {
    pub nats: NatsConfig,
    pub telemetry: TelemetryConfig,
    pub privacy: PrivacyConfig,
    pub commands: CommandsConfig,
    /// Where outboxes and local state go.
    pub data_dir: PathBuf,
    /// Where a standalone service serves `/healthz` and `/readyz`.
    pub health_listen: String,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            nats: NatsConfig::default(),
            telemetry: TelemetryConfig::default(),
            privacy: PrivacyConfig::default(),
            commands: CommandsConfig::default(),
            data_dir: PathBuf::from("var"),
            health_listen: "127.0.0.1:0".into(),
        }
    }
}

/// What a service gets from its host process.
#[derive(Clone)]
pub struct Runtime {
    pub bus: Bus,
    pub health: Health,
    pub data_dir: PathBuf,
    pub recipient_key: Secret,
    /// How long a command request waits for its answer.
    pub request_timeout: Duration,
    /// The gateway's command keys: the signing key where commands are sent, the
    /// public key where they are served.
    pub commands: CommandKeys,
}

impl Runtime {
    /// Connects to NATS (retrying) as `nats.user`, without provisioning: a
    /// service's user may not create streams (see `krisbud_proto::access`).
    pub async fn connect(
        name: &str,
        common: &Common,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Runtime> {
        let credentials = common.nats.own_credentials()?;
        let client = nats::connect(&common.nats.url, name, credentials.as_ref(), shutdown).await?;
        Runtime::from_client(client, common)
    }

    /// Connects as `credentials` (a service's own user) without provisioning.
    pub async fn connect_as(
        name: &str,
        credentials: Option<&NatsCredentials>,
        common: &Common,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Runtime> {
        let client = nats::connect(&common.nats.url, name, credentials, shutdown).await?;
        Runtime::from_client(client, common)
    }

    /// Wraps an existing client and provisions every stream, bucket and durable
    /// consumer (a client
    /// allowed to, such as the provisioning user's or one on an open test server).
    pub async fn with_client(
        client: async_nats::Client,
        common: &Common,
    ) -> anyhow::Result<Runtime> {
        let rt = Runtime::from_client(client, common)?;
        nats::provision_all(&rt.bus.js).await?;
        Ok(rt)
    }

    /// Wraps an existing client as it is.
    pub fn from_client(client: async_nats::Client, common: &Common) -> anyhow::Result<Runtime> {
        let health = Health::default();
        health.watch_connection("bus", client.clone());
        Ok(Runtime {
            bus: Bus::new(client),
            health,
            data_dir: common.data_dir.clone(),
            recipient_key: common.privacy.recipient_key.clone(),
            request_timeout: Duration::from_secs(common.nats.request_timeout_secs),
            commands: CommandKeys::from_config(&common.commands)?,
        })
    }
}

/// A running service: its listener's address, if it has one, and its task.
pub struct Started {
    /// The bound address, useful when the configuration asked for port 0.
    pub addr: Option<SocketAddr>,
    /// Ends when the service has shut down.
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Started {
    /// Waits until the service has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// The `--config` argument or `KRISBUD_CONFIG`.
pub fn config_path() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("KRISBUD_CONFIG").map(PathBuf::from)
}

/// The whole `main` of a standalone service: config, telemetry, NATS, health,
/// `start`, then wait for shutdown. `S` holds the service's own section; the
/// common sections are read from the same file separately (not flattened into `S`,
/// which would lose the key's name from error messages).
pub fn main<S, F, Fut>(name: &'static str, start: F) -> ExitCode
where
    S: DeserializeOwned,
    F: FnOnce(S, Runtime, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<Started>>,
{
    let path = config_path();
    let common: Common = config::load_or_exit(path.as_deref());
    let settings: S = config::load_or_exit(path.as_deref());
    if common.nats.url.is_empty() {
        eprintln!("krisbud: bad configuration: key `nats.url` is required for a standalone {name}");
        return ExitCode::from(config::EXIT_BAD_CONFIG as u8);
    }
    if let Err(e) = crate::secret_file::refuse_known_default(
        "privacy.recipient_key",
        common.privacy.recipient_key.expose(),
    ) {
        eprintln!("krisbud: bad configuration: {e}");
        return ExitCode::from(config::EXIT_BAD_CONFIG as u8);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("krisbud: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = telemetry::init(name, &common.telemetry);
        let shutdown = shutdown::on_signals();
        let result = async {
            let rt = Runtime::connect(name, &common, &shutdown).await?;
            let listener = tokio::net::TcpListener::bind(&common.health_listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "health endpoints");
            let router = rt.health.router();
            let health_shutdown = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(health_shutdown.cancelled_owned())
                    .await
            });
            let started = start(settings, rt, shutdown.clone()).await?;
            started.wait().await
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "{name} stopped");
                ExitCode::FAILURE
            }
        }
    })
}
