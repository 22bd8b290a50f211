//! Delivery reports: the channel's own HTTP listener for the providers' callbacks,
//! and the callback URLs the providers are given.
//!
//! Every callback URL carries the channel's callback secret in its path, and the
//! crisis, revision and job the message belongs to (46elks and Twilio: also the
//! recipient's reference), so a report is mapped back without a lookup and cannot
//! race the store of a mapping: Twilio reports within milliseconds. Twilio's
//! callbacks are also checked against `X-Twilio-Signature` (HMAC-SHA1 with the auth
//! token over the public URL and the sorted form fields). Sinch's per-recipient
//! report names the batch's `client_reference` (the job id) and the number, whose
//! reference is computed with the recipient key.
//!
//! A final report becomes a `DeliveryReported` with one outcome, `delivered` or
//! `failed` with the provider's status in `reason`, and the id
//! `<job>.dlr.<hash of provider, message, recipient and status>`, so a provider
//! repeating a callback stores it once. Intermediate statuses (queued, sent ...)
//! are answered 200 and not recorded. A wrong secret or signature is answered 403;
//! a report that cannot be stored 503, so the provider tries again.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use krisbud_kit::bus::Expect;
use krisbud_kit::privacy::recipient_ref;
use krisbud_kit::{Bus, CancellationToken, Secret};
use krisbud_proto::event::{DeliveryReported, DeliveryState, RecipientOutcome};
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::{Actor, Channel, Envelope, Event, subject};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The path under which the listener serves callbacks.
pub const PATH_PREFIX: &str = "/sms/dlr";

/// Builds the callback URLs given to the providers.
#[derive(Debug, Clone)]
pub struct CallbackUrls {
    base: String,
    secret: Secret,
}

impl CallbackUrls {
    /// URLs under `base` (the listener's public address), carrying `secret`.
    pub fn new(base: &str, secret: Secret) -> CallbackUrls {
        CallbackUrls {
            base: base.trim_end_matches('/').to_owned(),
            secret,
        }
    }

    fn job_url(&self, provider: &str, job: &DispatchJob) -> String {
        format!(
            "{}{PATH_PREFIX}/{provider}/{}/{}/{}/{}",
            self.base,
            self.secret.expose(),
            job.crisis_id,
            job.revision,
            job.job_id
        )
    }

    /// 46elks's `whendelivered` for one recipient.
    pub fn elks(&self, job: &DispatchJob, recipient: &Recipient) -> String {
        format!("{}/{}", self.job_url("46elks", job), recipient.reference)
    }

    /// Sinch's `callback_url` for one job's batches.
    pub fn sinch(&self, job: &DispatchJob) -> String {
        self.job_url("sinch", job)
    }

    /// Twilio's `StatusCallback` for one recipient.
    pub fn twilio(&self, job: &DispatchJob, recipient: &Recipient) -> String {
        format!("{}/{}", self.job_url("twilio", job), recipient.reference)
    }
}

/// What the callback listener needs.
#[derive(Clone)]
pub struct CallbackState {
    /// Where reports are appended.
    pub bus: Bus,
    /// The key of recipient references (for Sinch's reports, which name the number).
    pub recipient_key: Secret,
    /// The secret every callback path carries.
    pub secret: Secret,
    /// The public base URL, as the providers call it (for Twilio's signature).
    pub public_base: String,
    /// Twilio's auth token, when Twilio is configured: callbacks are then checked
    /// against their signature.
    pub twilio_auth_token: Option<Secret>,
}

/// Serves the callback endpoints on `listener` until `shutdown`.
pub fn serve(
    listener: tokio::net::TcpListener,
    state: CallbackState,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let app = Router::new()
        .route(
            &format!("{PATH_PREFIX}/46elks/{{secret}}/{{crisis}}/{{revision}}/{{job}}/{{rcp}}"),
            post(elks),
        )
        .route(
            &format!("{PATH_PREFIX}/sinch/{{secret}}/{{crisis}}/{{revision}}/{{job}}"),
            post(sinch),
        )
        .route(
            &format!("{PATH_PREFIX}/twilio/{{secret}}/{{crisis}}/{{revision}}/{{job}}/{{rcp}}"),
            post(twilio),
        )
        .with_state(state);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    })
}

