//! Failure injection shared by the provider simulators: fail the next requests or
//! every request for a while with a status, optionally with Retry-After, answer
//! after a latency, and log when each request arrived and how it was answered.

use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// When a request arrived at a simulator and the status it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

/// What a simulator is told to do wrong.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    next: Option<(usize, StatusCode)>,
    until: Option<(Instant, StatusCode)>,
    /// Sent as `Retry-After` (whole seconds, rounded up) with injected failures.
    pub(crate) retry_after: Option<Duration>,
    /// How long each request takes before it is answered.
    pub(crate) latency: Duration,
    /// Requests that arrived, answered or not.
    pub(crate) arrived: usize,
    pub(crate) log: Vec<Request>,
}

impl Faults {
    /// Counts a request's arrival and says how long it is to take.
    pub(crate) fn arrive(&mut self) -> Duration {
        self.arrived += 1;
        self.latency
    }

    /// Requests that arrived and are not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.arrived.saturating_sub(self.log.len())
    }

    pub(crate) fn fail_next(&mut self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.next = (n > 0).then_some((n, status));
    }

    pub(crate) fn fail_for(&mut self, duration: Duration, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.until = Some((Instant::now() + duration, status));
    }

    /// The injected failure for a request arriving now, if any; logs it.
    pub(crate) fn inject(&mut self, body: &str) -> Option<Response> {
        let status = if let Some((left, status)) = self.next {
            self.next = (left > 1).then_some((left - 1, status));
            Some(status)
        } else {
            match self.until {
                Some((until, status)) if Instant::now() < until => Some(status),
                _ => None,
            }
        }?;
        self.log(status);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_owned(),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("a header value"),
            );
        }
        Some(response)
    }

    pub(crate) fn log(&mut self, status: StatusCode) {
        self.log.push(Request {
            at: Instant::now(),
            status: status.as_u16(),
        });
    }
}

/// An id of `prefix` and 32 hex digits, unique within the process.
pub(crate) fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{prefix}{n}:{nanos}"));
    format!("{prefix}{}", &hex::encode(digest)[..32])
}
