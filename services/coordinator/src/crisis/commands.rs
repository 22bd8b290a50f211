//! The coordinator's commands and queries: declare, confirm, status, lists.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::StreamExt;
use krisbud_kit::Bus;
use krisbud_kit::bus::{AppendError, Expect};
use krisbud_proto::command::{ConfirmChannel, DeclareCrisis, Declared, GetCrisis};
use krisbud_proto::event::{ChannelConfirmed, CrisisDeclared, ExerciseRefused};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::template::TemplateRef;
use krisbud_proto::{
    Actor, AlertStatus, Channel, CommandRequest, Envelope, Event, Problem, Role, subject,
};
use sha2::{Digest, Sha256};

use super::projection;
use crate::audience::Audiences;
use crate::render;
use crate::roles::require;
use crate::template::Catalog;

/// Longest operator note accepted, in characters.
const MAX_NOTE: usize = 500;

/// What the command handlers share.
pub struct Coordinator {
    pub templates: Catalog,
    pub bus: Bus,
    /// The status read model, read here; written only by `status_writer`.
    pub crises: kv::Store,
    /// The one writer of the status read model (the projector uses it too), so a
    /// command's answer already shows its own event.
    pub status_writer: projection::Batcher,
    pub audiences: Audiences,
}

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "coordinator storage failed");
    Problem::unavailable("the crisis store is unavailable; try again")
}

