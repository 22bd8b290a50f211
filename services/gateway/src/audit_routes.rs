//! The audit routes of `/api/v1/audit`: records filtered and paged as JSON, JSON
//! lines or CSV; verification; signed checkpoints and the public key; the export
//! bundle for offline verification; the crisis report; and the recipient lookup.
//! Everything but the public key is for auditors; the audit service
//! checks the role again.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use krisbud_proto::audit::{
    AuditKeys, AuditPage, AuditPublicKey, AuditRecord, BUNDLE_FORMAT, BundleHeader, BundleLine,
    ChainPoint, Checkpoint, CheckpointPage, CheckpointQuery, CrisisReportQuery, CrisisReportReply,
    PublicKeyQuery, RecipientLookup, RecipientLookupAnswer, ReportFormat, VerifyReport,
};
use krisbud_proto::command::{AuditQuery, AuditVerify};
use krisbud_proto::{Actor, Problem, subject};
use serde_json::Value;
use tracing::Instrument;

use crate::auth::{AnyUser, Auditors, Caller};
use crate::body::JsonBody;
use crate::problem::ApiError;
use crate::state::AppState;

/// Media type of the JSON-lines export and the bundle: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";
/// Media type of the CSV export.
pub const CSV: &str = "text/csv; charset=utf-8";
/// The columns of the CSV export.
pub const CSV_COLUMNS: &str = "sequence,recorded_at,event_sequence,occurred_at,kind,crisis_id,actor,event_id,payload,prev_hash,hash";

/// How `GET /api/v1/audit` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One page as JSON, with `next_sequence`.
    Json,
    /// Every matching record, one per line, across pages.
    Jsonl,
    /// Every matching record as a CSV row, across pages.
    Csv,
}

/// `GET /api/v1/audit`
pub async fn query(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (query, format) = query_params(raw.as_deref().unwrap_or_default())?;
    records(app, caller.actor(), query, format).await
}

/// The CSV of every record matching `query`, as a download (the console's).
pub(crate) async fn csv(
    app: AppState,
    actor: Actor,
    query: AuditQuery,
) -> Result<Response, ApiError> {
    records(app, actor, query, Format::Csv).await
}

/// The records matching `query` in `format`: one JSON page, or every record as a
/// download streamed page by page.
async fn records(
    app: AppState,
    actor: Actor,
    query: AuditQuery,
    format: Format,
) -> Result<Response, ApiError> {
    let first: AuditPage = app
        .command(
            subject::cmd::AUDIT_QUERY,
            actor.clone(),
            None,
            query.clone(),
        )
        .await?;
    let (media, name, head): (&'static str, &str, Option<Bytes>) = match format {
        Format::Json => return Ok(Json(first).into_response()),
        Format::Jsonl => (NDJSON, "krisbud-audit.jsonl", None),
        Format::Csv => (
            CSV,
            "krisbud-audit.csv",
            Some(Bytes::from(format!("{CSV_COLUMNS}\r\n"))),
        ),
    };
    let records = pages(app, actor, query, first, None);
    let body = async_stream::try_stream! {
        if let Some(head) = head {
            yield head;
        }
        futures::pin_mut!(records);
        while let Some(records) = futures::StreamExt::next(&mut records).await {
            let records = records?;
            yield match format {
                Format::Csv => csv_rows(&records),
                _ => json_lines(&records),
            };
        }
    };
    Ok(download(media, name, stream_body(body)))
}

/// `GET /api/v1/audit/verify`, optionally with `trust_key` (the published key)
/// and a saved point of the chain (`since_sequence`, `since_hash`,
/// `since_chain`) that the chain must still hold.
pub async fn verify(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
    RawQuery(raw): RawQuery,
) -> Result<Json<VerifyReport>, ApiError> {
    let params = params(
        raw.as_deref().unwrap_or_default(),
        &["trust_key", "since_sequence", "since_hash", "since_chain"],
    )?;
    let since = match (params.number("since_sequence")?, params.get("since_hash")) {
        (Some(sequence), Some(hash)) => Some(ChainPoint {
            sequence,
            hash: hash.to_owned(),
            chain_id: params.get("since_chain").map(str::to_owned),
        }),
        (None, None) if params.get("since_chain").is_none() => None,
        _ => {
            return Err(invalid_param(
                "since_sequence",
                "a saved checkpoint needs since_sequence and since_hash (since_chain is optional)"
                    .into(),
            ));
        }
    };
    let report = app
        .command(
            subject::cmd::AUDIT_VERIFY,
            caller.actor(),
            None,
            AuditVerify {
                trust_key: params.get("trust_key").map(str::to_owned),
                since,
            },
        )
        .await?;
    Ok(Json(report))
}

