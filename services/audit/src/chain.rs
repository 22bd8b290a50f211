//! The audit hash chain: how a record's hash is computed and how a chain is
//! verified. Pure functions, so the CLI can verify an export offline.
//!
//! The record, its hash and the problems verification reports are specified in
//! `docs/audit-format.md`, the one description; `Hashed::digest` here is the
//! one implementation of a record's hashed text, and [`canonical_json`] of the
//! canonical JSON it is built from.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::VerifyingKey;
use krisbud_proto::audit::{
    AuditKeyRotated, AuditRecord, ChainPoint, Checkpoint, GENESIS_HASH, SIGNATURE_ALGORITHM,
    UnsignedTail, VerifyFailure, VerifyReport,
};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::signing;

/// Problem word: the recomputed hash differs from the stored one.
pub const HASH_MISMATCH: &str = "hash mismatch";
/// Problem word: `prev_hash` is not the previous record's hash.
pub const BROKEN_LINK: &str = "broken link";
/// Problem word: a sequence is missing or out of order.
pub const GAP: &str = "gap";
/// Problem word: the line or message is not a record.
pub const UNREADABLE: &str = "unreadable";
/// Problem word: a checkpoint or key endorsement is not validly signed.
pub const BAD_SIGNATURE: &str = "bad signature";
/// Problem word: a validly signed checkpoint names another hash for the record.
pub const CHECKPOINT_MISMATCH: &str = "checkpoint mismatch";
/// Problem word: an event of KRISBUD_EVENTS that the recorder acknowledged has no
/// record (found by the completeness check of the live stream).
pub const MISSING_RECORD: &str = "missing record";
/// The chain differs from a point an auditor saved earlier (`verify --since`):
/// it was rebuilt or rewritten after that point was saved.
pub const NOT_THE_SAVED_CHAIN: &str = "not the saved chain";

/// The `kind` of the event that registers a signing key.
pub const KEY_ROTATED_KIND: &str = "AuditKeyRotated";

/// A new record linked to `prev_hash`, with its hash computed.
pub fn seal(
    sequence: u64,
    recorded_at: DateTime<Utc>,
    event_sequence: u64,
    event: Value,
    prev_hash: String,
) -> AuditRecord {
    seal_with_id(
        sequence,
        recorded_at,
        event_sequence,
        event,
        prev_hash,
        None,
    )
}

/// [`seal`] with the chain's id, which record 1 carries (see [`new_chain_id`]).
pub fn seal_with_id(
    sequence: u64,
    recorded_at: DateTime<Utc>,
    event_sequence: u64,
    event: Value,
    prev_hash: String,
    chain_id: Option<String>,
) -> AuditRecord {
    let mut record = AuditRecord {
        sequence,
        recorded_at,
        event_sequence,
        event,
        prev_hash,
        chain_id,
        hash: String::new(),
    };
    record.hash = record_hash(&record);
    record
}

/// A new chain's id: 128 random bits as 32 hex digits.
pub fn new_chain_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The hash `record` must carry: lowercase hex SHA-256 of the canonical JSON of
/// the record without its `hash` member (see docs/audit-format.md).
pub fn record_hash(record: &AuditRecord) -> String {
    let mut buffer = Vec::with_capacity(1024);
    hex::encode(record_digest(record, &mut buffer))
}

/// [`record_hash`] as raw bytes, writing the canonical text into `buffer` (which
/// is cleared first) so a verifier can reuse one allocation for every record.
///
/// The record object's members are written in their canonical (sorted) order
/// directly instead of building a JSON value of the record: verifying millions of
/// records must not copy each event.
pub fn record_digest(record: &AuditRecord, buffer: &mut Vec<u8>) -> [u8; 32] {
    let fields = Hashed {
        chain_id: record.chain_id.as_deref(),
        event_sequence: record.event_sequence,
        prev_hash: &record.prev_hash,
        recorded_at: &record.recorded_at,
        sequence: record.sequence,
    };
    fields.digest(buffer, |out| write_canonical(&record.event, out))
}

/// A record's members other than `event`, as they enter its hash.
struct Hashed<'a> {
    chain_id: Option<&'a str>,
    event_sequence: u64,
    prev_hash: &'a str,
    recorded_at: &'a DateTime<Utc>,
    sequence: u64,
}

