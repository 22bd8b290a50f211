//! The audit service's commands, for auditors only: filtered, paged
//! queries; verification of the live chain; checkpoints and keys; the crisis
//! report; and the recipient lookup. And one for the gateway on anyone's
//! behalf: recording a console sign-in, sign-out or refused sign-in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use krisbud_kit::Bus;
use krisbud_kit::bus::Expect;
pub use krisbud_proto::audit::AuditPage;
use krisbud_proto::audit::{
    AuditKeys, AuditRecord, ChainPosition, CheckpointPage, CheckpointQuery, ConsoleSession,
    CrisisReportQuery, CrisisReportReply, PublicKeyQuery, RecipientLookup, RecipientLookupAnswer,
    ReportFormat, SessionChange, VerifyReport,
};
use krisbud_proto::command::{AuditQuery, AuditVerify};
use krisbud_proto::{Actor, CommandRequest, Problem, Role, spec, subject};
use krisbud_proto::{Envelope, Event};
use serde_json::Value;

use crate::{keys, lookup, read, report, signing, unavailable, verify};

/// Answers the audit commands.
#[derive(Clone)]
pub struct Reader {
    bus: Bus,
    /// The largest page, also the page size when the query names none.
    limit: usize,
    /// The key checkpoints are signed with.
    key: Arc<SigningKey>,
    /// The key of the recipient hashes.
    recipient_key: Arc<Vec<u8>>,
    /// Recipient lookups per user: "was this person notified?" must not become
    /// a way to find out who lives where, one number after another.
    lookups: Arc<governor::DefaultKeyedRateLimiter<String>>,
    /// Refused sign-ins recorded, over all names: anyone who reaches the sign-in
    /// page can cause one, and the chain keeps every record for ever.
    refusals: Arc<governor::DefaultDirectRateLimiter>,
}

/// Recipient lookups a user may make a minute (and at once).
pub const LOOKUPS_PER_MINUTE: u32 = 20;

/// Refused console sign-ins recorded a minute (and at once); the gateway logs the
/// ones beyond it.
pub const REFUSED_SIGN_INS_PER_MINUTE: u32 = 60;

