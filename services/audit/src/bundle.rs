//! The export bundle: everything an auditor needs to check the chain offline, in
//! one JSON-lines file.
//!
//! ```text
//! {"bundle":{"format":"krisbud-audit-bundle","version":1,"exported_at":"…","last_sequence":N}}
//! {"public_key":{"key_id":"…","algorithm":"Ed25519","public_key":"…"}}      one per key
//! {"checkpoint":{"sequence":…,"hash":"…","signed_at":"…","key_id":"…","signature":"…"}}
//! {"sequence":1,"recorded_at":"…","event_sequence":…,"event":{…},"prev_hash":"…","hash":"…"}
//! …                                                                           every record, in order
//! ```
//!
//! The lines before the first record are the bundle's metadata, each an object
//! with one member naming what it holds; the records follow exactly as in a plain
//! export, so a plain export (records only) is a bundle without checkpoints.
//! [`verify_reader`] reads it in one pass with constant memory apart from the
//! checkpoints.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context as _;
use ed25519_dalek::VerifyingKey;
use krisbud_proto::audit::{
    AuditPublicKey, AuditRecord, BUNDLE_FORMAT, BundleHeader, BundleLine, ChainPoint, Checkpoint,
    VerifyReport,
};

use crate::chain::{self, Verifier};

/// The bundle version this build writes and reads.
pub const VERSION: u32 = 1;

/// One metadata line, `\n`-terminated.
pub fn line(line: &BundleLine) -> Vec<u8> {
    let mut out = serde_json::to_vec(line).expect("a bundle line serializes");
    out.push(b'\n');
    out
}

/// One record line, `\n`-terminated.
pub fn record_line(record: &AuditRecord) -> Vec<u8> {
    let mut out = serde_json::to_vec(record).expect("a record serializes");
    out.push(b'\n');
    out
}

/// Writes a whole bundle.
pub fn write<'a, W: Write>(
    mut out: W,
    header: BundleHeader,
    keys: &[AuditPublicKey],
    checkpoints: &[Checkpoint],
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> std::io::Result<()> {
    out.write_all(&line(&BundleLine::Bundle(header)))?;
    for key in keys {
        out.write_all(&line(&BundleLine::PublicKey(key.clone())))?;
    }
    for checkpoint in checkpoints {
        out.write_all(&line(&BundleLine::Checkpoint(checkpoint.clone())))?;
    }
    for record in records {
        out.write_all(&record_line(record))?;
    }
    out.flush()
}

/// Verifies a bundle (or a plain export) in a file, without any server. Fails
/// only when the file cannot be opened; everything wrong inside is reported.
pub fn verify_file(path: &Path, trusted: &[VerifyingKey]) -> anyhow::Result<VerifyReport> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open audit export {}", path.display()))?;
    Ok(verify_reader(
        std::io::BufReader::with_capacity(1 << 20, file),
        trusted,
    ))
}

/// Verifies a bundle read from `reader`: the chain, every checkpoint against the
/// key the chain names for it, and the header's record count. With `trusted`
/// keys (the published key, obtained elsewhere), every signing key must be one of
/// them or endorsed by one.
///
/// The records are parsed and hashed on every core in batches, and checked in
/// order on this thread: hashing, not linking, is what takes time.
pub fn verify_reader<R: BufRead>(reader: R, trusted: &[VerifyingKey]) -> VerifyReport {
    verify_reader_since(reader, trusted, None)
}