/// Binds the callback listener.
pub async fn bind(addr: &str) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on sms.callback_listen {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Where a callback's message belongs, from its path.
#[derive(Debug, Deserialize)]
struct JobPath {
    secret: String,
    crisis: String,
    revision: u32,
    job: String,
    #[serde(default)]
    rcp: Option<String>,
}

/// Compares two strings in time independent of where they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl JobPath {
    /// Checks the secret and that the ids can be what the channel gave out.
    fn check(&self, state: &CallbackState) -> Result<(), StatusCode> {
        if state.secret.is_empty() || !same_secret(&self.secret, state.secret.expose()) {
            return Err(StatusCode::FORBIDDEN);
        }
        let job_ok = !self.job.is_empty()
            && self.job.len() <= 200
            && self
                .job
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !subject::is_token(&self.crisis) || !job_ok {
            return Err(StatusCode::BAD_REQUEST);
        }
        Ok(())
    }
}

/// A final state of a provider's status word, or `None` for one on the way.
type Final = Option<(DeliveryState, String)>;

/// 46elks: `sent` is on the way; `delivered` and `failed` are final.
fn elks_state(status: &str) -> Final {
    match status {
        "delivered" => Some((DeliveryState::Delivered, "46elks delivered".into())),
        "failed" => Some((DeliveryState::Failed, "46elks failed".into())),
        _ => None,
    }
}

/// Sinch's delivery-report statuses: Queued and Dispatched are intermediate;
/// every other is final and Sinch sends nothing after it. Delivered is delivered;
/// Failed, Expired, Rejected, Aborted, Cancelled and Deleted are failures; Unknown
/// (the operator never said) is counted as failed, with that reason: nobody can
/// say the person got the message, and nothing more will come.
fn sinch_state(status: &str, code: Option<i64>) -> Final {
    let word = match code {
        Some(code) => format!("sinch {status} ({code})"),
        None => format!("sinch {status}"),
    };
    match status {
        "Delivered" => Some((DeliveryState::Delivered, word)),
        "Failed" | "Expired" | "Rejected" | "Aborted" | "Cancelled" | "Deleted" => {
            Some((DeliveryState::Failed, word))
        }
        "Unknown" => Some((
            DeliveryState::Failed,
            format!("{word}: the operator never reported delivery"),
        )),
        _ => None,
    }
}

/// Twilio: `delivered` is delivered; `undelivered`, `failed` and `canceled` are
/// failures (with the ErrorCode); the others are on the way.
fn twilio_state(status: &str, error_code: Option<&str>) -> Final {
    let word = match error_code.filter(|c| !c.is_empty()) {
        Some(code) => format!("twilio {status} ({code})"),
        None => format!("twilio {status}"),
    };
    match status {
        "delivered" => Some((DeliveryState::Delivered, word)),
        "undelivered" | "failed" | "canceled" => Some((DeliveryState::Failed, word)),
        _ => None,
    }
}

