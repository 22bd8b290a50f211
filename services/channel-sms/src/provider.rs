//! What an SMS provider is to the channel: something that takes one job's
//! recipients and says, per recipient, what became of the message; and what the
//! HTTP providers share: pacing (messages per second, requests in flight, a pause
//! that every request honours after a Retry-After) and retrying a request with
//! exponential backoff and jitter within one delivery of a job.
//!
//! Providers (46elks, Sinch, Twilio, the outbox, and failover between two of them)
//! differ only behind [`SmsProvider`]; the channel decides about reporting.

use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
pub use krisbud_kit::channel::Attempt;
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// An SMS provider.
pub trait SmsProvider: Send + Sync {
    /// The provider's name as reported in `DeliveryReported::provider`.
    fn name(&self) -> &'static str;

    /// Sends `message` of `job` to each of `recipients` and returns one attempt per
    /// recipient, in the same order.
    fn send<'a>(
        &'a self,
        job: &'a DispatchJob,
        message: &'a SmsMessage,
        recipients: &'a [Recipient],
    ) -> BoxFuture<'a, Vec<Attempt>>;
}

/// The longest Retry-After the channel honours; a provider asking for more gets
/// its request tried again when the job is next delivered.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// How one provider's requests are paced, from `[sms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Messages per second, across every job of this instance; `None` is no limit.
    pub messages_per_second: Option<NonZeroU32>,
    /// Requests in flight at once, across every job of this instance.
    pub concurrent_requests: usize,
    /// Tries of one request within one delivery of a job (1 is no retry).
    pub attempts: u32,
    /// The first delay between two tries; it doubles, with jitter.
    pub first_backoff: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            messages_per_second: None,
            concurrent_requests: 8,
            attempts: 3,
            first_backoff: Duration::from_millis(200),
        }
    }
}

/// One provider's pacing state, shared by every job of this instance.
pub struct Pacer {
    pacing: Pacing,
    limiter: Option<DefaultDirectRateLimiter>,
    burst: NonZeroU32,
    in_flight: Semaphore,
    /// No request starts before this instant: set by a Retry-After.
    paused_until: Mutex<Option<Instant>>,
    /// The provider's circuit breaker, shared by every job of this instance.
    breaker: Mutex<Breaker>,
}

/// Transient failures in a row after which a provider is taken to be down.
pub const BREAKER_THRESHOLD: u32 = 5;
/// While a provider is down, one request (a probe) goes to it this often.
pub const BREAKER_PROBE_EVERY: Duration = Duration::from_secs(1);

/// A circuit breaker: after [`BREAKER_THRESHOLD`] transient failures in a row it
/// opens, and every request fails at once without reaching the provider, except
/// one probe per [`BREAKER_PROBE_EVERY`]; the first answer closes it again. A dead
/// provider then costs a few requests a second instead of every recipient's
/// retries (with failover, the secondary takes over at once).
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    /// Open until this instant; the first request after it is the probe.
    open_until: Option<Instant>,
    probing: bool,
}

/// Why a request did not settle, when it may be tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transient {
    /// What went wrong, without personal data.
    pub reason: String,
    /// How long the provider asked us to wait (Retry-After).
    pub retry_after: Option<Duration>,
    /// Refused by the open circuit breaker, without a request.
    pub circuit_open: bool,
}

impl Transient {
    /// A transient failure without a Retry-After.
    pub fn new(reason: impl Into<String>) -> Transient {
        Transient {
            reason: reason.into(),
            retry_after: None,
            circuit_open: false,
        }
    }
}

/// A place among a provider's requests in flight; say how the request went with
/// [`Permit::answered`] or [`Permit::failed`], so the circuit breaker counts it.
pub struct Permit<'a> {
    _permit: SemaphorePermit<'a>,
    probe: bool,
}

impl Permit<'_> {
    /// Runs the request holding this place, and counts its result in the
    /// provider's circuit breaker: an answer (whatever it said about the message)
    /// shows the provider is up; a transient failure (no answer, 5xx, 429)
    /// counts against it.
    pub async fn run<T>(
        self,
        pacer: &Pacer,
        request: impl Future<Output = Result<T, Transient>>,
    ) -> Result<T, Transient> {
        let result = request.await;
        pacer.record(result.is_ok(), self.probe);
        result
    }
}

impl Pacer {
    /// A pacer for `pacing`.
    pub fn new(pacing: Pacing) -> Pacer {
        let burst = pacing
            .messages_per_second
            .unwrap_or(NonZeroU32::MIN)
            .max(NonZeroU32::MIN);
        let limiter = pacing
            .messages_per_second
            .map(|rate| RateLimiter::direct(Quota::per_second(rate)));
        Pacer {
            limiter,
            burst,
            in_flight: Semaphore::new(pacing.concurrent_requests.max(1)),
            paused_until: Mutex::new(None),
            breaker: Mutex::new(Breaker::default()),
            pacing,
        }
    }

