//! Confirmation deadlines, escalation and expiry.
//!
//! Nothing here is an in-memory timer. Every coordinator instance sweeps the
//! status read model (KRISBUD_CRISES) every `sweep_interval_ms` and asks the pure
//! functions [`due`] and [`expiry_due`] what is due at `now`. What is due is
//! appended with a deterministic id (`<crisis>.r<rev>.<channel>.escalation.<level>`,
//! `<crisis>.r<rev>.expired`), so when two instances raise the same level
//! JetStream drops the second; and the projection records every raised level in
//! the status, so a sweep after the duplicate window sees it too. A restart loses
//! nothing: the next sweep computes the same answer from the same status.
//!
//! Each `EscalationRaised` is turned into SMS and email notices to the members of
//! the notify audiences by a durable consumer ([`Notifier`]), with job ids
//! `<event id>.<sms|email>.<batch>` that the projection recognises and counts under
//! the escalation, never among the crisis's own recipients.

use krisbud_kit::text::escape_html;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use krisbud_kit::bus::Expect;
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_kit::privacy::recipient_ref;
use krisbud_kit::{Bus, CancellationToken};
use krisbud_proto::event::{CrisisExpired, EscalationRaised};
use krisbud_proto::job::{ChannelMessage, DispatchJob, MsgType, Recipient};
use krisbud_proto::model::{
    Address, CapInfo, Category, Certainty, ResponseType, Severity, Urgency,
};
use krisbud_proto::status::{CrisisProjection, CrisisState, CrisisStatus};
use krisbud_proto::template::{EmailMessage, SmsMessage};
use krisbud_proto::{Actor, AlertStatus, Channel, Envelope, Event};
use serde::Deserialize;

use super::Coordinator;
use super::projection;
use crate::audience::Audiences;
use crate::{gsm, render};

/// `[coordinator.confirmation]`: deadlines by CAP severity, counted from when the
/// current revision was issued, the repeat interval, and who is woken.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfirmationConfig {
    pub extreme_secs: u64,
    pub severe_secs: u64,
    pub moderate_secs: u64,
    pub minor_secs: u64,
    pub unknown_secs: u64,
    /// Seconds between one escalation level and the next.
    pub repeat_secs: u64,
    /// How often every coordinator sweeps the status for due deadlines and expiries.
    pub sweep_interval_ms: u64,
    /// Audiences (the duty officers, a backup) notified by SMS and email.
    pub notify_audiences: Vec<String>,
}

impl Default for ConfirmationConfig {
    fn default() -> Self {
        ConfirmationConfig {
            extreme_secs: 300,
            severe_secs: 900,
            moderate_secs: 1800,
            minor_secs: 3600,
            unknown_secs: 1800,
            repeat_secs: 600,
            sweep_interval_ms: 1000,
            notify_audiences: Vec::new(),
        }
    }
}

impl ConfirmationConfig {
    /// The confirmation deadline for a crisis of `severity`.
    pub fn deadline(&self, severity: Severity) -> TimeDelta {
        let secs = match severity {
            Severity::Extreme => self.extreme_secs,
            Severity::Severe => self.severe_secs,
            Severity::Moderate => self.moderate_secs,
            Severity::Minor => self.minor_secs,
            Severity::Unknown => self.unknown_secs,
        };
        TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
    }

    fn repeat(&self) -> TimeDelta {
        TimeDelta::seconds(i64::try_from(self.repeat_secs.max(1)).unwrap_or(i64::MAX / 1000))
    }
}

/// An escalation level that is due and not raised yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub channel: Channel,
    pub revision: u32,
    pub level: u32,
    /// When the level fell due.
    pub deadline: DateTime<Utc>,
}