impl Reader {
    /// A reader of the chain with pages of at most `limit` records.
    pub fn new(bus: Bus, limit: usize, key: Arc<SigningKey>, recipient_key: Vec<u8>) -> Reader {
        Reader {
            bus,
            limit,
            key,
            recipient_key: Arc::new(recipient_key),
            lookups: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(
                std::num::NonZeroU32::MIN.saturating_add(LOOKUPS_PER_MINUTE - 1),
            ))),
            refusals: Arc::new(governor::RateLimiter::direct(governor::Quota::per_minute(
                std::num::NonZeroU32::MIN.saturating_add(REFUSED_SIGN_INS_PER_MINUTE - 1),
            ))),
        }
    }

    /// `krisbud.cmd.audit.query`: matching records from `from_sequence` on.
    pub async fn query(&self, request: CommandRequest<AuditQuery>) -> Result<AuditPage, Problem> {
        authorize(&request.actor)?;
        let query = request.body;
        let limit = page_limit(query.limit, self.limit)?;
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from >= to
        {
            return Err(Problem::invalid("to", "to måste vara senare än from"));
        }
        let from = query.from_sequence.unwrap_or(1).max(1);
        let last = read::last_sequence(&self.bus.js, spec::AUDIT.name)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut page = AuditPage {
            records: Vec::new(),
            next_sequence: None,
            last_sequence: Some(last),
        };
        let records = read::records(self.bus.js.clone(), from, last);
        futures::pin_mut!(records);
        let mut bytes = 0usize;
        while let Some(item) = records.next().await {
            let (sequence, record) = item.map_err(|e| unavailable(&e))?;
            let record = match record {
                Ok(record) => record,
                Err(why) => {
                    // `verify` reports it; a query shows what can be read.
                    tracing::warn!(sequence, %why, "unreadable audit record left out of a query");
                    continue;
                }
            };
            if matches(&query, &record.event) {
                let size = serde_json::to_vec(&record).map_or(0, |v| v.len());
                if !page.records.is_empty() && bytes + size > PAGE_BYTES {
                    // The page is answered as one NATS message: the rest
                    // comes with the next page, from this record on.
                    page.next_sequence = Some(sequence);
                    break;
                }
                bytes += size;
                page.records.push(record);
                if page.records.len() == limit {
                    page.next_sequence = (sequence < last).then_some(sequence + 1);
                    break;
                }
            }
        }
        Ok(page)
    }

    /// `krisbud.cmd.audit.verify`: the whole chain as stored now, its
    /// checkpoints, and its completeness against KRISBUD_EVENTS.
    pub async fn verify(
        &self,
        request: CommandRequest<AuditVerify>,
    ) -> Result<VerifyReport, Problem> {
        authorize(&request.actor)?;
        let trusted = match &request.body.trust_key {
            Some(key) => vec![
                signing::parse_public_key(key)
                    .map_err(|why| Problem::invalid("trust_key", format!("trust_key: {why}")))?,
            ],
            None => Vec::new(),
        };
        let report = Box::pin(verify::live_with(
            &self.bus.js,
            &trusted,
            request.body.since.clone(),
        ))
        .await
        .map_err(|e| unavailable(&e))?;
        if let Some(bad) = &report.first_bad {
            tracing::error!(sequence = bad.sequence, problem = %bad.problem, detail = %bad.detail, "the audit chain does not verify");
        }
        Ok(report)
    }

    /// `krisbud.cmd.audit.checkpoints`: signed checkpoints, oldest first.
    pub async fn checkpoints(
        &self,
        request: CommandRequest<CheckpointQuery>,
    ) -> Result<CheckpointPage, Problem> {
        authorize(&request.actor)?;
        let limit = page_limit(request.body.limit, self.limit)?;
        let from = request.body.from_sequence.unwrap_or(1).max(1);
        // One more than asked for tells whether another page follows.
        let mut checkpoints = read::checkpoints(&self.bus.js, from, limit.saturating_add(1))
            .await
            .map_err(|e| unavailable(&e))?;
        checkpoints.sort_by_key(|c| c.sequence);
        let next_sequence =
            (checkpoints.len() > limit).then(|| checkpoints[limit - 1].sequence + 1);
        checkpoints.truncate(limit);
        Ok(CheckpointPage {
            checkpoints,
            next_sequence,
        })
    }

    /// `krisbud.cmd.audit.keys`: the signing key and every key the chain
    /// registered. Public knowledge, so anyone may ask.
    pub async fn keys(&self, _: CommandRequest<PublicKeyQuery>) -> Result<AuditKeys, Problem> {
        let history = keys::history(&self.bus)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut current = signing::public_key(&self.key.verifying_key());
        current.since = history
            .iter()
            .rev()
            .find(|k| k.key_id == current.key_id)
            .and_then(|k| k.since);
        Ok(AuditKeys { current, history })
    }

    /// `krisbud.cmd.audit.report`: one crisis from the chain.
    pub async fn report(
        &self,
        request: CommandRequest<CrisisReportQuery>,
    ) -> Result<CrisisReportReply, Problem> {
        authorize(&request.actor)?;
        let query = request.body;
        if !subject::is_token(&query.crisis_id) {
            return Err(Problem::not_found(format!(
                "there is no crisis with the id {:?}",
                query.crisis_id
            )));
        }
        let (records, head) = self
            .crisis_records(&query.crisis_id)
            .await
            .map_err(|e| unavailable(&e))?;
        if records.is_empty() {
            return Err(Problem::not_found(format!(
                "granskningsloggen har inga händelser för krisen {}",
                query.crisis_id
            )));
        }
        let built = report::build(&query.crisis_id, &records, head, Utc::now());
        let text = match query.format {
            ReportFormat::Json => None,
            ReportFormat::Markdown => Some(report::markdown(&built)),
            ReportFormat::Html => Some(report::html(&built)),
        };
        Ok(CrisisReportReply {
            report: built,
            text,
        })
    }

    /// `krisbud.cmd.audit.lookup`: was this person notified?
    pub async fn lookup(
        &self,
        request: CommandRequest<RecipientLookup>,
    ) -> Result<RecipientLookupAnswer, Problem> {
        authorize(&request.actor)?;
        if self.lookups.check_key(&request.actor.user).is_err() {
            return Err(Problem::new(
                429,
                "too many requests",
                format!(
                    "högst {LOOKUPS_PER_MINUTE} sökningar på mottagare i minuten per användare; vänta en stund"
                ),
            ));
        }
        lookup::lookup(&self.bus, &self.recipient_key, request.actor, request.body).await
    }

    /// `krisbud.cmd.audit.session`: records a console sign-in, sign-out or refused
    /// sign-in. Answered once the event is stored.
    pub async fn session(&self, request: CommandRequest<ConsoleSession>) -> Result<(), Problem> {
        let session = request.body;
        let actor = request.actor;
        krisbud_kit::text::check_free_text("user", &actor.user, 200)?;
        if let Some(reason) = &session.reason {
            krisbud_kit::text::check_free_text("reason", reason, 200)?;
        }
        if let Some(subject) = &session.idp_subject {
            krisbud_kit::text::check_free_text("idp_subject", subject, 255)?;
        }
        if session.change == SessionChange::SignInRefused && self.refusals.check().is_err() {
            return Err(Problem::new(
                429,
                "too many requests",
                format!(
                    "at most {REFUSED_SIGN_INS_PER_MINUTE} refused sign-ins are recorded a minute"
                ),
            ));
        }
        let event = Envelope::new(actor, Event::ConsoleSession(session));
        self.bus.append(&event, Expect::Any).await.map_err(|e| {
            tracing::error!(error = %e, "cannot record a console session");
            Problem::unavailable("the session cannot be recorded in the audit log just now")
        })?;
        Ok(())
    }

    /// The records of one crisis, and the chain's head when they were read.
    async fn crisis_records(
        &self,
        crisis_id: &str,
    ) -> anyhow::Result<(Vec<AuditRecord>, Option<ChainPosition>)> {
        let last = read::last_sequence(&self.bus.js, spec::AUDIT.name).await?;
        let needle = format!("\"crisis_id\":\"{crisis_id}\"");
        let messages = read::messages(
            self.bus.js.clone(),
            spec::AUDIT.name,
            subject::AUDIT_LOG,
            1,
            last,
        );
        futures::pin_mut!(messages);
        let mut found = Vec::new();
        let mut head = None;
        while let Some(item) = messages.next().await {
            let (sequence, body) = item?;
            let Ok(bytes) = body else { continue };
            let mentions = std::str::from_utf8(&bytes).is_ok_and(|t| t.contains(&needle));
            if !(mentions || sequence == last) {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&bytes) else {
                continue;
            };
            if sequence == last {
                head = Some(ChainPosition {
                    sequence: record.sequence,
                    hash: record.hash.clone(),
                });
            }
            if record.event.get("crisis_id").and_then(Value::as_str) == Some(crisis_id) {
                found.push(record);
            }
        }
        Ok((found, head))
    }
}

