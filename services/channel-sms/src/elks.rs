//! The 46elks provider: one form `POST {base}/a1/sms` per recipient with HTTP Basic
//! auth, paced by the provider's [`Pacer`], with `whendelivered` pointing at the
//! channel's callback listener.
//!
//! A 2xx means 46elks accepted the message (`Sent`; its delivery report comes
//! later), another 4xx is final (`Failed`, with 46elks's status and text), and 429,
//! 5xx or a network error is transient: tried again within the job's delivery, then
//! the job is retried. 46elks has no idempotency key.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use krisbud_kit::Secret;
use krisbud_kit::channel::error_chain;
use krisbud_kit::privacy::mask;
use krisbud_proto::event::{DeliveryState, RecipientOutcome};
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::callbacks::CallbackUrls;
use crate::provider::{Attempt, Pacer, SmsProvider, Transient, is_transient, retry_after};

/// How much of an error body goes into a failure reason.
const REASON_BODY_LIMIT: usize = 200;

/// How to reach 46elks.
#[derive(Debug, Clone)]
pub struct ElksSettings {
    /// `https://api.46elks.com` (requests go to `<base>/a1/sms`).
    pub base_url: String,
    /// The API username.
    pub username: String,
    /// The API password.
    pub password: Secret,
    /// The sender: alphanumeric (at most 11 characters) or E.164.
    pub from: String,
    /// Sent as `whendelivered` when the channel serves no callbacks itself.
    pub delivery_callback_url: Option<String>,
    /// How long one request may take.
    pub timeout: Duration,
}

/// The 46elks SMS API.
pub struct Elks46 {
    client: reqwest::Client,
    url: String,
    settings: ElksSettings,
    pacer: Arc<Pacer>,
    callbacks: Option<CallbackUrls>,
}

/// The part of 46elks's reply the channel uses.
#[derive(Debug, Deserialize)]
struct SmsReply {
    id: Option<String>,
    status: Option<String>,
}

impl Elks46 {
    /// A client for the configured account.
    pub fn new(
        settings: ElksSettings,
        pacer: Arc<Pacer>,
        callbacks: Option<CallbackUrls>,
    ) -> anyhow::Result<Elks46> {
        let client = crate::http_client(settings.timeout)?;
        let url = format!("{}/a1/sms", settings.base_url.trim_end_matches('/'));
        Ok(Elks46 {
            client,
            url,
            settings,
            pacer,
            callbacks,
        })
    }

    async fn send_one(
        &self,
        job: &DispatchJob,
        message: &SmsMessage,
        recipient: &Recipient,
    ) -> Result<RecipientOutcome, Transient> {
        let callback = match &self.callbacks {
            Some(c) => Some(c.elks(job, recipient)),
            None => self.settings.delivery_callback_url.clone(),
        };
        let mut form = vec![
            ("from", self.settings.from.as_str()),
            ("to", recipient.address.as_str()),
            ("message", message.text.as_str()),
        ];
        if let Some(url) = &callback {
            form.push(("whendelivered", url.as_str()));
        }
        let permit = self.pacer.permit(1).await?;
        permit
            .run(&self.pacer, async {
                let response = self
                    .client
                    .post(&self.url)
                    .basic_auth(
                        &self.settings.username,
                        Some(self.settings.password.expose()),
                    )
                    .form(&form)
                    .send()
                    .await;
                let response = match response {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(Transient::new(format!(
                            "46elks unreachable: {}",
                            error_chain(&e)
                        )));
                    }
                };
                let status = response.status();
                let wait = retry_after(response.headers());
                // Reading the body can fail too; for a 2xx that must not turn into a retry
                // that would send the message twice.
                let body = response.text().await.unwrap_or_default();
                match classify(status, &body, recipient) {
                    Attempt::Settled(outcome) => Ok(outcome),
                    Attempt::Transient(reason) => Err(Transient {
                        retry_after: wait,
                        ..Transient::new(reason)
                    }),
                }
            })
            .await
    }
}

/// What an answer of 46elks means for one recipient.
fn classify(status: StatusCode, body: &str, recipient: &Recipient) -> Attempt {
    if status.is_success() {
        let reply: Option<SmsReply> = serde_json::from_str(body).ok();
        if reply.is_none() {
            tracing::warn!(
                recipient = %recipient.reference,
                "46elks accepted the message with a reply that is not its json"
            );
        }
        let (provider_ref, word) = reply.map(|r| (r.id, r.status)).unwrap_or_default();
        return Attempt::Settled(RecipientOutcome {
            recipient: recipient.reference.clone(),
            state: DeliveryState::Sent,
            provider_ref,
            reason: word,
            possible_duplicate: false,
        });
    }
    let text = reason_text(body, recipient);
    let reason = format!("46elks {}: {text}", status.as_u16());
    if is_transient(status) {
        return Attempt::Transient(reason);
    }
    Attempt::Settled(RecipientOutcome {
        recipient: recipient.reference.clone(),
        state: DeliveryState::Failed,
        provider_ref: None,
        reason: Some(reason),
        possible_duplicate: false,
    })
}

/// The provider's error text made fit for an event: short, one line, and without
/// the recipient's number should the provider echo it.
fn reason_text(body: &str, recipient: &Recipient) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let masked = if recipient.address.is_empty() {
        one_line
    } else {
        one_line.replace(&recipient.address, &mask(&recipient.address))
    };
    let mut text: String = masked.chars().take(REASON_BODY_LIMIT).collect();
    if masked.chars().count() > REASON_BODY_LIMIT {
        text.push('…');
    }
    if text.is_empty() {
        "(no text)".into()
    } else {
        text
    }
}

impl SmsProvider for Elks46 {
    fn name(&self) -> &'static str {
        "46elks"
    }

    fn send<'a>(
        &'a self,
        job: &'a DispatchJob,
        message: &'a SmsMessage,
        recipients: &'a [Recipient],
    ) -> BoxFuture<'a, Vec<Attempt>> {
        self.pacer.send_each(recipients, move |recipient| {
            self.send_one(job, message, recipient)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient() -> Recipient {
        Recipient {
            reference: "rcp:abc".into(),
            address: "+46701234567".into(),
        }
    }

    #[test]
    fn answers_map_to_outcomes() {
        let ok = classify(
            StatusCode::OK,
            r#"{"id":"s1","status":"created","parts":1}"#,
            &recipient(),
        );
        let Attempt::Settled(outcome) = ok else {
            panic!("a 2xx settles")
        };
        assert_eq!(outcome.state, DeliveryState::Sent);
        assert_eq!(outcome.provider_ref.as_deref(), Some("s1"));

        let bad = classify(
            StatusCode::BAD_REQUEST,
            "Invalid to +46701234567",
            &recipient(),
        );
        let Attempt::Settled(outcome) = bad else {
            panic!("a 4xx settles")
        };
        assert_eq!(outcome.state, DeliveryState::Failed);
        let reason = outcome.reason.unwrap();
        assert!(reason.starts_with("46elks 400: Invalid to"), "{reason}");
        assert!(!reason.contains("46701234567"), "{reason}");

        for status in [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            assert!(matches!(
                classify(status, "", &recipient()),
                Attempt::Transient(_)
            ));
        }
    }
}
