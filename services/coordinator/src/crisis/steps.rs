//! The shell of the crisis lifecycle: loads a crisis from its events, has the
//! pure core (`lifecycle`) decide, and appends the event.
//!
//! The crisis's events on `krisbud.evt.crisis.<id>` are the truth. A step loads
//! them, decides on the state they give, and appends its event with
//! `Nats-Expected-Last-Subject-Sequence` set to the last event it read, so of two
//! duty officers acting at once one wins and the other is told the current
//! revision (409). Events that do not change the revision (a plan, a confirmation)
//! may land in between; the step then simply decides again.

use std::collections::BTreeMap;

use krisbud_kit::bus::{AppendError, Expect};
use krisbud_proto::audience::Audience;
use krisbud_proto::command::{CancelCrisis, CrisisStep, ExpectRevision, Revised, UpdateCrisis};
use krisbud_proto::template::{TemplateRef, TemplateVersion};
use krisbud_proto::{Actor, Channel, CommandRequest, Envelope, Event, Problem, Role, subject};
use sha2::{Digest, Sha256};

use super::Coordinator;
use super::lifecycle::{self, Crisis, Step};
use super::wording::Closing;
use crate::roles::require;

/// Attempts at appending when events land between reading and appending.
const ATTEMPTS: usize = 8;
/// Longest cancellation reason accepted, in characters.
const MAX_REASON: usize = 500;

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "crisis lifecycle storage failed");
    Problem::unavailable("the crisis store is unavailable; try again")
}

impl Coordinator {
    /// Folds every event of crisis `id` from KRISBUD_EVENTS, in stream order.
    pub async fn load_crisis(&self, id: &str) -> anyhow::Result<Crisis> {
        let mut crisis = Crisis {
            crisis_id: id.to_owned(),
            ..Crisis::default()
        };
        self.bus
            .fold_events(
                &subject::crisis_events(id),
                |sequence, envelope| match envelope {
                    Some(envelope) => crisis.apply(envelope, sequence),
                    None => crisis.last_sequence = sequence,
                },
            )
            .await?;
        Ok(crisis)
    }

    /// `POST /crises/{id}/update`.
    pub async fn update(
        &self,
        request: CommandRequest<CrisisStep<UpdateCrisis>>,
    ) -> Result<Revised, Problem> {
        let CrisisStep { crisis_id, body } = &request.body;
        self.step(
            &request.actor,
            crisis_id,
            body.expected_revision,
            Step::Update,
            body,
            &Action::Update(body),
        )
        .await
    }

    /// `POST /crises/{id}/all-clear`.
    pub async fn all_clear(
        &self,
        request: CommandRequest<CrisisStep<ExpectRevision>>,
    ) -> Result<Revised, Problem> {
        let CrisisStep { crisis_id, body } = &request.body;
        self.step(
            &request.actor,
            crisis_id,
            body.expected_revision,
            Step::AllClear,
            body,
            &Action::AllClear,
        )
        .await
    }

    /// `POST /crises/{id}/cancel`.
    pub async fn cancel(
        &self,
        request: CommandRequest<CrisisStep<CancelCrisis>>,
    ) -> Result<Revised, Problem> {
        let CrisisStep { crisis_id, body } = &request.body;
        let reason = body.reason.trim();
        if reason.is_empty() {
            return Err(Problem::invalid(
                "reason",
                "say why the message is withdrawn",
            ));
        }
        krisbud_kit::text::check_free_text("reason", reason, MAX_REASON)?;
        self.step(
            &request.actor,
            crisis_id,
            body.expected_revision,
            Step::Cancel,
            body,
            &Action::Cancel(reason),
        )
        .await
    }

    /// `POST /crises/{id}/close`.
    pub async fn close(
        &self,
        request: CommandRequest<CrisisStep<ExpectRevision>>,
    ) -> Result<Revised, Problem> {
        let CrisisStep { crisis_id, body } = &request.body;
        self.step(
            &request.actor,
            crisis_id,
            body.expected_revision,
            Step::Close,
            body,
            &Action::Close,
        )
        .await
    }

