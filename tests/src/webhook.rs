//! A webhook receiver on a real HTTP listener that checks krisbud's signature
//! (`X-Krisbud-Signature: sha256=<hex HMAC-SHA256(secret, body)>`), as an intranet
//! would, records what arrived and can be told to fail the next requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Krisbud-Signature";

/// One request the receiver accepted or refused for its signature.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedHook {
    /// The body as JSON (`Null` when it was not JSON).
    pub body: serde_json::Value,
    /// The body's bytes exactly as they arrived.
    pub raw: Vec<u8>,
    /// Whether the signature matched the body and the secret.
    pub signature_valid: bool,
    /// The request's headers, names in lower case.
    pub headers: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    received: Vec<ReceivedHook>,
    failures: Option<(usize, StatusCode)>,
    requests: usize,
}

#[derive(Clone)]
struct Shared {
    secret: Vec<u8>,
    inner: Arc<Mutex<Inner>>,
}

/// A running webhook receiver; the server stops when this is dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts the receiver on `127.0.0.1` and a free port, checking signatures made
    /// with `secret`.
    pub async fn start(secret: &str) -> WebhookReceiver {
        let shared = Shared {
            secret: secret.as_bytes().to_vec(),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port for the webhook receiver");
        let addr = listener.local_addr().expect("a bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, shared, task }
    }

    /// The URL to post to, `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request that got past the injected failures, in arrival order,
    /// including those refused for a bad signature.
    pub fn received(&self) -> Vec<ReceivedHook> {
        self.shared
            .inner
            .lock()
            .expect("receiver lock")
            .received
            .clone()
    }

    /// How many requests arrived in all.
    pub fn requests(&self) -> usize {
        self.shared.inner.lock().expect("receiver lock").requests
    }

    /// Answers the next `n` requests with `status` without looking at them.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.shared.inner.lock().expect("receiver lock").failures = Some((n, status));
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The signature header value krisbud sends for `body`: `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(signature) = header
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    // `verify_slice` compares in constant time, as a real receiver should.
    mac.verify_slice(&signature).is_ok()
}

async fn receive(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut inner = shared.inner.lock().expect("receiver lock");
    inner.requests += 1;
    if let Some((left, status)) = inner.failures
        && left > 0
    {
        inner.failures = (left > 1).then_some((left - 1, status));
        return status.into_response();
    }
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let signature_valid = verify(&shared.secret, &body, signature);
    inner.received.push(ReceivedHook {
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        raw: body.to_vec(),
        signature_valid,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    if signature_valid {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "bad signature").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify() {
        let sig = sign(b"s3cret", b"{}");
        assert!(verify(b"s3cret", b"{}", Some(&sig)));
        assert!(!verify(b"other", b"{}", Some(&sig)));
        assert!(!verify(b"s3cret", b"{ }", Some(&sig)));
        assert!(!verify(b"s3cret", b"{}", None));
    }
}
