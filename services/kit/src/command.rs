//! Commands as NATS requests: the owning service validates, appends its event,
//! then replies; the gateway turns the reply into HTTP.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::client::RequestErrorKind;
use futures::{FutureExt as _, StreamExt};
use krisbud_proto::event::CommandRefused;
use krisbud_proto::{Actor, CommandReply, CommandRequest, Envelope, Event, Problem};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::Expect;
use crate::command_auth::{CommandKeys, Refusal};
use crate::{Bus, Runtime, telemetry};

/// What a serving service checks every command with, and where it records the
/// ones it refuses.
#[derive(Clone)]
pub struct Guard {
    /// The serving service, as recorded in `CommandRefused`.
    pub service: &'static str,
    pub keys: CommandKeys,
    pub bus: Bus,
}

impl Guard {
    /// The guard of `service` on `rt`; an error when no public key is configured,
    /// for a service must never obey unsigned commands.
    pub fn new(service: &'static str, rt: &Runtime) -> anyhow::Result<Guard> {
        anyhow::ensure!(
            rt.commands.can_verify(),
            "{service} serves commands and needs the gateway's public key: set `commands.public_key`"
        );
        Ok(Guard {
            service,
            keys: rt.commands.verify_only(),
            bus: rt.bus.clone(),
        })
    }