/// `GET /api/v1/audit/checkpoints`
pub async fn checkpoints(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CheckpointPage>, ApiError> {
    let params = params(
        raw.as_deref().unwrap_or_default(),
        &["from_sequence", "limit"],
    )?;
    let query = CheckpointQuery {
        from_sequence: params.number("from_sequence")?,
        limit: params.limit()?,
    };
    let page = app
        .command(subject::cmd::AUDIT_CHECKPOINTS, caller.actor(), None, query)
        .await?;
    Ok(Json(page))
}

/// `GET /api/v1/audit/public-key`
pub async fn public_key(
    State(app): State<AppState>,
    caller: Caller<AnyUser>,
) -> Result<Json<AuditKeys>, ApiError> {
    let keys = app
        .command(
            subject::cmd::AUDIT_KEYS,
            caller.actor(),
            None,
            PublicKeyQuery {},
        )
        .await?;
    Ok(Json(keys))
}

/// `GET /api/v1/audit/export`: the bundle (header, keys, checkpoints, every
/// record) as JSON lines, for `krisbud audit verify --file`. The chain's end is
/// fixed by the first page; checkpoints after it are left out, so the bundle is
/// consistent even while records are added.
pub async fn export(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
) -> Result<Response, ApiError> {
    bundle(app, caller.actor()).await
}

/// The export bundle as a download, for `actor` (the API's and the console's).
pub(crate) async fn bundle(app: AppState, actor: Actor) -> Result<Response, ApiError> {
    let first: AuditPage = app
        .command(
            subject::cmd::AUDIT_QUERY,
            actor.clone(),
            None,
            AuditQuery::default(),
        )
        .await?;
    let last = first
        .last_sequence
        .or_else(|| first.records.last().map(|r| r.sequence))
        .unwrap_or(0);
    let keys: AuditKeys = app
        .command(
            subject::cmd::AUDIT_KEYS,
            actor.clone(),
            None,
            PublicKeyQuery {},
        )
        .await?;
    let checkpoints = all_checkpoints(&app, &actor, last).await?;

    let mut head = Vec::new();
    let mut line = |line: BundleLine| {
        #[allow(clippy::expect_used, reason = "a bundle line is strings and numbers")]
        serde_json::to_writer(&mut head, &line).expect("a bundle line serializes");
        head.push(b'\n');
    };
    line(BundleLine::Bundle(BundleHeader {
        format: BUNDLE_FORMAT.to_owned(),
        version: 1,
        exported_at: Utc::now(),
        last_sequence: last,
    }));
    let mut listed: Vec<AuditPublicKey> = keys.history;
    if !listed.iter().any(|k| k.key_id == keys.current.key_id) {
        listed.push(keys.current);
    }
    for key in listed {
        line(BundleLine::PublicKey(key));
    }
    for checkpoint in checkpoints {
        line(BundleLine::Checkpoint(checkpoint));
    }
    let head = Bytes::from(head);
    let records = pages(app, actor, AuditQuery::default(), first, Some(last));
    let body = async_stream::try_stream! {
        yield head;
        futures::pin_mut!(records);
        while let Some(records) = futures::StreamExt::next(&mut records).await {
            yield json_lines(&records?);
        }
    };
    Ok(download(
        NDJSON,
        "krisbud-audit-bundle.jsonl",
        stream_body(body),
    ))
}

/// `GET /api/v1/audit/crises/{id}/report?format=json|markdown|html`
pub async fn report(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
    Path(crisis_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if !subject::is_token(&crisis_id) {
        return Err(
            Problem::not_found(format!("there is no crisis with the id {crisis_id:?}")).into(),
        );
    }
    let params = params(raw.as_deref().unwrap_or_default(), &["format"])?;
    let format = match params.get("format") {
        None | Some("json") => ReportFormat::Json,
        Some("markdown" | "md") => ReportFormat::Markdown,
        Some("html") => ReportFormat::Html,
        Some(other) => {
            return Err(invalid_param(
                "format",
                format!("format must be json, markdown or html, not {other}"),
            ));
        }
    };
    let reply: CrisisReportReply = app
        .command(
            subject::cmd::AUDIT_REPORT,
            caller.actor(),
            None,
            CrisisReportQuery { crisis_id, format },
        )
        .await?;
    let media = match format {
        ReportFormat::Json => return Ok(Json(reply.report).into_response()),
        ReportFormat::Markdown => "text/markdown; charset=utf-8",
        ReportFormat::Html => "text/html; charset=utf-8",
    };
    let text = reply.text.ok_or_else(|| {
        ApiError::from(Problem::new(
            502,
            "bad gateway",
            "the audit service answered without the rendered report",
        ))
    })?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(media))],
        text,
    )
        .into_response())
}

