//! The crisis status read model in the KRISBUD_CRISES bucket, and its one
//! writer, [`Batcher`]: the projector and the command handlers all hand it
//! their events.
//!
//! Folding is idempotent and order-independent (delivery reports overwrite their
//! job's entry, confirmations are keyed by event id), and every write is a
//! compare-and-set, so several coordinators and redeliveries never double count.

use async_nats::jetstream::kv;
use krisbud_proto::event::DeliveryState;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

use krisbud_proto::job::MsgType;
use krisbud_proto::status::{
    ChannelState, ChannelStatus, Confirmation, CrisisProjection, CrisisState, CrisisStatus,
    Escalation, Expiry, JobTally, RevisionKind, RevisionStatus,
};
use krisbud_proto::template::RenderedLanguage;
use krisbud_proto::{Envelope, Event};

/// Events waiting for the batcher, each with where its result goes.
type Waiting = (Envelope, oneshot::Sender<Result<(), String>>);

/// At most this many events are folded into one write.
const MOST_AT_ONCE: usize = 512;

/// Folds the events its callers hand it into the read model in batches: whatever
/// arrived while the last write was under way goes into the next one, one
/// read-fold-write per crisis for the lot. A fan-out to a million reports ~1,000
/// job outcomes in seconds; written one by one, each rewrote the whole projection
/// and status lagged the delivery by seconds. A caller's `apply` returns only
/// once the write holding its event is stored, so its message is acked after the
/// effect is durable, as before.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Batcher {
    /// Starts the writer task; it ends when the last `Batcher` clone is dropped.
    pub fn start(store: kv::Store) -> Batcher {
        let (queue, mut waiting) = mpsc::unbounded_channel::<Waiting>();
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while batch.len() < MOST_AT_ONCE {
                    match waiting.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let mut by_crisis: BTreeMap<String, Vec<Waiting>> = BTreeMap::new();
                for (envelope, reply) in batch {
                    match envelope.event.crisis_id() {
                        Some(id) => by_crisis
                            .entry(id.to_owned())
                            .or_default()
                            .push((envelope, reply)),
                        None => {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                for (crisis_id, items) in by_crisis {
                    let envelopes: Vec<&Envelope> = items.iter().map(|(e, _)| e).collect();
                    let result = apply_all(&store, &crisis_id, &envelopes)
                        .await
                        .map_err(|e| format!("{e:#}"));
                    for (_, reply) in items {
                        let _ = reply.send(result.clone());
                    }
                }
            }
        });
        Batcher { queue }
    }

    /// Folds `envelope` in with whatever else is waiting; returns once stored.
    pub async fn apply(&self, envelope: Envelope) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((envelope, reply))
            .map_err(|_| anyhow::anyhow!("the status writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the status writer has stopped"))?
            .map_err(|e| anyhow::anyhow!(e))
    }
}

/// Applies events of one crisis to its projection in one compare-and-set write,
/// retrying on concurrent writes.
async fn apply_all(
    store: &kv::Store,
    crisis_id: &str,
    envelopes: &[&Envelope],
) -> anyhow::Result<()> {
    for _ in 0..50 {
        let entry = store.entry(crisis_id).await?;
        let (mut projection, revision) = match &entry {
            Some(e) if !e.value.is_empty() => (
                serde_json::from_slice::<CrisisProjection>(&e.value)?,
                e.revision,
            ),
            Some(e) => (CrisisProjection::default(), e.revision),
            None => (CrisisProjection::default(), 0),
        };
        let mut changed = false;
        for envelope in envelopes {
            changed |= fold(&mut projection, envelope);
        }
        if !changed {
            return Ok(());
        }
        let body = serde_json::to_vec(&projection)?;
        let written = if revision == 0 {
            store
                .create(crisis_id, body.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            store
                .update(crisis_id, body.into(), revision)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match written {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "crisis projection changed concurrently; retrying")
            }
        }
    }
    anyhow::bail!("crisis {crisis_id}: projection kept changing under 50 attempts")
}

/// Reads one crisis's status.
pub async fn get(store: &kv::Store, crisis_id: &str) -> anyhow::Result<Option<CrisisStatus>> {
    match store.get(crisis_id).await? {
        Some(bytes) if !bytes.is_empty() => Ok(Some(
            serde_json::from_slice::<CrisisProjection>(&bytes)?.status,
        )),
        _ => Ok(None),
    }
}

