//! The Sinch provider: `POST {base}/xms/v1/{service_plan_id}/batches` with a
//! Bearer token and a JSON batch of up to 1,000 recipients, asking for
//! per-recipient delivery reports at the channel's callback URL.
//!
//! A 2xx means Sinch accepted the whole batch (every recipient `Sent`, the batch
//! id as provider reference; the delivery reports come later), another 4xx is final
//! for the batch (`Failed`, with Sinch's code and text), and 408, 429, 5xx or a
//! network error is transient: the request is tried again within the job's
//! delivery, then the job is retried. Sinch has no idempotency key for batches; the
//! job id goes out as `client_reference` and comes back in every report.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use krisbud_kit::Secret;
use krisbud_kit::channel::error_chain;
use krisbud_proto::event::{DeliveryState, RecipientOutcome};
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;
use serde::{Deserialize, Serialize};

use crate::callbacks::CallbackUrls;
use crate::provider::{
    Attempt, Pacer, SmsProvider, Transient, is_transient, reason_text, retry_after,
};

/// The most recipients Sinch takes in one batch.
pub const MAX_BATCH: usize = 1_000;

/// How to reach Sinch.
#[derive(Debug, Clone)]
pub struct SinchSettings {
    /// `https://eu.sms.api.sinch.com` (requests go to
    /// `<base>/xms/v1/<service plan>/batches`).
    pub base_url: String,
    /// The service plan id.
    pub service_plan_id: String,
    /// The API token, sent as `Authorization: Bearer`.
    pub api_token: Secret,
    /// The sender: alphanumeric (at most 11 characters) or E.164.
    pub from: String,
    /// Recipients per batch request, at most [`MAX_BATCH`].
    pub batch_size: usize,
    /// How long one request may take.
    pub timeout: Duration,
}

/// The Sinch SMS REST API (XMS).
pub struct Sinch {
    client: reqwest::Client,
    url: String,
    settings: SinchSettings,
    pacer: Arc<Pacer>,
    callbacks: Option<CallbackUrls>,
}

/// A batch as Sinch takes it.
#[derive(Debug, Serialize)]
struct Batch<'a> {
    from: &'a str,
    to: Vec<&'a str>,
    body: &'a str,
    delivery_report: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<String>,
    client_reference: &'a str,
}

/// The part of Sinch's reply the channel uses.
#[derive(Debug, Deserialize)]
struct BatchReply {
    id: String,
}

/// What became of one batch request.
enum BatchResult {
    Accepted(String),
    Refused(String),
}

impl Sinch {
    /// A client for the configured service plan.
    pub fn new(
        settings: SinchSettings,
        pacer: Arc<Pacer>,
        callbacks: Option<CallbackUrls>,
    ) -> anyhow::Result<Sinch> {
        let client = crate::http_client(settings.timeout)?;
        let url = format!(
            "{}/xms/v1/{}/batches",
            settings.base_url.trim_end_matches('/'),
            settings.service_plan_id
        );
        Ok(Sinch {
            client,
            url,
            settings,
            pacer,
            callbacks,
        })
    }

    async fn send_batch(
        &self,
        job: &DispatchJob,
        message: &SmsMessage,
        recipients: &[Recipient],
    ) -> Result<BatchResult, Transient> {
        let batch = Batch {
            from: &self.settings.from,
            to: recipients.iter().map(|r| r.address.as_str()).collect(),
            body: &message.text,
            delivery_report: "per_recipient",
            callback_url: self.callbacks.as_ref().map(|c| c.sinch(job)),
            client_reference: &job.job_id,
        };
        let count = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
        let permit = self.pacer.permit(count).await?;
        permit.run(&self.pacer, async {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(self.settings.api_token.expose())
            .json(&batch)
            .send()
            .await
            .map_err(|e| Transient::new(format!("sinch unreachable: {}", error_chain(&e))))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            return match serde_json::from_str::<BatchReply>(&body) {
                Ok(reply) => Ok(BatchResult::Accepted(reply.id)),
                // Accepted without an id we can read: the batch is out, so it
                // must not be sent again; the reports will still come.
                Err(_) => {
                    tracing::warn!(job = %job.job_id, "sinch accepted a batch with a reply that is not its json");
                    Ok(BatchResult::Accepted(String::new()))
                }
            };
        }
        let reason = format!(
            "sinch {}: {}",
            status.as_u16(),
            error_text(&body, recipients)
        );
        if is_transient(status) {
            return Err(Transient {
                retry_after: wait,
                ..Transient::new(reason)
            });
        }
        Ok(BatchResult::Refused(reason))
        })
        .await
    }
}

/// Sinch's error body is `{"code": ..., "text": ...}`; anything else is shown as
/// it came.
fn error_text(body: &str, recipients: &[Recipient]) -> String {
    #[derive(Deserialize)]
    struct Error {
        code: String,
        text: String,
    }
    match serde_json::from_str::<Error>(body) {
        Ok(e) => reason_text(&format!("{} {}", e.code, e.text), recipients),
        Err(_) => reason_text(body, recipients),
    }
}

impl SmsProvider for Sinch {
    fn name(&self) -> &'static str {
        "sinch"
    }

    fn send<'a>(
        &'a self,
        job: &'a DispatchJob,
        message: &'a SmsMessage,
        recipients: &'a [Recipient],
    ) -> BoxFuture<'a, Vec<Attempt>> {
        let size = self.settings.batch_size.clamp(1, MAX_BATCH);
        futures::stream::iter(recipients.chunks(size))
            .map(move |chunk| async move {
                let result = self
                    .pacer
                    .retrying(|| self.send_batch(job, message, chunk))
                    .await;
                chunk
                    .iter()
                    .map(|r| match &result {
                        Ok(BatchResult::Accepted(id)) => Attempt::Settled(RecipientOutcome {
                            recipient: r.reference.clone(),
                            state: DeliveryState::Sent,
                            provider_ref: (!id.is_empty()).then(|| id.clone()),
                            reason: None,
                            possible_duplicate: false,
                        }),
                        Ok(BatchResult::Refused(reason)) => {
                            Attempt::Settled(krisbud_kit::channel::failed(&r.reference, reason))
                        }
                        Err(t) => Attempt::Transient(t.reason.clone()),
                    })
                    .collect::<Vec<_>>()
            })
            .buffered(self.pacer.concurrency())
            .flat_map(futures::stream::iter)
            .collect()
            .boxed()
    }
}
