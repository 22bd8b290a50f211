//! One part of a member import read: the CSV header mapped to columns (English
//! or Swedish names), each row turned into a normalised member (E.164 phone
//! numbers, checked email addresses, canonical language tags) or a row error
//! naming the line and column, never the value.

use krisbud_kit::privacy;
use krisbud_proto::Problem;
use krisbud_proto::audience::{ImportPart, MAX_REPORTED_ERRORS, Member, PartReport, RowError};
use krisbud_proto::language;

/// Longest name and external id accepted, in characters.
pub(super) const MAX_NAME: usize = 200;
const MAX_EXTERNAL_ID: usize = 100;

/// A CSV column krisbud knows, by its English or Swedish header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Phone,
    Email,
    Language,
    Name,
    ExternalId,
}

impl Column {
    fn from_header(header: &str) -> Option<Column> {
        let h = header.trim().trim_start_matches('\u{feff}').to_lowercase();
        Some(match h.as_str() {
            "phone" | "telefon" | "mobil" | "mobile" | "mobilnummer" | "telefonnummer" => {
                Column::Phone
            }
            "email" | "e-mail" | "e-post" | "epost" | "mail" => Column::Email,
            "language" | "lang" | "språk" | "sprak" => Column::Language,
            "name" | "namn" => Column::Name,
            "external_id" | "external id" | "externt_id" | "externt id" | "id" => {
                Column::ExternalId
            }
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Column::Phone => "phone",
            Column::Email => "email",
            Column::Language => "language",
            Column::Name => "name",
            Column::ExternalId => "external_id",
        }
    }
}

/// The columns of a header record, or a problem naming what is wrong with it.
fn columns(header: &str) -> Result<Vec<Column>, Problem> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(header.as_bytes());
    let record = reader
        .records()
        .next()
        .transpose()
        .map_err(|e| Problem::invalid("csv", format!("line 1: the header cannot be read: {e}")))?
        .ok_or_else(|| {
            Problem::invalid(
                "csv",
                "the file is empty; the first line must name the columns",
            )
        })?;
    let mut out = Vec::new();
    for (i, name) in record.iter().enumerate() {
        let column = Column::from_header(name).ok_or_else(|| {
            Problem::invalid(
                "csv",
                format!(
                    "line 1, column {}: unknown column `{}`; the columns are phone, email, language, name and external_id",
                    i + 1,
                    name.trim()
                ),
            )
        })?;
        if out.contains(&column) {
            return Err(Problem::invalid(
                "csv",
                format!("line 1: the column `{}` appears twice", column.name()),
            ));
        }
        out.push(column);
    }
    if !out.contains(&Column::Phone) && !out.contains(&Column::Email) {
        return Err(Problem::invalid(
            "csv",
            "line 1: the file needs a `phone` or an `email` column (or both)",
        ));
    }
    Ok(out)
}

/// Parses one part: the members it holds and its bad rows.
pub(super) fn parse_part(part: &ImportPart) -> Result<(Vec<Member>, PartReport), Problem> {
    let columns = columns(&part.header)?;
    if let Some(line) = unclosed_quote(&part.csv) {
        // The CSV reader would take the rest of the file as one field.
        return Err(Problem::invalid(
            "csv",
            format!(
                "line {}: a quote (\") opens here and is never closed",
                part.first_line + line - 1
            ),
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(part.csv.as_bytes());
    let mut members = Vec::new();
    let mut report = PartReport::default();
    let mut record = csv::StringRecord::new();
    loop {
        let line = part.first_line + reader.position().line().saturating_sub(1);
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                report.rows += 1;
                let line = part.first_line + record.position().map_or(1, |p| p.line()) - 1;
                match member(&columns, &record) {
                    Ok(mut member) => {
                        report.accepted += 1;
                        member.line = Some(line);
                        members.push(member);
                    }
                    Err((column, reason)) => {
                        report.rejected += 1;
                        if report.errors.len() < MAX_REPORTED_ERRORS {
                            report.errors.push(RowError {
                                line,
                                column: column.map(|c| c.name().to_owned()),
                                reason,
                            });
                        }
                    }
                }
            }
            Err(e) => {
                let line = e
                    .position()
                    .map_or(line, |p| part.first_line + p.line() - 1);
                // The reader cannot resynchronise after a broken quote; refuse the
                // file rather than guess where the next row begins.
                return Err(Problem::invalid(
                    "csv",
                    format!(
                        "line {line}: the row cannot be read as CSV: {}",
                        csv_reason(&e)
                    ),
                ));
            }
        }
    }
    Ok((members, report))
}

/// The line (from 1) of a quote that is still open at the end of `csv`.
fn unclosed_quote(csv: &str) -> Option<u64> {
    let mut line = 1;
    let mut opened = None;
    for b in csv.bytes() {
        match b {
            b'"' => opened = if opened.is_some() { None } else { Some(line) },
            b'\n' => line += 1,
            _ => {}
        }
    }
    opened
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "it is not UTF-8 text".to_owned(),
        _ => e.to_string(),
    }
}