    /// Records a refused command; a failure to record goes to the log.
    async fn record(&self, subject: &str, message: &async_nats::Message, refusal: Refusal) {
        let digest = hex::encode(Sha256::digest(&message.payload));
        let claimed_user = serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()
            .and_then(|v| {
                v.pointer("/actor/user")?
                    .as_str()
                    .map(|u| u.chars().take(64).collect())
            });
        let nonce = message
            .headers
            .as_ref()
            .and_then(|h| h.get(crate::command_auth::HEADER_NONCE))
            .map(|v| {
                v.as_str()
                    .chars()
                    .filter(char::is_ascii_hexdigit)
                    .take(32)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let envelope = Envelope::with_id(
            format!("refused.{}.{}.{}", self.service, &digest[..32], nonce),
            Actor::service(self.service),
            Event::CommandRefused(CommandRefused {
                subject: subject.to_owned(),
                reason: refusal.as_str().to_owned(),
                claimed_user,
                body_sha256: digest,
                refused_by: self.service.to_owned(),
            }),
        );
        if let Err(e) = self.bus.append(&envelope, Expect::Any).await {
            tracing::error!(error = %e, "cannot record a refused command");
        }
    }
}

/// Queue group shared by every instance of a service answering a command.
pub const QUEUE: &str = "krisbud";

/// Answers requests on `subject` until `shutdown`, one task per request.
pub async fn serve<Req, Resp, F, Fut>(
    guard: Guard,
    subject: &'static str,
    shutdown: CancellationToken,
    handler: F,
) -> anyhow::Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(CommandRequest<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Problem>> + Send + 'static,
{
    spawn(guard, subject, shutdown, handler).await?.await?
}

/// Subscribes to `subject` (and waits until the server knows it), then answers
/// requests in a task until `shutdown`. When this returns, requests are answered.
pub async fn spawn<Req, Resp, F, Fut>(
    guard: Guard,
    subject: &'static str,
    shutdown: CancellationToken,
    handler: F,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(CommandRequest<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Problem>> + Send + 'static,
{
    let client = guard.bus.client.clone();
    let requests = client
        .queue_subscribe(subject, QUEUE.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {subject}: {e}"))?;
    // When this returns, the server knows the subscription: a request sent
    // from any connection afterwards is answered.
    crate::nats::round_trip(&client)
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {subject}: {e:#}"))?;
    Ok(tokio::spawn(answer(
        guard, subject, requests, shutdown, handler,
    )))
}

async fn answer<Req, Resp, F, Fut>(
    guard: Guard,
    subject: &'static str,
    mut requests: async_nats::Subscriber,
    shutdown: CancellationToken,
    handler: F,
) -> anyhow::Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(CommandRequest<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Problem>> + Send + 'static,
{
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let handler = handler.clone();
        let guard = guard.clone();
        let span = tracing::info_span!("command", %subject);
        telemetry::follow(&span, message.headers.as_ref());
        tokio::spawn(
            async move {
                let checked =
                    guard
                        .keys
                        .check(subject, &message.payload, message.headers.as_ref());
                let result = match checked {
                    Err(refusal) => {
                        tracing::warn!(%subject, reason = refusal.as_str(), "command refused: not from the gateway");
                        guard.record(subject, &message, refusal).await;
                        Err(Problem::new(
                            403,
                            "forbidden",
                            format!("command refused: {}", refusal.as_str()),
                        ))
                    }
                    Ok(()) => match serde_json::from_slice::<CommandRequest<Req>>(&message.payload)
                    {
                        // A handler that panics answers 500 at once instead of
                        // leaving the caller to time out.
                        Ok(request) => AssertUnwindSafe(handler(request))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                Err(Problem::new(
                                    500,
                                    "internal error",
                                    format!("{subject} failed unexpectedly; the error is in the service's log"),
                                ))
                            }),
                        Err(e) => Err(Problem::new(
                            400,
                            "bad request",
                            format!("cannot read the request: {e}"),
                        )),
                    },
                };
                if let Err(problem) = &result {
                    if problem.status >= 500 {
                        tracing::error!(status = problem.status, detail = %problem.detail, "command failed");
                    } else {
                        tracing::info!(status = problem.status, detail = %problem.detail, "command refused");
                    }
                }
                let reply = match result {
                    Ok(v) => CommandReply::Ok(v),
                    Err(p) => CommandReply::Error(p),
                };
                #[allow(clippy::expect_used, reason = "derived Serialize with string keys cannot fail")]
                let body = serde_json::to_vec(&reply).expect("a reply serializes");
                let limit = guard.bus.client.server_info().max_payload;
                let body = if limit > 0 && body.len() > limit {
                    // Never leave the caller to time out: say what went wrong.
                    tracing::error!(%subject, bytes = body.len(), limit, "a reply is larger than nats carries");
                    let problem = Problem::new(
                        500,
                        "internal error",
                        format!(
                            "the answer to {subject} is {} bytes, more than the {limit} bytes one NATS message carries",
                            body.len()
                        ),
                    );
                    #[allow(clippy::expect_used, reason = "a Problem always serializes")]
                    serde_json::to_vec(&CommandReply::<()>::Error(problem))
                        .expect("a problem serializes")
                } else {
                    body
                };
                if let Err(e) = guard.bus.client.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, "cannot send the reply");
                }
            }
            .instrument(span),
        );
    }
    let _ = requests.unsubscribe().await;
    Ok(())
}

/// Sends a command and waits for its reply; transport failures become problems a
/// person can act on (503 when no service answers, 504 on timeout).
pub async fn request<Req, Resp>(
    client: &async_nats::Client,
    keys: &CommandKeys,
    subject: &str,
    request: &CommandRequest<Req>,
    timeout: Duration,
) -> Result<Resp, Problem>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let mut headers = HeaderMap::new();
    telemetry::inject(&mut headers);
    #[allow(
        clippy::expect_used,
        reason = "derived Serialize with string keys cannot fail"
    )]
    let body = serde_json::to_vec(request).expect("a request serializes");
    keys.sign(subject, &body, &mut headers);
    // The client's own request timeout (10 s by default) would cut a long
    // command (a large import's commit) short; the caller's timeout rules.
    let sent = client.send_request(
        subject.to_owned(),
        async_nats::Request::new()
            .payload(body.into())
            .headers(headers)
            .timeout(Some(timeout + Duration::from_secs(1))),
    );
    let message = match tokio::time::timeout(timeout, sent).await {
        Err(_) => {
            return Err(Problem::new(
                504,
                "gateway timeout",
                format!("no answer to {subject} within {} s", timeout.as_secs()),
            ));
        }
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
            return Err(Problem::unavailable(format!(
                "no service is running to answer {subject}; start it and try again"
            )));
        }
        Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => {
            return Err(Problem::new(
                504,
                "gateway timeout",
                format!("no answer to {subject} in time"),
            ));
        }
        Ok(Err(e)) => {
            return Err(Problem::unavailable(format!(
                "cannot reach nats for {subject}: {e}"
            )));
        }
        Ok(Ok(message)) => message,
    };
    match serde_json::from_slice::<CommandReply<Resp>>(&message.payload) {
        Ok(CommandReply::Ok(value)) => Ok(value),
        Ok(CommandReply::Error(problem)) => Err(problem),
        Err(e) => Err(Problem::new(
            502,
            "bad gateway",
            format!("unreadable answer to {subject}: {e}"),
        )),
    }
}