impl Hashed<'_> {
    /// The one definition of the hashed text of a record (docs/audit-format.md):
    /// its members in canonical order, `write_event` writing the event's
    /// canonical JSON, then SHA-256 of it all. `buffer` is cleared first.
    fn digest(&self, buffer: &mut Vec<u8>, write_event: impl FnOnce(&mut Vec<u8>)) -> [u8; 32] {
        buffer.clear();
        buffer.push(b'{');
        if let Some(chain_id) = self.chain_id {
            buffer.extend_from_slice(b"\"chain_id\":");
            write_string(chain_id, buffer);
            buffer.push(b',');
        }
        buffer.extend_from_slice(b"\"event\":");
        write_event(buffer);
        buffer.extend_from_slice(b",\"event_sequence\":");
        buffer.extend_from_slice(self.event_sequence.to_string().as_bytes());
        buffer.extend_from_slice(b",\"prev_hash\":");
        write_string(self.prev_hash, buffer);
        buffer.extend_from_slice(b",\"recorded_at\":");
        write_string(
            &self
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            buffer,
        );
        buffer.extend_from_slice(b",\"sequence\":");
        buffer.extend_from_slice(self.sequence.to_string().as_bytes());
        buffer.push(b'}');
        Sha256::digest(&buffer[..]).into()
    }
}

/// The canonical JSON text of `value` (see docs/audit-format.md).
///
/// Written out here rather than relying on `serde_json::Value`'s map being sorted:
/// that holds only while no crate in the build enables serde_json's
/// `preserve_order` feature, and the chain must not change with a dependency.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical JSON text of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(members) => {
            out.push(b'{');
            // Usually the map iterates in key order already; sort only when not.
            if members.keys().is_sorted() {
                for (i, (key, member)) in members.iter().enumerate() {
                    write_member(i, key, member, out);
                }
            } else {
                let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
                // `str`'s ordering is the byte order of its UTF-8 encoding.
                sorted.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                for (i, (key, member)) in sorted.into_iter().enumerate() {
                    write_member(i, key, member, out);
                }
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
        Value::String(text) => write_string(text, out),
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Numbers exactly as serde_json writes them (itoa and ryu), which is what
        // docs/audit-format.md specifies.
        Value::Number(number) => {
            serde_json::to_writer(&mut *out, number).expect("writing to a Vec cannot fail");
        }
    }
}

fn write_member(index: usize, key: &str, member: &Value, out: &mut Vec<u8>) {
    if index > 0 {
        out.push(b',');
    }
    write_string(key, out);
    out.push(b':');
    write_canonical(member, out);
}

/// A JSON string as docs/audit-format.md specifies: only `"`, `\` and characters below
/// U+0020 are escaped.
fn write_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.push(b'"');
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Checks a chain given in order from record 1; see docs/audit-format.md for the
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

/// [`verify`] one record at a time, for chains read from a stream or a file that
/// should not be held in memory at once; with [`Verifier::with_checkpoints`] it
/// also checks signed checkpoints against the keys the chain registers.
#[derive(Debug, Default)]
pub struct Verifier {
    checked: u64,
    /// Sequence of the last good record (0 before the first).
    last: u64,
    /// Hash of the last good record (empty before the first).
    last_hash: String,
    failure: Option<VerifyFailure>,
    /// Checkpoints not reached yet, by ascending sequence.
    checkpoints: VecDeque<Checkpoint>,
    checkpoints_checked: u64,
    signed_up_to: Option<u64>,
    signers: BTreeSet<String>,
    keys: KeyRing,
    warnings: Vec<String>,
    /// Reused for each record's canonical text.
    buffer: Vec<u8>,
    /// The chain's id from record 1, once read.
    chain_id: Option<String>,
    /// A point saved earlier that the chain must hold, and whether it did.
    expected: Option<ChainPoint>,
    extends: Option<ChainPoint>,
    /// The highest record a given checkpoint covers: the records after it are
    /// the unsigned tail.
    last_checkpoint: u64,
    first_unsigned_at: Option<String>,
    last_recorded_at: String,
}

/// The signing keys the chain has registered so far, and which one is active.
#[derive(Debug, Default)]
struct KeyRing {
    registered: HashMap<String, VerifyingKey>,
    active: Option<String>,
    /// Keys an auditor trusts from elsewhere (the published key); when any are
    /// given, every key that signs must be one of them or endorsed by one.
    trusted: Vec<VerifyingKey>,
    /// Trusted keys and those endorsed, link by link, by a trusted key.
    vouched: BTreeSet<String>,
}

/// What the checks need of one record, however it was read.
struct Entry<'a> {
    sequence: u64,
    recorded_at: &'a str,
    prev_hash: &'a str,
    chain_id: Option<&'a str>,
    hash: &'a str,
    /// The recomputed hash.
    digest: [u8; 32],
    /// The payload, when the record registers a signing key.
    rotation: Option<Value>,
}