    /// Loads the crisis, checks the state and the expected revision, decides and
    /// appends where the crisis was read; decides again when only events that do
    /// not change the revision came in between.
    async fn step<B: serde::Serialize>(
        &self,
        actor: &Actor,
        crisis_id: &str,
        expected: u32,
        step: Step,
        body: &B,
        action: &Action<'_>,
    ) -> Result<Revised, Problem> {
        require(actor, &[Role::DutyOfficer])?;
        if !subject::is_token(crisis_id) {
            return Err(lifecycle::not_found(crisis_id));
        }
        // Same actor, revision and body: a retry, which JetStream's duplicate
        // window answers with the first append.
        let digest = Sha256::digest(
            format!(
                "{}\0{expected}\0{}\0{}",
                actor.user,
                step.name(),
                serde_json::to_string(body).unwrap_or_default()
            )
            .as_bytes(),
        );
        for _ in 0..ATTEMPTS {
            let crisis = self.load_crisis(crisis_id).await.map_err(internal)?;
            lifecycle::check(&crisis, step, expected)?;
            let event = match action {
                Action::Update(body) => self.decide_update(actor, &crisis, body).await?,
                Action::AllClear => {
                    let template = self.template_of(&crisis).await?;
                    lifecycle::decide_closing(&crisis, Closing::AllClear, None, &template)?
                }
                Action::Cancel(reason) => {
                    let template = self.template_of(&crisis).await?;
                    let reason = Some((*reason).to_owned());
                    lifecycle::decide_closing(&crisis, Closing::Cancel, reason, &template)?
                }
                Action::Close => lifecycle::decide_close(&crisis),
            };
            let recipients = match &event {
                Event::CrisisUpdated(e) | Event::CrisisAllClear(e) | Event::CrisisCancelled(e) => {
                    self.recipients(&e.audiences, &e.channels, e.messages.len())
                        .await?
                }
                _ => BTreeMap::new(),
            };
            let revision = lifecycle::revision_after(&crisis, &event);
            let state = lifecycle::after(crisis.state, step)
                .ok_or_else(|| lifecycle::refused(&crisis, step))?;
            let mut envelope = Envelope::with_id(
                format!(
                    "{crisis_id}.r{revision}.{}.{}",
                    step.name(),
                    hex::encode(digest.get(..6).unwrap_or_default())
                ),
                actor.clone(),
                event,
            );
            envelope.correlation_id = Some(crisis_id.to_owned());
            match self
                .bus
                .append(&envelope, Expect::LastSubjectSequence(crisis.last_sequence))
                .await
            {
                Ok(_) => {
                    if let Err(e) = self.status_writer.apply(envelope.clone()).await {
                        tracing::warn!(error = %e, "cannot update status right away");
                    }
                    tracing::info!(crisis = %crisis_id, revision, step = step.name(), "crisis lifecycle step");
                    return Ok(Revised {
                        crisis_id: crisis_id.to_owned(),
                        revision,
                        state,
                        recipients,
                    });
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        let crisis = self.load_crisis(crisis_id).await.map_err(internal)?;
        Err(lifecycle::stale(&crisis, expected))
    }

    /// The template version a crisis uses, whatever its state now.
    async fn template_in_use(&self, template: &TemplateRef) -> Result<TemplateVersion, Problem> {
        let record = self
            .templates
            .record(&template.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Problem::unavailable(format!("template `{}` is not known", template.id))
            })?;
        self.templates
            .version(&record, template.version)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Problem::unavailable(format!(
                    "the wording of `{}` version {} is not in the read model; try again",
                    template.id, template.version
                ))
            })
    }

    /// Loads what an update needs (the template version, the audiences it
    /// adds), refuses an exercise widened to the public, and has the core decide.
    async fn decide_update(
        &self,
        actor: &Actor,
        crisis: &Crisis,
        body: &UpdateCrisis,
    ) -> Result<Event, Problem> {
        let current = lifecycle::declared(crisis)?;
        let template = match lifecycle::update_target(current, body)? {
            Some(v) => {
                self.templates
                    .declarable(&current.template.id, Some(v))
                    .await?
            }
            None => self.template_in_use(&current.template).await?,
        };
        let mut added = Vec::new();
        for (i, id) in body.audiences.iter().enumerate() {
            if current.audiences.contains(id) || added.iter().any(|a: &Audience| &a.id == id) {
                continue;
            }
            let audience = self.audiences.get(id).await?.ok_or_else(|| {
                Problem::invalid(
                    format!("audiences[{i}]"),
                    format!("there is no audience `{id}`"),
                )
            })?;
            added.push(audience);
        }
        // An exercise is widened only to audiences marked for exercises.
        self.exercise_guard(
            actor,
            current.status,
            &added,
            &current.template.id,
            Some(&crisis.crisis_id),
        )
        .await?;
        lifecycle::decide_update(crisis, body, &template, &added)
    }

    /// The template version the crisis uses now.
    async fn template_of(&self, crisis: &Crisis) -> Result<TemplateVersion, Problem> {
        let current = lifecycle::declared(crisis)?;
        self.template_in_use(&current.template).await
    }

    /// Recipients per channel as the audiences count them now (at most: the plan
    /// reads the pinned generations and drops shared addresses).
    async fn recipients(
        &self,
        audiences: &[String],
        channels: &[Channel],
        languages: usize,
    ) -> Result<BTreeMap<Channel, u64>, Problem> {
        let mut found = Vec::new();
        for id in audiences {
            if let Some(a) = self.audiences.get(id).await? {
                found.push(a);
            }
        }
        Ok(lifecycle::recipient_counts(&found, channels, languages))
    }
}

/// A step and what it needs.
enum Action<'a> {
    Update(&'a UpdateCrisis),
    AllClear,
    Cancel(&'a str),
    Close,
}
