//! The auditor's console: the audit log with filters and a cursor, verification
//! of the chain naming the first bad record, the export bundle and CSV as
//! downloads, a crisis report as HTML, and "was this person notified?" (which the
//! audit service records, as over the API).

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use krisbud_kit::text::local_time;
use krisbud_proto::audit::{
    AuditPage, CrisisReportQuery, CrisisReportReply, RecipientLookup, RecipientLookupAnswer,
    ReportFormat, VerifyReport,
};
use krisbud_proto::command::{AuditQuery, AuditVerify};
use krisbud_proto::{Role, subject};
use serde_json::Value;

use super::pages::{self, Layout};
use super::session::{Posted, SignedIn};
use super::{CSP, channel_name, message, not_allowed, page, unavailable};
use crate::state::AppState;

/// Records shown per page.
const PAGE: usize = 50;

/// One record in the log.
pub struct RecordRow {
    pub sequence: u64,
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub crisis: String,
}

/// The filters as given, echoed into the form.
#[derive(Default)]
pub struct Filters {
    pub crisis: String,
    pub actor: String,
    pub kind: String,
}

/// What a verification found, in words.
pub struct Verified {
    pub ok: bool,
    pub checked: u64,
    pub signed_up_to: String,
    pub first_bad: Option<String>,
    pub warnings: Vec<String>,
}