/// A record line read without building its event: the members borrowed from
/// the line, the event as its raw JSON text.
#[derive(serde::Deserialize)]
struct LineRecord<'a> {
    sequence: u64,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
    event_sequence: u64,
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow, default)]
    chain_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

impl Verifier {
    /// A verifier that also checks `checkpoints` (in any order) when it reaches
    /// the records they cover.
    pub fn with_checkpoints(mut checkpoints: Vec<Checkpoint>) -> Verifier {
        checkpoints.sort_by_key(|c| c.sequence);
        Verifier {
            last_checkpoint: checkpoints.last().map_or(0, |c| c.sequence),
            checkpoints: checkpoints.into(),
            ..Verifier::default()
        }
    }

    /// Requires the chain to hold `point`, saved earlier by an auditor or a
    /// witness: the same record hash there and, when the point names one, the
    /// same chain id. A chain rebuilt or rewritten since fails.
    pub fn expect(&mut self, point: ChainPoint) {
        self.expected = Some(point);
    }

    /// Trusts `key` (obtained from elsewhere, e.g. the published public key): every
    /// checkpoint must then be signed by it or by a key it endorsed.
    pub fn trust(&mut self, key: VerifyingKey) {
        self.keys.vouched.insert(signing::key_id(&key));
        self.keys.trusted.push(key);
    }

