//! A simulator of the Sinch SMS REST API (`POST /xms/v1/{service_plan_id}/batches`)
//! on a real HTTP listener, and of its per-recipient delivery-report callbacks.
//!
//! It checks what Sinch checks (the service plan, `Authorization: Bearer`, a JSON
//! batch with `from`, 1 to 1,000 `to` numbers and a `body`, a known
//! `delivery_report` kind), answers 201 with the batch, records every recipient,
//! and can fail requests (see [`SinchSimulator::fail_next`]) and post
//! `recipient_delivery_report_sms` callbacks to the batch's `callback_url`.
//!
//! For benchmarks it counts accepted recipients without a lock
//! ([`SinchSimulator::submitted`]), can stop keeping the batches
//! ([`SinchSimulator::set_recording`]) so a million recipients cost no memory, and
//! tells when the first batch holding a given text arrives
//! ([`SinchSimulator::notify_first`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::faults::{Faults, Request, unique_id};

/// Callbacks posted at once by `report_all`, as a provider's many workers would.
const CALLBACKS_IN_FLIGHT: usize = 16;

/// The most recipients in one batch.
pub const MAX_RECIPIENTS: usize = 1_000;

/// One batch the simulator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinchBatch {
    /// The batch id the simulator answered with.
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub body: String,
    pub delivery_report: String,
    pub callback_url: Option<String>,
    pub client_reference: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BatchRequest {
    from: Option<String>,
    to: Vec<String>,
    body: String,
    #[serde(default)]
    delivery_report: Option<String>,
    #[serde(default)]
    callback_url: Option<String>,
    #[serde(default)]
    client_reference: Option<String>,
}

#[derive(Default)]
struct Inner {
    batches: Vec<SinchBatch>,
    faults: Faults,
    /// Who waits for the first accepted batch whose body holds a text.
    watchers: Vec<(String, oneshot::Sender<Instant>)>,
}

#[derive(Clone)]
struct Shared {
    plan: String,
    token: String,
    inner: Arc<Mutex<Inner>>,
    /// Recipients of every accepted batch, repeats included.
    submitted: Arc<AtomicU64>,
    /// Whether accepted batches are kept for [`SinchSimulator::batches`].
    recording: Arc<AtomicBool>,
}

/// A running Sinch simulator; the server stops when this is dropped.
pub struct SinchSimulator {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl SinchSimulator {
    /// Starts the simulator on `127.0.0.1` and a free port for one service plan
    /// and API token.
    pub async fn start(service_plan_id: &str, api_token: &str) -> SinchSimulator {
        let shared = Shared {
            plan: service_plan_id.to_owned(),
            token: api_token.to_owned(),
            inner: Arc::default(),
            submitted: Arc::default(),
            recording: Arc::new(AtomicBool::new(true)),
        };
        let app = Router::new()
            .route("/xms/v1/{plan}/batches", post(send_batch))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port for the sinch simulator");
        let addr = listener.local_addr().expect("a bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SinchSimulator { addr, shared, task }
    }

    /// The base URL to configure, e.g. `http://127.0.0.1:4711`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("simulator lock")
    }

    /// Every batch accepted so far, in arrival order.
    pub fn batches(&self) -> Vec<SinchBatch> {
        self.inner().batches.clone()
    }

    /// How many recipients the accepted batches held, repeats included; counted
    /// whether or not batches are recorded.
    pub fn submitted(&self) -> u64 {
        self.shared.submitted.load(Ordering::Relaxed)
    }

    /// Keeps (the default) or stops keeping the accepted batches; the counts go on.
    /// A benchmark turns recording off so a million recipients cost no memory.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Resolves with the arrival time of the first batch accepted from now on whose
    /// body contains `needle`.
    pub fn notify_first(&self, needle: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.inner().watchers.push((needle.to_owned(), tx));
        rx
    }

