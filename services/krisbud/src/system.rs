//! `krisbud up`: every service in one process, each on a NATS connection of its
//! own as its own user (`krisbud_proto::access`), as separate processes would be.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use krisbud_kit::{CancellationToken, Runtime, Started};

use crate::config::Config;
use crate::demo::{self, DemoTokens};
use crate::local_nats::LocalNatsServer;

/// How to start.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Seed demo users, templates and audiences.
    pub demo: bool,
}

/// The running system.
pub struct System {
    /// The HTTP API (and console) address.
    pub api: SocketAddr,
    /// The public banner listener.
    pub banner: SocketAddr,
    /// The NATS URL the services use.
    pub nats_url: String,
    /// The demo tokens, when started with `--demo`.
    pub demo_tokens: Option<DemoTokens>,
    /// Where the demo tokens were written.
    pub demo_tokens_file: Option<PathBuf>,
    /// The data directory.
    pub data_dir: PathBuf,
    services: Vec<(&'static str, Started)>,
    /// The services' NATS connections, closed before the local server stops.
    clients: Vec<async_nats::Client>,
    local_nats: Option<Arc<Mutex<LocalNatsServer>>>,
    /// Ends the watch that restarts the local server when it dies.
    supervision: CancellationToken,
}

impl System {
    /// The line `krisbud up` prints once everything runs.
    pub fn ready_line(&self) -> String {
        format!(
            "krisbud ready api=http://{api}/api/v1 console=http://{api}/ banner=http://{banner}/v1/banners nats={nats}",
            api = self.api,
            banner = self.banner,
            nats = self.nats_url
        )
    }

