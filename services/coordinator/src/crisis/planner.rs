//! The dispatch planner: turns each `CrisisDeclared`, and each later revision
//! (`CrisisUpdated`, `CrisisAllClear`, `CrisisCancelled`), into dispatch jobs.
//! Follow-ups read the audiences at the generations pinned when each was first
//! addressed, so they reach the earlier recipients, plus the members of audiences
//! an update added.
//!
//! It runs as a durable consumer of the crisis events rather than inside the
//! declare command, so a crash between the 201 and the jobs loses nothing: the
//! event is delivered again and JetStream drops the jobs already published (their
//! ids are deterministic).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use krisbud_kit::Bus;
use krisbud_kit::bus::Expect;
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_kit::privacy::recipient_ref;
use krisbud_proto::event::{CrisisDeclared, CrisisRevised, DispatchPlanned, PlannedChannel};
use krisbud_proto::job::{DispatchJob, MsgType, Recipient};
use krisbud_proto::model::CapInfo;
use krisbud_proto::template::RenderedLanguage;
use krisbud_proto::{Actor, AlertStatus, Channel, Envelope, Event};

use crate::audience::Audiences;

/// What planning needs.
#[derive(Clone)]
pub struct Planner {
    pub bus: Bus,
    pub audiences: Audiences,
    pub recipient_key: Vec<u8>,
    pub batch_size: usize,
}

impl Planner {
    /// Handles one crisis event.
    pub async fn handle(&self, delivery: Delivery) -> Ack {
        let envelope: Envelope = match Envelope::read_on(&delivery.subject, &delivery.payload) {
            Ok(e) => e,
            Err(e) => return Ack::Reject(format!("unreadable crisis event: {e}")),
        };
        let declared = match &envelope.event {
            Event::CrisisDeclared(e) => Revision::declared(&envelope, e),
            Event::CrisisUpdated(e) | Event::CrisisAllClear(e) | Event::CrisisCancelled(e) => {
                Revision::revised(&envelope, e)
            }
            _ => return Ack::Done,
        };
        match self.plan(&envelope, &declared).await {
            Ok(()) => Ack::Done,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), crisis = %declared.crisis_id, "planning failed; will retry");
                Ack::Retry(Duration::from_secs(delivery.delivered.clamp(1, 30) as u64))
            }
        }
    }

    async fn plan(&self, envelope: &Envelope, declared: &Revision) -> anyhow::Result<()> {
        let languages: Vec<&str> = declared
            .messages
            .iter()
            .map(|m| m.language.as_str())
            .collect();
        let mut plan = BTreeMap::new();
        let mut published = 0u64;
        let mut pending: Vec<DispatchJob> = Vec::new();
        let personal: Vec<Channel> = declared
            .channels
            .iter()
            .copied()
            .filter(|c| c.has_recipients())
            .collect();
        if !personal.is_empty() {
            // One pass over the members, in the audiences' stored order, filling one
            // open batch per channel and language; a full batch becomes a job at
            // once, so memory holds a few batches, not the audience.
            let batch_size = self.batch_size.max(1);
            let mut open: BTreeMap<(Channel, &str), (usize, Vec<Recipient>)> = BTreeMap::new();
            // An import already keeps one member per phone number and email
            // address, so only several audiences can name someone twice; the set
            // that catches it costs ~35 MB at a million, kept only then.
            let across_audiences = declared.audiences.len() > 1;
            let mut seen: BTreeMap<Channel, HashSet<u128>> = BTreeMap::new();
            let mut counts: BTreeMap<Channel, PlannedChannel> = BTreeMap::new();
            for id in &declared.audiences {
                let generation = match declared.audience_generations.get(id) {
                    Some(g) => *g,
                    None => match self
                        .audiences
                        .get(id)
                        .await
                        .map_err(|p| anyhow::anyhow!("{}", p.detail))?
                    {
                        Some(audience) => audience.generation,
                        None => {
                            tracing::warn!(audience = %id, "audience vanished after the declaration");
                            continue;
                        }
                    },
                };
                let mut chunks = std::pin::pin!(self.audiences.chunks(id, generation));
                while let Some(chunk) = chunks.next().await {
                    for member in chunk? {
                        let language = member
                            .language
                            .as_deref()
                            .and_then(|l| languages.iter().find(|x| **x == l))
                            .copied()
                            .unwrap_or("sv");
                        for &channel in &personal {
                            let Some(address) = member.address(channel) else {
                                continue;
                            };
                            let reference = recipient_ref(&self.recipient_key, address);
                            let tally = counts.entry(channel).or_insert(PlannedChannel {
                                recipients: 0,
                                jobs: 0,
                                duplicates_removed: 0,
                            });
                            if across_audiences
                                && !seen.entry(channel).or_default().insert(digest(&reference))
                            {
                                tally.duplicates_removed += 1;
                                continue;
                            }
                            tally.recipients += 1;
                            let (batch, recipients) = open.entry((channel, language)).or_default();
                            recipients.push(Recipient {
                                reference,
                                address: address.to_owned(),
                            });
                            if recipients.len() >= batch_size {
                                let full = std::mem::take(recipients);
                                pending.push(
                                    self.job(envelope, declared, channel, language, *batch, full),
                                );
                                *batch += 1;
                                tally.jobs += 1;
                            }
                        }
                        if pending.len() >= WAVE {
                            published += self.publish(&mut pending).await?;
                        }
                    }
                }
            }
            for ((channel, language), (batch, recipients)) in open {
                if !recipients.is_empty() {
                    pending
                        .push(self.job(envelope, declared, channel, language, batch, recipients));
                    if let Some(count) = counts.get_mut(&channel) {
                        count.jobs += 1;
                    }
                }
            }
            for channel in personal {
                plan.insert(
                    channel,
                    counts.remove(&channel).unwrap_or(PlannedChannel {
                        recipients: 0,
                        jobs: 0,
                        duplicates_removed: 0,
                    }),
                );
            }
        }
        for &channel in declared.channels.iter().filter(|c| !c.has_recipients()) {
            for language in &languages {
                pending.push(self.job(envelope, declared, channel, language, 0, Vec::new()));
            }
            plan.insert(
                channel,
                PlannedChannel {
                    recipients: languages.len() as u64,
                    jobs: languages.len() as u64,
                    duplicates_removed: 0,
                },
            );
        }
        published += self.publish(&mut pending).await?;
        let mut planned = Envelope::with_id(
            format!("{}.r{}.planned", declared.crisis_id, declared.revision),
            Actor::service("coordinator"),
            Event::DispatchPlanned(DispatchPlanned {
                crisis_id: declared.crisis_id.clone(),
                revision: declared.revision,
                channels: plan,
            }),
        );
        planned.causation_id = Some(envelope.id.clone());
        planned.correlation_id = envelope.correlation_id.clone();
        self.bus.append(&planned, Expect::Any).await?;
        tracing::info!(crisis = %declared.crisis_id, jobs = published, "dispatch planned");
        Ok(())
    }

    /// Publishes the pending jobs in parallel, each awaiting its stream ack.
    async fn publish(&self, pending: &mut Vec<DispatchJob>) -> anyhow::Result<u64> {
        let jobs = std::mem::take(pending);
        let acks = jobs.iter().map(|job| self.bus.dispatch(job));
        for result in futures::future::join_all(acks).await {
            result?;
        }
        Ok(jobs.len() as u64)
    }

    fn job(
        &self,
        envelope: &Envelope,
        declared: &Revision,
        channel: Channel,
        language: &str,
        batch: usize,
        recipients: Vec<Recipient>,
    ) -> DispatchJob {
        #[allow(
            clippy::expect_used,
            reason = "jobs are planned only for rendered languages"
        )]
        let message = declared
            .messages
            .iter()
            .find(|m| m.language == language)
            .expect("jobs are planned only for rendered languages")
            .for_channel(channel);
        DispatchJob {
            job_id: format!(
                "{}.r{}.{}.{}.{}",
                declared.crisis_id, declared.revision, channel, language, batch
            ),
            crisis_id: declared.crisis_id.clone(),
            revision: declared.revision,
            channel,
            status: declared.status,
            cap: declared.cap.clone(),
            language: language.to_owned(),
            message,
            audiences: if recipients.is_empty() {
                Vec::new()
            } else {
                declared.audiences.clone()
            },
            recipients,
            expires_at: declared.expires_at,
            declared_at: declared.declared_at,
            msg_type: declared.msg_type,
            references: declared.references.clone(),
            issued_at: Some(envelope.occurred_at),
        }
    }
}

