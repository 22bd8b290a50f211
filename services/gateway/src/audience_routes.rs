//! `/api/v1/audiences`: list, create, show and delete audiences, and replace an
//! audience's members from a CSV file.
//!
//! The CSV body is streamed, never held whole: it is cut at record boundaries
//! (a newline outside quotes) into parts of about [`PART_BYTES`], each sent to the
//! coordinator as one command with its first line number, a few at a time. The
//! coordinator parses and stores each part and, at the commit, removes duplicates
//! and makes the import current. Until the commit the old members stay in force,
//! so a failed upload changes nothing.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use krisbud_proto::audience::{
    Audience, AudienceId, CreateAudience, ImportCommit, ImportPart, ImportReport,
    MAX_REPORTED_ERRORS, PartReport,
};
use krisbud_proto::{Actor, Problem, subject};

use crate::auth::{AudienceAdmins, AudienceReaders, Caller};
use crate::body::JsonBody;
use crate::problem::ApiError;
use crate::state::AppState;

/// The size a CSV part aims at; a part ends at the first record boundary after it.
pub const PART_BYTES: usize = 128 * 1024;
/// A row longer than this means a quote was left open.
const RUNAWAY_BYTES: usize = 8 * PART_BYTES;
/// Parts sent to the coordinator at once.
const PARTS_IN_FLIGHT: usize = 4;
/// How long the commit of a large import may take.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);

/// `GET /api/v1/audiences`
pub async fn list(
    State(app): State<AppState>,
    caller: Caller<AudienceReaders>,
) -> Result<Json<Vec<Audience>>, ApiError> {
    Ok(Json(
        app.command(subject::cmd::LIST_AUDIENCES, caller.actor(), None, ())
            .await?,
    ))
}

/// `GET /api/v1/audiences/{id}`
pub async fn show(
    State(app): State<AppState>,
    caller: Caller<AudienceReaders>,
    Path(id): Path<String>,
) -> Result<Json<Audience>, ApiError> {
    Ok(Json(
        app.command(
            subject::cmd::GET_AUDIENCE,
            caller.actor(),
            None,
            AudienceId { id },
        )
        .await?,
    ))
}

/// `POST /api/v1/audiences`
pub async fn create(
    State(app): State<AppState>,
    caller: Caller<AudienceAdmins>,
    JsonBody(body): JsonBody<CreateAudience>,
) -> Result<Response, ApiError> {
    let audience: Audience = app
        .command(subject::cmd::CREATE_AUDIENCE, caller.actor(), None, body)
        .await?;
    let location = HeaderValue::from_str(&format!("/api/v1/audiences/{}", audience.id))
        .map_err(|_| ApiError::from(Problem::invalid("id", "not usable in a URL")))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(audience),
    )
        .into_response())
}

