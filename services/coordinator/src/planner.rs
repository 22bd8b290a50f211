//! The dispatch planner: turns each `CrisisDeclared` into dispatch jobs.
//!
//! It runs as a durable consumer of the crisis events rather than inside the
//! declare command, so a crash between the 201 and the jobs loses nothing: the
//! event is delivered again and JetStream drops the jobs already published (their
//! ids are deterministic).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::kv;
use krisbud_kit::Bus;
use krisbud_kit::bus::Expect;
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_kit::privacy::recipient_ref;
use krisbud_proto::audience::{Audience, Member};
use krisbud_proto::event::{CrisisDeclared, DispatchPlanned, PlannedChannel};
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::{Actor, Channel, Envelope, Event};

/// What planning needs.
#[derive(Clone)]
pub struct Planner {
    pub bus: Bus,
    pub audiences: kv::Store,
    pub recipient_key: Vec<u8>,
    pub batch_size: usize,
}

impl Planner {
    /// Handles one crisis event.
    pub async fn handle(&self, delivery: Delivery) -> Ack {
        let envelope: Envelope = match serde_json::from_slice(&delivery.payload) {
            Ok(e) => e,
            Err(e) => return Ack::Reject(format!("unreadable crisis event: {e}")),
        };
        let Event::CrisisDeclared(declared) = &envelope.event else {
            return Ack::Done;
        };
        match self.plan(&envelope, declared).await {
            Ok(()) => Ack::Done,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), crisis = %declared.crisis_id, "planning failed; will retry");
                Ack::Retry(Duration::from_secs(delivery.delivered.clamp(1, 30) as u64))
            }
        }
    }

    async fn plan(&self, envelope: &Envelope, declared: &CrisisDeclared) -> anyhow::Result<()> {
        let mut audiences = Vec::new();
        for id in &declared.audiences {
            match self.audiences.get(id).await? {
                Some(bytes) => audiences.push(serde_json::from_slice::<Audience>(&bytes)?),
                None => tracing::warn!(audience = %id, "audience vanished after the declaration"),
            }
        }
        let languages: Vec<&str> = declared
            .messages
            .iter()
            .map(|m| m.language.as_str())
            .collect();
        let mut jobs = Vec::new();
        let mut plan = BTreeMap::new();
        for &channel in &declared.channels {
            let before = jobs.len();
            let (recipients, duplicates) = if channel.has_recipients() {
                let field = |m: &Member| match channel {
                    Channel::Sms => m.phone.clone(),
                    _ => m.email.clone(),
                };
                let (by_language, total, duplicates) = group(&audiences, field, &languages);
                for (language, members) in by_language {
                    for (n, batch) in members.chunks(self.batch_size.max(1)).enumerate() {
                        let recipients = batch
                            .iter()
                            .map(|address| Recipient {
                                reference: recipient_ref(&self.recipient_key, address),
                                address: address.clone(),
                            })
                            .collect();
                        jobs.push(self.job(envelope, declared, channel, language, n, recipients));
                    }
                }
                (total, duplicates)
            } else {
                for language in &languages {
                    jobs.push(self.job(envelope, declared, channel, language, 0, Vec::new()));
                }
                (languages.len() as u64, 0)
            };
            plan.insert(
                channel,
                PlannedChannel {
                    recipients,
                    jobs: (jobs.len() - before) as u64,
                    duplicates_removed: duplicates,
                },
            );
        }
        // Publish in parallel waves; each waits for its stream ack.
        for wave in jobs.chunks(256) {
            let acks = wave.iter().map(|job| self.bus.dispatch(job));
            for result in futures::future::join_all(acks).await {
                result?;
            }
        }
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
        tracing::info!(crisis = %declared.crisis_id, jobs = jobs.len(), "dispatch planned");
        Ok(())
    }

    fn job(
        &self,
        envelope: &Envelope,
        declared: &CrisisDeclared,
        channel: Channel,
        language: &str,
        batch: usize,
        recipients: Vec<Recipient>,
    ) -> DispatchJob {
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
            recipients,
            expires_at: declared.expires_at,
            declared_at: envelope.occurred_at,
        }
    }
}

/// Distinct addresses grouped by the language each recipient gets: their own when
/// the template has it, Swedish otherwise. Returns the groups, the total and how
/// many duplicates were dropped.
fn group<'a>(
    audiences: &[Audience],
    address: impl Fn(&Member) -> Option<String>,
    languages: &[&'a str],
) -> (BTreeMap<&'a str, Vec<String>>, u64, u64) {
    let mut seen = HashSet::new();
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut duplicates = 0;
    for member in audiences.iter().flat_map(|a| &a.members) {
        let Some(addr) = address(member) else {
            continue;
        };
        let addr = addr.trim().to_owned();
        if addr.is_empty() {
            continue;
        }
        if !seen.insert(addr.to_lowercase()) {
            duplicates += 1;
            continue;
        }
        let language = member
            .language
            .as_deref()
            .and_then(|l| languages.iter().find(|x| **x == l))
            .copied()
            .unwrap_or("sv");
        groups.entry(language).or_default().push(addr);
    }
    (groups, seen.len() as u64, duplicates)
}
