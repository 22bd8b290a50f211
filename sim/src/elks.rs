//! A simulator of the 46elks SMS API (`POST /a1/sms`) on a real HTTP listener, so
//! the SMS channel is tested against the provider's wire format, not a mock.
//!
//! It checks what 46elks checks (HTTP Basic auth, the `from`, `to` and `message`
//! keys, E.164 numbers, alphanumeric senders of at most 11 characters), answers with
//! 46elks's JSON reply, records every accepted message and can be told to fail the
//! next requests, e.g. with 503, to exercise retries.
//!
//! For benchmarks it counts accepted messages without a lock
//! ([`ElksSimulator::submitted`]), can stop keeping them
//! ([`ElksSimulator::set_recording`]) so a million messages cost no memory, and
//! tells when the first message holding a given text arrives
//! ([`ElksSimulator::notify_first`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// One SMS the simulator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElksSms {
    /// The id the simulator answered with (`s` and 32 hex digits).
    pub id: String,
    /// The sender as given (`from`).
    pub from: String,
    /// The recipient's number (`to`).
    pub to: String,
    /// The text (`message`).
    pub message: String,
    /// The delivery report callback URL, if one was given.
    pub whendelivered: Option<String>,
    /// Whether `dryrun=yes` was set (nothing would have been sent).
    pub dryrun: bool,
    /// Whether `flashsms=yes` was set.
    pub flashsms: bool,
    /// Message segments, as 46elks would bill them.
    pub parts: u32,
}

#[derive(Default)]
struct Inner {
    received: Vec<ElksSms>,
    /// Requests still to be failed, and with which status.
    failures: Option<(usize, StatusCode)>,
    /// How long each accepted request takes to answer, as a real provider's
    /// round trip would.
    latency: std::time::Duration,
    requests: usize,
    /// Who waits for the first accepted message holding a text.
    watchers: Vec<(String, oneshot::Sender<Instant>)>,
}

#[derive(Clone)]
struct Shared {
    username: String,
    password: String,
    inner: Arc<Mutex<Inner>>,
    ids: Arc<AtomicU64>,
    /// Messages accepted.
    submitted: Arc<AtomicU64>,
    /// Whether accepted messages are kept for [`ElksSimulator::received`].
    recording: Arc<AtomicBool>,
}

