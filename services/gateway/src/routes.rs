//! The routes of `/api/v1`: each checks the caller's role, turns the HTTP request
//! into a command for the owning service, and its answer into HTTP.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use krisbud_proto::audit::{AuditPage, AuditRecord, VerifyReport};
use krisbud_proto::command::{
    AuditQuery, AuditVerify, ConfirmChannel, DeclareCrisis, Declared, GetCrisis, ListCrises,
    ListTemplates,
};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::template::TemplateSummary;
use krisbud_proto::{Channel, Problem, subject};
use schemars::JsonSchema;
use serde::Deserialize;
use tracing::Instrument;

use crate::auth::{AnyUser, Auditors, Caller, CrisisReaders, DutyOfficers, Operators};
use crate::body::{JsonBody, OptionalJsonBody};
use crate::problem::ApiError;
use crate::state::AppState;

/// Media type of the audit export: one JSON record per line.
pub const NDJSON: &str = "application/x-ndjson";

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `GET /api/v1/templates`
pub async fn list_templates(
    State(app): State<AppState>,
    caller: Caller<AnyUser>,
) -> Result<Json<Vec<TemplateSummary>>, ApiError> {
    let templates = app
        .command(
            subject::cmd::LIST_TEMPLATES,
            caller.actor(),
            None,
            ListTemplates {},
        )
        .await?;
    Ok(Json(templates))
}

/// `POST /api/v1/crises`
pub async fn declare(
    State(app): State<AppState>,
    caller: Caller<DutyOfficers>,
    headers: HeaderMap,
    JsonBody(declaration): JsonBody<DeclareCrisis>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let declared: Declared = app
        .command(subject::cmd::DECLARE, caller.actor(), key, declaration)
        .await?;
    let location = HeaderValue::from_str(&format!("/api/v1/crises/{}", declared.crisis_id))
        .map_err(|_| {
            ApiError::from(Problem::new(
                502,
                "bad gateway",
                "the coordinator answered with a crisis id that cannot be part of a URL",
            ))
        })?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(declared),
    )
        .into_response())
}

/// `GET /api/v1/crises`
pub async fn list_crises(
    State(app): State<AppState>,
    caller: Caller<CrisisReaders>,
) -> Result<Json<Vec<CrisisStatus>>, ApiError> {
    let crises = app
        .command(
            subject::cmd::LIST_CRISES,
            caller.actor(),
            None,
            ListCrises {},
        )
        .await?;
    Ok(Json(crises))
}

/// `GET /api/v1/crises/{id}`
pub async fn get_crisis(
    State(app): State<AppState>,
    caller: Caller<CrisisReaders>,
    Path(crisis_id): Path<String>,
) -> Result<Json<CrisisStatus>, ApiError> {
    check_crisis_id(&crisis_id)?;
    let status = app
        .command(
            subject::cmd::GET_CRISIS,
            caller.actor(),
            None,
            GetCrisis { crisis_id },
        )
        .await?;
    Ok(Json(status))
}

