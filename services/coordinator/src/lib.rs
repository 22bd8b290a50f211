//! The coordinator: templates and rendering, declaration, the dispatch planner,
//! operator confirmations and the crisis status projection.

pub mod commands;
pub mod gsm;
pub mod planner;
pub mod projection;
pub mod render;
pub mod templates;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use krisbud_kit::consumer::{self, Ack, ConsumerSpec};
use krisbud_kit::{CancellationToken, Runtime, Started, command};
use krisbud_proto::command::ListTemplates;
use krisbud_proto::{Envelope, spec, subject};
use serde::Deserialize;

use crate::commands::Coordinator;
use crate::planner::Planner;
use crate::templates::TemplateStore;

/// `[coordinator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A directory of approved template files (`*.toml`, one per version).
    pub templates_dir: Option<PathBuf>,
    /// Whether the built-in demo templates are available.
    pub demo_templates: bool,
    /// Recipients per SMS or email dispatch job.
    pub batch_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            templates_dir: None,
            demo_templates: false,
            batch_size: 500,
        }
    }
}

/// Starts the command handlers, the planner and the projector.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let ready = rt.health.component("coordinator");
    let templates = TemplateStore::load(config.demo_templates, config.templates_dir.as_deref())?;
    if rt.recipient_key.is_empty() {
        anyhow::bail!(
            "bad configuration: key `privacy.recipient_key` is required by the coordinator"
        );
    }
    let js = &rt.bus.js;
    let crises = js
        .get_key_value(spec::CRISES.name)
        .await
        .context("crises bucket")?;
    let audiences = js
        .get_key_value(spec::AUDIENCES.name)
        .await
        .context("audiences bucket")?;
    let coordinator = Arc::new(Coordinator {
        templates,
        bus: rt.bus.clone(),
        crises: crises.clone(),
        audiences: audiences.clone(),
    });
    let planner = Planner {
        bus: rt.bus.clone(),
        audiences,
        recipient_key: rt.recipient_key.expose().as_bytes().to_vec(),
        batch_size: config.batch_size,
    };

    // Every handler subscribes (and every consumer exists) before `start` returns.
    let mut tasks = Vec::new();
    let client = rt.bus.client.clone();
    macro_rules! serve {
        ($subject:expr, |$c:ident, $req:ident| $body:expr) => {{
            let coordinator = coordinator.clone();
            let handler = move |$req| {
                let $c = coordinator.clone();
                async move { $body }
            };
            tasks.push(command::spawn(client.clone(), $subject, shutdown.clone(), handler).await?);
        }};
    }
    serve!(subject::cmd::DECLARE, |c, req| c.declare(req).await);
    serve!(subject::cmd::CONFIRM, |c, req| c.confirm(req).await);
    serve!(subject::cmd::GET_CRISIS, |c, req| c.get(req).await);
    serve!(subject::cmd::LIST_CRISES, |c, req| {
        let req: krisbud_proto::CommandRequest<krisbud_proto::command::ListCrises> = req;
        c.list(&req.actor).await
    });
    serve!(subject::cmd::LIST_TEMPLATES, |c, req| {
        let _: krisbud_proto::CommandRequest<ListTemplates> = req;
        Ok::<_, krisbud_proto::Problem>(c.templates.summaries())
    });

    let planner_spec = ConsumerSpec {
        concurrency: 4,
        ..ConsumerSpec::new(
            spec::EVENTS.name,
            "coordinator-planner",
            subject::ALL_CRISIS_EVENTS,
        )
    };
    tasks.push(
        consumer::spawn(&rt.bus.js, planner_spec, shutdown.clone(), move |d| {
            let planner = planner.clone();
            async move { planner.handle(d).await }
        })
        .await?,
    );
    let projector_spec = ConsumerSpec {
        concurrency: 1,
        ..ConsumerSpec::new(spec::EVENTS.name, "coordinator-status", subject::ALL_EVENTS)
    };
    tasks.push(
        consumer::spawn(&rt.bus.js, projector_spec, shutdown.clone(), move |d| {
            let crises = crises.clone();
            async move {
                let envelope: Envelope = match serde_json::from_slice(&d.payload) {
                    Ok(e) => e,
                    // Not ours to judge: the audit records it as it is.
                    Err(_) => return Ack::Done,
                };
                match projection::apply(&crises, &envelope).await {
                    Ok(()) => Ack::Done,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot update crisis status; will retry");
                        Ack::Retry(std::time::Duration::from_millis(500))
                    }
                }
            }
        })
        .await?,
    );
    ready.set(true);
    let task = tokio::spawn(async move {
        for result in futures::future::join_all(tasks).await {
            result??;
        }
        ready.set(false);
        Ok(())
    });
    Ok(Started { addr: None, task })
}