/// One row as a member, or the column and reason it is refused for.
fn member(
    columns: &[Column],
    record: &csv::StringRecord,
) -> Result<Member, (Option<Column>, String)> {
    if record.len() != columns.len() {
        return Err((
            None,
            format!(
                "the row has {} fields but the header names {}",
                record.len(),
                columns.len()
            ),
        ));
    }
    let mut member = Member {
        phone: None,
        email: None,
        language: None,
        name: None,
        external_id: None,
        line: None,
    };
    for (column, value) in columns.iter().zip(record.iter()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if value.chars().any(char::is_control) {
            return Err((Some(*column), "contains a control character".to_owned()));
        }
        let refuse = |why: &str| (Some(*column), why.to_owned());
        match column {
            Column::Phone => {
                member.phone = Some(privacy::normalise_phone(value).map_err(refuse)?);
            }
            Column::Email => {
                member.email = Some(privacy::normalise_email(value).map_err(refuse)?);
            }
            Column::Language => {
                member.language = Some(language::normalise(value).map_err(refuse)?);
            }
            Column::Name => {
                if value.chars().count() > MAX_NAME {
                    return Err((Some(*column), format!("longer than {MAX_NAME} characters")));
                }
                member.name = Some(value.to_owned());
            }
            Column::ExternalId => {
                if value.chars().count() > MAX_EXTERNAL_ID {
                    return Err((
                        Some(*column),
                        format!("longer than {MAX_EXTERNAL_ID} characters"),
                    ));
                }
                member.external_id = Some(value.to_owned());
            }
        }
    }
    if member.phone.is_none() && member.email.is_none() {
        return Err((
            None,
            "the row has neither a phone number nor an email address".to_owned(),
        ));
    }
    Ok(member)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(header: &str, csv: &str, first_line: u64) -> ImportPart {
        ImportPart {
            audience: "a".into(),
            generation: 1,
            part: 0,
            header: header.into(),
            first_line,
            csv: csv.into(),
        }
    }

    /// A row of plausible and hostile cells: numbers in every form, addresses,
    /// tags, quotes, separators, a BOM, control and non-Latin characters.
    fn cell() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            proptest::string::string_regex("(\\+46|0)7[0-9 -]{0,12}").unwrap(),
            proptest::string::string_regex("[a-zåäö.]{1,8}@[a-z]{1,6}\\.se").unwrap(),
            proptest::string::string_regex("(sv|en|fa-IR|sv-x-lattlast|x{1,9})").unwrap(),
            proptest::string::string_regex("[\"',;\\r\\n\u{feff}\u{0}\u{7f}ж漢😀 ]{0,6}").unwrap(),
            proptest::string::string_regex(".{0,20}").unwrap(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_000))]

        /// Whatever a file holds, a part is read without a panic: either refused
        /// whole, naming a line of the part, or every row counted exactly once as
        /// a member or a refusal on a line of the part.
        #[test]
        fn any_part_is_counted_or_refused_naming_a_line(
            rows in proptest::collection::vec(proptest::collection::vec(cell(), 0..6), 0..40),
            first_line in 1u64..1_000_000,
        ) {
            let csv: String = rows
                .iter()
                .map(|r| r.join(","))
                .collect::<Vec<_>>()
                .join("\n");
            let last_line = first_line + csv.lines().count() as u64 + 1;
            match parse_part(&part("phone,email,language,name,external_id", &csv, first_line)) {
                Ok((members, report)) => {
                    proptest::prop_assert_eq!(report.rows, report.accepted + report.rejected);
                    proptest::prop_assert_eq!(members.len() as u64, report.accepted);
                    for error in &report.errors {
                        proptest::prop_assert!(
                            (first_line..=last_line).contains(&error.line),
                            "line {} outside {}..={}", error.line, first_line, last_line
                        );
                    }
                    for member in &members {
                        if let Some(phone) = &member.phone {
                            proptest::prop_assert!(phone.starts_with('+'), "{}", phone);
                        }
                    }
                }
                Err(problem) => {
                    proptest::prop_assert_eq!(problem.field.as_deref(), Some("csv"));
                    proptest::prop_assert!(problem.detail.starts_with("line "), "{}", problem.detail);
                }
            }
        }

        /// Any header is either read or refused naming what is wrong, never a panic.
        #[test]
        fn any_header_is_read_or_refused(header in ".{0,60}") {
            let _ = parse_part(&part(&header, "0701234567", 1));
        }
    }
}