/// `POST /api/v1/audit/lookup`: was this person notified? The address travels in
/// the body only (never in a URL, so never in an access log).
pub async fn lookup(
    State(app): State<AppState>,
    caller: Caller<Auditors>,
    JsonBody(lookup): JsonBody<RecipientLookup>,
) -> Result<Json<RecipientLookupAnswer>, ApiError> {
    let answer = app
        .command(subject::cmd::AUDIT_LOOKUP, caller.actor(), None, lookup)
        .await?;
    Ok(Json(answer))
}

/// Every checkpoint covering records up to `last`.
async fn all_checkpoints(
    app: &AppState,
    actor: &Actor,
    last: u64,
) -> Result<Vec<Checkpoint>, ApiError> {
    let mut all = Vec::new();
    let mut from = Some(1);
    while let Some(from_sequence) = from {
        let page: CheckpointPage = app
            .command(
                subject::cmd::AUDIT_CHECKPOINTS,
                actor.clone(),
                None,
                CheckpointQuery {
                    from_sequence: Some(from_sequence),
                    limit: None,
                },
            )
            .await?;
        all.extend(page.checkpoints.into_iter().filter(|c| c.sequence <= last));
        from = page
            .next_sequence
            .filter(|next| *next > from_sequence && *next <= last);
    }
    Ok(all)
}

/// The records of `first` and every page after it, following `next_sequence`;
/// `query.limit` caps the whole export and `until` the last sequence. The first
/// page was fetched before the response started, so a missing audit service
/// still gets a proper 503; a later failure ends the body with an error, which
/// the client sees as a broken transfer rather than a complete-looking file.
fn pages(
    app: AppState,
    actor: Actor,
    mut query: AuditQuery,
    first: AuditPage,
    until: Option<u64>,
) -> impl Stream<Item = std::io::Result<Vec<AuditRecord>>> + Send + 'static {
    // The body is polled after the handler returned, outside the request span, so
    // the later page requests carry the span themselves.
    let span = tracing::Span::current();
    async_stream::try_stream! {
        let mut page = first;
        let mut remaining = query.limit;
        loop {
            let within = until.map_or(page.records.len(), |last| {
                page.records.iter().take_while(|r| r.sequence <= last).count()
            });
            let take = remaining.map_or(within, |r| r.min(within));
            let records: Vec<AuditRecord> = page.records.drain(..take).collect();
            yield records;
            remaining = remaining.map(|r| r - take);
            let Some(next) = page
                .next_sequence
                .filter(|_| remaining != Some(0) && take == within)
                .filter(|next| until.is_none_or(|last| *next <= last))
            else {
                break;
            };
            query.from_sequence = Some(advance(query.from_sequence, next, &span)?);
            query.limit = remaining;
            page = next_page(&app, &actor, &query).instrument(span.clone()).await?;
        }
    }
}

/// Checks that the next page starts after the current one: a page that does not
/// move forward would loop for ever.
fn advance(from: Option<u64>, next: u64, span: &tracing::Span) -> std::io::Result<u64> {
    if next > from.unwrap_or(1) {
        return Ok(next);
    }
    tracing::error!(parent: span, next, "the audit service returned a page that does not advance; export aborted");
    Err(std::io::Error::other("the audit export stopped early"))
}

