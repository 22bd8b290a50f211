//! The krisbud HTTP API: bearer tokens mapped to users and roles, commands sent to
//! the owning service as NATS requests, and every error as RFC 9457
//! `application/problem+json` naming the field.
//!
//! [`start`] binds the listener and serves `/api/v1` plus `/healthz` and `/readyz`
//! until the shutdown token is cancelled.

// A service never panics on what it is handed: no unchecked indexing, no unwrap
// or expect outside tests (an expect that cannot fail says why, where it is).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

mod audience_routes;
mod audit_routes;
mod auth;
mod body;
mod config;
mod console;
mod edge;
mod live_status;
pub mod openapi;
mod problem;
mod routes;
mod state;
mod template_routes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use krisbud_kit::{CancellationToken, Runtime, Started};

pub use config::{Config, OidcConfig, User, token_sha256};
pub use problem::{PROBLEM_JSON, ProblemDetails, TYPE_PREFIX};

use crate::state::AppState;

/// How long open connections may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Starts the gateway: checks the users, binds `config.listen`, and serves until
/// `shutdown` is cancelled. Returns once the listener is bound.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let users = config::index_users(&config.users)?;
    if users.is_empty() {
        tracing::warn!("gateway.users is empty: every API request will get 401");
    }
    anyhow::ensure!(
        rt.commands.can_sign(),
        "the gateway signs every command it sends: set `commands.signing_key_file`"
    );
    let state = AppState {
        nats: rt.bus.client.clone(),
        commands: rt.commands.clone(),
        users: Arc::new(users),
        request_timeout: rt.request_timeout,
        openapi: openapi::render().into(),
        members_limit_bytes: config.members_limit_bytes,
        shutdown: shutdown.clone(),
        sessions: console::session::Sessions::default(),
        watches: live_status::Watches::default(),
        streams: live_status::StreamSlots::new(config.streams_per_user),
        oidc: match config.oidc.clone() {
            Some(c) => Some(Arc::new(console::oidc::Oidc::new(c)?)),
            None => None,
        },
    };
    let app = router(state, config.body_limit_bytes).merge(rt.health.router());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("gateway cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "gateway listening");

    let ready = rt.health.component("gateway");
    ready.set(true);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown({
                let shutdown = shutdown.clone();
                async move {
                    shutdown.cancelled().await;
                    // Load balancers stop sending while open requests finish.
                    ready.set(false);
                }
            })
            .into_future();
        // Graceful shutdown waits for every connection; a stuck client (a slow audit
        // export) must not hold the process beyond the grace period.
        let grace_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            result = serve => result.context("gateway server failed")?,
            () = grace_over => tracing::warn!("gateway connections still open after the grace period; closing them"),
        }
        tracing::info!("gateway stopped");
        Ok(())
    });
    Ok(Started {
        addr: Some(addr),
        task,
    })
}

/// The API routes (the route table in `openapi`), the console (`/` leads to it),
/// the body limit and the edge middleware (span, problem+json).
fn router(state: AppState, body_limit_bytes: usize) -> Router {
    let (api, _) = openapi::api();
    api.merge(console::router())
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/konsol") }),
        )
        .fallback(edge::not_found)
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(axum::middleware::from_fn(edge::edge))
        .with_state(state)
}