/// Folds an event in; returns whether anything changed.
pub fn fold(p: &mut CrisisProjection, envelope: &Envelope) -> bool {
    match &envelope.event {
        Event::CrisisDeclared(e) => {
            if p.status.declared_at.is_some() {
                return false;
            }
            migrate(p);
            let s = &mut p.status;
            s.crisis_id = e.crisis_id.clone();
            s.declared_by = Some(envelope.actor.user.clone());
            s.declared_at = Some(envelope.occurred_at);
            if e.revision >= s.revision {
                s.revision = e.revision;
                s.template = Some(e.template.clone());
                s.status = e.status;
                s.headline = headline(&e.messages);
                s.severity = Some(e.cap.severity);
                s.expires_at = e.expires_at;
                s.variables = e.variables.clone();
            }
            let r = revision_entry(s, e.revision);
            r.kind = RevisionKind::Declared;
            r.msg_type = MsgType::Alert;
            r.by = Some(envelope.actor.user.clone());
            r.at = Some(envelope.occurred_at);
            for channel in &e.channels {
                r.channels.entry(*channel).or_default();
            }
        }
        Event::CrisisUpdated(e) | Event::CrisisAllClear(e) | Event::CrisisCancelled(e) => {
            migrate(p);
            let s = &mut p.status;
            if s.revisions
                .iter()
                .any(|r| r.revision == e.revision && r.at.is_some())
            {
                return false;
            }
            let (kind, state) = match &envelope.event {
                Event::CrisisUpdated(_) => (RevisionKind::Updated, CrisisState::Active),
                Event::CrisisAllClear(_) => (RevisionKind::AllClear, CrisisState::AllClear),
                _ => (RevisionKind::Cancelled, CrisisState::Cancelled),
            };
            s.crisis_id = e.crisis_id.clone();
            if e.revision >= s.revision {
                s.revision = e.revision;
                s.template = Some(e.template.clone());
                s.status = e.status;
                s.severity = Some(e.cap.severity);
                s.expires_at = e.expires_at;
                s.variables = e.variables.clone();
                if kind == RevisionKind::Updated {
                    s.headline = headline(&e.messages);
                }
                if s.state != CrisisState::Closed {
                    s.state = state;
                }
            }
            let r = revision_entry(s, e.revision);
            r.kind = kind;
            r.msg_type = e.msg_type;
            r.by = Some(envelope.actor.user.clone());
            r.at = Some(envelope.occurred_at);
            r.reason = e.reason.clone();
            r.added_audiences = e.added_audiences.clone();
            for channel in &e.channels {
                r.channels.entry(*channel).or_default();
            }
        }
        Event::CrisisClosed(e) => {
            if p.status.state == CrisisState::Closed {
                return false;
            }
            migrate(p);
            let s = &mut p.status;
            s.crisis_id = e.crisis_id.clone();
            s.state = CrisisState::Closed;
            s.closed_by = Some(envelope.actor.user.clone());
            s.closed_at = Some(envelope.occurred_at);
        }
        Event::DispatchPlanned(e) => {
            migrate(p);
            p.status.crisis_id = e.crisis_id.clone();
            let r = revision_entry(&mut p.status, e.revision);
            for (channel, plan) in &e.channels {
                let c = r.channels.entry(*channel).or_default();
                c.total = plan.recipients;
                c.planned = true;
            }
        }
        Event::DeliveryReported(e) => {
            let notice = krisbud_proto::event::notice_job(&e.job_id);
            let mut tally = JobTally {
                channel: Some(e.channel),
                provider: e.provider.clone(),
                revision: e.revision,
                escalation_level: notice.map(|n| n.level),
                escalated_channel: notice.map(|n| n.channel),
                ..JobTally::default()
            };
            for outcome in &e.outcomes {
                match outcome.state {
                    DeliveryState::Sent => tally.sent += 1,
                    DeliveryState::Delivered => tally.delivered += 1,
                    DeliveryState::Failed => {
                        tally.failed += 1;
                        let reason = outcome.reason.clone().unwrap_or_else(|| "unknown".into());
                        *tally.failed_by_reason.entry(reason).or_default() += 1;
                    }
                }
            }
            // A job's own report has the id `<job>.outcome` and replaces that job's
            // tally; any other report about the job is a provider's later delivery
            // report settling recipients the job's report counted as sent, kept
            // under its own event id so a redelivery does not count it twice.
            let key = if envelope.id == format!("{}.outcome", e.job_id) {
                // Possible duplicates are counted from the job's own report only:
                // a later delivery report is about recipients already counted.
                tally.possible_duplicates =
                    e.outcomes.iter().filter(|o| o.possible_duplicate).count() as u64;
                tally.retries = u64::from(e.retries);
                e.job_id.clone()
            } else {
                tally.settles_sent = tally.delivered + tally.failed;
                envelope.id.clone()
            };
            if p.jobs.get(&key) == Some(&tally) {
                return false;
            }
            p.status.crisis_id = e.crisis_id.clone();
            p.jobs.insert(key, tally);
        }
        Event::TemplateDrafted(_)
        | Event::TemplateSubmitted(_)
        | Event::TemplateApproved(_)
        | Event::TemplateRejected(_)
        | Event::TemplateRetired(_)
        | Event::AuditKeyRotated(_)
        | Event::AudienceCreated(_)
        | Event::AudienceMembersImported(_)
        | Event::AudienceDeleted(_)
        | Event::ExerciseRefused(_)
        | Event::CommandRefused(_)
        | Event::RecipientLookedUp(_)
        | Event::ConsoleSession(_) => return false,
        Event::EscalationRaised(e) => {
            migrate(p);
            p.status.crisis_id = e.crisis_id.clone();
            let escalations = &mut revision_entry(&mut p.status, e.revision)
                .channels
                .entry(e.channel)
                .or_default()
                .escalations;
            match escalations.binary_search_by_key(&e.level, |x| x.level) {
                Ok(_) => return false,
                Err(i) => escalations.insert(
                    i,
                    Escalation {
                        level: e.level,
                        deadline: e.deadline,
                        at: envelope.occurred_at,
                        ..Escalation::default()
                    },
                ),
            }
        }
        Event::CrisisExpired(e) => {
            if p.status
                .expired
                .as_ref()
                .is_some_and(|x| x.revision >= e.revision)
            {
                return false;
            }
            migrate(p);
            p.status.crisis_id = e.crisis_id.clone();
            p.status.expired = Some(Expiry {
                revision: e.revision,
                expires_at: e.expires_at,
                at: envelope.occurred_at,
            });
        }
        Event::ChannelConfirmed(e) => {
            if !p.confirmation_events.insert(envelope.id.clone()) {
                return false;
            }
            migrate(p);
            p.status.crisis_id = e.crisis_id.clone();
            revision_entry(&mut p.status, e.revision)
                .channels
                .entry(e.channel)
                .or_default()
                .confirmations
                .push(Confirmation {
                    revision: e.revision,
                    by: envelope.actor.user.clone(),
                    at: envelope.occurred_at,
                    note: e.note.clone(),
                });
        }
    }
    recount(p);
    true
}