/// The escalations due at `now`: for every channel of the current revision that
/// has no confirmation of that revision, the highest level whose deadline passed,
/// when it is above every level already raised (so a long outage raises one level,
/// not a burst). Nothing for a closed or expired crisis.
pub fn due(status: &CrisisStatus, now: DateTime<Utc>, config: &ConfirmationConfig) -> Vec<Due> {
    if status.state == CrisisState::Closed
        || status.declared_at.is_none()
        || status
            .expired
            .as_ref()
            .is_some_and(|x| x.revision >= status.revision)
    {
        return Vec::new();
    }
    let Some(current) = status
        .revisions
        .iter()
        .find(|r| r.revision == status.revision)
    else {
        return Vec::new();
    };
    let Some(issued) = current.at.or(status.declared_at) else {
        return Vec::new();
    };
    let first = issued + config.deadline(status.severity.unwrap_or(Severity::Unknown));
    if now < first {
        return Vec::new();
    }
    let repeat = config.repeat();
    let repeats = (now - first).num_milliseconds() / repeat.num_milliseconds().max(1);
    let level = u32::try_from(repeats).unwrap_or(u32::MAX - 1) + 1;
    current
        .channels
        .iter()
        .filter(|(_, c)| {
            !c.confirmations
                .iter()
                .any(|x| x.revision == status.revision)
        })
        .filter(|(_, c)| c.escalations.iter().all(|x| x.level < level))
        .map(|(channel, _)| Due {
            channel: *channel,
            revision: status.revision,
            level,
            deadline: first + repeat * (level as i32 - 1),
        })
        .collect()
}

/// The revision and `expires_at` of a crisis whose expiry is due at `now` and
/// not recorded yet; `None` for a closed crisis.
pub fn expiry_due(status: &CrisisStatus, now: DateTime<Utc>) -> Option<(u32, DateTime<Utc>)> {
    let expires_at = status.expires_at?;
    let recorded = status
        .expired
        .as_ref()
        .is_some_and(|x| x.revision >= status.revision);
    (status.state != CrisisState::Closed
        && status.declared_at.is_some()
        && now >= expires_at
        && !recorded)
        .then_some((status.revision, expires_at))
}

/// The longest one sweep may take before it is abandoned (and tried again).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The status of every crisis not closed, kept current by a watch of the
/// KRISBUD_CRISES bucket, so a sweep reads memory, not the bucket.
type Statuses = Arc<Mutex<BTreeMap<String, CrisisStatus>>>;

/// The periodic sweep every coordinator instance runs, over the status read model
/// as a watch of its bucket keeps it in memory.
pub struct Sweeper {
    pub coordinator: Arc<Coordinator>,
    pub config: ConfirmationConfig,
}

