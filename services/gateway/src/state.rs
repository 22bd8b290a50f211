//! What every request handler shares: the NATS client commands go through, the
//! users by token hash, and the OpenAPI document.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use krisbud_proto::{Actor, CommandRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{TokenHash, User};
use crate::problem::ApiError;

/// The state behind the router.
#[derive(Clone)]
pub struct AppState {
    /// Commands are NATS requests on this client.
    pub nats: async_nats::Client,
    /// Signs every command (the private key only the gateway holds).
    pub commands: krisbud_kit::CommandKeys,
    /// Configured users by the SHA-256 of their token.
    pub users: Arc<HashMap<TokenHash, User>>,
    /// How long a command waits for its answer.
    pub request_timeout: Duration,
    /// The rendered OpenAPI document.
    pub openapi: Bytes,
    /// Largest audience CSV accepted.
    pub members_limit_bytes: usize,
    /// Ends live streams (SSE) at shutdown.
    pub shutdown: krisbud_kit::CancellationToken,
    /// Who is signed in to the console.
    pub sessions: crate::console::session::Sessions,
    /// The shared watches of followed crises (live boards and event streams).
    pub watches: crate::live_status::Watches,
    /// The live streams each user holds open, at most `streams_per_user`.
    pub streams: crate::live_status::StreamSlots,
    /// The identity provider the console signs people in with, when configured.
    pub oidc: Option<Arc<crate::console::oidc::Oidc>>,
}

impl AppState {
    /// Sends a command to its owning service and waits for the answer; no
    /// responders become 503 and a timeout 504 (see `krisbud_kit::command`).
    pub async fn command<Req, Resp>(
        &self,
        subject: &str,
        actor: Actor,
        idempotency_key: Option<String>,
        body: Req,
    ) -> Result<Resp, ApiError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let request = CommandRequest {
            actor,
            idempotency_key,
            body,
        };
        krisbud_kit::command::request(
            &self.nats,
            &self.commands,
            subject,
            &request,
            self.request_timeout,
        )
        .await
        .map_err(ApiError::from)
    }

    /// [`AppState::command`] with its own timeout, for long work such as the
    /// commit of a large import.
    pub async fn command_with_timeout<Req, Resp>(
        &self,
        subject: &str,
        actor: Actor,
        body: Req,
        timeout: Duration,
    ) -> Result<Resp, ApiError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let request = CommandRequest {
            actor,
            idempotency_key: None,
            body,
        };
        krisbud_kit::command::request(&self.nats, &self.commands, subject, &request, timeout)
            .await
            .map_err(ApiError::from)
    }
}