/// [`verify_reader`] that also requires the chain to hold `since`, a point of it
/// saved earlier (a checkpoint, or a witness's copy of one).
pub fn verify_reader_since<R: BufRead>(
    mut reader: R,
    trusted: &[VerifyingKey],
    since: Option<ChainPoint>,
) -> VerifyReport {
    let mut header: Option<BundleHeader> = None;
    let mut keys: Vec<AuditPublicKey> = Vec::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    // The metadata, up to the first record line.
    let first_record = loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(Err(e)),
        }
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<BundleLine>(text) {
            Ok(BundleLine::Bundle(h)) => header = Some(h),
            Ok(BundleLine::PublicKey(key)) => keys.push(key),
            Ok(BundleLine::Checkpoint(checkpoint)) => checkpoints.push(checkpoint),
            Err(_) => break Some(Ok(text.to_vec())),
        }
    };
    let mut verifier = start(&mut checkpoints, trusted);
    if let Some(point) = since {
        verifier.expect(point);
    }
    match first_record {
        Some(Ok(text)) if verifier.check_line(&text, number) => {
            records(&mut reader, number, &mut verifier);
        }
        Some(Err(e)) => verifier.fail(
            1,
            chain::UNREADABLE,
            format!("the file cannot be read after line {number}: {e}"),
        ),
        Some(Ok(_)) | None => {}
    }
    match &header {
        Some(h) if h.format != BUNDLE_FORMAT || h.version != VERSION => verifier.fail(
            1,
            chain::UNREADABLE,
            format!(
                "the file is a {} version {} bundle; this verifier reads {BUNDLE_FORMAT} version {VERSION}",
                h.format, h.version
            ),
        ),
        Some(h) if h.last_sequence > verifier.last_sequence() => {
            let last = verifier.last_sequence();
            verifier.fail(
                last + 1,
                chain::GAP,
                format!(
                    "the bundle's header says it holds records up to {} but they end at record {last}: records were removed from its end",
                    h.last_sequence
                ),
            );
        }
        Some(_) => {}
        None => verifier.warn(
            "the file has no bundle header, keys or checkpoints: only the hash chain of its records was checked".into(),
        ),
    }
    for key in &keys {
        if !verifier.has_key(&key.key_id, &key.public_key) {
            verifier.warn(format!(
                "the bundle lists key {} but the chain never registers it",
                key.key_id
            ));
        }
    }
    verifier.report()
}

/// How far a chain may run ahead of its last signed checkpoint before a
/// verification distrusts it.
#[derive(Debug, Clone, Copy)]
pub struct TailPolicy {
    /// Records after the last checkpoint.
    pub max_records: u64,
    /// Time the unsigned records span, and (live) how old the oldest may be.
    pub max_age: chrono::Duration,
}

/// What makes an intact chain untrustworthy: no signed checkpoint at all, or more
/// unsigned records than the checkpoint interval allows, recorded over a longer
/// time than it allows (a bundle whose last checkpoints were removed), or (with
/// `as_of`, the time of a live verification) waiting too long for a signature.
pub fn doubts(
    report: &VerifyReport,
    policy: &TailPolicy,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<String> {
    let mut doubts = Vec::new();
    if report.checked > 0 && report.checkpoints == 0 {
        doubts.push(
            "no signed checkpoint covers any record: nothing proves who wrote this chain".into(),
        );
        return doubts;
    }
    let Some(tail) = &report.unsigned_tail else {
        return doubts;
    };
    if tail.records > policy.max_records {
        doubts.push(format!(
            "records {} to {} ({} records) are covered by no signed checkpoint; a chain is signed \
             every {} records at most",
            tail.first_sequence, tail.last_sequence, tail.records, policy.max_records
        ));
    }
    if let (Some(first), Some(last)) = (tail.first_recorded_at, tail.last_recorded_at)
        && last - first > policy.max_age
    {
        doubts.push(format!(
            "the unsigned records {} to {} were recorded over {} s; a chain is signed every {} s \
             at most: checkpoints were removed",
            tail.first_sequence,
            tail.last_sequence,
            (last - first).num_seconds(),
            policy.max_age.num_seconds()
        ));
    }
    if let (Some(now), Some(first)) = (as_of, tail.first_recorded_at)
        && now - first > policy.max_age
    {
        doubts.push(format!(
            "record {} has waited {} s for a signed checkpoint (at most {} s): the checkpointer \
             is not signing",
            tail.first_sequence,
            (now - first).num_seconds(),
            policy.max_age.num_seconds()
        ));
    }
    doubts
}

/// Lines per batch handed to a hashing thread.
const BATCH: usize = 1024;

/// Consecutive lines of the file.
struct Batch {
    /// The number of the line before the first.
    after: u64,
    data: Vec<u8>,
    /// Where each line ends in `data`.
    ends: Vec<usize>,
}

impl Batch {
    fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .enumerate()
            .map(|(i, (start, end))| {
                (
                    self.after + i as u64 + 1,
                    self.data[start..end].trim_ascii(),
                )
            })
    }
}

/// What a hashing thread made of a line.
enum Digest {
    Blank,
    Done(chain::Digested),
    /// For the general path, on the checking thread.
    Slow,
}