    /// Checks the next record; false once a problem was found (further records
    /// are then ignored).
    pub fn check(&mut self, item: Result<AuditRecord, String>) -> bool {
        if self.failure.is_some() {
            return false;
        }
        self.checked += 1;
        let record = match item {
            Ok(record) => record,
            Err(why) => return self.unreadable(&why),
        };
        let digest = record_digest(&record, &mut self.buffer);
        let rotation = rotation_payload(&record.event);
        let recorded_at = record
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true);
        self.accept(&Entry {
            sequence: record.sequence,
            recorded_at: &recorded_at,
            prev_hash: &record.prev_hash,
            chain_id: record.chain_id.as_deref(),
            hash: &record.hash,
            digest,
            rotation,
        })
    }

    /// Checks the next record given as one line of JSON (`number` names the line
    /// in messages), as [`Verifier::check`] would after parsing it, but without
    /// building the event when its text is canonical already (as krisbud writes
    /// it): verifying millions of records is then mostly hashing.
    pub fn check_line(&mut self, line: &[u8], number: u64) -> bool {
        if self.failure.is_some() {
            return false;
        }
        match digest_line(line, &mut self.buffer) {
            Some(digested) => self.check_digested(&digested),
            None => self.check_line_slowly(line, number),
        }
    }

    /// [`Verifier::check_line`] for a line [`digest_line`] could not take.
    pub(crate) fn check_line_slowly(&mut self, line: &[u8], number: u64) -> bool {
        // Not canonical, or not a record at all: the general path says which.
        let record =
            serde_json::from_slice::<AuditRecord>(line).map_err(|e| format!("line {number}: {e}"));
        self.check(record)
    }

    /// Checks a record digested by [`digest_line`] (possibly on another thread).
    pub(crate) fn check_digested(&mut self, digested: &Digested) -> bool {
        if self.failure.is_some() {
            return false;
        }
        self.checked += 1;
        self.accept(&Entry {
            sequence: digested.sequence,
            recorded_at: &digested.recorded_at,
            prev_hash: &digested.prev_hash,
            chain_id: digested.chain_id.as_deref(),
            hash: &digested.hash,
            digest: digested.digest,
            rotation: digested.rotation.clone(),
        })
    }

    /// The first problem found so far, if any.
    pub fn failure(&self) -> Option<&VerifyFailure> {
        self.failure.as_ref()
    }

    /// The sequence of the last good record (0 before the first).
    pub fn last_sequence(&self) -> u64 {
        self.last
    }

    /// Records a problem found outside the records themselves (a message the
    /// stream cannot deliver, a record the completeness check misses).
    pub fn fail(&mut self, sequence: u64, problem: &str, detail: String) {
        if self.failure.is_none() {
            self.failure = Some(failure(sequence, problem, detail));
        }
    }

    /// Whether the chain so far registered `key_id` with `public_key` (hex).
    pub fn has_key(&self, key_id: &str, public_key: &str) -> bool {
        self.keys
            .registered
            .get(key_id)
            .is_some_and(|key| hex::encode(key.as_bytes()) == public_key)
    }

    /// Adds a note for the auditor that does not make the chain wrong.
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// What was found. A checkpoint covering a record after the last one read
    /// means the chain was cut short: reported as a gap after its end.
    pub fn report(mut self) -> VerifyReport {
        if self.failure.is_none()
            && let Some(point) = &self.expected
            && self.extends.is_none()
        {
            let last = self.last_sequence();
            let sequence = point.sequence;
            self.fail(
                last + 1,
                NOT_THE_SAVED_CHAIN,
                format!(
                    "the saved checkpoint covers record {sequence}, but this chain ends at record \
                     {last}: records were removed, or the chain was rebuilt"
                ),
            );
        }
        if self.failure.is_none()
            && let Some(beyond) = self.checkpoints.front()
        {
            let last = self.last_sequence();
            let (sequence, signed_at) = (beyond.sequence, beyond.signed_at);
            self.fail(
                last + 1,
                GAP,
                format!(
                    "a checkpoint signed at {signed_at} covers record {sequence}, but the chain \
                     ends at record {last}: records were removed from its end"
                ),
            );
        }
        let signed = self.signed_up_to.unwrap_or(0);
        let parse = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let unsigned_tail = (self.last > signed).then(|| UnsignedTail {
            records: self.last - signed,
            first_sequence: signed + 1,
            last_sequence: self.last,
            first_recorded_at: if signed == self.last_checkpoint {
                self.first_unsigned_at.as_deref().and_then(parse)
            } else {
                None
            },
            last_recorded_at: parse(&self.last_recorded_at),
        });
        VerifyReport {
            checked: self.checked,
            ok: self.failure.is_none(),
            first_bad: self.failure,
            head: (self.last > 0).then_some(self.last_hash),
            checkpoints: self.checkpoints_checked,
            signed_up_to: self.signed_up_to,
            keys: self.signers.into_iter().collect(),
            warnings: self.warnings,
            completeness: None,
            chain_id: self.chain_id,
            unsigned_tail,
            extends: self.extends,
            trusted_key_checked: !self.keys.trusted.is_empty(),
        }
    }

    fn unreadable(&mut self, why: &str) -> bool {
        let expected = self.last + 1;
        self.failure = Some(failure(
            expected,
            UNREADABLE,
            format!("record {expected} cannot be read: {why}"),
        ));
        false
    }

    fn accept(&mut self, entry: &Entry<'_>) -> bool {
        match self.examine(entry) {
            Ok(()) => {
                self.last = entry.sequence;
                self.last_hash.clear();
                self.last_hash.push_str(entry.hash);
                true
            }
            Err(failure) => {
                self.failure = Some(failure);
                false
            }
        }
    }

    fn examine(&mut self, entry: &Entry<'_>) -> Result<(), VerifyFailure> {
        let expected = self.last + 1;
        let mut computed = [0u8; 64];
        hex::encode_to_slice(entry.digest, &mut computed).expect("64 hex digits");
        if computed != entry.hash.as_bytes() {
            let computed = std::str::from_utf8(&computed).expect("hex is ASCII");
            return Err(failure(
                entry.sequence,
                HASH_MISMATCH,
                format!(
                    "record {} stores hash {} but its content hashes to {computed}: the record was changed",
                    entry.sequence, entry.hash
                ),
            ));
        }
        if entry.sequence != expected {
            return Err(failure(
                expected,
                GAP,
                format!(
                    "expected record {expected} but found record {}: records are missing or out of order",
                    entry.sequence
                ),
            ));
        }
        let expected_link = if self.last == 0 {
            GENESIS_HASH
        } else {
            self.last_hash.as_str()
        };
        if entry.prev_hash != expected_link {
            return Err(failure(
                entry.sequence,
                BROKEN_LINK,
                format!(
                    "record {} has prev_hash {} but the record before it hashes to {expected_link}",
                    entry.sequence, entry.prev_hash
                ),
            ));
        }
        if entry.sequence == 1 {
            // The random id record 1 carries; the hash of record 1 for a chain
            // begun before records carried one.
            self.chain_id = Some(entry.chain_id.unwrap_or(entry.hash).to_owned());
        } else if entry.chain_id.is_some() {
            return Err(failure(
                entry.sequence,
                BROKEN_LINK,
                format!(
                    "record {} carries a chain id; only record 1 (the genesis record) does",
                    entry.sequence
                ),
            ));
        }
        if let Some(point) = &self.expected {
            if entry.sequence == 1
                && let (Some(saved), Some(this)) = (&point.chain_id, &self.chain_id)
                && saved != this
            {
                return Err(failure(
                    1,
                    NOT_THE_SAVED_CHAIN,
                    format!(
                        "this chain's id (in record 1) is {this}, but the saved checkpoint belongs \
                         to chain {saved}: the chain was rebuilt from scratch"
                    ),
                ));
            }
            if entry.sequence == point.sequence {
                if point.hash != entry.hash {
                    return Err(failure(
                        entry.sequence,
                        NOT_THE_SAVED_CHAIN,
                        format!(
                            "record {} hashes to {} but the saved checkpoint says {}: the chain was \
                             rebuilt or rewritten after it was saved",
                            entry.sequence, entry.hash, point.hash
                        ),
                    ));
                }
                self.extends = Some(point.clone());
            }
        }
        if entry.sequence == self.last_checkpoint + 1 {
            self.first_unsigned_at = Some(entry.recorded_at.to_owned());
        }
        self.last_recorded_at.clear();
        self.last_recorded_at.push_str(entry.recorded_at);
        if let Some(payload) = &entry.rotation {
            self.register_key(entry.sequence, payload)?;
        }
        while self
            .checkpoints
            .front()
            .is_some_and(|c| c.sequence <= entry.sequence)
        {
            let checkpoint = self.checkpoints.pop_front().expect("a checkpoint");
            if checkpoint.sequence < entry.sequence {
                // Only reachable for a checkpoint of sequence 0, which covers nothing.
                return Err(failure(
                    entry.sequence,
                    CHECKPOINT_MISMATCH,
                    format!(
                        "a checkpoint covers record {}, which cannot exist",
                        checkpoint.sequence
                    ),
                ));
            }
            self.check_checkpoint(&checkpoint, entry.sequence, entry.hash)?;
        }
        Ok(())
    }

    fn check_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        sequence: u64,
        hash: &str,
    ) -> Result<(), VerifyFailure> {
        let Some(active) = self.keys.active.clone() else {
            return Err(failure(
                sequence,
                BAD_SIGNATURE,
                format!(
                    "the checkpoint of record {sequence} is signed by key {} but the chain registers no signing key up to that record",
                    checkpoint.key_id
                ),
            ));
        };
        if checkpoint.key_id != active {
            return Err(failure(
                sequence,
                BAD_SIGNATURE,
                format!(
                    "the checkpoint of record {sequence} is signed by key {} but the chain's signing key at that record is {active}",
                    checkpoint.key_id
                ),
            ));
        }
        if let Some(chain) = &checkpoint.chain_id
            && Some(chain) != self.chain_id.as_ref()
        {
            return Err(failure(
                sequence,
                CHECKPOINT_MISMATCH,
                format!(
                    "the checkpoint of record {sequence} belongs to chain {chain}, not to this chain \
                     ({}): it was signed for another chain",
                    self.chain_id.as_deref().unwrap_or("without a record 1")
                ),
            ));
        }
        let key = self.keys.registered[&active];
        if let Err(why) = signing::verify_checkpoint(checkpoint, &key) {
            return Err(failure(
                sequence,
                BAD_SIGNATURE,
                format!("the checkpoint of record {sequence} (key {active}): {why}"),
            ));
        }
        if checkpoint.hash != hash {
            return Err(failure(
                sequence,
                CHECKPOINT_MISMATCH,
                format!(
                    "record {sequence} hashes to {hash} but the checkpoint signed at {} says {}: the chain was rewritten after it was signed",
                    checkpoint.signed_at, checkpoint.hash
                ),
            ));
        }
        self.checkpoints_checked += 1;
        self.signed_up_to = Some(sequence);
        self.signers.insert(active);
        Ok(())
    }

    fn register_key(&mut self, sequence: u64, payload: &Value) -> Result<(), VerifyFailure> {
        let bad = |detail: String| failure(sequence, BAD_SIGNATURE, detail);
        let rotation: AuditKeyRotated = serde_json::from_value(payload.clone()).map_err(|_| {
            bad(format!(
                "record {sequence} registers a signing key but its payload cannot be read"
            ))
        })?;
        if rotation.algorithm != SIGNATURE_ALGORITHM {
            return Err(bad(format!(
                "record {sequence} registers a key for {}, not {SIGNATURE_ALGORITHM}",
                rotation.algorithm
            )));
        }
        let key = signing::parse_public_key(&rotation.public_key)
            .map_err(|why| bad(format!("record {sequence} registers a key: {why}")))?;
        if signing::key_id(&key) != rotation.key_id {
            return Err(bad(format!(
                "record {sequence} registers key {} but its public key has the id {}",
                rotation.key_id,
                signing::key_id(&key)
            )));
        }
        let endorsed_by = match (&rotation.endorsement, &rotation.previous_key_id) {
            (Some(endorsement), Some(previous)) => {
                let Some(previous_key) = self.keys.registered.get(previous) else {
                    return Err(bad(format!(
                        "record {sequence} says key {} is endorsed by key {previous}, which the chain never registered",
                        rotation.key_id
                    )));
                };
                signing::verify_endorsement(&rotation, endorsement, previous_key).map_err(
                    |why| {
                        bad(format!(
                            "record {sequence}: the endorsement of key {} by key {previous}: {why}",
                            rotation.key_id
                        ))
                    },
                )?;
                Some(previous.clone())
            }
            _ => None,
        };
        if endorsed_by.is_none()
            && let Some(active) = &self.keys.active
            && *active != rotation.key_id
        {
            self.warnings.push(format!(
                "record {sequence} replaces signing key {active} with {} without an endorsement by the old key",
                rotation.key_id
            ));
        }
        if !self.keys.trusted.is_empty() {
            let vouched = self.keys.trusted.contains(&key)
                || endorsed_by.is_some_and(|by| self.keys.vouched.contains(&by));
            if !vouched {
                return Err(bad(format!(
                    "record {sequence} registers key {}, which is neither a trusted key nor endorsed by one",
                    rotation.key_id
                )));
            }
            self.keys.vouched.insert(rotation.key_id.clone());
        }
        self.keys.registered.insert(rotation.key_id.clone(), key);
        self.keys.active = Some(rotation.key_id);
        Ok(())
    }
}