    /// Waits until every service has stopped (after the shutdown token fired), then
    /// stops the local NATS server.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for (name, started) in self.services.drain(..) {
            if let Err(e) = started.wait().await {
                tracing::error!(service = name, error = format!("{e:#}"), "service failed");
                first_error.get_or_insert(e.context(format!("{name} failed")));
            }
        }
        // Everything published is flushed and the connection closed on purpose,
        // so stopping the local server does not read as a lost connection.
        for client in &self.clients {
            if let Err(e) = client.drain().await {
                tracing::debug!(error = %e, "cannot drain a nats connection");
            }
        }
        self.supervision.cancel();
        if let Some(nats) = self.local_nats.take() {
            tokio::task::spawn_blocking(move || lock(&nats).stop()).await?;
        }
        tracing::info!("krisbud stopped");
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Starts NATS if needed, provisions it, seeds the demo, and starts every service.
pub async fn up(
    config: Config,
    options: UpOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<System> {
    // Boxed: every service's start-up future together is large.
    Box::pin(start_all(config, options, shutdown)).await
}

async fn start_all(
    mut config: Config,
    options: UpOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<System> {
    krisbud_kit::secret_file::refuse_known_default(
        "privacy.recipient_key",
        config.common.privacy.recipient_key.expose(),
    )?;
    let data_dir = config.common.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let local_nats = if config.common.nats.url.is_empty() {
        let (settings, dir) = (config.local_nats.clone(), data_dir.clone());
        let server =
            tokio::task::spawn_blocking(move || LocalNatsServer::start(&settings, &dir)).await??;
        config.common.nats.url = server.url.clone();
        config.common.nats.credentials_dir = Some(server.credentials_dir.clone());
        Some(Arc::new(Mutex::new(server)))
    } else {
        None
    };
    let supervision = shutdown.child_token();
    if let Some(nats) = &local_nats {
        supervise(nats.clone(), supervision.clone());
    }
    anyhow::ensure!(
        config.common.nats.credentials_dir.is_some(),
        "bad configuration: key `nats.credentials_dir` is required with `nats.url`: krisbud up connects each service as its own NATS user (see deploy/nats)"
    );
    if config.common.privacy.recipient_key.is_empty() {
        config.common.privacy.recipient_key = local_recipient_key(&data_dir)?;
    }
    if config.audit.signing_key_file.is_none() {
        // A local installation signs its audit checkpoints with a key of its own.
        let path = data_dir.join("audit-signing.key");
        krisbud_audit::signing::load_or_create(&path)?;
        config.audit.signing_key_file = Some(path);
    }
    if config.common.commands.signing_key_file.is_none() {
        // The gateway's command key; the other services get its public half.
        let path = data_dir.join("command-signing.key");
        krisbud_kit::command_auth::load_or_create_signing_key(&path)?;
        config.common.commands.signing_key_file = Some(path);
    }

    // Streams, buckets and durable consumers, by the one user allowed to create them.
    let provision = connect(
        krisbud_proto::access::PROVISION_USER,
        &config.common,
        &shutdown,
    )
    .await?;
    krisbud_kit::nats::provision_all(&provision.bus.js).await?;
    let _ = provision.bus.client.drain().await;

    let health = krisbud_kit::Health::default();
    let mut clients = Vec::new();
    let mut runtimes = std::collections::HashMap::new();
    for user in krisbud_proto::access::SERVICES {
        let mut rt = connect(user, &config.common, &shutdown).await?;
        rt.health = health.clone();
        health.watch_connection(user, rt.bus.client.clone());
        if user != "gateway" {
            // Only the gateway holds the key that signs commands.
            rt.commands = rt.commands.verify_only();
        }
        clients.push(rt.bus.client.clone());
        runtimes.insert(user, rt);
    }
    let mut rt_of = |user: &str| {
        runtimes
            .remove(user)
            .with_context(|| format!("no runtime for {user}"))
    };
    let coordinator_rt = rt_of("coordinator")?;
    let rt = &coordinator_rt;

    let mut demo_tokens = None;
    let mut demo_tokens_file = None;
    if options.demo {
        let tokens = DemoTokens::load_or_generate(&data_dir.join("demo-tokens.json"));
        config.gateway.users.extend(tokens.users());
        // Through the lifecycle events, drafted and approved by two demo people,
        // idempotently: a restart finds them and appends nothing.
        krisbud_coordinator::catalog(rt)
            .await?
            .seed_demo()
            .await
            .context("cannot seed the demo templates")?;
        // Once: a restart keeps the audiences as they are.
        let audiences = krisbud_coordinator::audiences(rt).await?;
        let seeder = krisbud_proto::Actor {
            user: "admin.olle".into(),
            roles: vec![krisbud_proto::Role::Admin],
            channels: Vec::new(),
        };
        for (audience, members) in demo::audiences() {
            let id = audience.id.clone();
            let exists = audiences
                .get(&id)
                .await
                .map_err(|p| anyhow::anyhow!("{}", p.detail))?;
            if exists.is_none() {
                audiences
                    .replace(&seeder, audience, members)
                    .await
                    .map_err(|p| anyhow::anyhow!("cannot seed audience {id}: {}", p.detail))?;
            }
        }
        let path = data_dir.join("demo-tokens.json");
        tokens.write(&path)?;
        demo_tokens = Some(tokens);
        demo_tokens_file = Some(path);
    }

    let mut services = Vec::new();
    // Consumers first, so the gateway opens only when everything can answer.
    services.push((
        "audit",
        krisbud_audit::start(config.audit, rt_of("audit")?, shutdown.clone()).await?,
    ));
    services.push((
        "coordinator",
        krisbud_coordinator::start(config.coordinator, coordinator_rt, shutdown.clone()).await?,
    ));
    services.push((
        "channel-sms",
        krisbud_channel_sms::start(config.sms, rt_of("channel-sms")?, shutdown.clone()).await?,
    ));
    services.push((
        "channel-email",
        krisbud_channel_email::start(config.email, rt_of("channel-email")?, shutdown.clone())
            .await?,
    ));
    services.push((
        "channel-intranet",
        krisbud_channel_intranet::start(
            config.intranet,
            rt_of("channel-intranet")?,
            shutdown.clone(),
        )
        .await?,
    ));
    let banner =
        krisbud_channel_banner::start(config.banner, rt_of("channel-banner")?, shutdown.clone())
            .await?;
    let banner_addr = banner
        .addr
        .context("the banner service reports no address")?;
    services.push(("channel-banner", banner));
    let gateway =
        krisbud_gateway::start(config.gateway, rt_of("gateway")?, shutdown.clone()).await?;
    let api = gateway.addr.context("the gateway reports no address")?;
    services.push(("gateway", gateway));

    Ok(System {
        api,
        banner: banner_addr,
        nats_url: config.common.nats.url.clone(),
        demo_tokens,
        demo_tokens_file,
        data_dir,
        services,
        clients,
        local_nats,
        supervision,
    })
}

/// How often `up` looks whether its nats-server still runs.
const SUPERVISION_INTERVAL: Duration = Duration::from_millis(250);

fn lock(nats: &Mutex<LocalNatsServer>) -> MutexGuard<'_, LocalNatsServer> {
    nats.lock().unwrap_or_else(|e| e.into_inner())
}

/// Restarts the local nats-server whenever it exits (killed, crashed, out of
/// memory) until `stop`: the services' clients reconnect by themselves, and the
/// stored streams carry the work on. While it is down, `/readyz` says 503.
fn supervise(nats: Arc<Mutex<LocalNatsServer>>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SUPERVISION_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let nats = nats.clone();
            let stop = stop.clone();
            let restarted = tokio::task::spawn_blocking(move || {
                let mut server = lock(&nats);
                if stop.is_cancelled() || !server.has_exited() {
                    return None;
                }
                tracing::error!("the local nats-server exited; starting it again");
                Some(server.restart().map(|()| server.pid()))
            })
            .await;
            match restarted {
                Ok(Some(Ok(pid))) => tracing::info!(pid, "the local nats-server runs again"),
                Ok(Some(Err(e))) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "cannot restart the local nats-server; trying again"
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "the nats-server watch failed"),
            }
        }
    });
}

/// A runtime connected as `user` with that user's credentials.
async fn connect(
    user: &str,
    common: &krisbud_kit::Common,
    shutdown: &CancellationToken,
) -> anyhow::Result<Runtime> {
    let credentials = common.nats.credentials_for(user)?;
    Runtime::connect_as(
        &format!("krisbud-{user}"),
        credentials.as_ref(),
        common,
        shutdown,
    )
    .await
}

/// The recipient-hash key of a local installation, created on first start.
fn local_recipient_key(data_dir: &std::path::Path) -> anyhow::Result<krisbud_kit::Secret> {
    let key = krisbud_kit::secret_file::read_or_create(&data_dir.join("recipient.key"), || {
        hex::encode(rand::random::<[u8; 32]>())
    })?;
    Ok(krisbud_kit::Secret::new(key))
}
