//! A simulator of Twilio's Messages API
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`) on a real HTTP
//! listener, and of its signed status callbacks.
//!
//! It checks what Twilio checks (the account in the path, HTTP Basic auth with
//! AccountSid:AuthToken, form fields `To` as E.164, `From`, `Body`), answers 201
//! with the message resource (`sid` `SM…`, status `queued`), Twilio's error JSON
//! otherwise (e.g. 21211 for a bad `To`, 20429 with Retry-After when told to), and
//! posts status callbacks to each message's `StatusCallback`, signed with
//! `X-Twilio-Signature` like Twilio.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};

use crate::faults::{Faults, Request, unique_id};

/// Callbacks posted at once by `report_all`, as a provider's many workers would.
const CALLBACKS_IN_FLIGHT: usize = 16;

/// One message the simulator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioMessage {
    /// `SM` and 32 hex digits.
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub status_callback: Option<String>,
}

#[derive(Default)]
struct Inner {
    messages: Vec<TwilioMessage>,
    faults: Faults,
}

#[derive(Clone)]
struct Shared {
    account_sid: String,
    auth_token: String,
    inner: Arc<Mutex<Inner>>,
}

/// A running Twilio simulator; the server stops when this is dropped.
pub struct TwilioSimulator {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl TwilioSimulator {
    /// Starts the simulator on `127.0.0.1` and a free port for one account.
    pub async fn start(account_sid: &str, auth_token: &str) -> TwilioSimulator {
        let shared = Shared {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(create_message),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port for the twilio simulator");
        let addr = listener.local_addr().expect("a bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TwilioSimulator { addr, shared, task }
    }

    /// The base URL to configure, e.g. `http://127.0.0.1:4711`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("simulator lock")
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<TwilioMessage> {
        self.inner().messages.clone()
    }

    /// Every request that arrived, with when and how it was answered.
    pub fn requests(&self) -> Vec<Request> {
        self.inner().faults.log.clone()
    }

    /// Answers the next `n` requests with `status` before looking at them.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inner().faults.fail_next(n, status);
    }

    /// Answers every request with `status` for `duration` from now.
    pub fn fail_for(&self, duration: Duration, status: u16) {
        self.inner().faults.fail_for(duration, status);
    }

    /// Sends `Retry-After` with every injected failure.
    pub fn set_retry_after(&self, wait: Option<Duration>) {
        self.inner().faults.retry_after = wait;
    }

    /// Requests that arrived and are not answered yet.
    pub fn in_flight(&self) -> usize {
        self.inner().faults.in_flight()
    }

    /// Makes every request arriving from now on take `latency` before it is
    /// answered.
    pub fn set_latency(&self, latency: Duration) {
        self.inner().faults.latency = latency;
    }

    /// Posts a status callback with `status` (e.g. `delivered`, `undelivered`) and
    /// an optional `ErrorCode` for every message that gave a `StatusCallback`,
    /// signed with the auth token; returns each callback's HTTP status.
    pub async fn report_all(&self, status: &str, error_code: Option<&str>) -> Vec<u16> {
        use futures::StreamExt as _;
        let client = reqwest::Client::new();
        let messages = self.messages();
        let token = self.shared.auth_token.clone();
        futures::stream::iter(messages.iter().filter(|m| m.status_callback.is_some()))
            .map(|message| {
                let url = message.status_callback.as_deref().unwrap_or_default();
                self.callback(&client, url, message, status, error_code, &token)
            })
            .buffered(CALLBACKS_IN_FLIGHT)
            .collect()
            .await
    }

    /// Posts one status callback for `message` to `url`, signed with `token`
    /// (the auth token, or another to test refusal); returns the HTTP status.
    pub async fn report_to(
        &self,
        url: &str,
        message: &TwilioMessage,
        status: &str,
        token: &str,
    ) -> u16 {
        self.callback(&reqwest::Client::new(), url, message, status, None, token)
            .await
    }

    async fn callback(
        &self,
        client: &reqwest::Client,
        url: &str,
        message: &TwilioMessage,
        status: &str,
        error_code: Option<&str>,
        token: &str,
    ) -> u16 {
        let mut form: Vec<(String, String)> = [
            ("AccountSid", self.shared.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("From", message.from.as_str()),
            ("MessageSid", message.sid.as_str()),
            ("MessageStatus", status),
            ("SmsSid", message.sid.as_str()),
            ("SmsStatus", status),
            ("To", message.to.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        if let Some(code) = error_code {
            form.push(("ErrorCode".into(), code.into()));
        }
        let signature = signature(token, url, &form);
        client
            .post(url)
            .header("X-Twilio-Signature", signature)
            .form(&form)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }
}

/// Twilio's request signature: base64 of HMAC-SHA1 (key: the auth token) of the
/// URL followed by each form field's name and value, sorted by name.
pub fn signature(auth_token: &str, url: &str, form: &[(String, String)]) -> String {
    let mut fields: Vec<&(String, String)> = form.iter().collect();
    fields.sort();
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("hmac takes any key");
    mac.update(url.as_bytes());
    for (name, value) in fields {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Drop for TwilioSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

fn authorized(shared: &Shared, account: &str, headers: &HeaderMap) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    account == shared.account_sid
        && decoded == format!("{}:{}", shared.account_sid, shared.auth_token).as_bytes()
}

async fn create_message(
    State(shared): State<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = shared.inner.lock().expect("simulator lock").faults.arrive();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = shared.inner.lock().expect("simulator lock");
    if let Some(failure) = inner
        .faults
        .inject(r#"{"code":20429,"message":"Too Many Requests","status":429}"#)
    {
        return failure;
    }
    let answer = |inner: &mut Inner, response: Response| {
        inner.faults.log(response.status());
        response
    };
    if !authorized(&shared, &account, &headers) {
        return answer(
            &mut inner,
            error(StatusCode::UNAUTHORIZED, 20003, "Authenticate"),
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return answer(
            &mut inner,
            error(StatusCode::BAD_REQUEST, 21602, "Message body is required."),
        );
    };
    let field = |name: &str| form.get(name).filter(|v| !v.is_empty()).cloned();
    let Some(to) = field("To") else {
        return answer(
            &mut inner,
            error(
                StatusCode::BAD_REQUEST,
                21604,
                "A 'To' phone number is required.",
            ),
        );
    };
    if !crate::elks::is_e164(&to) {
        return answer(
            &mut inner,
            error(
                StatusCode::BAD_REQUEST,
                21211,
                "The 'To' number is not a valid phone number.",
            ),
        );
    }
    let Some(from) = field("From").or_else(|| field("MessagingServiceSid")) else {
        return answer(
            &mut inner,
            error(
                StatusCode::BAD_REQUEST,
                21603,
                "A 'From' phone number is required.",
            ),
        );
    };
    let Some(text) = field("Body") else {
        return answer(
            &mut inner,
            error(StatusCode::BAD_REQUEST, 21602, "Message body is required."),
        );
    };
    let message = TwilioMessage {
        sid: unique_id("SM"),
        to,
        from,
        body: text,
        status_callback: field("StatusCallback"),
    };
    let reply = serde_json::json!({
        "sid": message.sid,
        "account_sid": shared.account_sid,
        "to": message.to,
        "from": message.from,
        "body": message.body,
        "status": "queued",
        "num_segments": crate::elks::parts(&message.body).to_string(),
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "date_created": chrono::Utc::now().to_rfc2822(),
        "uri": format!("/2010-04-01/Accounts/{}/Messages/{}.json", shared.account_sid, message.sid),
    });
    inner.messages.push(message);
    answer(
        &mut inner,
        (StatusCode::CREATED, axum::Json(reply)).into_response(),
    )
}
