//! The audit hash chain: how a record's hash is computed and how a chain is
//! verified. Pure functions, so the CLI can verify an export offline.
//!
//! # The record and its hash (normative)
//!
//! The chain is the sequence of messages on subject `krisbud.audit.log` in stream
//! `KRISBUD_AUDIT`, one record per event of `KRISBUD_EVENTS`, in the events' stream
//! order. An export is the same records as JSON lines (one record object per line,
//! UTF-8, `\n` or `\r\n` line ends; blank lines are ignored). A record is a JSON
//! object with these members:
//!
//! | member | value |
//! |---|---|
//! | `sequence` | the record's position, 1 for the first, then +1 without gaps; equal to its stream sequence in `KRISBUD_AUDIT` |
//! | `recorded_at` | when the audit service recorded it: RFC 3339, UTC, written with `Z` and 0, 3, 6 or 9 fraction digits |
//! | `event_sequence` | the event's stream sequence in `KRISBUD_EVENTS`; strictly increasing along the chain |
//! | `event` | the event's envelope, the JSON value of the message body as appended; a body that is not JSON is recorded as a JSON string holding the body (invalid UTF-8 replaced by U+FFFD) |
//! | `prev_hash` | the `hash` of the record before; for record 1, 64 zeros (`GENESIS_HASH`) |
//! | `hash` | lowercase hex SHA-256 (64 digits) of the canonical JSON of the record object without its `hash` member |
//!
//! The canonical JSON of a value is UTF-8 text without any insignificant
//! whitespace:
//! - an object is `{`, its members ordered by key in ascending byte order of the
//!   keys' UTF-8 encoding, each member written as its key (a string), `:` and its
//!   value, separated by `,`, then `}`;
//! - an array is `[`, its elements in order separated by `,`, then `]`;
//! - a string is `"`, its characters as UTF-8, then `"`, where `"` is written `\"`,
//!   `\` is `\\`, U+0008 `\b`, U+0009 `\t`, U+000A `\n`, U+000C `\f`, U+000D `\r`,
//!   every other character below U+0020 `\u00XX` with two lower-case hex digits,
//!   and every other character (including `/`, U+007F and all non-ASCII) as itself;
//! - an integer (a number written without fraction or exponent that fits a 64-bit
//!   signed or unsigned integer) is written in decimal, with `-` when negative and
//!   without leading zeros;
//! - any other number is an IEEE 754 double (krisbud's events hold none; this
//!   is for completeness), written with the shortest digits that read back as the
//!   same double: with decimal exponent `e` (value = d.ddd × 10^e) from -5 to 15
//!   in plain notation with at least one fraction digit (`0.00001`, `1.5`,
//!   `1000000000000000.0`), otherwise as digits, `e`, sign and exponent
//!   (`1e+16`, `1.5e-7`, `5e-324`); negative zero is `-0.0`;
//! - `true`, `false` and `null` as themselves.
//!
//! So the hashed text of a record is
//! `{"event":…,"event_sequence":N,"prev_hash":"…","recorded_at":"…","sequence":N}`.
//! A record's hash covers its predecessor's hash, so changing, removing, inserting
//! or reordering any record breaks the chain from that record on.
//!
//! # Verification
//!
//! [`verify`] reads the records in order and stops at the first problem:
//! - `unreadable`: a line or message that is not a record;
//! - `hash mismatch`: the recomputed hash differs from the stored `hash`;
//! - `gap`: the record's `sequence` is not the previous one + 1 (1 for the first):
//!   a record is missing, or records are out of order;
//! - `broken link`: `prev_hash` differs from the previous record's `hash`.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use krisbud_proto::audit::{AuditRecord, GENESIS_HASH, VerifyFailure, VerifyReport};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Problem word: the recomputed hash differs from the stored one.
pub const HASH_MISMATCH: &str = "hash mismatch";
/// Problem word: `prev_hash` is not the previous record's hash.
pub const BROKEN_LINK: &str = "broken link";
/// Problem word: a sequence is missing or out of order.
pub const GAP: &str = "gap";
/// Problem word: the line or message is not a record.
pub const UNREADABLE: &str = "unreadable";