/// Reads the records after line `number` and checks them, hashing in parallel.
fn records<R: BufRead>(reader: &mut R, mut number: u64, verifier: &mut Verifier) {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut read_error: Option<(u64, std::io::Error)> = None;
    let mut read_batch = |number: &mut u64| -> Option<Batch> {
        let mut batch = Batch {
            after: *number,
            data: Vec::with_capacity(BATCH * 1024),
            ends: Vec::with_capacity(BATCH),
        };
        while batch.ends.len() < BATCH {
            match reader.read_until(b'\n', &mut batch.data) {
                Ok(0) => break,
                Ok(_) => {
                    *number += 1;
                    batch.ends.push(batch.data.len());
                }
                Err(e) => {
                    read_error = Some((*number, e));
                    break;
                }
            }
        }
        (!batch.ends.is_empty()).then_some(batch)
    };
    std::thread::scope(|scope| {
        let mut to_workers = Vec::new();
        let mut from_workers = Vec::new();
        for _ in 0..workers {
            let (send_batch, batches) = std::sync::mpsc::channel::<Batch>();
            let (send_done, done) = std::sync::mpsc::channel::<(Batch, Vec<Digest>)>();
            scope.spawn(move || {
                let mut buffer = Vec::with_capacity(4096);
                for batch in batches {
                    let digests = batch
                        .lines()
                        .map(|(_, text)| {
                            if text.is_empty() {
                                Digest::Blank
                            } else {
                                chain::digest_line(text, &mut buffer)
                                    .map_or(Digest::Slow, Digest::Done)
                            }
                        })
                        .collect();
                    if send_done.send((batch, digests)).is_err() {
                        break;
                    }
                }
            });
            to_workers.push(send_batch);
            from_workers.push(done);
        }
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = 0;
        let mut reading = true;
        loop {
            while reading && in_flight.len() < 2 * workers {
                match read_batch(&mut number) {
                    Some(batch) => {
                        to_workers[next]
                            .send(batch)
                            .expect("the hashing thread runs");
                        in_flight.push_back(next);
                        next = (next + 1) % workers;
                    }
                    None => reading = false,
                }
            }
            let Some(worker) = in_flight.pop_front() else {
                break;
            };
            let (batch, digests) = from_workers[worker]
                .recv()
                .expect("the hashing thread answers");
            for ((number, text), digest) in batch.lines().zip(digests) {
                let good = match digest {
                    Digest::Blank => true,
                    Digest::Done(digested) => verifier.check_digested(&digested),
                    Digest::Slow => slow_line(verifier, text, number),
                };
                if !good {
                    // Stop reading; what is in flight drains unchecked.
                    reading = false;
                    break;
                }
            }
        }
        drop(to_workers);
    });
    if let Some((after, e)) = read_error {
        let next = verifier.last_sequence() + 1;
        verifier.fail(
            next,
            chain::UNREADABLE,
            format!("the file cannot be read after line {after}: {e}"),
        );
    }
}

/// A line the hashing threads left for the general path.
fn slow_line(verifier: &mut Verifier, text: &[u8], number: u64) -> bool {
    if serde_json::from_slice::<BundleLine>(text).is_ok() {
        verifier.check(Err(format!(
            "line {number}: bundle metadata after the first record"
        )));
        return false;
    }
    verifier.check_line_slowly(text, number)
}

