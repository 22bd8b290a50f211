//! The Twilio provider: one form `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`
//! per recipient with HTTP Basic auth (AccountSid:AuthToken) and a
//! `StatusCallback` at the channel's callback listener.
//!
//! A 2xx means Twilio accepted the message (`Sent`, with its `sid`; the status
//! callbacks come later), another 4xx is final (`Failed`, with Twilio's error code
//! and message), and 408, 429 (honouring Retry-After), 5xx or a network error is
//! transient. Twilio's Messages API has no idempotency key for creating a message,
//! so a crash in flight can text a recipient twice; the channel's send claims
//! count those.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use krisbud_kit::Secret;
use krisbud_kit::channel::error_chain;
use krisbud_proto::event::{DeliveryState, RecipientOutcome};
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;
use serde::Deserialize;

use crate::callbacks::CallbackUrls;
use crate::provider::{
    Attempt, Pacer, SmsProvider, Transient, is_transient, reason_text, retry_after,
};

/// How to reach Twilio.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// `https://api.twilio.com`.
    pub base_url: String,
    /// The account SID (`AC…`), also the Basic auth user.
    pub account_sid: String,
    /// The auth token: Basic auth password, and the key Twilio signs callbacks with.
    pub auth_token: Secret,
    /// The sender: E.164 or alphanumeric.
    pub from: String,
    /// How long one request may take.
    pub timeout: Duration,
}

/// The Twilio Programmable Messaging API.
pub struct Twilio {
    client: reqwest::Client,
    url: String,
    settings: TwilioSettings,
    pacer: Arc<Pacer>,
    callbacks: Option<CallbackUrls>,
}

/// The part of Twilio's reply the channel uses.
#[derive(Debug, Deserialize)]
struct MessageReply {
    sid: String,
    status: Option<String>,
}

/// Twilio's error body.
#[derive(Debug, Deserialize)]
struct ErrorReply {
    code: Option<u64>,
    message: Option<String>,
}

impl Twilio {
    /// A client for the configured account.
    pub fn new(
        settings: TwilioSettings,
        pacer: Arc<Pacer>,
        callbacks: Option<CallbackUrls>,
    ) -> anyhow::Result<Twilio> {
        let client = crate::http_client(settings.timeout)?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            settings.base_url.trim_end_matches('/'),
            settings.account_sid
        );
        Ok(Twilio {
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
        let callback = self.callbacks.as_ref().map(|c| c.twilio(job, recipient));
        let mut form = vec![
            ("To", recipient.address.as_str()),
            ("From", self.settings.from.as_str()),
            ("Body", message.text.as_str()),
        ];
        if let Some(url) = &callback {
            form.push(("StatusCallback", url.as_str()));
        }
        let permit = self.pacer.permit(1).await?;
        permit.run(&self.pacer, async {
        let response = self
            .client
            .post(&self.url)
            .basic_auth(
                &self.settings.account_sid,
                Some(self.settings.auth_token.expose()),
            )
            .form(&form)
            .send()
            .await
            .map_err(|e| Transient::new(format!("twilio unreachable: {}", error_chain(&e))))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let recipients = std::slice::from_ref(recipient);
        if status.is_success() {
            let reply: Option<MessageReply> = serde_json::from_str(&body).ok();
            if reply.is_none() {
                tracing::warn!(recipient = %recipient.reference, "twilio accepted a message with a reply that is not its json");
            }
            let (sid, word) = reply.map(|r| (Some(r.sid), r.status)).unwrap_or_default();
            return Ok(RecipientOutcome {
                recipient: recipient.reference.clone(),
                state: DeliveryState::Sent,
                provider_ref: sid,
                reason: word,
                possible_duplicate: false,
            });
        }
        let text = match serde_json::from_str::<ErrorReply>(&body) {
            Ok(ErrorReply {
                code: Some(code),
                message,
            }) => reason_text(
                &format!("{code} {}", message.unwrap_or_default()),
                recipients,
            ),
            _ => reason_text(&body, recipients),
        };
        let reason = format!("twilio {}: {text}", status.as_u16());
        if is_transient(status) {
            return Err(Transient {
                retry_after: wait,
                ..Transient::new(reason)
            });
        }
        Ok(krisbud_kit::channel::failed(&recipient.reference, &reason))
        })
        .await
    }
}

impl SmsProvider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
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