/// `DELETE /api/v1/audiences/{id}`
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller<AudienceAdmins>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let _: Audience = app
        .command(
            subject::cmd::DELETE_AUDIENCE,
            caller.actor(),
            None,
            AudienceId { id },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/audiences/{id}/members`: replaces the members with the CSV body.
pub async fn import(
    State(app): State<AppState>,
    caller: Caller<AudienceAdmins>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default().to_ascii_lowercase();
        if !(kind.starts_with("text/csv")
            || kind.starts_with("text/plain")
            || kind.starts_with("application/octet-stream"))
        {
            return Err(ApiError::from(Problem::new(
                415,
                "unsupported media type",
                "send the members as text/csv: a header line (phone,email,language,name,external_id) and one line per person",
            )));
        }
    }
    Ok(Json(
        import_members(&app, caller.actor(), id, body.into_data_stream()).await?,
    ))
}

/// Replaces the members of audience `id` with the CSV read from `stream`, as
/// `actor` (the API's upload and the console's): split into parts at row ends,
/// checked and stored part by part, committed at the end; nothing changes when
/// the upload fails part-way.
pub(crate) async fn import_members<S, E>(
    app: &AppState,
    actor: Actor,
    id: String,
    mut stream: S,
) -> Result<ImportReport, ApiError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // 404 before reading a byte of a large file.
    let _: Audience = app
        .command(
            subject::cmd::GET_AUDIENCE,
            actor.clone(),
            None,
            AudienceId { id: id.clone() },
        )
        .await?;
    let generation = rand::random::<u32>().max(1);
    let mut splitter = Splitter::default();
    let mut sent = FuturesUnordered::new();
    let mut reports: Vec<(u64, PartReport)> = Vec::new();
    let mut parts = 0u32;
    let mut header: Option<String> = None;
    let mut total_bytes = 0usize;
    loop {
        let chunk = match stream.next().await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(e)) => {
                return Err(ApiError::bad_request(
                    "unreadable body",
                    format!("the upload broke off: {e}"),
                ));
            }
            None => None,
        };
        let done = chunk.is_none();
        if let Some(chunk) = chunk {
            total_bytes += chunk.len();
            if total_bytes > app.members_limit_bytes {
                return Err(ApiError::from(Problem::new(
                    413,
                    "payload too large",
                    format!(
                        "the file is larger than {} MB; split the audience",
                        app.members_limit_bytes / (1024 * 1024)
                    ),
                )));
            }
            splitter.push(&chunk);
        }
        if splitter.runaway() {
            return Err(ApiError::from(Problem::invalid(
                "csv",
                format!(
                    "line {}: no row ends within {} KB; a quote (\") is probably never closed",
                    splitter.line.max(1),
                    RUNAWAY_BYTES / 1024
                ),
            )));
        }
        while let Some((first_line, bytes)) = splitter.next_piece(done) {
            let text = utf8(first_line, bytes)?;
            let csv = match header {
                None => {
                    // The first record is the header.
                    let (head, rest) = split_first_record(&text);
                    header = Some(head.trim_end_matches(['\r', '\n']).to_owned());
                    rest.to_owned()
                }
                Some(_) => text,
            };
            let skipped = if parts == 0 {
                1 + header
                    .as_deref()
                    .map_or(0, |h| h.matches('\n').count() as u64)
            } else {
                0
            };
            let part = ImportPart {
                audience: id.clone(),
                generation,
                part: parts,
                header: header.clone().unwrap_or_default(),
                first_line: first_line + skipped,
                csv,
            };
            parts += 1;
            sent.push(send_part(app, actor.clone(), part));
            while sent.len() >= PARTS_IN_FLIGHT {
                let Some(report) = sent.next().await else {
                    break;
                };
                reports.push(report?);
            }
        }
        if done {
            break;
        }
    }
    while let Some(report) = sent.next().await {
        reports.push(report?);
    }
    if header.is_none() {
        return Err(ApiError::from(Problem::invalid(
            "csv",
            "the file is empty; the first line must name the columns (phone,email,language,name,external_id)",
        )));
    }
    reports.sort_by_key(|(first_line, _)| *first_line);
    let mut rows = 0;
    let mut rejected = 0;
    let mut errors = Vec::new();
    for (_, report) in reports {
        rows += report.rows;
        rejected += report.rejected;
        errors.extend(report.errors);
    }
    errors.truncate(MAX_REPORTED_ERRORS);
    let mut report: ImportReport = app
        .command_with_timeout(
            subject::cmd::IMPORT_COMMIT,
            actor,
            ImportCommit {
                audience: id,
                generation,
                parts,
                rows,
                rejected,
            },
            COMMIT_TIMEOUT.max(app.request_timeout),
        )
        .await?;
    // The refused rows of every part, then the duplicates the commit left out,
    // in line order.
    errors.append(&mut report.errors);
    errors.sort_by_key(|e| e.line);
    errors.truncate(MAX_REPORTED_ERRORS);
    report.errors = errors;
    Ok(report)
}

async fn send_part(
    app: &AppState,
    actor: Actor,
    part: ImportPart,
) -> Result<(u64, PartReport), ApiError> {
    let first_line = part.first_line;
    let report = app
        .command(subject::cmd::IMPORT_PART, actor, None, part)
        .await?;
    Ok((first_line, report))
}

fn utf8(first_line: u64, bytes: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .unwrap_or_default();
        let line = first_line + valid.iter().filter(|b| **b == b'\n').count() as u64;
        ApiError::from(Problem::invalid(
            "csv",
            format!("line {line} is not UTF-8 text; save the file as UTF-8 CSV"),
        ))
    })
}

/// The first record of `text` (up to a newline outside quotes) and the rest.
fn split_first_record(text: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => return (&text[..=i], &text[i + 1..]),
            _ => {}
        }
    }
    (text, "")
}

/// The end (exclusive) of the first record that ends at or past `min` bytes into
/// `buffer`, which starts at a record boundary.
fn first_boundary_from(buffer: &[u8], min: usize) -> Option<usize> {
    if buffer.len() < min {
        return None;
    }
    let mut quoted = false;
    for (i, b) in buffer.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted && i + 1 >= min => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Cuts a byte stream into pieces of whole CSV records.
#[derive(Default)]
struct Splitter {
    buffer: Vec<u8>,
    /// How far `buffer` has been scanned, and the quote state there.
    scanned: usize,
    quoted: bool,
    /// The end of the last record boundary found in `buffer`.
    boundary: usize,
    /// The file line `buffer` starts at.
    line: u64,
}

impl Splitter {
    fn push(&mut self, bytes: &[u8]) {
        if self.line == 0 {
            self.line = 1;
        }
        self.buffer.extend_from_slice(bytes);
        #[allow(
            clippy::indexing_slicing,
            reason = "`scanned` never passes the buffer's end"
        )]
        for (i, b) in self.buffer[self.scanned..].iter().enumerate() {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => self.boundary = self.scanned + i + 1,
                _ => {}
            }
        }
        self.scanned = self.buffer.len();
    }

    /// Whether more than [`RUNAWAY_BYTES`] have gathered without a record ending.
    fn runaway(&self) -> bool {
        self.boundary == 0 && self.buffer.len() > RUNAWAY_BYTES
    }

    /// The next piece and the line it starts at: whole records once about
    /// [`PART_BYTES`] have gathered, or whatever is left at the end.
    fn next_piece(&mut self, done: bool) -> Option<(u64, Vec<u8>)> {
        // The first record boundary at or past PART_BYTES, not the last one in the
        // buffer: a large read must not make one oversized part.
        let cut = match first_boundary_from(&self.buffer, PART_BYTES) {
            Some(cut) => cut,
            None if done && !self.buffer.is_empty() => self.buffer.len(),
            None => return None,
        };
        let rest = self.buffer.split_off(cut);
        let piece = std::mem::replace(&mut self.buffer, rest);
        let first_line = self.line.max(1);
        self.line = first_line + piece.iter().filter(|b| **b == b'\n').count() as u64;
        self.scanned -= cut;
        self.boundary = self.boundary.saturating_sub(cut);
        Some((first_line, piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_at_record_boundaries_outside_quotes() {
        let mut text = String::from("name,phone\n");
        for i in 0..20_000 {
            text.push_str(&format!("\"Namn\n{i}\",070{i:07}\n"));
        }
        let mut splitter = Splitter::default();
        let mut pieces = Vec::new();
        for chunk in text.as_bytes().chunks(7_919) {
            splitter.push(chunk);
            while let Some(piece) = splitter.next_piece(false) {
                pieces.push(piece);
            }
        }
        while let Some(piece) = splitter.next_piece(true) {
            pieces.push(piece);
        }
        assert!(pieces.len() > 2);
        let mut line = 1;
        let mut joined = Vec::new();
        for (first_line, piece) in &pieces {
            assert_eq!(*first_line, line);
            assert!(piece.ends_with(b"\n"));
            // Every piece holds whole records: an even number of quotes.
            assert_eq!(piece.iter().filter(|b| **b == b'"').count() % 2, 0);
            line += piece.iter().filter(|b| **b == b'\n').count() as u64;
            joined.extend_from_slice(piece);
        }
        assert_eq!(joined, text.as_bytes());
    }

    #[test]
    fn a_large_read_still_makes_parts_of_about_part_bytes() {
        let mut text = String::new();
        for i in 0..80_000 {
            text.push_str(&format!("070{i:07},sv\n"));
        }
        let mut splitter = Splitter::default();
        splitter.push(text.as_bytes());
        let mut pieces = Vec::new();
        while let Some(piece) = splitter.next_piece(true) {
            pieces.push(piece);
        }
        assert!(pieces.len() >= 7, "{}", pieces.len());
        for (_, piece) in &pieces {
            assert!(piece.len() <= PART_BYTES + 16, "{}", piece.len());
        }
        let joined: Vec<u8> = pieces.into_iter().flat_map(|(_, p)| p).collect();
        assert_eq!(joined, text.as_bytes());
    }

    #[test]
    fn the_header_is_the_first_record() {
        assert_eq!(
            split_first_record("phone,email\n070,a@b.se\n"),
            ("phone,email\n", "070,a@b.se\n")
        );
        assert_eq!(split_first_record("phone"), ("phone", ""));
    }
}