/// The Swedish banner headline (or the first language's), to recognise a crisis.
fn headline(messages: &[RenderedLanguage]) -> String {
    messages
        .iter()
        .find(|m| m.language == "sv")
        .or(messages.first())
        .map(|m| m.banner.headline.clone())
        .unwrap_or_default()
}

/// The entry of `revision`, created (in order) when it is not there yet.
fn revision_entry(s: &mut CrisisStatus, revision: u32) -> &mut RevisionStatus {
    let revision = revision.max(1);
    let at = match s.revisions.binary_search_by_key(&revision, |r| r.revision) {
        Ok(i) => i,
        Err(i) => {
            s.revisions.insert(
                i,
                RevisionStatus {
                    revision,
                    kind: if revision == 1 {
                        RevisionKind::Declared
                    } else {
                        RevisionKind::Updated
                    },
                    ..RevisionStatus::default()
                },
            );
            i
        }
    };
    #[allow(
        clippy::indexing_slicing,
        reason = "`at` was found or inserted just above"
    )]
    &mut s.revisions[at]
}

/// A projection stored before revisions were counted apart holds revision 1's
/// channels only in `channels`; they become that revision's entry.
fn migrate(p: &mut CrisisProjection) {
    let s = &mut p.status;
    if s.revisions.is_empty() && !s.channels.is_empty() {
        let channels = std::mem::take(&mut s.channels);
        let (by, at) = (s.declared_by.clone(), s.declared_at);
        let r = revision_entry(s, 1);
        r.channels = channels;
        r.by = by;
        r.at = at;
    }
}