impl Coordinator {
    /// Declares a crisis: validate, render, append `CrisisDeclared`, answer.
    pub async fn declare(
        &self,
        request: CommandRequest<DeclareCrisis>,
    ) -> Result<Declared, Problem> {
        require(&request.actor, &[Role::DutyOfficer])?;
        let body = request.body;
        let template = &self
            .templates
            .declarable(&body.template, body.template_version)
            .await?;
        let mut channels = body
            .channels
            .clone()
            .unwrap_or_else(|| Channel::ALL.to_vec());
        channels.sort();
        channels.dedup();
        if channels.is_empty() {
            return Err(Problem::invalid("channels", "choose at least one channel"));
        }
        let personal = channels.iter().any(|c| c.has_recipients());
        if personal && body.audiences.is_empty() {
            return Err(Problem::invalid(
                "audiences",
                "SMS and email need at least one audience; name one or leave those channels out",
            ));
        }
        if let Some(expires) = body.expires_at
            && expires <= Utc::now()
        {
            return Err(Problem::invalid(
                "expires_at",
                "the expiry time has already passed",
            ));
        }
        let mut recipients: BTreeMap<Channel, u64> = BTreeMap::new();
        let mut audiences = Vec::new();
        for (i, id) in body.audiences.iter().enumerate() {
            let audience = self.audiences.get(id).await?.ok_or_else(|| {
                Problem::invalid(
                    format!("audiences[{i}]"),
                    format!("there is no audience `{id}`"),
                )
            })?;
            audiences.push(audience);
        }
        self.exercise_guard(
            &request.actor,
            body.status,
            &audiences,
            &body.template,
            None,
        )
        .await?;
        let audience_generations: BTreeMap<String, u32> = audiences
            .iter()
            .map(|a| (a.id.clone(), a.generation))
            .collect();
        let messages = render::render(template, &body.variables, body.status)?;
        render::check_sms_segments(template, &messages, &body.variables)?;
        recipients.extend(super::lifecycle::recipient_counts(
            &audiences,
            &channels,
            messages.len(),
        ));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let crisis_id = match &request.idempotency_key {
                Some(key) => idempotent_id(&request.actor.user, key),
                None => new_id(),
            };
            let event = CrisisDeclared {
                crisis_id: crisis_id.clone(),
                revision: 1,
                template: TemplateRef {
                    id: template.id.clone(),
                    version: template.version,
                },
                status: body.status,
                cap: template.cap.clone(),
                variables: body.variables.clone(),
                audiences: body.audiences.clone(),
                audience_generations: audience_generations.clone(),
                channels: channels.clone(),
                messages: messages.clone(),
                expires_at: body.expires_at,
            };
            let mut envelope = Envelope::with_id(
                format!("{crisis_id}.r1.declared"),
                request.actor.clone(),
                Event::CrisisDeclared(event),
            );
            envelope.correlation_id = Some(crisis_id.clone());
            match self
                .bus
                .append(&envelope, Expect::LastSubjectSequence(0))
                .await
            {
                Ok(_) => {
                    if let Err(e) = self.status_writer.apply(envelope.clone()).await {
                        // The projector folds the event in from the stream as well.
                        tracing::warn!(error = %e, "cannot update status right away");
                    }
                    tracing::info!(%crisis_id, template = %template.id, "crisis declared");
                    return Ok(Declared {
                        crisis_id,
                        revision: 1,
                        recipients,
                    });
                }
                Err(AppendError::Conflict { .. }) if request.idempotency_key.is_some() => {
                    // The same key was used before: answer with that crisis.
                    return Ok(Declared {
                        crisis_id,
                        revision: 1,
                        recipients,
                    });
                }
                Err(AppendError::Conflict { .. }) if attempt < 5 => continue,
                Err(e) => return Err(internal(e)),
            }
        }
    }

    /// Refuses an exercise or test that names an audience not marked for
    /// exercises, naming the first such audience, and records the attempt as
    /// `ExerciseRefused` before answering (an attempt that cannot be recorded is
    /// not answered with a refusal either: the caller gets 503 and may retry).
    pub async fn exercise_guard(
        &self,
        actor: &Actor,
        status: AlertStatus,
        audiences: &[krisbud_proto::audience::Audience],
        template: &str,
        crisis_id: Option<&str>,
    ) -> Result<(), Problem> {
        if status == AlertStatus::Actual {
            return Ok(());
        }
        let public: Vec<(usize, &str)> = audiences
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.exercise)
            .map(|(i, a)| (i, a.id.as_str()))
            .collect();
        let Some((index, first)) = public.first().copied() else {
            return Ok(());
        };
        let mut envelope = Envelope::new(
            actor.clone(),
            Event::ExerciseRefused(ExerciseRefused {
                crisis_id: crisis_id.map(str::to_owned),
                job_id: None,
                status,
                template: Some(template.to_owned()),
                audiences: public.iter().map(|(_, id)| (*id).to_owned()).collect(),
                refused_by: "coordinator".into(),
            }),
        );
        envelope.correlation_id = crisis_id.map(str::to_owned);
        self.bus
            .append(&envelope, Expect::Any)
            .await
            .map_err(internal)?;
        tracing::warn!(audience = first, user = %actor.user, "exercise to a public audience refused");
        Err(Problem::invalid(
            format!("audiences[{index}]"),
            format!(
                "`{first}` is not marked for exercises: an exercise or test may reach only exercise audiences; the attempt is on record"
            ),
        ))
    }

    /// Records an operator's confirmation of a channel.
    pub async fn confirm(
        &self,
        request: CommandRequest<ConfirmChannel>,
    ) -> Result<CrisisStatus, Problem> {
        require(&request.actor, &[Role::Operator])?;
        let body = request.body;
        let status = self.status(&body.crisis_id).await?;
        if !status.channels.contains_key(&body.channel) {
            return Err(Problem::invalid(
                "channel",
                format!(
                    "crisis {} does not use the {} channel",
                    body.crisis_id, body.channel
                ),
            ));
        }
        // An operator assigned channels confirms only those.
        let assigned = &request.actor.channels;
        if !assigned.is_empty() && !assigned.contains(&body.channel) {
            let names: Vec<&str> = assigned.iter().map(|c| c.as_str()).collect();
            return Err(Problem::forbidden(format!(
                "{} confirms {} and not {}",
                request.actor.user,
                names.join(", "),
                body.channel
            )));
        }
        if let Some(note) = &body.note {
            krisbud_kit::text::check_free_text("note", note, MAX_NOTE)?;
        }
        // Confirmed once per revision: a second confirmation (a double click, a
        // retried request, a colleague) changes nothing.
        let confirmed = status.channels.get(&body.channel).is_some_and(|c| {
            c.confirmations
                .iter()
                .any(|k| k.revision == status.revision)
        });
        if confirmed {
            return Ok(status);
        }
        let mut envelope = Envelope::new(
            request.actor,
            Event::ChannelConfirmed(ChannelConfirmed {
                crisis_id: body.crisis_id.clone(),
                revision: status.revision,
                channel: body.channel,
                note: body.note,
            }),
        );
        envelope.correlation_id = Some(body.crisis_id.clone());
        self.bus
            .append(&envelope, Expect::Any)
            .await
            .map_err(internal)?;
        self.status_writer.apply(envelope).await.map_err(internal)?;
        self.status(&body.crisis_id).await
    }

    /// One crisis's status.
    pub async fn get(&self, request: CommandRequest<GetCrisis>) -> Result<CrisisStatus, Problem> {
        require(&request.actor, &READERS)?;
        self.status(&request.body.crisis_id).await
    }

    /// Every crisis, newest first.
    pub async fn list(&self, actor: &Actor) -> Result<Vec<CrisisStatus>, Problem> {
        require(actor, &READERS)?;
        let mut keys = self.crises.keys().await.map_err(internal)?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(internal)?;
            if let Some(status) = projection::get(&self.crises, &key)
                .await
                .map_err(internal)?
            {
                out.push(status);
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.declared_at));
        Ok(out)
    }

    async fn status(&self, crisis_id: &str) -> Result<CrisisStatus, Problem> {
        if !subject::is_token(crisis_id) {
            return Err(super::lifecycle::not_found(crisis_id));
        }
        projection::get(&self.crises, crisis_id)
            .await
            .map_err(internal)?
            .filter(|s| s.declared_at.is_some())
            .ok_or_else(|| super::lifecycle::not_found(crisis_id))
    }
}

/// Roles that may read crisis status.
const READERS: [Role; 4] = [
    Role::DutyOfficer,
    Role::Operator,
    Role::Auditor,
    Role::Admin,
];

/// A new crisis id: the date and six random hex digits, easy to read aloud.
fn new_id() -> String {
    let random: u32 = rand::random::<u32>() & 0x00ff_ffff;
    format!("{}-{random:06x}", Utc::now().format("%Y%m%d"))
}

/// The crisis id for a client's idempotency key: the same user and key always give
/// the same id, so a retried declaration finds the first one.
fn idempotent_id(user: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{user}\0{key}").as_bytes());
    format!("ik-{}", hex::encode(digest.get(..6).unwrap_or_default()))
}