async fn next_page(
    app: &AppState,
    actor: &Actor,
    query: &AuditQuery,
) -> std::io::Result<AuditPage> {
    app.command(subject::cmd::AUDIT_QUERY, actor.clone(), None, query.clone())
        .await
        .map_err(|e| {
            tracing::error!(status = e.problem.status, detail = %e.problem.detail, "audit export aborted");
            std::io::Error::other("the audit export stopped early")
        })
}

/// Names the stream's error type, which `try_stream!` cannot infer.
fn stream_body(stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Body {
    Body::from_stream(stream)
}

fn download(media: &'static str, name: &str, body: Body) -> Response {
    #[allow(clippy::expect_used, reason = "our own file names are plain ASCII")]
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .expect("a plain file name");
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

fn json_lines(records: &[AuditRecord]) -> Bytes {
    let mut out = Vec::new();
    for record in records {
        #[allow(clippy::expect_used, reason = "a record is JSON already")]
        serde_json::to_writer(&mut out, record).expect("an audit record serializes");
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// CSV rows (RFC 4180, CRLF line ends) of `records`, in [`CSV_COLUMNS`].
pub fn csv_rows(records: &[AuditRecord]) -> Bytes {
    let mut out = String::new();
    for r in records {
        let text = |pointer: &str| {
            r.event
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let payload = match r.event.get("payload") {
            Some(payload) => payload.to_string(),
            None => r.event.to_string(),
        };
        let cells = [
            r.sequence.to_string(),
            r.recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            r.event_sequence.to_string(),
            text("/occurred_at").to_owned(),
            text_cell(text("/kind")),
            text_cell(text("/crisis_id")),
            text_cell(text("/actor/user")),
            text_cell(text("/id")),
            payload,
            r.prev_hash.clone(),
            r.hash.clone(),
        ];
        let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    Bytes::from(out)
}

/// A text cell that a spreadsheet must not take for a formula: one starting with
/// `=`, `+`, `-`, `@`, tab or CR gets a leading `'`.
fn text_cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Query parameters, each at most once, only the known ones.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|value| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        invalid_param(
                            name,
                            format!("{name} must be a whole number of at least 1, not {value}"),
                        )
                    })
            })
            .transpose()
    }

    fn limit(&self) -> Result<Option<usize>, ApiError> {
        Ok(self
            .number("limit")?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name)
            .map(|value| {
                DateTime::parse_from_rfc3339(value)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        invalid_param(
                            name,
                            format!(
                                "{name} must be an RFC 3339 time such as 2026-11-26T08:00:00Z, not {value}"
                            ),
                        )
                    })
            })
            .transpose()
    }
}

fn params(raw: &str, known: &[&str]) -> Result<Params, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|e| {
        ApiError::bad_request(
            "invalid query",
            format!("cannot read the query string: {e}"),
        )
    })?;
    let mut seen = BTreeSet::new();
    for (key, _) in &pairs {
        if !known.contains(&key.as_str()) {
            return Err(invalid_param(
                key,
                format!(
                    "unknown query parameter {key}; the parameters are {}",
                    known.join(", ")
                ),
            ));
        }
        if !seen.insert(key.clone()) {
            return Err(invalid_param(key, format!("{key} is given more than once")));
        }
    }
    Ok(Params(
        pairs
            .into_iter()
            .map(|(k, v)| (k, v.trim().to_owned()))
            .collect(),
    ))
}

/// Reads the audit filters; unknown parameters are refused so a typo does not
/// silently widen an export.
fn query_params(raw: &str) -> Result<(AuditQuery, Format), ApiError> {
    let params = params(
        raw,
        &[
            "crisis",
            "actor",
            "kind",
            "from",
            "to",
            "from_sequence",
            "limit",
            "format",
        ],
    )?;
    let text = |name: &str| params.get(name).map(str::to_owned);
    let query = AuditQuery {
        crisis: text("crisis"),
        actor: text("actor"),
        kind: text("kind"),
        from: params.time("from")?,
        to: params.time("to")?,
        from_sequence: params.number("from_sequence")?,
        limit: params.limit()?,
    };
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from >= to
    {
        return Err(invalid_param("to", "to must be later than from".into()));
    }
    let format = match params.get("format") {
        None | Some("json") => Format::Json,
        Some("jsonl" | "ndjson") => Format::Jsonl,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(invalid_param(
                "format",
                format!("format must be json, jsonl or csv, not {other}"),
            ));
        }
    };
    Ok((query, format))
}