/// What a revision sends, whichever event it came from.
pub struct Revision {
    pub crisis_id: String,
    pub revision: u32,
    pub status: AlertStatus,
    pub cap: CapInfo,
    pub audiences: Vec<String>,
    pub audience_generations: BTreeMap<String, u32>,
    pub channels: Vec<Channel>,
    pub messages: Vec<RenderedLanguage>,
    pub expires_at: Option<DateTime<Utc>>,
    pub declared_at: DateTime<Utc>,
    pub msg_type: MsgType,
    pub references: Vec<String>,
}

impl Revision {
    /// Revision 1: the declaration, a CAP `Alert`.
    pub fn declared(envelope: &Envelope, e: &CrisisDeclared) -> Revision {
        Revision {
            crisis_id: e.crisis_id.clone(),
            revision: e.revision,
            status: e.status,
            cap: e.cap.clone(),
            audiences: e.audiences.clone(),
            audience_generations: e.audience_generations.clone(),
            channels: e.channels.clone(),
            messages: e.messages.clone(),
            expires_at: e.expires_at,
            declared_at: envelope.occurred_at,
            msg_type: MsgType::Alert,
            references: Vec::new(),
        }
    }

    /// A later revision: an update, the all-clear or a cancellation.
    pub fn revised(_envelope: &Envelope, e: &CrisisRevised) -> Revision {
        Revision {
            crisis_id: e.crisis_id.clone(),
            revision: e.revision,
            status: e.status,
            cap: e.cap.clone(),
            audiences: e.audiences.clone(),
            audience_generations: e.audience_generations.clone(),
            channels: e.channels.clone(),
            messages: e.messages.clone(),
            expires_at: e.expires_at,
            declared_at: e.declared_at,
            msg_type: e.msg_type,
            references: e.references.clone(),
        }
    }
}

/// Jobs published at once.
const WAVE: usize = 64;

/// A recipient reference's digest, for spotting an address seen before.
fn digest(reference: &str) -> u128 {
    let hex = reference.strip_prefix("rcp:").unwrap_or(reference);
    u128::from_str_radix(&hex[..hex.len().min(32)], 16).unwrap_or_default()
}