/// The optional body of a confirmation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// What the operator wants on record ("bannern syns på stockholm.se").
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /api/v1/crises/{id}/channels/{channel}/confirm`
pub async fn confirm(
    State(app): State<AppState>,
    caller: Caller<Operators>,
    Path((crisis_id, channel)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<ConfirmBody>,
) -> Result<Json<CrisisStatus>, ApiError> {
    check_crisis_id(&crisis_id)?;
    let Some(channel) = Channel::parse(&channel) else {
        let known: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        return Err(Problem::not_found(format!(
            "there is no channel `{channel}`; the channels are {}",
            known.join(", ")
        ))
        .into());
    };
    let confirmation = ConfirmChannel {
        crisis_id,
        channel,
        note: body.and_then(|b| b.note),
    };
    let status = app
        .command(subject::cmd::CONFIRM, caller.actor(), None, confirmation)
        .await?;
    Ok(Json(status))
}

/// How `GET /api/v1/audit` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuditFormat {
    /// One page as JSON, with `next_sequence`.
    Json,
    /// Every matching record, one per line, across pages.
    Jsonl,
}

/// `GET /api/v1/audit`
pub async fn audit(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (query, format) = audit_params(query.as_deref().unwrap_or_default())?;
    let first: AuditPage = app
        .command(
            subject::cmd::AUDIT_QUERY,
            caller.actor(),
            None,
            query.clone(),
        )
        .await?;
    match format {
        AuditFormat::Json => Ok(Json(first).into_response()),
        AuditFormat::Jsonl => Ok(export(app, caller.actor(), query, first)),
    }
}

/// Streams every record from `first` on, following `next_sequence`; `query.limit`
/// caps the whole export. The first page was fetched before the response started,
/// so a missing audit service still gets a proper 503.
fn export(
    app: AppState,
    actor: krisbud_proto::Actor,
    mut query: AuditQuery,
    first: AuditPage,
) -> Response {
    // The body is polled after the handler returned, outside the request span, so
    // the later page requests carry the span themselves.
    let span = tracing::Span::current();
    let stream = async_stream::try_stream! {
        let mut page = first;
        let mut remaining = query.limit;
        loop {
            let take = remaining.map_or(page.records.len(), |r| r.min(page.records.len()));
            yield lines(&page.records[..take]);
            remaining = remaining.map(|r| r - take);
            let Some(next) = page.next_sequence.filter(|_| remaining != Some(0)) else {
                break;
            };
            query.from_sequence = Some(advance(query.from_sequence, next, &span)?);
            query.limit = remaining;
            page = next_page(&app, &actor, &query).instrument(span.clone()).await?;
        }
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(NDJSON)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"krisbud-audit.jsonl\""),
            ),
        ],
        ndjson_body(stream),
    )
        .into_response()
}

/// Names the stream's error type, which `try_stream!` cannot infer.
fn ndjson_body(stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Body {
    Body::from_stream(stream)
}

/// Checks that the next page starts after the current one: a page that does not
/// move forward would loop for ever, and ending the body with an error tells the
/// client the export is incomplete.
fn advance(from: Option<u64>, next: u64, span: &tracing::Span) -> std::io::Result<u64> {
    if next > from.unwrap_or(1) {
        return Ok(next);
    }
    tracing::error!(parent: span, next, "the audit service returned a page that does not advance; export aborted");
    Err(std::io::Error::other("the audit export stopped early"))
}

/// The next page of an export; a failure ends the body with an error, which the
/// client sees as a broken transfer rather than a complete-looking file.
async fn next_page(
    app: &AppState,
    actor: &krisbud_proto::Actor,
    query: &AuditQuery,
) -> std::io::Result<AuditPage> {
    app.command(subject::cmd::AUDIT_QUERY, actor.clone(), None, query.clone())
        .await
        .map_err(|e| {
            tracing::error!(status = e.problem.status, detail = %e.problem.detail, "audit export aborted");
            std::io::Error::other("the audit export stopped early")
        })
}

fn lines(records: &[AuditRecord]) -> Bytes {
    let mut out = Vec::new();
    for record in records {
        serde_json::to_writer(&mut out, record).expect("an audit record serializes");
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// Reads the audit filters; unknown parameters are refused so a typo does not
/// silently widen an export.
fn audit_params(raw: &str) -> Result<(AuditQuery, AuditFormat), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|e| {
        ApiError::bad_request(
            "invalid query",
            format!("cannot read the query string: {e}"),
        )
    })?;
    let mut query = AuditQuery::default();
    let mut format = AuditFormat::Json;
    let mut seen = std::collections::BTreeSet::new();
    for (key, value) in pairs {
        if !seen.insert(key.clone()) {
            return Err(invalid_param(
                &key,
                format!("{key} is given more than once"),
            ));
        }
        let value = value.trim().to_owned();
        let text = Some(value.clone()).filter(|v| !v.is_empty());
        match key.as_str() {
            "crisis" => query.crisis = text,
            "actor" => query.actor = text,
            "kind" => query.kind = text,
            "from_sequence" => {
                query.from_sequence = text.map(|v| number(&key, &v, 1)).transpose()?
            }
            "limit" => {
                query.limit = text
                    .map(|v| number(&key, &v, 1).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
                    .transpose()?;
            }
            "format" => {
                format = match value.as_str() {
                    "" | "json" => AuditFormat::Json,
                    "jsonl" | "ndjson" => AuditFormat::Jsonl,
                    other => {
                        return Err(invalid_param(
                            "format",
                            format!("format must be json or jsonl, not {other}"),
                        ));
                    }
                };
            }
            other => {
                return Err(invalid_param(
                    other,
                    format!(
                        "unknown query parameter {other}; the filters are crisis, actor, kind, \
                         from_sequence, limit and format"
                    ),
                ));
            }
        }
    }
    Ok((query, format))
}

fn number(key: &str, value: &str, min: u64) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| {
            invalid_param(
                key,
                format!("{key} must be a whole number of at least {min}, not {value}"),
            )
        })
}

fn invalid_param(name: &str, detail: String) -> ApiError {
    let mut error = ApiError::bad_request("invalid query", detail);
    error.problem.field = Some(name.to_owned());
    error
}

/// `GET /api/v1/audit/verify`
pub async fn audit_verify(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
) -> Result<Json<VerifyReport>, ApiError> {
    let report = app
        .command(
            subject::cmd::AUDIT_VERIFY,
            caller.actor(),
            None,
            AuditVerify {},
        )
        .await?;
    Ok(Json(report))
}

/// `GET /api/v1/openapi.json`
pub async fn openapi(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        app.openapi,
    )
        .into_response()
}

/// Crisis ids are subject tokens; anything else cannot name a crisis.
fn check_crisis_id(crisis_id: &str) -> Result<(), ApiError> {
    if subject::is_token(crisis_id) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("there is no crisis with the id {crisis_id:?}")).into())
    }
}

/// The `Idempotency-Key` header, passed on so a retried declaration declares once.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            let mut error = ApiError::bad_request(
                "invalid header",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            );
            error.problem.field = Some("Idempotency-Key".to_owned());
            error
        })?;
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_filters_are_read() {
        let (q, f) = audit_params(
            "crisis=c1&actor=anna&kind=CrisisDeclared&from_sequence=5&limit=10&format=jsonl",
        )
        .unwrap();
        assert_eq!(q.crisis.as_deref(), Some("c1"));
        assert_eq!(q.actor.as_deref(), Some("anna"));
        assert_eq!(q.kind.as_deref(), Some("CrisisDeclared"));
        assert_eq!(q.from_sequence, Some(5));
        assert_eq!(q.limit, Some(10));
        assert_eq!(f, AuditFormat::Jsonl);
        let (q, f) = audit_params("crisis=&format=").unwrap();
        assert_eq!(q, AuditQuery::default());
        assert_eq!(f, AuditFormat::Json);
    }

    #[test]
    fn bad_audit_filters_name_the_parameter() {
        for (raw, name) in [
            ("limit=ten", "limit"),
            ("limit=0", "limit"),
            ("from_sequence=-1", "from_sequence"),
            ("from=2026-01-01", "from"),
            ("format=csv", "format"),
            ("crisis=a&crisis=b", "crisis"),
        ] {
            let error = audit_params(raw).unwrap_err();
            assert_eq!(error.problem.status, 400, "{raw}");
            assert_eq!(error.problem.field.as_deref(), Some(name), "{raw}");
        }
    }
}