/// Most bytes of records in one page: a page is one NATS reply, and nats-server
/// carries at most 1 MiB by default. A record of a 1,000-recipient job with a
/// provider message id per recipient is ~115 KB, so a page may hold fewer
/// records than its `limit`; `next_sequence` says where the next one starts.
const PAGE_BYTES: usize = 640 * 1024;

fn page_limit(asked: Option<usize>, most: usize) -> Result<usize, Problem> {
    match asked {
        Some(0) => Err(Problem::invalid("limit", "limit måste vara minst 1")),
        Some(n) => Ok(n.min(most)),
        None => Ok(most),
    }
}

/// Only auditors read the log: an admin manages users and audiences but reads
/// the audit only when also an auditor (DESIGN.md's role table).
fn authorize(actor: &Actor) -> Result<(), Problem> {
    if actor.has(Role::Auditor) {
        Ok(())
    } else {
        Err(Problem::forbidden(
            "granskningsloggen kräver rollen auditor",
        ))
    }
}

/// Whether the recorded envelope matches every filter given. The time range is
/// on the event's `occurred_at`, from inclusive, to exclusive.
fn matches(query: &AuditQuery, event: &Value) -> bool {
    let field = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    let wanted = |filter: &Option<String>, pointer: &str| {
        filter
            .as_deref()
            .is_none_or(|want| field(pointer) == Some(want))
    };
    let occurred = || field("/occurred_at").and_then(|t| t.parse::<DateTime<Utc>>().ok());
    let in_range = (query.from.is_none() && query.to.is_none())
        || occurred().is_some_and(|at| {
            query.from.is_none_or(|from| at >= from) && query.to.is_none_or(|to| at < to)
        });
    wanted(&query.crisis, "/crisis_id")
        && wanted(&query.actor, "/actor/user")
        && wanted(&query.kind, "/kind")
        && in_range
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_match_the_envelope() {
        let event = json!({
            "id": "e1", "kind": "ChannelConfirmed", "crisis_id": "c1",
            "actor": {"user": "anna", "roles": ["operator"]}, "payload": {}
        });
        let query = |crisis: Option<&str>, actor: Option<&str>, kind: Option<&str>| AuditQuery {
            crisis: crisis.map(Into::into),
            actor: actor.map(Into::into),
            kind: kind.map(Into::into),
            ..Default::default()
        };
        assert!(matches(&query(None, None, None), &event));
        assert!(matches(
            &query(Some("c1"), Some("anna"), Some("ChannelConfirmed")),
            &event
        ));
        assert!(!matches(&query(Some("c2"), None, None), &event));
        assert!(!matches(&query(None, Some("bo"), None), &event));
        assert!(!matches(&query(None, None, Some("CrisisDeclared")), &event));
        assert!(!matches(&query(Some("c1"), None, None), &json!("not json")));
    }

    #[test]
    fn the_time_range_is_on_occurred_at() {
        let event = json!({"kind": "ChannelConfirmed", "occurred_at": "2026-03-01T10:00:00Z"});
        let at = |t: &str| Some(t.parse::<DateTime<Utc>>().unwrap());
        let range = |from, to| AuditQuery {
            from,
            to,
            ..Default::default()
        };
        assert!(matches(&range(at("2026-03-01T10:00:00Z"), None), &event));
        assert!(matches(&range(None, at("2026-03-01T10:00:01Z")), &event));
        assert!(!matches(&range(None, at("2026-03-01T10:00:00Z")), &event));
        assert!(!matches(&range(at("2026-03-01T10:00:01Z"), None), &event));
        assert!(!matches(
            &range(at("2026-01-01T00:00:00Z"), None),
            &json!("not json")
        ));
    }

    #[test]
    fn only_auditors_read() {
        let actor = |roles: Vec<Role>| Actor {
            user: "u".into(),
            roles,
            channels: Vec::new(),
        };
        assert!(authorize(&actor(vec![Role::Auditor])).is_ok());
        assert!(authorize(&actor(vec![Role::Admin, Role::Auditor])).is_ok());
        assert_eq!(
            authorize(&actor(vec![Role::Admin])).unwrap_err().status,
            403
        );
        assert_eq!(
            authorize(&actor(vec![Role::DutyOfficer, Role::System]))
                .unwrap_err()
                .status,
            403
        );
    }
}