impl Sweeper {
    /// Sweeps every `sweep_interval_ms` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let statuses = Statuses::default();
        let watching = tokio::spawn(follow(
            self.coordinator.crises.clone(),
            statuses.clone(),
            shutdown.clone(),
        ));
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.sweep_interval_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let snapshot: Vec<CrisisStatus> = statuses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            let swept = tokio::select! {
                () = shutdown.cancelled() => break,
                swept = tokio::time::timeout(SWEEP_TIMEOUT, self.sweep(&snapshot, Utc::now())) => swept,
            };
            match swept {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "deadline sweep failed; trying again"
                    )
                }
                Err(_) => tracing::warn!("deadline sweep timed out; trying again"),
            }
        }
        let _ = watching.await;
        Ok(())
    }

    /// One sweep over `statuses` at `now`.
    pub async fn sweep(&self, statuses: &[CrisisStatus], now: DateTime<Utc>) -> anyhow::Result<()> {
        for status in statuses {
            if due(status, now, &self.config).is_empty() && expiry_due(status, now).is_none() {
                continue;
            }
            // The watched copy may lag behind what this instance just raised:
            // decide again on the stored status.
            let Some(status) = projection::get(&self.coordinator.crises, &status.crisis_id).await?
            else {
                continue;
            };
            for due in due(&status, now, &self.config) {
                self.raise(&status, due).await?;
            }
            if let Some((revision, expires_at)) = expiry_due(&status, now) {
                self.expire(&status, revision, expires_at).await?;
            }
        }
        Ok(())
    }

    async fn raise(&self, status: &CrisisStatus, due: Due) -> anyhow::Result<()> {
        let mut notify = BTreeMap::new();
        for id in &self.config.notify_audiences {
            match self.coordinator.audiences.get(id).await {
                Ok(Some(a)) if status.status == AlertStatus::Actual || a.exercise => {
                    notify.insert(id.clone(), a.generation);
                }
                Ok(Some(_)) => {
                    tracing::warn!(audience = %id, crisis = %status.crisis_id, "notify audience not marked for exercises: not notified of an exercise's escalation");
                }
                Ok(None) => tracing::warn!(audience = %id, "notify audience does not exist"),
                Err(p) => anyhow::bail!("cannot read audience {id}: {}", p.detail),
            }
        }
        let event = EscalationRaised {
            crisis_id: status.crisis_id.clone(),
            revision: due.revision,
            channel: due.channel,
            level: due.level,
            deadline: due.deadline,
            severity: status.severity.unwrap_or(Severity::Unknown),
            status: status.status,
            headline: status.headline.clone(),
            notify,
        };
        let mut envelope = Envelope::with_id(
            event.event_id(),
            Actor::service("coordinator"),
            Event::EscalationRaised(event),
        );
        envelope.correlation_id = Some(status.crisis_id.clone());
        self.append(envelope).await?;
        tracing::warn!(crisis = %status.crisis_id, revision = due.revision, channel = %due.channel, level = due.level, "confirmation overdue: escalation raised");
        Ok(())
    }

    async fn expire(
        &self,
        status: &CrisisStatus,
        revision: u32,
        expires_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let crisis = self.coordinator.load_crisis(&status.crisis_id).await?;
        let languages = crisis
            .current
            .map(|c| c.messages.into_iter().map(|m| m.language).collect())
            .unwrap_or_default();
        let mut envelope = Envelope::with_id(
            format!("{}.r{revision}.expired", status.crisis_id),
            Actor::service("coordinator"),
            Event::CrisisExpired(CrisisExpired {
                crisis_id: status.crisis_id.clone(),
                revision,
                expires_at,
                languages,
            }),
        );
        envelope.correlation_id = Some(status.crisis_id.clone());
        self.append(envelope).await?;
        tracing::info!(crisis = %status.crisis_id, revision, "crisis expired");
        Ok(())
    }

    /// Appends (a duplicate id is dropped by JetStream) and folds the event into
    /// the status at once, so the next sweep sees it.
    async fn append(&self, envelope: Envelope) -> anyhow::Result<()> {
        self.coordinator.bus.append(&envelope, Expect::Any).await?;
        self.coordinator.status_writer.apply(envelope).await
    }
}

