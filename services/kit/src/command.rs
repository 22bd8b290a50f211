//! Commands as NATS requests: the owning service validates, appends its event,
//! then replies; the gateway turns the reply into HTTP.

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::client::RequestErrorKind;
use futures::StreamExt;
use krisbud_proto::{CommandReply, CommandRequest, Problem};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::telemetry;

/// Queue group shared by every instance of a service answering a command.
pub const QUEUE: &str = "krisbud";

/// Answers requests on `subject` until `shutdown`, one task per request.
pub async fn serve<Req, Resp, F, Fut>(
    client: async_nats::Client,
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
    spawn(client, subject, shutdown, handler).await?.await?
}

/// Subscribes to `subject` (and waits until the server knows it), then answers
/// requests in a task until `shutdown`. When this returns, requests are answered.
pub async fn spawn<Req, Resp, F, Fut>(
    client: async_nats::Client,
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
    let requests = client
        .queue_subscribe(subject, QUEUE.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {subject}: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {subject}: {e}"))?;
    Ok(tokio::spawn(answer(
        client, subject, requests, shutdown, handler,
    )))
}

async fn answer<Req, Resp, F, Fut>(
    client: async_nats::Client,
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
        let client = client.clone();
        let span = tracing::info_span!("command", %subject);
        telemetry::follow(&span, message.headers.as_ref());
        tokio::spawn(
            async move {
                let result = match serde_json::from_slice::<CommandRequest<Req>>(&message.payload)
                {
                    Ok(request) => handler(request).await,
                    Err(e) => Err(Problem::new(
                        400,
                        "bad request",
                        format!("cannot read the request: {e}"),
                    )),
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
                let body = serde_json::to_vec(&reply).expect("a reply serializes");
                if let Err(e) = client.publish(reply_to, body.into()).await {
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
    let body = serde_json::to_vec(request).expect("a request serializes");
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