    /// Every recipient number of every accepted batch, repeats included.
    pub fn recipients(&self) -> Vec<String> {
        self.inner()
            .batches
            .iter()
            .flat_map(|b| b.to.iter().cloned())
            .collect()
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

    /// Posts a per-recipient delivery report with `status` (e.g. `Delivered`,
    /// `Failed`) and `code` for every recipient of every batch that asked for
    /// callbacks, as Sinch would; returns the HTTP status of each callback.
    pub async fn report_all(&self, status: &str, code: u32) -> Vec<u16> {
        use futures::StreamExt as _;
        let batches = self.batches();
        let client = reqwest::Client::new();
        let calls: Vec<(&str, &SinchBatch, &String)> = batches
            .iter()
            .filter_map(|b| b.callback_url.as_deref().map(|url| (url, b)))
            .flat_map(|(url, b)| b.to.iter().map(move |n| (url, b, n)))
            .collect();
        futures::stream::iter(calls)
            .map(|(url, batch, number)| report(&client, url, batch, number, status, code))
            .buffered(CALLBACKS_IN_FLIGHT)
            .collect()
            .await
    }

    /// Posts one recipient's delivery report to `url` (the batch's callback URL,
    /// or another to test refusal); returns the HTTP status.
    pub async fn report_to(
        &self,
        url: &str,
        batch: &SinchBatch,
        number: &str,
        status: &str,
        code: u32,
    ) -> u16 {
        report(&reqwest::Client::new(), url, batch, number, status, code).await
    }
}

async fn report(
    client: &reqwest::Client,
    url: &str,
    batch: &SinchBatch,
    number: &str,
    status: &str,
    code: u32,
) -> u16 {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut body = serde_json::json!({
        "type": "recipient_delivery_report_sms",
        "batch_id": batch.id,
        // Sinch writes the MSISDN without its `+` in reports.
        "recipient": number.trim_start_matches('+'),
        "code": code,
        "status": status,
        "at": now,
        "operator_status_at": now,
    });
    if let Some(reference) = &batch.client_reference {
        body["client_reference"] = serde_json::Value::String(reference.clone());
    }
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

impl Drop for SinchSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, code: &str, text: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "code": code, "text": text })),
    )
        .into_response()
}

async fn send_batch(
    State(shared): State<Shared>,
    Path(plan): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let latency = shared.inner.lock().expect("simulator lock").faults.arrive();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = shared.inner.lock().expect("simulator lock");
    if let Some(failure) = inner
        .faults
        .inject(r#"{"code":"service_unavailable","text":"Service temporarily unavailable"}"#)
    {
        return failure;
    }
    let answer = |inner: &mut Inner, response: Response| {
        inner.faults.log(response.status());
        response
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if plan != shared.plan || bearer != Some(shared.token.as_str()) {
        let refused = error(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized");
        return answer(&mut inner, refused);
    }
    let request: BatchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let text = format!("The JSON request body is invalid: {e}");
            let refused = error(StatusCode::BAD_REQUEST, "syntax_invalid_json", &text);
            return answer(&mut inner, refused);
        }
    };
    let from = request.from.unwrap_or_default();
    let problem = if request.to.is_empty() || request.to.len() > MAX_RECIPIENTS {
        Some("to must hold 1 to 1000 recipients")
    } else if request.to.iter().any(|n| !is_msisdn(n)) {
        Some("to holds an invalid msisdn")
    } else if request.body.is_empty() {
        Some("body must not be empty")
    } else if from.is_empty() {
        Some("from is required")
    } else if request.delivery_report.as_deref().is_some_and(|k| {
        ![
            "none",
            "summary",
            "full",
            "per_recipient",
            "per_recipient_final",
        ]
        .contains(&k)
    }) {
        Some("delivery_report is not a known kind")
    } else {
        None
    };
    if let Some(text) = problem {
        let refused = error(StatusCode::BAD_REQUEST, "syntax_constraint_violation", text);
        return answer(&mut inner, refused);
    }
    let batch = SinchBatch {
        id: unique_id("01"),
        from,
        to: request.to,
        body: request.body,
        delivery_report: request.delivery_report.unwrap_or_else(|| "none".into()),
        callback_url: request.callback_url,
        client_reference: request.client_reference,
    };
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut reply = serde_json::json!({
        "id": batch.id,
        "to": batch.to,
        "from": batch.from,
        "canceled": false,
        "body": batch.body,
        "type": "mt_text",
        "created_at": now,
        "modified_at": now,
        "delivery_report": batch.delivery_report,
        "flash_message": false,
    });
    if let Some(url) = &batch.callback_url {
        reply["callback_url"] = serde_json::Value::String(url.clone());
    }
    if let Some(reference) = &batch.client_reference {
        reply["client_reference"] = serde_json::Value::String(reference.clone());
    }
    shared
        .submitted
        .fetch_add(batch.to.len() as u64, Ordering::Relaxed);
    if !inner.watchers.is_empty() {
        let (matched, waiting) = std::mem::take(&mut inner.watchers)
            .into_iter()
            .partition::<Vec<_>, _>(|(needle, _)| batch.body.contains(needle.as_str()));
        inner.watchers = waiting;
        for (_, tx) in matched {
            let _ = tx.send(arrived);
        }
    }
    if shared.recording.load(Ordering::Relaxed) {
        inner.batches.push(batch);
    }
    answer(
        &mut inner,
        (StatusCode::CREATED, axum::Json(reply)).into_response(),
    )
}

/// A number as Sinch takes it: E.164 with or without its `+`.
fn is_msisdn(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}
