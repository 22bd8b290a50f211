//! Reading the chain back: filtered, paged queries and verification of the live
//! stream, both for auditors and admins only.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::{Stream, StreamExt};
use krisbud_proto::audit::{AuditRecord, VerifyReport};
use krisbud_proto::command::{AuditQuery, AuditVerify};
use krisbud_proto::{Actor, CommandRequest, Problem, Role, spec, subject};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::Verifier;

/// Longest wait for the next record while reading the stream.
const READ_IDLE: Duration = Duration::from_secs(10);

/// One page of audit records, the answer to `AuditQuery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Matching records in chain order.
    pub records: Vec<AuditRecord>,
    /// Where the next page starts (`from_sequence`), when more records follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sequence: Option<u64>,
}

/// Answers audit queries and verifications.
#[derive(Clone)]
pub struct Reader {
    js: jetstream::Context,
    /// The largest page, also the page size when the query names none.
    limit: usize,
}

impl Reader {
    /// A reader of KRISBUD_AUDIT with pages of at most `limit` records.
    pub fn new(js: jetstream::Context, limit: usize) -> Reader {
        Reader { js, limit }
    }

    /// `krisbud.cmd.audit.query`: matching records from `from_sequence` on.
    pub async fn query(&self, request: CommandRequest<AuditQuery>) -> Result<AuditPage, Problem> {
        authorize(&request.actor)?;
        let query = request.body;
        let limit = match query.limit {
            Some(0) => return Err(Problem::invalid("limit", "limit måste vara minst 1")),
            Some(n) => n.min(self.limit),
            None => self.limit,
        };
        let from = query.from_sequence.unwrap_or(1).max(1);
        let last = self.last_sequence().await.map_err(|e| unavailable(&e))?;
        let mut page = AuditPage {
            records: Vec::new(),
            next_sequence: None,
        };
        let records = read(self.js.clone(), from, last);
        futures::pin_mut!(records);
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
                page.records.push(record);
                if page.records.len() == limit {
                    page.next_sequence = (sequence < last).then_some(sequence + 1);
                    break;
                }
            }
        }
        Ok(page)
    }

    /// `krisbud.cmd.audit.verify`: the whole chain as stored now, checked.
    pub async fn verify(
        &self,
        request: CommandRequest<AuditVerify>,
    ) -> Result<VerifyReport, Problem> {
        authorize(&request.actor)?;
        let last = self.last_sequence().await.map_err(|e| unavailable(&e))?;
        let mut verifier = Verifier::default();
        let records = read(self.js.clone(), 1, last);
        futures::pin_mut!(records);
        while let Some(item) = records.next().await {
            let (_, record) = item.map_err(|e| unavailable(&e))?;
            if !verifier.check(record) {
                break;
            }
        }
        Ok(verifier.report())
    }

    async fn last_sequence(&self) -> anyhow::Result<u64> {
        let stream = self
            .js
            .get_stream(spec::AUDIT.name)
            .await
            .with_context(|| format!("stream {} is missing", spec::AUDIT.name))?;
        Ok(stream.cached_info().state.last_sequence)
    }
}

/// Only auditors and admins read the log.
fn authorize(actor: &Actor) -> Result<(), Problem> {
    if actor.has(Role::Auditor) || actor.has(Role::Admin) {
        Ok(())
    } else {
        Err(Problem::forbidden(
            "granskningsloggen kräver rollen auditor eller admin",
        ))
    }
}

fn unavailable(e: &anyhow::Error) -> Problem {
    tracing::error!(error = format!("{e:#}"), "cannot read the audit chain");
    Problem::unavailable("granskningsloggen kan inte läsas just nu; försök igen")
}

/// Whether the recorded envelope matches every filter given.
fn matches(query: &AuditQuery, event: &Value) -> bool {
    let field = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    let wanted = |filter: &Option<String>, pointer: &str| {
        filter
            .as_deref()
            .is_none_or(|want| field(pointer) == Some(want))
    };
    wanted(&query.crisis, "/crisis_id")
        && wanted(&query.actor, "/actor/user")
        && wanted(&query.kind, "/kind")
}

/// The records with sequences `from..=to`, in order, each with its stream
/// sequence; a message that is not a record comes as `Err` with why.
///
/// An ordered consumer streams them with flow control, so thousands of records
/// cost one consumer rather than one request each.
fn read(
    js: jetstream::Context,
    from: u64,
    to: u64,
) -> impl Stream<Item = anyhow::Result<(u64, Result<AuditRecord, String>)>> {
    async_stream::try_stream! {
        if from <= to {
            let stream = js
                .get_stream(spec::AUDIT.name)
                .await
                .with_context(|| format!("stream {} is missing", spec::AUDIT.name))?;
            let reader = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: js.client().new_inbox(),
                    filter_subject: subject::AUDIT_LOG.to_owned(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    replay_policy: consumer::ReplayPolicy::Instant,
                    ..Default::default()
                })
                .await
                .context("cannot read the audit stream")?;
            let mut messages = reader
                .messages()
                .await
                .context("cannot read the audit stream")?;
            loop {
                let message = tokio::time::timeout(READ_IDLE, messages.next())
                    .await
                    .context("the audit stream stopped sending records")?
                    .context("the audit stream ended early")?
                    .context("cannot read the audit stream")?;
                let sequence = message
                    .info()
                    .map_err(|e| anyhow::anyhow!("a record without stream metadata: {e}"))?
                    .stream_sequence;
                let record = serde_json::from_slice::<AuditRecord>(&message.payload)
                    .map_err(|e| format!("message {sequence}: {e}"));
                yield (sequence, record);
                if sequence >= to {
                    break;
                }
            }
        }
    }
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
    fn only_auditors_and_admins_read() {
        let actor = |roles: Vec<Role>| Actor {
            user: "u".into(),
            roles,
        };
        assert!(authorize(&actor(vec![Role::Auditor])).is_ok());
        assert!(authorize(&actor(vec![Role::Admin])).is_ok());
        assert_eq!(
            authorize(&actor(vec![Role::DutyOfficer, Role::System]))
                .unwrap_err()
                .status,
            403
        );
    }
}
