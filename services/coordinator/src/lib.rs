//! The coordinator: templates and rendering, declaration, the dispatch planner,
//! operator confirmations and the crisis status projection.

// A service never panics on what it is handed: no unchecked indexing, no unwrap
// or expect outside tests (an expect that cannot fail says why, where it is).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

pub mod audience;
pub mod crisis;
pub mod gsm;
pub mod janitor;
pub mod render;
mod roles;
pub mod template;

use std::sync::Arc;

use anyhow::Context as _;
use krisbud_kit::consumer::{self, Ack, ConsumerSpec};
use krisbud_kit::{CancellationToken, Runtime, Started, command};
use krisbud_proto::access::durable;
use krisbud_proto::{Envelope, spec, subject};
use serde::Deserialize;

use crate::crisis::planner::Planner;
use crate::crisis::{Coordinator, deadlines, projection};
use crate::template::Catalog;

/// `[coordinator]`.
///
/// Templates are not configured here: they are drafted and approved through the
/// API (or `krisbud templates import`), and `krisbud up --demo` seeds the demo set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Recipients per SMS or email dispatch job, at most [`MAX_BATCH_SIZE`].
    pub batch_size: usize,
    /// `[coordinator.confirmation]`: confirmation deadlines and escalation.
    pub confirmation: deadlines::ConfirmationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            batch_size: 1000,
            confirmation: deadlines::ConfirmationConfig::default(),
        }
    }
}

/// The largest dispatch job: its `DeliveryReported` (up to ~115 bytes a
/// recipient with a provider message id each) stays one NATS message, and one
/// audit record fits an audit page.
pub const MAX_BATCH_SIZE: usize = 5000;

/// The template catalog on `rt`'s NATS connection, for seeding the demo set.
pub async fn catalog(rt: &Runtime) -> anyhow::Result<Catalog> {
    Ok(Catalog {
        bus: rt.bus.clone(),
        kv: rt
            .bus
            .js
            .get_key_value(spec::TEMPLATES.name)
            .await
            .context("templates bucket")?,
    })
}

/// The audience store on `rt`'s NATS connection, for seeding the demo set.
pub async fn audiences(rt: &Runtime) -> anyhow::Result<audience::Audiences> {
    let js = &rt.bus.js;
    Ok(audience::Audiences {
        bus: rt.bus.clone(),
        meta: js
            .get_key_value(spec::AUDIENCES.name)
            .await
            .context("audiences bucket")?,
        members: js
            .get_key_value(spec::AUDIENCE_MEMBERS.name)
            .await
            .context("audience members bucket")?,
    })
}

/// Starts the command handlers, the planner and the projector.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    anyhow::ensure!(
        (1..=MAX_BATCH_SIZE).contains(&config.batch_size),
        "bad configuration: key `coordinator.batch_size` must be 1 to {MAX_BATCH_SIZE}, so that a job's delivery report stays one NATS message"
    );
    // Boxed: the subscriptions make a large future for whoever awaits `start`.
    Box::pin(start_services(config, rt, shutdown)).await
}