/// The payload of an event that registers a signing key.
fn rotation_payload(event: &Value) -> Option<Value> {
    (event.get("kind").and_then(Value::as_str) == Some(KEY_ROTATED_KIND))
        .then(|| event.get("payload").cloned().unwrap_or(Value::Null))
}

/// A record line with its hash recomputed, ready for the checks that need the
/// records before it.
pub(crate) struct Digested {
    sequence: u64,
    recorded_at: String,
    prev_hash: String,
    chain_id: Option<String>,
    hash: String,
    digest: [u8; 32],
    rotation: Option<Value>,
}

/// Digests a record line whose event text is canonical already, so it is hashed
/// as it stands; `None` sends the line down the general path (which also says
/// what is wrong with a line that is no record).
pub(crate) fn digest_line(line: &[u8], buffer: &mut Vec<u8>) -> Option<Digested> {
    let record = serde_json::from_slice::<LineRecord>(line).ok()?;
    let event = record.event.get();
    if !is_canonical(event.as_bytes()) {
        return None;
    }
    // As `AuditRecord` reads it: any RFC 3339 offset, turned into UTC.
    let recorded_at = DateTime::parse_from_rfc3339(&record.recorded_at)
        .ok()?
        .with_timezone(&Utc);
    let fields = Hashed {
        chain_id: record.chain_id.as_deref(),
        event_sequence: record.event_sequence,
        prev_hash: &record.prev_hash,
        recorded_at: &recorded_at,
        sequence: record.sequence,
    };
    let digest = fields.digest(buffer, |out| out.extend_from_slice(event.as_bytes()));
    let rotation = if event.contains(KEY_ROTATED_KIND) {
        serde_json::from_str::<Value>(event)
            .ok()
            .and_then(|event| rotation_payload(&event))
    } else {
        None
    };
    Some(Digested {
        sequence: record.sequence,
        recorded_at: record.recorded_at.into_owned(),
        prev_hash: record.prev_hash.into_owned(),
        chain_id: record.chain_id.map(Cow::into_owned),
        hash: record.hash.into_owned(),
        digest,
        rotation,
    })
}