    /// Waits until a request carrying `messages` messages may start, and holds one
    /// of the in-flight places until the permit is dropped. While the provider's
    /// circuit is open the request is refused at once (a transient failure),
    /// unless it is the probe.
    pub async fn permit(&self, messages: u32) -> Result<Permit<'_>, Transient> {
        if let Some(limiter) = &self.limiter {
            // A batch larger than one second's allowance takes its cells in
            // chunks, so it is paced rather than refused.
            let mut left = messages.max(1);
            while left > 0 {
                let chunk = left.min(self.burst.get());
                let n = NonZeroU32::new(chunk).unwrap_or(NonZeroU32::MIN);
                // `chunk` never exceeds the burst, so this cannot be refused.
                let _ = limiter.until_n_ready(n).await;
                left -= chunk;
            }
        }
        let permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Transient::new("the provider's pacer is closed"))?;
        self.wait_pause().await;
        let probe = self.admit()?;
        Ok(Permit {
            _permit: permit,
            probe,
        })
    }

    /// Whether a request may go to the provider now: `Ok(true)` for the probe of
    /// an open circuit, `Err` while it is open.
    fn admit(&self) -> Result<bool, Transient> {
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match breaker.open_until {
            None => Ok(false),
            Some(until) if Instant::now() >= until && !breaker.probing => {
                breaker.probing = true;
                Ok(true)
            }
            Some(_) => Err(Transient {
                circuit_open: true,
                ..Transient::new(format!(
                    "the provider failed {} times in a row; it gets one request a second until it answers",
                    breaker.failures
                ))
            }),
        }
    }

    /// Counts a request's answer in the breaker: any answer (even a refusal of
    /// one number) shows the provider is up; a transient failure counts against it.
    fn record(&self, answered: bool, probe: bool) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if answered {
            if breaker.open_until.is_some() {
                tracing::info!("the sms provider answers again; closing its circuit");
            }
            *breaker = Breaker::default();
            return;
        }
        breaker.failures = breaker.failures.saturating_add(1);
        if probe {
            breaker.probing = false;
            breaker.open_until = Some(Instant::now() + BREAKER_PROBE_EVERY);
        } else if breaker.failures >= BREAKER_THRESHOLD && breaker.open_until.is_none() {
            tracing::warn!(
                failures = breaker.failures,
                "the sms provider keeps failing; opening its circuit (a probe a second)"
            );
            breaker.open_until = Some(Instant::now() + BREAKER_PROBE_EVERY);
        }
    }

    /// Waits out a pause set by a Retry-After.
    async fn wait_pause(&self) {
        loop {
            let until = *self
                .paused_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// Requests in flight at once.
    pub fn concurrency(&self) -> usize {
        self.pacing.concurrent_requests.max(1)
    }

    /// Sends to each recipient with one request apiece (46elks, Twilio), paced and
    /// retried, at most [`Pacer::concurrency`] at once; attempts come back in
    /// recipient order.
    pub fn send_each<'a, F, Fut>(
        &'a self,
        recipients: &'a [Recipient],
        send_one: F,
    ) -> BoxFuture<'a, Vec<Attempt>>
    where
        F: Fn(&'a Recipient) -> Fut + Send + Sync + Copy + 'a,
        Fut: Future<Output = Result<krisbud_proto::event::RecipientOutcome, Transient>> + Send + 'a,
    {
        use futures::{FutureExt as _, StreamExt as _};
        futures::stream::iter(recipients)
            .map(move |recipient| async move {
                match self.retrying(|| send_one(recipient)).await {
                    Ok(outcome) => Attempt::Settled(outcome),
                    Err(t) => Attempt::Transient(t.reason),
                }
            })
            .buffered(self.concurrency())
            .collect()
            .boxed()
    }

    /// Holds every request of this provider back for `delay`.
    pub fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay.min(MAX_RETRY_AFTER);
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    /// Runs `request` (which takes its own [`Pacer::permit`]) up to
    /// `pacing.attempts` times while it fails transiently: a Retry-After pauses
    /// every request of the provider that long; otherwise the delay doubles from
    /// `first_backoff`, with jitter so many jobs do not retry in step.
    pub async fn retrying<T, F, Fut>(&self, mut request: F) -> Result<T, Transient>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Transient>>,
    {
        let attempts = self.pacing.attempts.max(1);
        let mut tried = 1;
        loop {
            match request().await {
                Ok(value) => return Ok(value),
                Err(transient) => {
                    if transient.circuit_open {
                        // Refused without a request: the next delivery of the job
                        // (or the secondary provider) takes it.
                        return Err(transient);
                    }
                    // The pause holds for every request of the provider, this
                    // job's next delivery included.
                    if let Some(delay) = transient.retry_after {
                        self.pause(delay);
                    }
                    if tried >= attempts {
                        return Err(transient);
                    }
                    match transient.retry_after {
                        Some(delay) if delay > MAX_RETRY_AFTER => return Err(transient),
                        Some(_) => {}
                        None => {
                            let delay = jittered(self.pacing.first_backoff * 2u32.pow(tried - 1));
                            tokio::time::sleep(delay).await;
                        }
                    }
                    tried += 1;
                }
            }
        }
    }

    /// The pause still to be waited out, for the delay of the job's next delivery.
    pub fn pause_left(&self) -> Option<Duration> {
        let until = (*self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

/// `delay` scaled by a random factor between 0.5 and 1.5.
pub fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.5..1.5))
}

/// Whether an HTTP status means the request may succeed later: 408, 429 and 5xx.
pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The delay of a Retry-After header given in seconds (the form providers use).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A provider's error text made fit for an event: short, one line, and without
/// any recipient's number should the provider echo it.
pub fn reason_text(body: &str, recipients: &[Recipient]) -> String {
    const LIMIT: usize = 200;
    let mut one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    for recipient in recipients {
        if !recipient.address.is_empty() {
            one_line = one_line.replace(
                &recipient.address,
                &krisbud_kit::privacy::mask(&recipient.address),
            );
            // Some providers echo the number without its `+`.
            let digits = recipient.address.trim_start_matches('+');
            if digits.len() >= 7 {
                one_line = one_line.replace(digits, &krisbud_kit::privacy::mask(digits));
            }
        }
    }
    let mut text: String = one_line.chars().take(LIMIT).collect();
    if one_line.chars().count() > LIMIT {
        text.push('…');
    }
    if text.is_empty() {
        "(no text)".into()
    } else {
        text
    }
}

/// Whether `s` is an E.164 phone number: `+` and 7 to 15 digits, not starting
/// with 0.
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// An alphanumeric sender as Twilio (and the other providers) take it: at most
/// 11 letters, digits and spaces, with at least one letter (digits alone would
/// read as a phone number), not starting or ending with a space.
pub fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && !s.starts_with(' ')
        && !s.ends_with(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphanumeric_senders_follow_twilio_s_rules() {
        for good in ["Stockholm", "Sthlm Stad", "Krisbud 112", "A"] {
            assert!(is_alphanumeric_sender(good), "{good}");
        }
        for bad in [
            "12345",
            "Stockholms stad",
            "",
            " Sthlm",
            "Sthlm ",
            "Sthlm_stad",
            "Göteborg",
        ] {
            assert!(!is_alphanumeric_sender(bad), "{bad}");
        }
    }

    #[test]
    fn phone_numbers_and_senders() {
        assert!(is_e164("+46701234567"));
        assert!(!is_e164("+4670"));
        assert!(!is_e164("0701234567"));
        assert!(!is_e164("+46 70 123 45 67"));
        assert!(is_alphanumeric_sender("Stockholm"));
        assert!(!is_alphanumeric_sender("Stockholms stad"));
        assert!(!is_alphanumeric_sender(""));
    }

    #[test]
    fn retry_after_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, "0.5".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(500)));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn reasons_hide_numbers_with_or_without_plus() {
        let r = Recipient {
            reference: "rcp:x".into(),
            address: "+46701234567".into(),
        };
        let text = reason_text("bad number 46701234567 and +46701234567", &[r]);
        assert!(!text.contains("46701234567"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_and_honour_retry_after() {
        let pacer = Pacer::new(Pacing {
            attempts: 3,
            ..Pacing::default()
        });
        let start = Instant::now();
        let mut calls = 0;
        let result: Result<(), Transient> = pacer
            .retrying(|| {
                calls += 1;
                let call = calls;
                let pacer = &pacer;
                async move {
                    let _permit = pacer.permit(1).await?;
                    if call == 1 {
                        Err(Transient {
                            retry_after: Some(Duration::from_secs(3)),
                            ..Transient::new("429")
                        })
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(calls, 2);
        assert!(start.elapsed() >= Duration::from_secs(3));

        let mut calls = 0;
        let result: Result<(), Transient> = pacer
            .retrying(|| {
                calls += 1;
                async { Err(Transient::new("503")) }
            })
            .await;
        assert_eq!(result.unwrap_err().reason, "503");
        assert_eq!(calls, 3);
    }
}