async fn start_services(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let ready = rt.health.component("coordinator");
    let templates = catalog(&rt).await?;
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
    let audiences = audiences(&rt).await?;
    let status_writer = projection::Batcher::start(crises.clone());
    let coordinator = Arc::new(Coordinator {
        templates: templates.clone(),
        bus: rt.bus.clone(),
        crises: crises.clone(),
        status_writer: status_writer.clone(),
        audiences: audiences.clone(),
    });
    let notifier = deadlines::Notifier {
        bus: rt.bus.clone(),
        audiences: audiences.clone(),
        recipient_key: rt.recipient_key.expose().as_bytes().to_vec(),
        batch_size: config.batch_size,
    };
    let planner = Planner {
        bus: rt.bus.clone(),
        audiences,
        recipient_key: rt.recipient_key.expose().as_bytes().to_vec(),
        batch_size: config.batch_size,
    };
    let sweeper = deadlines::Sweeper {
        coordinator: coordinator.clone(),
        config: config.confirmation.clone(),
    };

    // Every handler subscribes (and every consumer exists) before `start` returns.
    let mut tasks = Vec::new();
    let guard = command::Guard::new("coordinator", &rt)?;
    macro_rules! serve {
        ($subject:expr, |$c:ident, $req:ident| $body:expr) => {{
            let coordinator = coordinator.clone();
            let handler = move |$req| {
                let $c = coordinator.clone();
                async move { $body }
            };
            tasks.push(command::spawn(guard.clone(), $subject, shutdown.clone(), handler).await?);
        }};
    }
    serve!(subject::cmd::DECLARE, |c, req| c.declare(req).await);
    serve!(subject::cmd::LIST_AUDIENCES, |c, req| c
        .audiences
        .list(req)
        .await);
    serve!(subject::cmd::GET_AUDIENCE, |c, req| c
        .audiences
        .show(req)
        .await);
    serve!(subject::cmd::CREATE_AUDIENCE, |c, req| c
        .audiences
        .create(req)
        .await);
    serve!(subject::cmd::DELETE_AUDIENCE, |c, req| c
        .audiences
        .delete(req)
        .await);
    serve!(subject::cmd::IMPORT_PART, |c, req| c
        .audiences
        .import_part(req)
        .await);
    serve!(subject::cmd::IMPORT_COMMIT, |c, req| c
        .audiences
        .import_commit(req)
        .await);
    serve!(subject::cmd::CONFIRM, |c, req| c.confirm(req).await);
    serve!(subject::cmd::UPDATE, |c, req| c.update(req).await);
    serve!(subject::cmd::ALL_CLEAR, |c, req| c.all_clear(req).await);
    serve!(subject::cmd::CANCEL, |c, req| c.cancel(req).await);
    serve!(subject::cmd::CLOSE, |c, req| c.close(req).await);
    serve!(subject::cmd::GET_CRISIS, |c, req| c.get(req).await);
    serve!(subject::cmd::LIST_CRISES, |c, req| {
        let req: krisbud_proto::CommandRequest<krisbud_proto::command::ListCrises> = req;
        c.list(&req.actor).await
    });
    serve!(subject::cmd::LIST_TEMPLATES, |c, req| c
        .templates
        .list_templates(req)
        .await);
    serve!(subject::cmd::GET_TEMPLATE, |c, req| c
        .templates
        .get_template(req)
        .await);
    serve!(subject::cmd::GET_TEMPLATE_VERSION, |c, req| c
        .templates
        .get_template_version(req)
        .await);
    serve!(subject::cmd::DRAFT_TEMPLATE, |c, req| c
        .templates
        .draft_template(req)
        .await);
    serve!(subject::cmd::CHANGE_TEMPLATE_STATE, |c, req| c
        .templates
        .change_template_state(req)
        .await);
    serve!(subject::cmd::PREVIEW_TEMPLATE, |c, req| c
        .templates
        .preview_template(req)
        .await);
    serve!(subject::cmd::DIFF_TEMPLATE, |c, req| c
        .templates
        .diff_template(req)
        .await);

    let planner_spec = ConsumerSpec {
        concurrency: 4,
        ..ConsumerSpec::provisioned(durable::PLANNER)?
    };
    tasks.push(
        consumer::spawn(&rt.bus.js, planner_spec, shutdown.clone(), move |d| {
            let planner = planner.clone();
            async move { planner.handle(d).await }
        })
        .await?,
    );
    // Escalation notices to the duty officers, from `EscalationRaised`.
    let notifier_spec = ConsumerSpec {
        concurrency: 2,
        ..ConsumerSpec::provisioned(durable::ESCALATION)?
    };
    tasks.push(
        consumer::spawn(&rt.bus.js, notifier_spec, shutdown.clone(), move |d| {
            let notifier = notifier.clone();
            async move { notifier.handle(d).await }
        })
        .await?,
    );
    // Jobs a channel acknowledged that a crashed nats-server left in the queue.
    tasks.push(tokio::spawn(janitor::run(
        rt.bus.js.clone(),
        shutdown.clone(),
    )));
    // Deadlines and expiries: every instance sweeps the status read model.
    tasks.push(tokio::spawn(sweeper.run(shutdown.clone())));
    // The template read model follows the template events, so an append whose
    // bucket write was lost (a crash in between) still shows up.
    let templates_spec = ConsumerSpec {
        concurrency: 1,
        ..ConsumerSpec::provisioned(durable::TEMPLATES)?
    };
    tasks.push(
        consumer::spawn(&rt.bus.js, templates_spec, shutdown.clone(), move |d| {
            let templates = templates.clone();
            async move { templates.project(d).await }
        })
        .await?,
    );
    // Many events in hand at once, folded by one writer in batches (see
    // `projection::Batcher`): the order they fold in does not matter.
    let projector_spec = ConsumerSpec {
        concurrency: 128,
        ..ConsumerSpec::provisioned(durable::STATUS)?
    };
    let batcher = status_writer;
    tasks.push(
        consumer::spawn(&rt.bus.js, projector_spec, shutdown.clone(), move |d| {
            let batcher = batcher.clone();
            async move {
                let envelope: Envelope = match Envelope::read_on(&d.subject, &d.payload) {
                    Ok(e) => e,
                    // Not ours to judge: the audit records it as it is.
                    Err(_) => return Ack::Done,
                };
                match batcher.apply(envelope).await {
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