/// A running 46elks simulator; the server stops when this is dropped.
pub struct ElksSimulator {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl ElksSimulator {
    /// Starts the simulator on `127.0.0.1` and a free port, accepting the given API
    /// credentials.
    pub async fn start(username: &str, password: &str) -> ElksSimulator {
        let shared = Shared {
            username: username.to_owned(),
            password: password.to_owned(),
            inner: Arc::default(),
            ids: Arc::default(),
            submitted: Arc::default(),
            recording: Arc::new(AtomicBool::new(true)),
        };
        let app = Router::new()
            .route("/a1/sms", post(send_sms))
            .route("/a1/SMS", post(send_sms))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port for the 46elks simulator");
        let addr = listener.local_addr().expect("a bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ElksSimulator { addr, shared, task }
    }

    /// The base URL to configure as the API address, e.g. `http://127.0.0.1:4711`
    /// (requests go to `<base>/a1/sms`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every SMS accepted so far, in arrival order.
    pub fn received(&self) -> Vec<ElksSms> {
        self.shared
            .inner
            .lock()
            .expect("simulator lock")
            .received
            .clone()
    }

    /// How many messages were accepted; counted whether or not they are recorded.
    pub fn submitted(&self) -> u64 {
        self.shared.submitted.load(Ordering::Relaxed)
    }

    /// Keeps (the default) or stops keeping the accepted messages; the counts go
    /// on. A benchmark turns recording off so a million messages cost no memory.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Resolves with the arrival time of the first message accepted from now on
    /// whose text contains `needle`.
    pub fn notify_first(&self, needle: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .inner
            .lock()
            .expect("simulator lock")
            .watchers
            .push((needle.to_owned(), tx));
        rx
    }

    /// How many requests arrived, accepted or not.
    pub fn requests(&self) -> usize {
        self.shared.inner.lock().expect("simulator lock").requests
    }

    /// Makes every request take `latency` before it is answered, so a test can
    /// catch a delivery in the middle.
    pub fn set_delay(&self, latency: std::time::Duration) {
        self.shared.inner.lock().expect("simulator lock").latency = latency;
    }

    /// Answers the next `n` requests with `status` (e.g. 503 or 429) before looking
    /// at them, as an overloaded or failing provider would.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.shared.inner.lock().expect("simulator lock").failures = Some((n, status));
    }
}

impl Drop for ElksSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send_sms(
    State(shared): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let arrived = Instant::now();
    let latency = shared.inner.lock().expect("simulator lock").latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    {
        let mut inner = shared.inner.lock().expect("simulator lock");
        inner.requests += 1;
        if let Some((left, status)) = inner.failures
            && left > 0
        {
            inner.failures = (left > 1).then_some((left - 1, status));
            let reason = status.canonical_reason().unwrap_or("Error");
            return text(status, reason);
        }
    }
    if !authorized(&shared, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"46elks\"")],
            "API authentication failed",
        )
            .into_response();
    }
    let Ok(Form(form)) = form else {
        return text(StatusCode::BAD_REQUEST, "Invalid form data");
    };
    for key in ["from", "to", "message"] {
        if form.get(key).is_none_or(|v| v.is_empty()) {
            return text(StatusCode::BAD_REQUEST, &format!("Missing key {key}"));
        }
    }
    let (from, to, message) = (&form["from"], &form["to"], &form["message"]);
    if !is_e164(to) {
        return text(StatusCode::BAD_REQUEST, "Invalid to");
    }
    if !(is_e164(from) || is_alphanumeric_sender(from)) {
        return text(StatusCode::BAD_REQUEST, "Invalid from");
    }
    let yes = |key: &str| form.get(key).is_some_and(|v| v == "yes");
    let parts = parts(message);
    let id = format!(
        "s{}",
        &hex::encode(Sha256::digest(format!(
            "{}:{to}:{}",
            shared.ids.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        )))[..32]
    );
    let sms = ElksSms {
        id: id.clone(),
        from: from.clone(),
        to: to.clone(),
        message: message.clone(),
        whendelivered: form.get("whendelivered").cloned(),
        dryrun: yes("dryrun"),
        flashsms: yes("flashsms"),
        parts,
    };
    let mut reply = serde_json::json!({
        "status": "created",
        "direction": "outgoing",
        "from": from,
        "to": to,
        "created": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        "parts": parts,
        // In 10,000ths of the account's currency, like 46elks: 0.35 SEK a part.
        "estimated_cost": parts * 3500,
        "id": id,
    });
    // `dontlog=message` keeps the text out of 46elks's logs and out of the reply.
    if form.get("dontlog").is_none_or(|v| v != "message") {
        reply["message"] = serde_json::Value::String(message.clone());
    }
    shared.submitted.fetch_add(1, Ordering::Relaxed);
    let recording = shared.recording.load(Ordering::Relaxed);
    let mut inner = shared.inner.lock().expect("simulator lock");
    if !inner.watchers.is_empty() {
        let (matched, waiting) = std::mem::take(&mut inner.watchers)
            .into_iter()
            .partition::<Vec<_>, _>(|(needle, _)| sms.message.contains(needle.as_str()));
        inner.watchers = waiting;
        for (_, tx) in matched {
            let _ = tx.send(arrived);
        }
    }
    if recording {
        inner.received.push(sms);
    }
    drop(inner);
    (StatusCode::OK, axum::Json(reply)).into_response()
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
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
    let expected = format!("{}:{}", shared.username, shared.password);
    decoded == expected.as_bytes()
}

/// Whether `s` is an E.164 number: `+` and 7 to 15 digits, not starting with 0.
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The characters of the GSM 03.38 basic table (besides ASCII letters and digits).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà";
/// The GSM 03.38 extension table: each costs two septets.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The number of segments 46elks bills for `message`: GSM-7 fits 160 septets in
/// one part and 153 per part when split; anything else is UCS-2 with 70 UTF-16
/// units in one part and 67 per part.
pub fn parts(message: &str) -> u32 {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in message.chars() {
        if c.is_ascii_alphanumeric() || GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENSION.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (units, single, multi) = if gsm {
        (septets, 160, 153)
    } else {
        (message.encode_utf16().count(), 70, 67)
    };
    let parts = if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    u32::try_from(parts).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_follow_gsm7_and_ucs2() {
        assert_eq!(parts("Hej"), 1);
        assert_eq!(parts(&"å".repeat(160)), 1);
        assert_eq!(parts(&"a".repeat(161)), 2);
        assert_eq!(parts(&"€".repeat(80)), 1);
        assert_eq!(parts(&"€".repeat(81)), 2);
        assert_eq!(parts(&"“".repeat(70)), 1);
        assert_eq!(parts(&"“".repeat(71)), 2);
        assert_eq!(parts("🙂"), 1);
    }

    #[test]
    fn numbers_and_senders() {
        assert!(is_e164("+46701234567"));
        assert!(!is_e164("0701234567"));
        assert!(!is_e164("+46 70 123"));
        assert!(is_alphanumeric_sender("Stockholm"));
        assert!(!is_alphanumeric_sender("Stockholms stad"));
    }
}