/// What a lookup found.
pub struct LookedUp {
    pub recipient: String,
    pub outcomes: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct AuditPageView {
    pub layout: Layout,
    pub filters: Filters,
    pub records: Vec<RecordRow>,
    /// The query string of the next page, when there is one.
    pub next: Option<String>,
    pub verified: Option<Verified>,
    pub looked_up: Option<LookedUp>,
    pub error: Option<String>,
}

fn auditor(who: &SignedIn) -> Result<(), Box<Response>> {
    if who.session.has(Role::Auditor) {
        Ok(())
    } else {
        Err(Box::new(not_allowed(
            who,
            "Bara revisorer läser granskningsloggen.",
        )))
    }
}

/// The filters and cursor of the log's query string.
fn read_query(raw: Option<&str>) -> (Filters, AuditQuery) {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default();
    let get = |name: &str| {
        pages::value(&params, name)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let filters = Filters {
        crisis: get("crisis"),
        actor: get("actor"),
        kind: get("kind"),
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let query = AuditQuery {
        crisis: some(&filters.crisis),
        actor: some(&filters.actor),
        kind: some(&filters.kind),
        from_sequence: get("from").parse().ok(),
        limit: Some(PAGE),
        ..AuditQuery::default()
    };
    (filters, query)
}

fn row(record: &krisbud_proto::audit::AuditRecord) -> RecordRow {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let event = &record.event;
    RecordRow {
        sequence: record.sequence,
        at: local_time(record.recorded_at),
        kind: text(event.get("kind")),
        actor: text(event.get("actor").and_then(|a| a.get("user"))),
        crisis: text(event.get("crisis_id")),
    }
}

/// The log page for `raw`, with what a verification or lookup found.
async fn log_page(
    app: &AppState,
    who: &SignedIn,
    raw: Option<&str>,
    verified: Option<Verified>,
    looked_up: Option<LookedUp>,
    error: Option<String>,
) -> Response {
    let (filters, query) = read_query(raw);
    let found: AuditPage = match app
        .command(
            subject::cmd::AUDIT_QUERY,
            who.session.actor.clone(),
            None,
            query,
        )
        .await
    {
        Ok(p) => p,
        Err(e) if e.problem.status < 500 => {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(who),
                "Sökningen gick inte",
                &e.problem.detail,
            );
        }
        Err(e) => return unavailable(who, &e),
    };
    let next = found.next_sequence.map(|from| {
        let from = from.to_string();
        let params: Vec<(&str, &str)> = [
            ("crisis", filters.crisis.as_str()),
            ("actor", filters.actor.as_str()),
            ("kind", filters.kind.as_str()),
            ("from", from.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        serde_urlencoded::to_string(params).unwrap_or_default()
    });
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    page(
        status,
        &AuditPageView {
            layout: Layout::of(Some(who)),
            records: found.records.iter().map(row).collect(),
            filters,
            next,
            verified,
            looked_up,
            error,
        },
    )
}

/// `GET /konsol/revision[?crisis=&actor=&kind=&from=]`
pub async fn log(State(app): State<AppState>, who: SignedIn, RawQuery(raw): RawQuery) -> Response {
    if let Err(response) = auditor(&who) {
        return *response;
    }
    log_page(&app, &who, raw.as_deref(), None, None, None).await
}

/// `POST /konsol/revision/verifiera`: recomputes the chain, against the key the
/// auditor trusts when one is given.
pub async fn verify(State(app): State<AppState>, Posted { who, form }: Posted) -> Response {
    if let Err(response) = auditor(&who) {
        return *response;
    }
    let trust_key = pages::value(&form, "trust_key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let report: VerifyReport = match app
        .command(
            subject::cmd::AUDIT_VERIFY,
            who.session.actor.clone(),
            None,
            AuditVerify {
                trust_key,
                since: None,
            },
        )
        .await
    {
        Ok(r) => r,
        Err(e) if e.problem.status < 500 => {
            return log_page(&app, &who, None, None, None, Some(e.problem.detail)).await;
        }
        Err(e) => return unavailable(&who, &e),
    };
    let mut warnings = report.warnings.clone();
    if !report.trusted_key_checked {
        warnings.push(
            "Ingen betrodd nyckel angavs: kedjan är hel och signerad, men vem som signerade den är inte kontrollerat mot den publicerade nyckeln."
                .to_owned(),
        );
    }
    let verified = Verified {
        ok: report.ok,
        checked: report.checked,
        signed_up_to: report
            .signed_up_to
            .map(|s| s.to_string())
            .unwrap_or_else(|| "ingen".to_owned()),
        first_bad: report
            .first_bad
            .map(|f| format!("Post {}: {} ({})", f.sequence, f.problem, f.detail)),
        warnings,
    };
    log_page(&app, &who, None, Some(verified), None, None).await
}

/// `POST /konsol/revision/sok-mottagare`: was this person notified? The address
/// travels in the body only, never in a URL.
pub async fn lookup(State(app): State<AppState>, Posted { who, form }: Posted) -> Response {
    if let Err(response) = auditor(&who) {
        return *response;
    }
    let address = pages::value(&form, "address").unwrap_or_default().trim();
    if address.is_empty() {
        return log_page(
            &app,
            &who,
            None,
            None,
            None,
            Some("Skriv ett mobilnummer eller en e-postadress att söka på.".into()),
        )
        .await;
    }
    let answer: RecipientLookupAnswer = match app
        .command(
            subject::cmd::AUDIT_LOOKUP,
            who.session.actor.clone(),
            None,
            RecipientLookup {
                address: address.to_owned(),
                crisis: None,
            },
        )
        .await
    {
        Ok(a) => a,
        Err(e) if e.problem.status < 500 => {
            return log_page(&app, &who, None, None, None, Some(e.problem.detail)).await;
        }
        Err(e) => return unavailable(&who, &e),
    };
    let looked_up = LookedUp {
        recipient: answer.recipient,
        outcomes: answer
            .outcomes
            .iter()
            .map(|o| {
                format!(
                    "{}: {} via {} ({}), {}",
                    o.crisis_id,
                    channel_name(o.channel),
                    o.provider,
                    serde_json::to_value(o.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    local_time(o.occurred_at)
                )
            })
            .collect(),
    };
    log_page(&app, &who, None, None, Some(looked_up), None).await
}

/// `GET /konsol/revision/export`: the bundle, for `krisbud audit verify --file`.
pub async fn export(State(app): State<AppState>, who: SignedIn) -> Response {
    if let Err(response) = auditor(&who) {
        return *response;
    }
    match crate::audit_routes::bundle(app, who.session.actor.clone()).await {
        Ok(response) => response,
        Err(e) => unavailable(&who, &e),
    }
}

/// `GET /konsol/revision/logg.csv`: every record as CSV.
pub async fn csv(State(app): State<AppState>, who: SignedIn) -> Response {
    if let Err(response) = auditor(&who) {
        return *response;
    }
    match crate::audit_routes::csv(app, who.session.actor.clone(), AuditQuery::default()).await {
        Ok(response) => response,
        Err(e) => unavailable(&who, &e),
    }
}

/// `GET /konsol/revision/rapport/{id}`: the crisis report as HTML.
pub async fn report(
    State(app): State<AppState>,
    who: SignedIn,
    Path(crisis_id): Path<String>,
) -> Response {
    if let Err(response) = auditor(&who) {
        return *response;
    }
    if !subject::is_token(&crisis_id) {
        return message(
            StatusCode::NOT_FOUND,
            Some(&who),
            "Krisen finns inte",
            "Det finns ingen kris med det numret.",
        );
    }
    let reply: CrisisReportReply = match app
        .command(
            subject::cmd::AUDIT_REPORT,
            who.session.actor.clone(),
            None,
            CrisisReportQuery {
                crisis_id,
                format: ReportFormat::Html,
            },
        )
        .await
    {
        Ok(r) => r,
        Err(e) if e.problem.status == 404 => {
            return message(
                StatusCode::NOT_FOUND,
                Some(&who),
                "Krisen finns inte",
                "Det finns ingen kris med det numret i loggen.",
            );
        }
        Err(e) => return unavailable(&who, &e),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
        ],
        reply.text.unwrap_or_default(),
    )
        .into_response()
}