/// A new record linked to `prev_hash`, with its hash computed.
pub fn seal(
    sequence: u64,
    recorded_at: DateTime<Utc>,
    event_sequence: u64,
    event: Value,
    prev_hash: String,
) -> AuditRecord {
    let mut record = AuditRecord {
        sequence,
        recorded_at,
        event_sequence,
        event,
        prev_hash,
        hash: String::new(),
    };
    record.hash = record_hash(&record);
    record
}

/// The hash `record` must carry: lowercase hex SHA-256 of the canonical JSON of
/// the record without its `hash` member (see the module docs).
pub fn record_hash(record: &AuditRecord) -> String {
    let mut value = serde_json::to_value(record).expect("a record is JSON");
    if let Value::Object(members) = &mut value {
        members.remove("hash");
    }
    hex::encode(Sha256::digest(canonical_json(&value)))
}

/// The canonical JSON text of `value` (see the module docs).
///
/// Written out here rather than relying on `serde_json::Value`'s map being sorted:
/// that holds only while no crate in the build enables serde_json's
/// `preserve_order` feature, and the chain must not change with a dependency.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            // `str`'s ordering is the byte order of its UTF-8 encoding.
            sorted.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            out.push(b'{');
            for (i, (key, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(elements) => {
            out.push(b'[');
            for (i, element) in elements.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(element, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// Strings, numbers, booleans and null exactly as serde_json writes them, which
/// is what the module docs specify.
fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
}

/// Checks a chain given in order from record 1; see the module docs for the
/// problems it finds. `Err` items are records that could not be read, with why.
///
/// Stops at the first problem: `checked` then counts the records read, the bad one
/// included, and `head` is the hash of the last good record.
pub fn verify<I: Iterator<Item = Result<AuditRecord, String>>>(records: I) -> VerifyReport {
    let mut verifier = Verifier::default();
    for item in records {
        if !verifier.check(item) {
            break;
        }
    }
    verifier.report()
}

/// [`verify`] one record at a time, for chains read from a stream that should not
/// be held in memory at once.
#[derive(Debug, Default)]
pub struct Verifier {
    checked: u64,
    /// Sequence and hash of the last good record.
    previous: Option<(u64, String)>,
    failure: Option<VerifyFailure>,
}

impl Verifier {
    /// Checks the next record; false once a problem was found (further records
    /// are then ignored).
    pub fn check(&mut self, item: Result<AuditRecord, String>) -> bool {
        if self.failure.is_some() {
            return false;
        }
        self.checked += 1;
        match self.problem(item) {
            Ok(record) => {
                self.previous = Some((record.sequence, record.hash));
                true
            }
            Err(failure) => {
                self.failure = Some(failure);
                false
            }
        }
    }

    /// What was found so far.
    pub fn report(self) -> VerifyReport {
        VerifyReport {
            checked: self.checked,
            ok: self.failure.is_none(),
            first_bad: self.failure,
            head: self.previous.map(|(_, hash)| hash),
        }
    }

    fn problem(&self, item: Result<AuditRecord, String>) -> Result<AuditRecord, VerifyFailure> {
        let expected = self
            .previous
            .as_ref()
            .map_or(1, |(sequence, _)| sequence + 1);
        let fail = |sequence: u64, problem: &str, detail: String| VerifyFailure {
            sequence,
            problem: problem.to_owned(),
            detail,
        };
        let record = item.map_err(|why| {
            fail(
                expected,
                UNREADABLE,
                format!("record {expected} cannot be read: {why}"),
            )
        })?;
        let computed = record_hash(&record);
        if computed != record.hash {
            return Err(fail(
                record.sequence,
                HASH_MISMATCH,
                format!(
                    "record {} stores hash {} but its content hashes to {computed}: the record was changed",
                    record.sequence, record.hash
                ),
            ));
        }
        if record.sequence != expected {
            return Err(fail(
                expected,
                GAP,
                format!(
                    "expected record {expected} but found record {}: records are missing or out of order",
                    record.sequence
                ),
            ));
        }
        let expected_link = self
            .previous
            .as_ref()
            .map_or(GENESIS_HASH, |(_, hash)| hash.as_str());
        if record.prev_hash != expected_link {
            return Err(fail(
                record.sequence,
                BROKEN_LINK,
                format!(
                    "record {} has prev_hash {} but the record before it hashes to {expected_link}",
                    record.sequence, record.prev_hash
                ),
            ));
        }
        Ok(record)
    }
}

/// Verifies a JSON-lines export (one record per line) without any server.
/// Fails only when the file cannot be opened; unreadable lines are reported.
pub fn verify_file(path: &Path) -> anyhow::Result<VerifyReport> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open audit export {}", path.display()))?;
    let records = BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(index, line)| {
            let number = index + 1;
            let line = line.map_err(|e| format!("line {number}: {e}"))?;
            serde_json::from_str::<AuditRecord>(&line).map_err(|e| format!("line {number}: {e}"))
        });
    Ok(verify(records))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let at: DateTime<Utc> = "2026-03-01T10:00:00.123Z".parse().unwrap();
        let mut records: Vec<AuditRecord> = Vec::new();
        for i in 1..=n {
            let prev = records
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            records.push(seal(i, at, i * 2, json!({"kind": "Test", "n": i}), prev));
        }
        records
    }

    #[test]
    fn canonical_json_sorts_keys_by_bytes_and_escapes_like_the_spec() {
        let value = json!({
            "b": 1, "a": [true, null, -3, 0.5], "Z": "x", "é": "ü",
            "s": "q\"b\\s/\u{7f}\u{1}\n\t\r\u{8}\u{c}"
        });
        let text = String::from_utf8(canonical_json(&value)).unwrap();
        assert_eq!(
            text,
            r#"{"Z":"x","a":[true,null,-3,0.5],"b":1,"s":"q\"b\\s/"#.to_owned()
                + "\u{7f}"
                + r#"\u0001\n\t\r\b\f","é":"ü"}"#
        );
        assert_eq!(
            String::from_utf8(canonical_json(&json!([
                1e16, 1e15, 1.5e-7, 0.00001, -0.0, 1.0
            ])))
            .unwrap(),
            "[1e+16,1000000000000000.0,1.5e-7,0.00001,-0.0,1.0]"
        );
    }

    /// Pins the encoding: if this hash changes, every existing chain breaks.
    #[test]
    fn a_known_record_has_a_known_hash() {
        let record = seal(
            1,
            "2026-03-01T10:00:00Z".parse().unwrap(),
            7,
            json!({"id": "e1", "kind": "ChannelConfirmed", "payload": {"channel": "banner"}}),
            GENESIS_HASH.to_owned(),
        );
        let text = r#"{"event":{"id":"e1","kind":"ChannelConfirmed","payload":{"channel":"banner"}},"event_sequence":7,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","recorded_at":"2026-03-01T10:00:00Z","sequence":1}"#;
        assert_eq!(record.hash, hex::encode(Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let records = chain(5);
        let report = verify(records.iter().cloned().map(Ok));
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checked, 5);
        assert_eq!(report.head.as_deref(), Some(records[4].hash.as_str()));
        assert_eq!(
            verify(std::iter::empty()),
            VerifyReport {
                checked: 0,
                ok: true,
                first_bad: None,
                head: None
            }
        );
    }

    #[test]
    fn each_kind_of_damage_is_found_at_its_record() {
        let problem = |records: Vec<Result<AuditRecord, String>>| {
            let failure = verify(records.into_iter()).first_bad.expect("a problem");
            (failure.sequence, failure.problem)
        };
        let ok = |records: &[AuditRecord]| records.iter().cloned().map(Ok).collect::<Vec<_>>();

        let mut changed = chain(5);
        changed[2].event["n"] = json!(99);
        assert_eq!(problem(ok(&changed)), (3, HASH_MISMATCH.into()));

        let mut missing = chain(5);
        missing.remove(1);
        assert_eq!(problem(ok(&missing)), (2, GAP.into()));

        let mut swapped = chain(5);
        swapped.swap(2, 3);
        assert_eq!(problem(ok(&swapped)), (3, GAP.into()));

        // Rehashed after changing the link: only the link gives it away.
        let mut relinked = chain(5);
        relinked[3].prev_hash = "ab".repeat(32);
        relinked[3].hash = record_hash(&relinked[3]);
        assert_eq!(problem(ok(&relinked)), (4, BROKEN_LINK.into()));

        let mut unreadable = ok(&chain(3));
        unreadable[1] = Err("line 2: expected value".into());
        assert_eq!(problem(unreadable), (2, UNREADABLE.into()));
    }
}
