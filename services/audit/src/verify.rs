//! Verification of the live chain: the records on KRISBUD_AUDIT with their hashes
//! and links, the signed checkpoints, and completeness against KRISBUD_EVENTS:
//! every event has its record and every record its (unchanged) event.
//!
//! Completeness walks both streams side by side, in order. Events after the last
//! recorded one are the recorder's lag (`pending`): the chain is the recorder's
//! cursor, so it records them next. Records lost from the chain's end cannot hide
//! there: KRISBUD_AUDIT denies deletes, so the lost messages are holes the reader
//! names, and a checkpoint over a lost record is a gap after the chain's end.

use async_nats::jetstream;
use futures::StreamExt;
use krisbud_proto::audit::{AuditRecord, Completeness, OrphanRecord, VerifyReport};
use krisbud_proto::spec;

use crate::chain::{self, Verifier};
use crate::read;

/// Problem word: a record's event is not in KRISBUD_EVENTS.
pub const NO_EVENT: &str = "no event";
/// Problem word: a record's event differs from the one in KRISBUD_EVENTS.
pub const EVENT_DIFFERS: &str = "event differs";

/// How many missing events and orphan records a report lists.
const LISTED: usize = 100;

/// Verifies the chain as stored now; `Err` only when the streams cannot be read
/// at all (a damaged record is a finding, not an error).
pub async fn live(js: &jetstream::Context) -> anyhow::Result<VerifyReport> {
    Box::pin(live_with(js, &[], None)).await
}

/// [`live`] with a key the auditor trusts and a point of the chain saved earlier.
pub async fn live_with(
    js: &jetstream::Context,
    trusted: &[ed25519_dalek::VerifyingKey],
    since: Option<krisbud_proto::audit::ChainPoint>,
) -> anyhow::Result<VerifyReport> {
    // Checkpoints first: each covers a record that existed before the chain's end
    // is read.
    let checkpoints = read::checkpoints(js, 1, usize::MAX).await?;
    let last = read::last_sequence(js, spec::AUDIT.name).await?;
    let events_last = read::last_sequence(js, spec::EVENTS.name).await?;

    let mut verifier = Verifier::with_checkpoints(checkpoints);
    for key in trusted {
        verifier.trust(*key);
    }
    if let Some(point) = since {
        verifier.expect(point);
    }
    let mut check = Check::new();
    let records = read::records(js.clone(), 1, last);
    let events = read::messages(
        js.clone(),
        spec::EVENTS.name,
        krisbud_proto::subject::ALL_EVENTS,
        1,
        events_last,
    );
    futures::pin_mut!(records);
    futures::pin_mut!(events);
    let mut next_event = events.next().await.transpose()?;
    while let Some(item) = records.next().await {
        let (_, record) = item?;
        if let Ok(record) = &record {
            while next_event
                .as_ref()
                .is_some_and(|(sequence, _)| *sequence < record.event_sequence)
            {
                let (sequence, _) = next_event.take().expect("an event");
                check.missing(sequence, record.sequence);
                next_event = events.next().await.transpose()?;
            }
            match next_event.take() {
                Some((sequence, body)) if sequence == record.event_sequence => {
                    check.compare(record, body);
                    next_event = events.next().await.transpose()?;
                }
                other => {
                    next_event = other;
                    check.orphan(record, NO_EVENT);
                }
            }
        }
        if !verifier.check(record) {
            break;
        }
    }
    let chain_ok = verifier.failure().is_none();
    let mut report = if chain_ok {
        check.completeness.pending = events_last.saturating_sub(check.last_recorded);
        check.completeness.ok = check.first.is_none();
        if let Some((sequence, problem, detail)) = check.first.take() {
            verifier.fail(sequence, problem, detail);
        }
        let mut report = verifier.report();
        report.completeness = Some(check.completeness);
        report
    } else {
        verifier.report()
    };
    report.ok = report.first_bad.is_none();
    Ok(report)
}

/// Completeness as found so far.
struct Check {
    /// The event sequence of the last record compared.
    last_recorded: u64,
    completeness: Completeness,
    /// The first problem: record sequence, problem word, detail.
    first: Option<(u64, &'static str, String)>,
}

impl Check {
    fn new() -> Check {
        Check {
            last_recorded: 0,
            completeness: Completeness::default(),
            first: None,
        }
    }

    fn missing(&mut self, event_sequence: u64, before_record: u64) {
        self.completeness.events += 1;
        self.completeness.missing_count += 1;
        if self.completeness.missing.len() < LISTED {
            self.completeness.missing.push(event_sequence);
        }
        self.first.get_or_insert((
            before_record,
            chain::MISSING_RECORD,
            format!(
                "event {event_sequence} has no record; it belongs before record {before_record}"
            ),
        ));
    }

    fn compare(&mut self, record: &AuditRecord, body: read::Body) {
        self.completeness.events += 1;
        let same = body.is_ok_and(|bytes| crate::recorder::event_value(&bytes) == record.event);
        if same {
            self.last_recorded = self.last_recorded.max(record.event_sequence);
        } else {
            self.orphan(record, EVENT_DIFFERS);
        }
    }

    fn orphan(&mut self, record: &AuditRecord, problem: &'static str) {
        self.last_recorded = self.last_recorded.max(record.event_sequence);
        self.completeness.orphan_count += 1;
        if self.completeness.orphans.len() < LISTED {
            self.completeness.orphans.push(OrphanRecord {
                sequence: record.sequence,
                event_sequence: record.event_sequence,
                problem: problem.to_owned(),
            });
        }
        let detail = match problem {
            NO_EVENT => format!(
                "record {} says it records event {}, which KRISBUD_EVENTS does not hold",
                record.sequence, record.event_sequence
            ),
            _ => format!(
                "record {} differs from event {} as KRISBUD_EVENTS holds it",
                record.sequence, record.event_sequence
            ),
        };
        self.first.get_or_insert((record.sequence, problem, detail));
    }
}