/// Whether `text` is exactly the canonical JSON of the value it holds, so that
/// `canonical_json(parse(text)) == text`. Conservative: objects with escaped
/// keys and every non-integer number are left to the general path.
pub fn is_canonical(text: &[u8]) -> bool {
    let mut at = 0;
    canonical_value(text, &mut at, 0) && at == text.len()
}

fn canonical_value(text: &[u8], at: &mut usize, depth: usize) -> bool {
    if depth > 128 {
        return false;
    }
    match text.get(*at) {
        Some(b'{') => {
            *at += 1;
            if text.get(*at) == Some(&b'}') {
                *at += 1;
                return true;
            }
            let mut previous: Option<&[u8]> = None;
            loop {
                let Some((key, escaped)) = canonical_string(text, at) else {
                    return false;
                };
                // Raw and decoded order differ only for escaped keys.
                if escaped || previous.is_some_and(|p| key <= p) {
                    return false;
                }
                previous = Some(key);
                if text.get(*at) != Some(&b':') {
                    return false;
                }
                *at += 1;
                if !canonical_value(text, at, depth + 1) {
                    return false;
                }
                match text.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'[') => {
            *at += 1;
            if text.get(*at) == Some(&b']') {
                *at += 1;
                return true;
            }
            loop {
                if !canonical_value(text, at, depth + 1) {
                    return false;
                }
                match text.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b']') => {
                        *at += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'"') => canonical_string(text, at).is_some(),
        Some(b't') => literal(text, at, b"true"),
        Some(b'f') => literal(text, at, b"false"),
        Some(b'n') => literal(text, at, b"null"),
        Some(b'-' | b'0'..=b'9') => canonical_integer(text, at),
        _ => false,
    }
}

fn literal(text: &[u8], at: &mut usize, word: &[u8]) -> bool {
    if text[*at..].starts_with(word) {
        *at += word.len();
        true
    } else {
        false
    }
}

/// A canonical string at `at`: its raw content and whether it holds escapes.
fn canonical_string<'t>(text: &'t [u8], at: &mut usize) -> Option<(&'t [u8], bool)> {
    if text.get(*at) != Some(&b'"') {
        return None;
    }
    let start = *at + 1;
    let mut i = start;
    let mut escaped = false;
    loop {
        match *text.get(i)? {
            b'"' => {
                *at = i + 1;
                return Some((&text[start..i], escaped));
            }
            b'\\' => {
                escaped = true;
                match *text.get(i + 1)? {
                    b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => i += 2,
                    b'u' => {
                        // Only control characters without a short form, as
                        // `\u00xx` with lower-case hex digits.
                        let digits = text.get(i + 2..i + 6)?;
                        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
                        if &digits[..2] != b"00" || !digits[2..].iter().all(lower_hex) {
                            return None;
                        }
                        let code =
                            u8::from_str_radix(std::str::from_utf8(&digits[2..]).ok()?, 16).ok()?;
                        if code >= 0x20 || matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                }
            }
            0x00..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// An integer written as serde_json writes a 64-bit integer: no leading zeros, no
/// `-0`, no fraction or exponent, within range.
fn canonical_integer(text: &[u8], at: &mut usize) -> bool {
    let negative = text.get(*at) == Some(&b'-');
    let start = *at + usize::from(negative);
    let mut end = start;
    while text.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    let digits = &text[start..end];
    let valid = match digits {
        [] => false,
        [b'0'] => !negative,
        [b'0', ..] => false,
        _ => digits.len() <= if negative { 18 } else { 19 },
    };
    if !valid || matches!(text.get(end), Some(b'.' | b'e' | b'E')) {
        return false;
    }
    *at = end;
    true
}

fn failure(sequence: u64, problem: &str, detail: String) -> VerifyFailure {
    VerifyFailure {
        sequence,
        problem: problem.to_owned(),
        detail,
    }
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

    /// The fast path hashes an event's text as it stands only when that text is
    /// what the general path would write.
    #[test]
    fn canonical_text_is_recognised_exactly() {
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"é\u0001\n"},"z":-12}"#,
            r#"[]"#,
            r#"{}"#,
            r#""inte json""#,
            r#"{"":0,"a":"/\"\\"}"#,
            "9999999999999999999",
            "-999999999999999999",
            r#"{"a":"\u001f\b\t\f\r"}"#,
        ] {
            assert!(is_canonical(text.as_bytes()), "{text}");
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(String::from_utf8(canonical_json(&value)).unwrap(), text);
        }
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{ "a":1}"#,
            r#"[1, 2]"#,
            r#"{"a":1.0}"#,
            r#"{"a":1e3}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#""\/""#,
            r#""\u0041""#,
            r#""\u000a""#,
            r#""\u001F""#,
            "99999999999999999999",
            r#"{"\"":1}"#,
            "[1]x",
            "tru",
        ] {
            assert!(!is_canonical(text.as_bytes()), "{text}");
        }
        // Whatever the general path writes (without floats) is recognised.
        let value = serde_json::json!({"kind": "DeliveryReported", "n": [1, -2, {"x": "\u{7f}ü\u{1}"}], "ä": null});
        assert!(is_canonical(&canonical_json(&value)));
    }

    #[test]
    fn a_line_verifies_the_same_by_either_path() {
        let records = chain(3);
        let mut fast = Verifier::default();
        let mut general = Verifier::default();
        for (i, record) in records.iter().enumerate() {
            let line = serde_json::to_vec(record).unwrap();
            assert!(fast.check_line(&line, i as u64 + 1));
            assert!(general.check(Ok(record.clone())));
        }
        // Whitespace and key order are not canonical: the general path takes the
        // line and reaches the same hash.
        let mut relaxed = Verifier::default();
        for (i, record) in records.iter().enumerate() {
            let mut value = serde_json::to_value(record).unwrap();
            value["event"] = serde_json::json!({"n": record.event["n"], "kind": "Test"});
            let line = serde_json::to_string_pretty(&value)
                .unwrap()
                .replace('\n', " ");
            assert!(relaxed.check_line(line.as_bytes(), i as u64 + 1), "{line}");
        }
        assert_eq!(fast.report(), general.report());
        assert!(relaxed.report().ok);

        let mut changed = Verifier::default();
        let mut line = serde_json::to_string(&records[0]).unwrap();
        line = line.replace("\"n\":1", "\"n\":2");
        assert!(!changed.check_line(line.as_bytes(), 1));
        assert_eq!(changed.report().first_bad.unwrap().problem, HASH_MISMATCH);
        let mut garbled = Verifier::default();
        assert!(!garbled.check_line(b"{\"sequence\": 1", 7));
        let bad = garbled.report().first_bad.unwrap();
        assert_eq!((bad.sequence, bad.problem.as_str()), (1, UNREADABLE));
        assert!(bad.detail.contains("line 7"), "{}", bad.detail);
    }

    /// A chain whose record 1 carries a random chain id, as the recorder writes it.
    fn chain_with_id(n: u64, chain_id: &str) -> Vec<AuditRecord> {
        let at: DateTime<Utc> = "2026-03-01T10:00:00.123Z".parse().unwrap();
        let mut records: Vec<AuditRecord> = Vec::new();
        for i in 1..=n {
            let prev = records
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            let id = (i == 1).then(|| chain_id.to_owned());
            records.push(seal_with_id(
                i,
                at,
                i * 2,
                json!({"kind": "Test", "n": i}),
                prev,
                id,
            ));
        }
        records
    }

    #[test]
    fn the_genesis_record_carries_the_chain_id_under_its_hash() {
        let id = new_chain_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_chain_id(), "random");
        let records = chain_with_id(3, &id);
        // The id is part of record 1's hashed text, in key order before `event`.
        let text = format!(
            r#"{{"chain_id":"{id}","event":{{"kind":"Test","n":1}},"event_sequence":2,"prev_hash":"{GENESIS_HASH}","recorded_at":"2026-03-01T10:00:00.123Z","sequence":1}}"#
        );
        assert_eq!(
            records[0].hash,
            hex::encode(Sha256::digest(text.as_bytes()))
        );
        for path in ["fast", "general"] {
            let mut verifier = Verifier::default();
            for (i, record) in records.iter().enumerate() {
                let ok = if path == "fast" {
                    verifier.check_line(&serde_json::to_vec(record).unwrap(), i as u64 + 1)
                } else {
                    verifier.check(Ok(record.clone()))
                };
                assert!(ok, "{path}");
            }
            let report = verifier.report();
            assert!(report.ok, "{path}: {report:?}");
            assert_eq!(report.chain_id.as_deref(), Some(id.as_str()), "{path}");
        }

        // Another id in record 1 (a rebuilt chain passing itself off) breaks its hash.
        let mut swapped = records;
        swapped[0].chain_id = Some(new_chain_id());
        let mut verifier = Verifier::default();
        for record in &swapped {
            verifier.check(Ok(record.clone()));
        }
        assert_eq!(verifier.report().first_bad.unwrap().problem, HASH_MISMATCH);
        // Only record 1 may carry one.
        let mut late = chain_with_id(2, &id);
        late[1] = seal_with_id(
            2,
            late[1].recorded_at,
            4,
            json!({"kind": "Test", "n": 2}),
            late[0].hash.clone(),
            Some(new_chain_id()),
        );
        let mut verifier = Verifier::default();
        for record in &late {
            verifier.check(Ok(record.clone()));
        }
        let bad = verifier.report().first_bad.unwrap();
        assert_eq!(
            (bad.sequence, bad.problem.as_str()),
            (2, BROKEN_LINK),
            "{bad:?}"
        );
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
                ..VerifyReport::default()
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