/// Keeps `statuses` current from a watch of the crisis bucket until `shutdown`,
/// watching again after an error; closed crises are left out.
async fn follow(store: kv::Store, statuses: Statuses, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match store.watch_with_history(">").await {
            Ok(mut entries) => loop {
                let entry = tokio::select! {
                    () = shutdown.cancelled() => return,
                    entry = entries.next() => entry,
                };
                match entry {
                    Some(Ok(entry)) => {
                        let status = match entry.operation {
                            kv::Operation::Put => {
                                serde_json::from_slice::<CrisisProjection>(&entry.value)
                                    .map(|p| p.status)
                                    .ok()
                                    .filter(|s| s.state != CrisisState::Closed)
                            }
                            _ => None,
                        };
                        let mut map = statuses
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        match status {
                            Some(status) => map.insert(entry.key, status),
                            None => map.remove(&entry.key),
                        };
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "crisis status watch failed; watching again");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot watch the crisis status; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Turns each `EscalationRaised` into SMS and email notices to the members of its
/// notify audiences.
#[derive(Clone)]
pub struct Notifier {
    pub bus: Bus,
    pub audiences: Audiences,
    pub recipient_key: Vec<u8>,
    pub batch_size: usize,
}

impl Notifier {
    /// Handles one crisis event; only `EscalationRaised` does anything.
    pub async fn handle(&self, delivery: Delivery) -> Ack {
        let Ok(envelope) = Envelope::read_on(&delivery.subject, &delivery.payload) else {
            return Ack::Done;
        };
        let Event::EscalationRaised(e) = &envelope.event else {
            return Ack::Done;
        };
        match self.notify(&envelope, e).await {
            Ok(jobs) => {
                tracing::info!(crisis = %e.crisis_id, level = e.level, jobs, "escalation notices dispatched");
                Ack::Done
            }
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), crisis = %e.crisis_id, "cannot dispatch escalation notices; will retry");
                Ack::Retry(Duration::from_secs(delivery.delivered.clamp(1, 30) as u64))
            }
        }
    }

    async fn notify(&self, envelope: &Envelope, e: &EscalationRaised) -> anyhow::Result<usize> {
        let batch_size = self.batch_size.max(1);
        let mut seen: HashSet<(Channel, String)> = HashSet::new();
        let mut open: BTreeMap<Channel, (usize, Vec<Recipient>)> = BTreeMap::new();
        let mut jobs = Vec::new();
        for (id, generation) in &e.notify {
            let mut chunks = std::pin::pin!(self.audiences.chunks(id, *generation));
            while let Some(chunk) = chunks.next().await {
                for member in chunk? {
                    for channel in Channel::ALL {
                        let Some(address) = member.address(channel) else {
                            continue;
                        };
                        let reference = recipient_ref(&self.recipient_key, address);
                        if !seen.insert((channel, reference.clone())) {
                            continue;
                        }
                        let (batch, recipients) = open.entry(channel).or_default();
                        recipients.push(Recipient {
                            reference,
                            address: address.to_owned(),
                        });
                        if recipients.len() >= batch_size {
                            let full = std::mem::take(recipients);
                            jobs.push(notice_job(envelope, e, channel, *batch, full));
                            *batch += 1;
                        }
                    }
                }
            }
        }
        for (channel, (batch, recipients)) in open {
            if !recipients.is_empty() {
                jobs.push(notice_job(envelope, e, channel, batch, recipients));
            }
        }
        for result in futures::future::join_all(jobs.iter().map(|j| self.bus.dispatch(j))).await {
            result?;
        }
        Ok(jobs.len())
    }
}

/// One batch of notices of escalation `e` on `channel`.
fn notice_job(
    envelope: &Envelope,
    e: &EscalationRaised,
    channel: Channel,
    batch: usize,
    recipients: Vec<Recipient>,
) -> DispatchJob {
    let message = match channel.address() {
        Some(Address::Phone) => ChannelMessage::Sms(notice_sms(e)),
        // Only personal channels get notices: `notify` plans them from the
        // members' addresses.
        Some(Address::Email) | None => ChannelMessage::Email(notice_email(e)),
    };
    DispatchJob {
        job_id: e.notice_job_id(channel, batch),
        crisis_id: e.crisis_id.clone(),
        revision: e.revision,
        channel,
        status: e.status,
        cap: CapInfo {
            category: Category::Other,
            event: "Eskalering".into(),
            urgency: Urgency::Immediate,
            severity: e.severity,
            certainty: Certainty::Observed,
            response_type: ResponseType::None,
        },
        language: "sv".into(),
        message,
        recipients,
        audiences: e.notify.keys().cloned().collect(),
        expires_at: None,
        declared_at: envelope.occurred_at,
        msg_type: MsgType::Alert,
        references: Vec::new(),
        issued_at: Some(envelope.occurred_at),
    }
}

/// The Swedish notice line, marked when the crisis is an exercise or a test.
fn notice_text(e: &EscalationRaised) -> String {
    let marker = render::marker(e.status, "sv")
        .map(|m| format!("{m}: "))
        .unwrap_or_default();
    let headline = if e.headline.is_empty() {
        String::new()
    } else {
        format!(" ({})", e.headline)
    };
    format!(
        "{marker}ESKALERING nivå {}: kanalen {} för kris {}{headline} är inte bekräftad. \
         Tidsgränsen gick ut kl. {}. Bekräfta i krisbud.",
        e.level,
        e.channel,
        e.crisis_id,
        krisbud_kit::text::local_clock(e.deadline)
    )
}

/// The notice as an SMS.
pub fn notice_sms(e: &EscalationRaised) -> SmsMessage {
    let text = notice_text(e);
    let cost = gsm::cost(&text);
    SmsMessage {
        text,
        encoding: cost.encoding.as_str().to_owned(),
        segments: cost.segments,
    }
}

/// The notice as an email.
pub fn notice_email(e: &EscalationRaised) -> EmailMessage {
    let marker = render::marker(e.status, "sv")
        .map(|m| format!("{m}: "))
        .unwrap_or_default();
    let line = notice_text(e);
    let text = format!(
        "{line}\n\nRevision {} av krisen, allvarlighetsgrad {:?}. Eskaleringen upprepas \
         tills kanalen är bekräftad.\n",
        e.revision, e.severity
    );
    let html = format!(
        "<p>{}</p>\n",
        escape_html(&text).replace("\n\n", "</p>\n<p>")
    );
    EmailMessage {
        subject: format!(
            "{marker}ESKALERING nivå {}: {} ej bekräftad för kris {}",
            e.level, e.channel, e.crisis_id
        ),
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krisbud_proto::status::{ChannelStatus, Confirmation, Escalation, Expiry, RevisionStatus};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn config() -> ConfirmationConfig {
        ConfirmationConfig {
            severe_secs: 900,
            repeat_secs: 600,
            ..ConfirmationConfig::default()
        }
    }

    /// A severe crisis at revision 1 issued at `t0` on sms and banner.
    fn crisis() -> CrisisStatus {
        let channels: BTreeMap<Channel, ChannelStatus> = [Channel::Sms, Channel::Banner]
            .into_iter()
            .map(|c| (c, ChannelStatus::default()))
            .collect();
        CrisisStatus {
            crisis_id: "c1".into(),
            revision: 1,
            declared_at: Some(t0()),
            severity: Some(Severity::Severe),
            channels: channels.clone(),
            revisions: vec![RevisionStatus {
                revision: 1,
                at: Some(t0()),
                channels,
                ..RevisionStatus::default()
            }],
            ..CrisisStatus::default()
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(secs)
    }

    fn levels(due: &[Due]) -> Vec<(Channel, u32, u32)> {
        due.iter()
            .map(|d| (d.channel, d.revision, d.level))
            .collect()
    }

    fn raise(s: &mut CrisisStatus, channel: Channel, level: u32) {
        s.revisions[0]
            .channels
            .get_mut(&channel)
            .unwrap()
            .escalations
            .push(Escalation {
                level,
                ..Escalation::default()
            });
    }

    #[test]
    fn nothing_is_due_before_the_deadline() {
        assert!(due(&crisis(), at(899), &config()).is_empty());
        assert!(due(&crisis(), at(-10), &config()).is_empty());
    }

    #[test]
    fn level_one_after_the_deadline_then_two_after_the_repeat() {
        let mut s = crisis();
        let d = due(&s, at(900), &config());
        assert_eq!(
            levels(&d),
            vec![(Channel::Sms, 1, 1), (Channel::Banner, 1, 1)]
        );
        assert_eq!(d[0].deadline, at(900));
        raise(&mut s, Channel::Sms, 1);
        raise(&mut s, Channel::Banner, 1);
        assert!(due(&s, at(1499), &config()).is_empty(), "level 1 raised");
        let d = due(&s, at(1500), &config());
        assert_eq!(
            levels(&d),
            vec![(Channel::Sms, 1, 2), (Channel::Banner, 1, 2)]
        );
        assert_eq!(d[0].deadline, at(1500));
    }

    #[test]
    fn a_confirmed_channel_is_not_escalated() {
        let mut s = crisis();
        s.revisions[0]
            .channels
            .get_mut(&Channel::Banner)
            .unwrap()
            .confirmations
            .push(Confirmation {
                revision: 1,
                by: "operator.ali".into(),
                at: at(10),
                note: None,
            });
        assert_eq!(
            levels(&due(&s, at(5000), &config())),
            vec![(Channel::Sms, 1, 7)]
        );
    }

    #[test]
    fn the_deadline_counts_from_the_current_revision_and_its_severity() {
        let mut s = crisis();
        s.revision = 2;
        s.severity = Some(Severity::Extreme);
        s.revisions.push(RevisionStatus {
            revision: 2,
            at: Some(at(3000)),
            channels: [(Channel::Sms, ChannelStatus::default())].into(),
            ..RevisionStatus::default()
        });
        assert!(due(&s, at(3299), &config()).is_empty());
        assert_eq!(
            levels(&due(&s, at(3300), &config())),
            vec![(Channel::Sms, 2, 1)]
        );
    }

    #[test]
    fn nothing_for_a_closed_or_expired_crisis() {
        let mut s = crisis();
        s.state = CrisisState::Closed;
        assert!(due(&s, at(5000), &config()).is_empty());
        let mut s = crisis();
        s.expired = Some(Expiry {
            revision: 1,
            expires_at: at(100),
            at: at(100),
        });
        assert!(due(&s, at(5000), &config()).is_empty());
    }

    #[test]
    fn only_the_highest_due_level_after_a_long_gap() {
        let mut s = crisis();
        raise(&mut s, Channel::Sms, 1);
        // 900 + 10 * 600: level 11 is due; levels 2..=10 are never raised.
        let d = due(&s, at(900 + 6000 + 5), &config());
        assert_eq!(
            levels(&d),
            vec![(Channel::Sms, 1, 11), (Channel::Banner, 1, 11)]
        );
        assert_eq!(d[0].deadline, at(6900));
        raise(&mut s, Channel::Sms, 11);
        raise(&mut s, Channel::Banner, 11);
        assert!(due(&s, at(6905), &config()).is_empty());
    }

    #[test]
    fn expiry_is_due_once_at_its_time_and_never_after_a_close() {
        let mut s = crisis();
        assert_eq!(expiry_due(&s, at(10)), None, "no expires_at");
        s.expires_at = Some(at(60));
        assert_eq!(expiry_due(&s, at(59)), None);
        assert_eq!(expiry_due(&s, at(60)), Some((1, at(60))));
        s.expired = Some(Expiry {
            revision: 1,
            expires_at: at(60),
            at: at(61),
        });
        assert_eq!(expiry_due(&s, at(70)), None);
        let mut s = crisis();
        s.expires_at = Some(at(60));
        s.state = CrisisState::Closed;
        assert_eq!(expiry_due(&s, at(70)), None);
    }

    #[test]
    fn notice_jobs_are_recognised_and_crisis_jobs_are_not() {
        let e = EscalationRaised {
            crisis_id: "20261126-abc123".into(),
            revision: 2,
            channel: Channel::Banner,
            level: 3,
            deadline: at(900),
            severity: Severity::Severe,
            status: AlertStatus::Exercise,
            headline: "Vattenläcka".into(),
            notify: BTreeMap::new(),
        };
        assert_eq!(e.event_id(), "20261126-abc123.r2.banner.escalation.3");
        let job = e.notice_job_id(Channel::Sms, 0);
        let notice = krisbud_proto::event::notice_job(&job).unwrap();
        assert_eq!(
            (notice.revision, notice.channel, notice.level),
            (2, Channel::Banner, 3)
        );
        assert_eq!(
            krisbud_proto::event::notice_job("20261126-abc123.r2.sms.sv.0"),
            None
        );
        let sms = notice_sms(&e);
        assert_eq!(
            sms.text,
            "ÖVNING: ESKALERING nivå 3: kanalen banner för kris 20261126-abc123 (Vattenläcka) \
             är inte bekräftad. Tidsgränsen gick ut kl. 09:15 CET. Bekräfta i krisbud."
        );
        assert_eq!(sms.encoding, "gsm7");
        assert!(
            notice_email(&e)
                .subject
                .starts_with("ÖVNING: ESKALERING nivå 3")
        );
    }
}