fn start(checkpoints: &mut Vec<Checkpoint>, trusted: &[VerifyingKey]) -> Verifier {
    let mut verifier = Verifier::with_checkpoints(std::mem::take(checkpoints));
    for key in trusted {
        verifier.trust(*key);
    }
    verifier
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use ed25519_dalek::SigningKey;
    use krisbud_proto::audit::GENESIS_HASH;
    use serde_json::json;

    use super::*;
    use crate::chain::seal;
    use crate::signing;

    struct Fixture {
        key: SigningKey,
        records: Vec<AuditRecord>,
        checkpoints: Vec<Checkpoint>,
    }

    /// Twelve records: the key registered at record 1, checkpoints at 4, 8 and 12.
    fn fixture() -> Fixture {
        let key = SigningKey::from_bytes(&[7; 32]);
        let at: DateTime<Utc> = "2026-03-01T10:00:00.123Z".parse().unwrap();
        let rotation = signing::rotation(&key.verifying_key(), None, None);
        let mut records: Vec<AuditRecord> = Vec::new();
        for i in 1..=12u64 {
            let event = if i == 1 {
                json!({"kind": "AuditKeyRotated", "payload": rotation})
            } else {
                json!({"kind": "ChannelConfirmed", "payload": {"note": format!("note {i}")}})
            };
            let prev = records
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            records.push(seal(i, at, i * 3, event, prev));
        }
        let checkpoints = [4usize, 8, 12]
            .iter()
            .map(|&n| {
                signing::sign_checkpoint(
                    &key,
                    n as u64,
                    &records[n - 1].hash,
                    at,
                    Some(&records[0].hash),
                )
            })
            .collect();
        Fixture {
            key,
            records,
            checkpoints,
        }
    }

    fn bundle(f: &Fixture) -> Vec<u8> {
        let mut out = Vec::new();
        let header = BundleHeader {
            format: BUNDLE_FORMAT.into(),
            version: VERSION,
            exported_at: Utc::now(),
            last_sequence: f.records.len() as u64,
        };
        write(
            &mut out,
            header,
            &[signing::public_key(&f.key.verifying_key())],
            &f.checkpoints,
            &f.records,
        )
        .unwrap();
        out
    }

    fn check(bytes: &[u8]) -> VerifyReport {
        verify_reader(bytes, &[])
    }

    fn problem(report: &VerifyReport) -> (u64, &str) {
        let bad = report.first_bad.as_ref().expect("a problem");
        (bad.sequence, bad.problem.as_str())
    }

    #[test]
    fn an_intact_bundle_verifies_with_its_checkpoints() {
        let f = fixture();
        let report = check(&bundle(&f));
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checked, 12);
        assert_eq!(report.checkpoints, 3);
        assert_eq!(report.signed_up_to, Some(12));
        assert_eq!(report.keys, [signing::key_id(&f.key.verifying_key())]);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);

        let trusted = verify_reader(&bundle(&f)[..], &[f.key.verifying_key()]);
        assert!(trusted.ok, "{trusted:?}");
        let stranger = SigningKey::from_bytes(&[9; 32]).verifying_key();
        let distrusted = verify_reader(&bundle(&f)[..], &[stranger]);
        assert_eq!(problem(&distrusted), (1, chain::BAD_SIGNATURE));
    }

    #[test]
    fn a_replaced_signature_is_a_bad_signature_at_its_record() {
        let mut f = fixture();
        let other = signing::sign_checkpoint(
            &SigningKey::from_bytes(&[8; 32]),
            8,
            &f.records[7].hash,
            Utc::now(),
            Some(&f.records[0].hash),
        );
        f.checkpoints[1].signature = other.signature;
        assert_eq!(problem(&check(&bundle(&f))), (8, chain::BAD_SIGNATURE));

        // Signed by a key the chain never registered.
        let mut f = fixture();
        f.checkpoints[0] = signing::sign_checkpoint(
            &SigningKey::from_bytes(&[8; 32]),
            4,
            &f.records[3].hash,
            Utc::now(),
            Some(&f.records[0].hash),
        );
        assert_eq!(problem(&check(&bundle(&f))), (4, chain::BAD_SIGNATURE));
    }

    #[test]
    fn a_consistently_rewritten_chain_contradicts_its_checkpoint() {
        let mut f = fixture();
        // Rewrite record 6 and rehash everything after it: only the signature
        // over record 8 can tell.
        f.records[5].event["payload"]["note"] = json!("rewritten");
        for i in 5..f.records.len() {
            if i > 0 {
                f.records[i].prev_hash = f.records[i - 1].hash.clone();
            }
            f.records[i].hash = chain::record_hash(&f.records[i]);
        }
        assert_eq!(
            problem(&check(&bundle(&f))),
            (8, chain::CHECKPOINT_MISMATCH)
        );
    }

    #[test]
    fn a_cut_off_end_is_a_gap() {
        let mut f = fixture();
        f.records.truncate(10);
        let mut bytes = bundle(&f);
        // The header still says 12: a gap after record 10.
        assert_eq!(problem(&check(&bytes)), (11, chain::GAP));
        // Without the header, the checkpoint over record 12 still gives it away.
        let start = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes.drain(..start);
        assert_eq!(problem(&check(&bytes)), (11, chain::GAP));
    }

    #[test]
    fn a_plain_export_verifies_with_a_warning() {
        let f = fixture();
        let mut bytes = Vec::new();
        for record in &f.records {
            bytes.extend(record_line(record));
        }
        let report = check(&bytes);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checkpoints, 0);
        assert_eq!(report.warnings.len(), 1);
    }

    #[test]
    fn metadata_among_the_records_and_invalid_utf8_are_unreadable() {
        let f = fixture();
        let text = String::from_utf8(bundle(&f)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let checkpoint = lines[2];
        lines.insert(8, checkpoint);
        let report = check(lines.join("\n").as_bytes());
        let bad = report.first_bad.unwrap();
        assert_eq!((bad.sequence, bad.problem.as_str()), (4, chain::UNREADABLE));
        assert!(bad.detail.contains("metadata"), "{}", bad.detail);

        let mut bytes = bundle(&f);
        let at = bytes.windows(6).position(|w| w == b"note 5").unwrap();
        bytes[at] = 0xff;
        assert_eq!(problem(&check(&bytes)), (5, chain::UNREADABLE));
    }
}