/// Recomputes every revision's channel counts from the job tallies; `channels`
/// shows the current revision's.
fn recount(p: &mut CrisisProjection) {
    migrate(p);
    for revision in p.status.revisions.iter_mut() {
        recount_revision(revision, &p.jobs);
    }
    // Before the declaration is folded in (reports can come first when the
    // projection is rebuilt out of order), the newest revision seen.
    let current = match p.status.revision {
        0 => p.status.revisions.last().map_or(0, |r| r.revision),
        n => n,
    };
    p.status.channels = p
        .status
        .revisions
        .iter()
        .find(|r| r.revision == current)
        .map(|r| r.channels.clone())
        .unwrap_or_default();
}

fn recount_revision(revision: &mut RevisionStatus, jobs: &BTreeMap<String, JobTally>) {
    let number = revision.revision;
    for (channel, status) in revision.channels.iter_mut() {
        let mut fresh = ChannelStatus {
            total: status.total,
            planned: status.planned,
            confirmations: std::mem::take(&mut status.confirmations),
            escalations: std::mem::take(&mut status.escalations),
            ..ChannelStatus::default()
        };
        // Escalation notices to the duty officers count under their escalation,
        // never as the crisis's own recipients.
        for escalation in fresh.escalations.iter_mut() {
            let (mut handed, mut failed, mut failed_later) = (0, 0, 0);
            for tally in jobs.values().filter(|t| {
                t.escalated_channel == Some(*channel)
                    && t.escalation_level == Some(escalation.level)
                    && t.revision.max(1) == number
            }) {
                if tally.settles_sent > 0 {
                    // A provider's later report: recipients counted as sent.
                    failed_later += tally.failed;
                } else {
                    handed += tally.sent + tally.delivered;
                    failed += tally.failed;
                }
            }
            escalation.notices_sent = handed.saturating_sub(failed_later);
            escalation.notices_failed = failed + failed_later;
        }
        let mut settled = 0;
        for tally in jobs.values().filter(|t| {
            t.channel == Some(*channel)
                && t.revision.max(1) == number
                && t.escalation_level.is_none()
        }) {
            settled += tally.settles_sent;
            fresh.sent += tally.sent;
            fresh.delivered += tally.delivered;
            fresh.failed += tally.failed;
            fresh.possible_duplicates += tally.possible_duplicates;
            fresh.retries += tally.retries;
            for (reason, n) in &tally.failed_by_reason {
                *fresh.failed_by_reason.entry(reason.clone()).or_default() += n;
            }
            *fresh.providers.entry(tally.provider.clone()).or_default() +=
                (tally.sent + tally.delivered + tally.failed).saturating_sub(tally.settles_sent);
        }
        fresh.sent = fresh.sent.saturating_sub(settled);
        let done = fresh.sent + fresh.delivered + fresh.failed;
        fresh.pending = fresh.total.saturating_sub(done);
        fresh.state = if !fresh.planned || fresh.pending > 0 {
            ChannelState::Pending
        } else if fresh.failed == 0 {
            ChannelState::Delivered
        } else if fresh.failed >= fresh.total && fresh.total > 0 {
            ChannelState::Failed
        } else {
            ChannelState::PartlyFailed
        };
        *status = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krisbud_proto::event::{
        DeliveryReported, DispatchPlanned, PlannedChannel, RecipientOutcome,
    };
    use krisbud_proto::{Actor, Channel};

    fn report(id: &str, states: &[DeliveryState]) -> Envelope {
        let outcomes = states
            .iter()
            .enumerate()
            .map(|(i, state)| RecipientOutcome {
                recipient: format!("rcp:{i}"),
                state: *state,
                provider_ref: None,
                reason: None,
                possible_duplicate: false,
            })
            .collect();
        Envelope::with_id(
            id.to_owned(),
            Actor::service("channel-sms"),
            Event::DeliveryReported(DeliveryReported {
                crisis_id: "c1".into(),
                revision: 1,
                channel: Channel::Sms,
                job_id: "c1.r1.sms.sv.0".into(),
                provider: "46elks".into(),
                outcomes,
                retries: 0,
            }),
        )
    }

    fn plan(recipients: u64, jobs: u64) -> Envelope {
        Envelope::with_id(
            "c1.r1.planned".into(),
            Actor::service("coordinator"),
            Event::DispatchPlanned(DispatchPlanned {
                crisis_id: "c1".into(),
                revision: 1,
                channels: [(
                    Channel::Sms,
                    PlannedChannel {
                        recipients,
                        jobs,
                        duplicates_removed: 0,
                    },
                )]
                .into(),
            }),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_in_hand_are_folded_in_few_writes_and_every_one_counts() {
        let nats = krisbud_tests::NatsServer::start();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let crises = &krisbud_proto::spec::CRISES;
        krisbud_kit::nats::provision(&js, &[], &[crises])
            .await
            .unwrap();
        let store = js.get_key_value(crises.name).await.unwrap();
        let batcher = Batcher::start(store.clone());
        batcher.apply(plan(1_000, 200)).await.unwrap();
        let reports = (0..200).map(|j| {
            let batcher = batcher.clone();
            let event = flagged_report(&format!("c1.r1.sms.sv.{j}.outcome"), &j.to_string(), 5, 0);
            async move { batcher.apply(event).await }
        });
        for result in futures::future::join_all(reports).await {
            result.unwrap();
        }
        let status = get(&store, "c1").await.unwrap().unwrap();
        let sms = &status.channels[&Channel::Sms];
        assert_eq!(
            (sms.total, sms.sent, sms.pending),
            (1_000, 1_000, 0),
            "{sms:?}"
        );
        // Only this key is written, so its revision counts the writes: one for the
        // plan, then a few for the 200 reports that arrived together.
        let writes = store.entry("c1").await.unwrap().unwrap().revision;
        assert!(writes <= 20, "{writes} writes for 201 events");
    }

    /// A report of job `job` whose first `flagged` recipients (of `sent`) are
    /// possible duplicates.
    fn flagged_report(id: &str, job: &str, sent: usize, flagged: usize) -> Envelope {
        let outcomes = (0..sent)
            .map(|i| RecipientOutcome {
                recipient: format!("rcp:{job}:{i}"),
                state: DeliveryState::Sent,
                provider_ref: None,
                reason: Some("accepted".into()),
                possible_duplicate: i < flagged,
            })
            .collect();
        Envelope::with_id(
            id.to_owned(),
            Actor::service("channel-sms"),
            Event::DeliveryReported(DeliveryReported {
                crisis_id: "c1".into(),
                revision: 1,
                channel: Channel::Sms,
                job_id: job.to_owned(),
                provider: "sinch".into(),
                outcomes,
                retries: 0,
            }),
        )
    }

    #[test]
    fn possible_duplicates_are_counted_once_however_often_a_report_comes() {
        let mut p = CrisisProjection::default();
        fold(&mut p, &plan(10, 2));
        let first = flagged_report("c1.r1.sms.sv.0.outcome", "c1.r1.sms.sv.0", 6, 4);
        assert!(fold(&mut p, &first));
        assert!(
            !fold(&mut p, &first),
            "a redelivered report changes nothing"
        );
        assert_eq!(p.status.channels[&Channel::Sms].possible_duplicates, 4);
        fold(
            &mut p,
            &flagged_report("c1.r1.sms.sv.1.outcome", "c1.r1.sms.sv.1", 4, 1),
        );
        // A provider's later delivery report about a flagged recipient settles it
        // but does not count it again, even when it carries the flag.
        let mut dlr = flagged_report("c1.r1.sms.sv.0.dlr.x", "c1.r1.sms.sv.0", 1, 1);
        if let Event::DeliveryReported(e) = &mut dlr.event {
            e.outcomes[0].state = DeliveryState::Delivered;
        }
        assert!(fold(&mut p, &dlr));
        assert!(!fold(&mut p, &dlr));
        assert!(!fold(&mut p, &first), "an old redelivery changes nothing");
        let sms = &p.status.channels[&Channel::Sms];
        assert_eq!(sms.possible_duplicates, 5);
        assert_eq!(
            (sms.total, sms.sent, sms.delivered, sms.pending),
            (10, 9, 1, 0)
        );
        let json = serde_json::to_value(&p.status).unwrap();
        assert_eq!(json["channels"]["sms"]["possible_duplicates"], 5);
    }

    /// A crisis event from its JSON payload.
    fn crisis_event(id: &str, kind: &str, payload: &serde_json::Value) -> Envelope {
        let event: Event =
            serde_json::from_value(serde_json::json!({ "kind": kind, "payload": payload }))
                .unwrap();
        Envelope::with_id(
            id.to_owned(),
            Actor {
                user: "tib.maria".into(),
                roles: vec![],
                channels: Vec::new(),
            },
            event,
        )
    }

    fn revision_payload(revision: u32) -> serde_json::Value {
        serde_json::json!({
            "crisis_id": "c1",
            "revision": revision,
            "msg_type": if revision == 1 { "Alert" } else { "Update" },
            "references": [],
            "template": { "id": "vattenlacka", "version": 1 },
            "status": "Actual",
            "cap": {
                "category": "Infra", "event": "Vattenläcka", "urgency": "Immediate",
                "severity": "Moderate", "certainty": "Observed", "response_type": "Prepare"
            },
            "variables": {},
            "audiences": ["farsta-boende"],
            "channels": ["sms"],
            "messages": [],
            "declared_at": "2026-11-26T08:00:00Z"
        })
    }

    #[test]
    fn each_revision_keeps_its_own_counts_and_status_shows_the_current_one() {
        let mut p = CrisisProjection::default();
        fold(
            &mut p,
            &crisis_event("c1.r1.declared", "CrisisDeclared", &revision_payload(1)),
        );
        fold(&mut p, &plan(10, 2));
        fold(
            &mut p,
            &flagged_report("c1.r1.sms.sv.0.outcome", "c1.r1.sms.sv.0", 10, 0),
        );
        assert_eq!(p.status.channels[&Channel::Sms].sent, 10);

        let updated = crisis_event("c1.r2.update.x", "CrisisUpdated", &revision_payload(2));
        assert!(fold(&mut p, &updated));
        assert!(
            !fold(&mut p, &updated),
            "a redelivered revision changes nothing"
        );
        assert_eq!(p.status.revision, 2);
        assert_eq!(p.status.state, CrisisState::Active);
        let sms = &p.status.channels[&Channel::Sms];
        assert_eq!(
            (sms.planned, sms.sent),
            (false, 0),
            "revision 2 starts afresh"
        );
        assert_eq!(p.status.revisions[0].channels[&Channel::Sms].sent, 10);
        assert_eq!(p.status.revisions[1].kind, RevisionKind::Updated);

        let mut all_clear = revision_payload(3);
        all_clear["reason"] = serde_json::json!(null);
        fold(
            &mut p,
            &crisis_event("c1.r3.all-clear.x", "CrisisAllClear", &all_clear),
        );
        assert_eq!(p.status.state, CrisisState::AllClear);
        fold(
            &mut p,
            &crisis_event(
                "c1.r3.close.x",
                "CrisisClosed",
                &serde_json::json!({ "crisis_id": "c1", "revision": 3 }),
            ),
        );
        assert_eq!(p.status.state, CrisisState::Closed);
        assert_eq!(p.status.revision, 3);
        assert_eq!(p.status.closed_by.as_deref(), Some("tib.maria"));
        // A late report of revision 1 counts there, not in the current revision.
        fold(
            &mut p,
            &flagged_report("c1.r1.sms.sv.1.outcome", "c1.r1.sms.sv.1", 0, 0),
        );
        assert_eq!(p.status.revisions[0].channels[&Channel::Sms].sent, 10);
        assert_eq!(p.status.channels[&Channel::Sms].sent, 0);
    }

    fn escalation(level: u32) -> Envelope {
        let e = krisbud_proto::event::EscalationRaised {
            crisis_id: "c1".into(),
            revision: 1,
            channel: Channel::Sms,
            level,
            deadline: chrono::Utc::now(),
            severity: krisbud_proto::model::Severity::Severe,
            status: krisbud_proto::AlertStatus::Actual,
            headline: "Vattenläcka".into(),
            notify: [("tib".to_owned(), 1)].into(),
        };
        Envelope::with_id(
            e.event_id(),
            Actor::service("coordinator"),
            Event::EscalationRaised(e),
        )
    }

    #[test]
    fn escalations_are_recorded_once_per_level_and_their_notices_kept_apart() {
        let mut p = CrisisProjection::default();
        fold(&mut p, &plan(10, 1));
        fold(
            &mut p,
            &flagged_report("c1.r1.sms.sv.0.outcome", "c1.r1.sms.sv.0", 4, 0),
        );
        assert!(fold(&mut p, &escalation(1)));
        assert!(!fold(&mut p, &escalation(1)), "a level is recorded once");
        assert!(fold(&mut p, &escalation(2)));
        // Two notices by SMS for level 1, one of which the provider later fails.
        let notice = "c1.r1.sms.escalation.1.sms.0";
        fold(
            &mut p,
            &flagged_report(&format!("{notice}.outcome"), notice, 2, 0),
        );
        let mut dlr = report(
            "c1.r1.sms.escalation.1.sms.0.dlr.x",
            &[DeliveryState::Failed],
        );
        if let Event::DeliveryReported(r) = &mut dlr.event {
            r.job_id = notice.into();
        }
        fold(&mut p, &dlr);
        let sms = &p.status.channels[&Channel::Sms];
        assert_eq!(
            (sms.total, sms.sent, sms.pending, sms.failed),
            (10, 4, 6, 0),
            "notices are not the crisis's recipients"
        );
        assert_eq!(sms.providers["sinch"], 4);
        let levels: Vec<(u32, u64, u64)> = sms
            .escalations
            .iter()
            .map(|e| (e.level, e.notices_sent, e.notices_failed))
            .collect();
        assert_eq!(levels, vec![(1, 1, 1), (2, 0, 0)]);
        assert_eq!(
            p.status.revisions[0].channels[&Channel::Sms]
                .escalations
                .len(),
            2
        );
    }

    #[test]
    fn an_expiry_is_recorded_once() {
        let mut p = CrisisProjection::default();
        fold(&mut p, &plan(1, 1));
        let expired = Envelope::with_id(
            "c1.r1.expired".into(),
            Actor::service("coordinator"),
            Event::CrisisExpired(krisbud_proto::event::CrisisExpired {
                crisis_id: "c1".into(),
                revision: 1,
                expires_at: chrono::Utc::now(),
                languages: vec!["sv".into()],
            }),
        );
        assert!(fold(&mut p, &expired));
        assert!(!fold(&mut p, &expired));
        assert_eq!(p.status.expired.as_ref().map(|x| x.revision), Some(1));
    }

    #[test]
    fn retries_are_summed_over_jobs_once_each() {
        let mut p = CrisisProjection::default();
        fold(&mut p, &plan(10, 2));
        let with_retries = |id: &str, job: &str, retries: u32| {
            let mut e = flagged_report(id, job, 5, 0);
            if let Event::DeliveryReported(r) = &mut e.event {
                r.retries = retries;
            }
            e
        };
        let first = with_retries("c1.r1.sms.sv.0.outcome", "c1.r1.sms.sv.0", 3);
        assert!(fold(&mut p, &first));
        assert!(!fold(&mut p, &first));
        fold(
            &mut p,
            &with_retries("c1.r1.sms.sv.1.outcome", "c1.r1.sms.sv.1", 2),
        );
        assert_eq!(p.status.channels[&Channel::Sms].retries, 5);
    }

    #[test]
    fn provider_delivery_reports_move_sent_recipients_once() {
        let mut p = CrisisProjection::default();
        let plan = Envelope::with_id(
            "c1.r1.planned".into(),
            Actor::service("coordinator"),
            Event::DispatchPlanned(DispatchPlanned {
                crisis_id: "c1".into(),
                revision: 1,
                channels: [(
                    Channel::Sms,
                    PlannedChannel {
                        recipients: 3,
                        jobs: 1,
                        duplicates_removed: 0,
                    },
                )]
                .into(),
            }),
        );
        fold(&mut p, &plan);
        fold(
            &mut p,
            &report("c1.r1.sms.sv.0.outcome", &[DeliveryState::Sent; 3]),
        );
        let dlr = report("c1.r1.sms.sv.0.dlr.a", &[DeliveryState::Delivered]);
        assert!(fold(&mut p, &dlr));
        assert!(!fold(&mut p, &dlr), "a redelivered report changes nothing");
        fold(
            &mut p,
            &report("c1.r1.sms.sv.0.dlr.b", &[DeliveryState::Failed]),
        );
        let sms = &p.status.channels[&Channel::Sms];
        assert_eq!(
            (sms.total, sms.sent, sms.delivered, sms.failed, sms.pending),
            (3, 1, 1, 1, 0)
        );
        assert_eq!(sms.providers["46elks"], 3);
    }
}
