//! Where an intranet article goes: a webhook that receives it as signed JSON, or
//! the JSON-lines outbox `<data_dir>/outbox/intranet.jsonl`.
//!
//! The webhook body is signed with HMAC-SHA256 over its exact bytes
//! (`X-Krisbud-Signature: sha256=<hex>`) and carries the job id in
//! `X-Krisbud-Delivery`, so the intranet can check the sender and drop a repeat.
//! 2xx is delivered; another 3xx or 4xx is final; 408, 429, 5xx and network
//! errors are transient and the job is tried again.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use krisbud_kit::Secret;
use krisbud_kit::channel::{OutboxFile, error_chain};
use krisbud_proto::Channel;
use krisbud_proto::publish::IntranetArticle;
use reqwest::StatusCode;
use sha2::Sha256;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Krisbud-Signature";
/// The header carrying the dispatch job's id, the same on every retry.
pub const DELIVERY_HEADER: &str = "X-Krisbud-Delivery";

/// How much of an error body goes into a failure reason.
const REASON_LIMIT: usize = 200;

/// What one attempt to publish came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The article is where it is read.
    Delivered,
    /// It will never be accepted as it is; says why.
    Failed(String),
    /// Not now; the job is tried again later. Says why.
    Transient(String),
}

/// The signature header value for `body`: `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    #[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Where articles go.
pub enum Publisher {
    /// A signed webhook.
    Webhook {
        /// Kept for its connection pool.
        client: reqwest::Client,
        /// Where articles are posted.
        url: String,
        /// The signing key.
        secret: Secret,
    },
    /// A JSON-lines file.
    Outbox(OutboxFile),
}

impl Publisher {
    /// A webhook publisher. Redirects are not followed: a POST must reach the
    /// configured address or fail visibly.
    pub fn webhook(url: &str, secret: Secret, timeout: Duration) -> anyhow::Result<Publisher> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "krisbud-channel-intranet/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Publisher::Webhook {
            client,
            url: url.to_owned(),
            secret,
        })
    }

    /// An outbox at `<data_dir>/outbox/intranet.jsonl`, creating the directory.
    pub fn outbox(data_dir: &Path) -> anyhow::Result<Publisher> {
        Ok(Publisher::Outbox(OutboxFile::new(
            data_dir,
            Channel::Intranet,
        )?))
    }

    /// The name reported as the job's provider.
    pub fn name(&self) -> &'static str {
        match self {
            Publisher::Webhook { .. } => "webhook",
            Publisher::Outbox(_) => "outbox",
        }
    }

    /// Publishes one article of the job `job_id`.
    pub async fn publish(&self, job_id: &str, article: &IntranetArticle) -> Published {
        #[allow(clippy::expect_used, reason = "an article is strings and times only")]
        let body = serde_json::to_vec(article).expect("an article serializes");
        match self {
            Publisher::Webhook {
                client,
                url,
                secret,
            } => {
                let signature = sign(secret.expose().as_bytes(), &body);
                let response = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .header(DELIVERY_HEADER, job_id)
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        classify(status, &text)
                    }
                    Err(e) => {
                        Published::Transient(format!("webhook unreachable: {}", error_chain(&e)))
                    }
                }
            }
            Publisher::Outbox(outbox) => {
                let mut line = body;
                line.push(b'\n');
                match outbox.append(line).await {
                    Ok(()) => Published::Delivered,
                    Err(e) => {
                        Published::Transient(format!("cannot write the intranet outbox: {e}"))
                    }
                }
            }
        }
    }
}

/// What the webhook's answer means.
fn classify(status: StatusCode, body: &str) -> Published {
    if status.is_success() {
        return Published::Delivered;
    }
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut text: String = one_line.chars().take(REASON_LIMIT).collect();
    if one_line.chars().count() > REASON_LIMIT {
        text.push('…');
    }
    if text.is_empty() {
        text = status.canonical_reason().unwrap_or("no text").to_owned();
    }
    let reason = format!("webhook {}: {text}", status.as_u16());
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Published::Transient(reason)
    } else {
        Published::Failed(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(classify(StatusCode::NO_CONTENT, ""), Published::Delivered);
        assert_eq!(
            classify(StatusCode::UNPROCESSABLE_ENTITY, "title  missing\n"),
            Published::Failed("webhook 422: title missing".into())
        );
        assert_eq!(
            classify(StatusCode::MOVED_PERMANENTLY, ""),
            Published::Failed("webhook 301: Moved Permanently".into())
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, ""),
            Published::Transient(_)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, ""),
            Published::Transient(_)
        ));
    }
}