fn invalid_param(name: &str, detail: String) -> ApiError {
    let mut error = ApiError::bad_request("invalid query", detail);
    error.problem.field = Some(name.to_owned());
    error
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn audit_filters_are_read() {
        let (q, f) = query_params(
            "crisis=c1&actor=anna&kind=CrisisDeclared&from=2026-11-26T08:00:00Z&to=2026-11-26T10:00:00%2B01:00&from_sequence=5&limit=10&format=csv",
        )
        .unwrap();
        assert_eq!(q.crisis.as_deref(), Some("c1"));
        assert_eq!(q.actor.as_deref(), Some("anna"));
        assert_eq!(q.kind.as_deref(), Some("CrisisDeclared"));
        assert_eq!(q.from, Some("2026-11-26T08:00:00Z".parse().unwrap()));
        assert_eq!(q.to, Some("2026-11-26T09:00:00Z".parse().unwrap()));
        assert_eq!(q.from_sequence, Some(5));
        assert_eq!(q.limit, Some(10));
        assert_eq!(f, Format::Csv);
        let (q, f) = query_params("crisis=&format=").unwrap();
        assert_eq!(q, AuditQuery::default());
        assert_eq!(f, Format::Json);
        assert_eq!(query_params("format=ndjson").unwrap().1, Format::Jsonl);
    }

    #[test]
    fn bad_audit_filters_name_the_parameter() {
        for (raw, name) in [
            ("limit=ten", "limit"),
            ("limit=0", "limit"),
            ("from_sequence=-1", "from_sequence"),
            ("from=2026-01-01", "from"),
            ("to=igår", "to"),
            ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
            ("format=xml", "format"),
            ("crisis=a&crisis=b", "crisis"),
            ("sort=desc", "sort"),
        ] {
            let error = query_params(raw).unwrap_err();
            assert_eq!(error.problem.status, 400, "{raw}");
            assert_eq!(error.problem.field.as_deref(), Some(name), "{raw}");
        }
    }

    #[test]
    fn csv_rows_quote_and_defuse() {
        let record = AuditRecord {
            sequence: 3,
            recorded_at: "2026-11-26T08:00:00.5Z".parse().unwrap(),
            event_sequence: 9,
            event: json!({
                "id": "e1", "kind": "ChannelConfirmed", "crisis_id": "c1",
                "occurred_at": "2026-11-26T08:00:00Z",
                "actor": {"user": "=HYPERLINK(\"x\")"},
                "payload": {"note": "syns, \"live\"\nnu"}
            }),
            prev_hash: "a".repeat(64),
            chain_id: None,
            hash: "b".repeat(64),
        };
        let text = String::from_utf8(csv_rows(&[record]).to_vec()).unwrap();
        assert_eq!(
            text,
            format!(
                "3,2026-11-26T08:00:00.500Z,9,2026-11-26T08:00:00Z,ChannelConfirmed,c1,\"'=HYPERLINK(\"\"x\"\")\",e1,\"{{\"\"note\"\":\"\"syns, \\\"\"live\\\"\"\\nnu\"\"}}\",{},{}\r\n",
                "a".repeat(64),
                "b".repeat(64)
            )
        );
        let plain = AuditRecord {
            event: json!("inte json"),
            ..serde_json::from_value(json!({
                "sequence": 1, "recorded_at": "2026-11-26T08:00:00Z", "event_sequence": 1,
                "event": null, "prev_hash": "0", "hash": "1"
            }))
            .unwrap()
        };
        let text = String::from_utf8(csv_rows(&[plain]).to_vec()).unwrap();
        assert_eq!(
            text,
            "1,2026-11-26T08:00:00Z,1,,,,,,\"\"\"inte json\"\"\",0,1\r\n"
        );
    }
}