/// Appends one recipient's final state as a `DeliveryReported`.
async fn report(
    state: &CallbackState,
    path: &JobPath,
    provider: &str,
    recipient: String,
    message_id: &str,
    outcome: (DeliveryState, String),
) -> StatusCode {
    let (delivery, reason) = outcome;
    let digest = Sha256::digest(format!("{provider}\0{message_id}\0{recipient}\0{reason}"));
    let id = format!("{}.dlr.{}", path.job, &hex::encode(digest)[..20]);
    let event = Event::DeliveryReported(DeliveryReported {
        crisis_id: path.crisis.clone(),
        revision: path.revision,
        channel: Channel::Sms,
        job_id: path.job.clone(),
        provider: provider.to_owned(),
        outcomes: vec![RecipientOutcome {
            recipient,
            state: delivery,
            provider_ref: (!message_id.is_empty()).then(|| message_id.to_owned()),
            reason: Some(reason),
            possible_duplicate: false,
        }],
        retries: 0,
    });
    let mut envelope = Envelope::with_id(id, Actor::service(crate::SERVICE), event);
    envelope.causation_id = Some(format!("{}.outcome", path.job));
    match state.bus.append(&envelope, Expect::Any).await {
        Ok(_) => StatusCode::OK,
        Err(e) => {
            tracing::warn!(job = %path.job, error = %e, "cannot store a delivery report; the provider will send it again");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// A recipient reference as the channel gives them out.
fn is_reference(s: &str) -> bool {
    s.strip_prefix("rcp:").is_some_and(|hex| {
        !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

async fn elks(
    State(state): State<CallbackState>,
    Path(path): Path<JobPath>,
    body: Bytes,
) -> StatusCode {
    if let Err(status) = path.check(&state) {
        return status;
    }
    let Some(rcp) = path.rcp.clone().filter(|r| is_reference(r)) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(form) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (Some(id), Some(status)) = (form.get("id"), form.get("status")) else {
        return StatusCode::BAD_REQUEST;
    };
    match elks_state(status) {
        Some(outcome) => report(&state, &path, "46elks", rcp, id, outcome).await,
        None => StatusCode::OK,
    }
}

/// Sinch's per-recipient delivery report.
#[derive(Debug, Deserialize)]
struct SinchReport {
    #[serde(rename = "type")]
    kind: String,
    batch_id: String,
    recipient: Option<String>,
    status: Option<String>,
    code: Option<i64>,
    client_reference: Option<String>,
}

async fn sinch(
    State(state): State<CallbackState>,
    Path(path): Path<JobPath>,
    body: Bytes,
) -> StatusCode {
    if let Err(status) = path.check(&state) {
        return status;
    }
    let Ok(report_body) = serde_json::from_slice::<SinchReport>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if report_body.kind != "recipient_delivery_report_sms" {
        // Batch summaries say nothing per recipient.
        return StatusCode::OK;
    }
    if report_body
        .client_reference
        .as_deref()
        .is_some_and(|r| r != path.job)
    {
        return StatusCode::BAD_REQUEST;
    }
    let (Some(number), Some(status)) = (report_body.recipient, report_body.status) else {
        return StatusCode::BAD_REQUEST;
    };
    // Sinch writes MSISDNs with or without the `+`; references are of E.164.
    let number = if number.starts_with('+') {
        number
    } else {
        format!("+{number}")
    };
    let rcp = recipient_ref(state.recipient_key.expose().as_bytes(), &number);
    match sinch_state(&status, report_body.code) {
        Some(outcome) => report(&state, &path, "sinch", rcp, &report_body.batch_id, outcome).await,
        None => StatusCode::OK,
    }
}

async fn twilio(
    State(state): State<CallbackState>,
    Path(path): Path<JobPath>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if let Err(status) = path.check(&state) {
        return status;
    }
    let Some(rcp) = path.rcp.clone().filter(|r| is_reference(r)) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if let Some(token) = &state.twilio_auth_token {
        let url = format!(
            "{}{}",
            state.public_base.trim_end_matches('/'),
            uri.path_and_query().map_or(uri.path(), |p| p.as_str())
        );
        let signature = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !twilio_signature_valid(token.expose(), &url, &form, signature) {
            return StatusCode::FORBIDDEN;
        }
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(sid), Some(status)) = (field("MessageSid"), field("MessageStatus")) else {
        return StatusCode::BAD_REQUEST;
    };
    match twilio_state(status, field("ErrorCode")) {
        Some(outcome) => report(&state, &path, "twilio", rcp, sid, outcome).await,
        None => StatusCode::OK,
    }
}

/// Twilio's request signature: base64 of HMAC-SHA1, keyed with the auth token, of
/// the full URL followed by every form field's name and value, sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, form: &[(String, String)]) -> String {
    let mut fields: Vec<&(String, String)> = form.iter().collect();
    fields.sort();
    #[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("hmac takes any key");
    mac.update(url.as_bytes());
    for (name, value) in fields {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn twilio_signature_valid(
    auth_token: &str,
    url: &str,
    form: &[(String, String)],
    signature: &str,
) -> bool {
    // As Twilio's own validator (twilio-python's RequestValidator): Twilio signs
    // some callbacks over the URL with the scheme's port written out and some
    // without, so both forms of the configured URL are accepted, nothing else.
    twilio_url_forms(url).iter().any(|form_url| {
        same_secret(
            signature.trim(),
            &twilio_signature(auth_token, form_url, form),
        )
    })
}

/// The configured URL with its port written out (the scheme's default when it
/// has none) and without any port, as Twilio's validator computes them.
fn twilio_url_forms(url: &str) -> Vec<String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return vec![url.to_owned()];
    };
    let mut without_port = parsed.clone();
    let _ = without_port.set_port(None);
    let with_port = match (
        parsed.port(),
        parsed.port_or_known_default(),
        parsed.host_str(),
    ) {
        // `Url` never prints a scheme's default port, so it is written in here.
        (None, Some(default), Some(host)) => {
            parsed
                .to_string()
                .replacen(&format!("://{host}"), &format!("://{host}:{default}"), 1)
        }
        _ => parsed.to_string(),
    };
    let mut forms = vec![with_port, without_port.to_string()];
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_twilios_example() {
        // The example of Twilio's "Webhooks security" page.
        let form: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let signature = twilio_signature("12345", url, &form);
        assert_eq!(signature, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(twilio_signature_valid("12345", url, &form, &signature));
        assert!(!twilio_signature_valid("54321", url, &form, &signature));
    }

    #[test]
    fn twilio_signatures_over_the_url_with_and_without_its_port_are_both_accepted() {
        let form: Vec<(String, String)> = vec![("MessageStatus".into(), "delivered".into())];
        let url = "https://krisbud.example/sms/twilio/s3cret/c1/1/j1";
        let with_port = "https://krisbud.example:443/sms/twilio/s3cret/c1/1/j1";
        for signed_over in [url, with_port] {
            let signature = twilio_signature("token", signed_over, &form);
            assert!(
                twilio_signature_valid("token", url, &form, &signature),
                "{signed_over}"
            );
            assert!(
                twilio_signature_valid("token", with_port, &form, &signature),
                "{signed_over}"
            );
        }
        // Another port, path or token is not accepted.
        for other in [
            "https://krisbud.example:8443/sms/twilio/s3cret/c1/1/j1",
            "http://krisbud.example:80/sms/twilio/s3cret/c1/1/j1",
            "https://krisbud.example/sms/twilio/s3cret/c1/1/j2",
        ] {
            let signature = twilio_signature("token", other, &form);
            assert!(
                !twilio_signature_valid("token", url, &form, &signature),
                "{other}"
            );
        }
        assert_eq!(
            twilio_url_forms(url),
            [with_port.to_owned(), url.to_owned()]
        );
        assert_eq!(
            twilio_url_forms("http://h:8080/p"),
            ["http://h:8080/p".to_owned(), "http://h/p".to_owned()]
        );
    }

    #[test]
    fn provider_statuses_map_to_final_states() {
        assert_eq!(elks_state("sent"), None);
        assert_eq!(elks_state("delivered").unwrap().0, DeliveryState::Delivered);
        assert_eq!(elks_state("failed").unwrap().0, DeliveryState::Failed);
        // Sinch's whole table: two intermediate statuses, eight final ones.
        for intermediate in ["Queued", "Dispatched"] {
            assert_eq!(sinch_state(intermediate, Some(401)), None, "{intermediate}");
        }
        assert_eq!(
            sinch_state("Delivered", Some(0)).unwrap().0,
            DeliveryState::Delivered
        );
        for failed in [
            "Aborted",
            "Cancelled",
            "Rejected",
            "Deleted",
            "Failed",
            "Expired",
            "Unknown",
        ] {
            let (state, word) = sinch_state(failed, Some(400)).expect(failed);
            assert_eq!(state, DeliveryState::Failed, "{failed}");
            assert!(word.contains(failed), "{word}");
        }
        let (state, word) = sinch_state("Failed", Some(402)).unwrap();
        assert_eq!(state, DeliveryState::Failed);
        assert_eq!(word, "sinch Failed (402)");
        assert_eq!(twilio_state("sent", None), None);
        let (state, word) = twilio_state("undelivered", Some("30003")).unwrap();
        assert_eq!(state, DeliveryState::Failed);
        assert_eq!(word, "twilio undelivered (30003)");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
    }
}
