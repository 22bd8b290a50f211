//! The template catalog: the events on `krisbud.evt.template.<id>` are the truth,
//! and the KRISBUD_TEMPLATES bucket is the read model every coordinator instance
//! reads (key `<id>`: the versions and their lifecycle; key `<id>.<version>`: the
//! wording, written once when the version is drafted).
//!
//! A write loads the template from its events, decides, and appends with
//! `Nats-Expected-Last-Subject-Sequence` set to the last event it saw, so two
//! concurrent writers conflict instead of forking; it then updates the read model
//! before answering. The projector (`coordinator-templates`) rebuilds a template's
//! read model from its events whenever the bucket is behind, so a crash between the
//! append and the bucket write costs nothing.

use anyhow::Context as _;
use async_nats::jetstream::kv;
use futures::StreamExt;
use krisbud_kit::Bus;
use krisbud_kit::bus::{AppendError, Expect};
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_proto::command::{ChangeTemplateState, TemplateAction};
use krisbud_proto::template::{TemplateRecord, TemplateState, TemplateSummary, TemplateVersion};
use krisbud_proto::{Actor, Envelope, Problem, Role, subject};

use super::aggregate::{self as templates, Aggregate, DraftDecision};

/// Reads and writes templates.
#[derive(Clone)]
pub struct Catalog {
    pub bus: Bus,
    pub kv: kv::Store,
}

/// Attempts at a write before giving up on a template that keeps changing.
const ATTEMPTS: usize = 5;

impl Catalog {
    /// Folds every event of template `id` from KRISBUD_EVENTS, in stream order.
    pub async fn load(&self, id: &str) -> anyhow::Result<Aggregate> {
        let mut aggregate = Aggregate::new(id);
        self.bus
            .fold_events(
                &subject::template_events(id),
                |sequence, envelope| match envelope {
                    Some(envelope) => aggregate.apply(envelope, sequence),
                    None => aggregate.last_sequence = sequence,
                },
            )
            .await?;
        Ok(aggregate)
    }

    /// Writes the read model of `aggregate` unless the bucket already holds it or a
    /// newer one: first the wording of versions the bucket does not know yet, then
    /// the record (compare-and-set, so concurrent writers never go backwards).
    pub async fn store(&self, aggregate: &Aggregate) -> anyhow::Result<()> {
        for _ in 0..50 {
            let entry = self.kv.entry(&aggregate.id).await?;
            let (known, revision) = match &entry {
                Some(e) if !e.value.is_empty() => (
                    Some(serde_json::from_slice::<TemplateRecord>(&e.value)?),
                    e.revision,
                ),
                Some(e) => (None, e.revision),
                None => (None, 0),
            };
            if known
                .as_ref()
                .is_some_and(|k| k.last_sequence >= aggregate.last_sequence)
            {
                return Ok(());
            }
            for v in aggregate.versions.values() {
                let stored = known
                    .as_ref()
                    .is_some_and(|k| k.versions.iter().any(|i| i.version == v.template.version));
                if !stored {
                    self.store_wording(&v.template).await?;
                }
            }
            let body = serde_json::to_vec(&aggregate.record())?;
            let written = if revision == 0 {
                self.kv
                    .create(&aggregate.id, body.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                self.kv
                    .update(&aggregate.id, body.into(), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            match written {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "template record changed concurrently; retrying")
                }
            }
        }
        anyhow::bail!("template {}: the read model kept changing", aggregate.id)
    }

    /// The wording of a version never changes, so it is written once.
    async fn store_wording(&self, template: &TemplateVersion) -> anyhow::Result<()> {
        let mut wording = template.clone();
        wording.state = TemplateState::Draft;
        wording.approved_by = None;
        let key = format!("{}.{}", template.id, template.version);
        match self
            .kv
            .create(&key, serde_json::to_vec(&wording)?.into())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot store the wording of {key}")),
        }
    }

    /// Appends a decided event where `aggregate` expects the template to be, folds
    /// it in and updates the read model.
    pub async fn append(
        &self,
        aggregate: &mut Aggregate,
        envelope: &Envelope,
    ) -> Result<(), AppendError> {
        let sequence = self
            .bus
            .append(
                envelope,
                Expect::LastSubjectSequence(aggregate.last_sequence),
            )
            .await?;
        aggregate.apply(envelope, sequence);
        if let Err(e) = self.store(aggregate).await {
            // The projector brings the read model up to date from the events.
            tracing::warn!(error = format!("{e:#}"), template = %aggregate.id, "cannot update the template read model right away");
        }
        Ok(())
    }

    /// One template's read model.
    pub async fn record(&self, id: &str) -> anyhow::Result<Option<TemplateRecord>> {
        if !subject::is_token(id) {
            return Ok(None);
        }
        match self.kv.get(id).await? {
            Some(bytes) if !bytes.is_empty() => Ok(Some(serde_json::from_slice(&bytes)?)),
            _ => Ok(None),
        }
    }

    /// One version with its wording and current state.
    pub async fn version(
        &self,
        record: &TemplateRecord,
        version: u32,
    ) -> anyhow::Result<Option<TemplateVersion>> {
        let Some(info) = record.versions.iter().find(|v| v.version == version) else {
            return Ok(None);
        };
        let key = format!("{}.{version}", record.id);
        let Some(bytes) = self.kv.get(&key).await? else {
            return Ok(None);
        };
        let mut template: TemplateVersion = serde_json::from_slice(&bytes)?;
        template.state = info.state;
        template.approved_by = info.approved_by.clone();
        Ok(Some(template))
    }

    /// The ids of every template, sorted.
    pub async fn ids(&self) -> anyhow::Result<Vec<String>> {
        let mut keys = self.kv.keys().await?;
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key?;
            if !key.contains('.') {
                ids.push(key);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The version to declare: the given one, or the newest approved; refused
    /// unless it is approved (not draft, submitted, rejected or retired).
    pub async fn declarable(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<TemplateVersion, Problem> {
        let Some(record) = self.record(id).await.map_err(unavailable)? else {
            let known = self.ids().await.map_err(unavailable)?;
            return Err(Problem {
                field: Some("template".into()),
                ..Problem::new(
                    422,
                    "unknown template",
                    format!(
                        "there is no template `{id}`; known templates: {}",
                        known.join(", ")
                    ),
                )
            });
        };
        let info = match version {
            Some(v) => record
                .versions
                .iter()
                .find(|i| i.version == v)
                .ok_or_else(|| {
                    Problem::invalid(
                        "template_version",
                        format!("template `{id}` has no version {v}"),
                    )
                })?,
            None => record
                .versions
                .iter()
                .rev()
                .find(|i| i.state == TemplateState::Approved)
                .ok_or_else(|| {
                    Problem::invalid(
                        "template",
                        format!("template `{id}` has no approved version"),
                    )
                })?,
        };
        if info.state != TemplateState::Approved {
            return Err(Problem::invalid(
                "template_version",
                format!(
                    "template `{id}` version {} is {}, not approved; only approved versions can be declared",
                    info.version, info.state
                ),
            ));
        }
        self.version(&record, info.version)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                Problem::unavailable(format!(
                    "the wording of `{id}` version {} is not in the read model yet; try again",
                    info.version
                ))
            })
    }

    /// The newest approved version of every template; with `all`, every version.
    pub async fn summaries(&self, all: bool) -> anyhow::Result<Vec<TemplateSummary>> {
        let mut out = Vec::new();
        for id in self.ids().await? {
            let Some(record) = self.record(&id).await? else {
                continue;
            };
            let wanted: Vec<u32> = if all {
                record.versions.iter().map(|v| v.version).collect()
            } else {
                record
                    .versions
                    .iter()
                    .rev()
                    .find(|v| v.state == TemplateState::Approved)
                    .map(|v| vec![v.version])
                    .unwrap_or_default()
            };
            for version in wanted {
                if let Some(t) = self.version(&record, version).await? {
                    out.push(summary(&t));
                }
            }
        }
        Ok(out)
    }

    /// Drafts a new version (or finds a live one with the same wording), retrying
    /// when another writer got there first.
    pub async fn draft(
        &self,
        actor: &Actor,
        draft: TemplateVersion,
        new_template: bool,
    ) -> Result<(bool, TemplateVersion), Problem> {
        let id = draft.id.clone();
        if !subject::is_token(&id) {
            return Err(Problem::invalid(
                "id",
                format!("`{id}` cannot be a template id: use 1 to 64 letters, digits, - and _"),
            ));
        }
        for _ in 0..ATTEMPTS {
            let mut aggregate = self.load(&id).await.map_err(unavailable)?;
            match templates::decide_draft(&aggregate, actor, draft.clone(), new_template)? {
                DraftDecision::Existing(t) => return Ok((false, t)),
                DraftDecision::Append(envelope) => {
                    match self.append(&mut aggregate, &envelope).await {
                        Ok(()) => {
                            let version = aggregate.newest();
                            tracing::info!(template = %id, version, "template version drafted");
                            #[allow(
                                clippy::indexing_slicing,
                                reason = "the version just appended"
                            )]
                            return Ok((true, aggregate.versions[&version].template.clone()));
                        }
                        Err(AppendError::Conflict { .. }) => continue,
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
        Err(changing(&id))
    }

    /// Takes a lifecycle step, retrying (and deciding again) when another writer got
    /// there first.
    pub async fn step(
        &self,
        actor: &Actor,
        command: &ChangeTemplateState,
    ) -> Result<Aggregate, Problem> {
        if !subject::is_token(&command.template) {
            return Err(no_template(&command.template));
        }
        for _ in 0..ATTEMPTS {
            let mut aggregate = self.load(&command.template).await.map_err(unavailable)?;
            if aggregate.versions.is_empty() {
                return Err(no_template(&command.template));
            }
            let envelope = templates::decide_step(&aggregate, actor, command)?;
            match self.append(&mut aggregate, &envelope).await {
                Ok(()) => {
                    tracing::info!(template = %command.template, version = command.version, action = command.action.as_str(), "template lifecycle step");
                    return Ok(aggregate);
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(changing(&command.template))
    }

    /// Handles one template event for the projector: rebuilds the template's read
    /// model from its events when the bucket has not seen this event yet.
    pub async fn project(&self, delivery: Delivery) -> Ack {
        let Some(id) = delivery.subject.strip_prefix("krisbud.evt.template.") else {
            return Ack::Done;
        };
        if !subject::is_token(id) {
            return Ack::Done;
        }
        let result = async {
            if let Some(record) = self.record(id).await?
                && record.last_sequence >= delivery.stream_sequence
            {
                return Ok(());
            }
            let aggregate = self.load(id).await?;
            self.store(&aggregate).await
        }
        .await;
        match result {
            Ok(()) => Ack::Done,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), template = %id, "cannot update the template read model; will retry");
                Ack::Retry(std::time::Duration::from_millis(500))
            }
        }
    }

    /// Seeds the demo templates as approved versions: drafted by [`DEMO_AUTHOR`],
    /// submitted, and approved by [`DEMO_APPROVER`] through the same decisions as
    /// the API, so every check (four eyes included) holds for them too. A template
    /// that already has a version with the same wording, in any state, is left as it
    /// is, so a restart neither duplicates nor revives a retired demo version; the
    /// message ids are deterministic as well.
    ///
    /// [`DEMO_AUTHOR`]: templates::DEMO_AUTHOR
    /// [`DEMO_APPROVER`]: templates::DEMO_APPROVER
    pub async fn seed_demo(&self) -> anyhow::Result<()> {
        let author = Actor {
            user: templates::DEMO_AUTHOR.into(),
            roles: vec![Role::TemplateEditor],
            channels: Vec::new(),
        };
        let approver = Actor {
            user: templates::DEMO_APPROVER.into(),
            roles: vec![Role::TemplateApprover],
            channels: Vec::new(),
        };
        for (name, text) in templates::DEMO {
            let wording = templates::parse(name, text)?;
            let mut attempts = 0;
            loop {
                attempts += 1;
                anyhow::ensure!(attempts <= 20, "demo template {name} kept changing");
                let mut aggregate = self.load(&wording.id).await?;
                let existing = aggregate
                    .versions
                    .values()
                    .rev()
                    .find(|v| v.template.same_wording(&wording))
                    .map(|v| (v.template.version, v.template.state));
                let envelope = match existing {
                    None => match templates::decide_draft(
                        &aggregate,
                        &author,
                        wording.clone(),
                        aggregate.versions.is_empty(),
                    )
                    .map_err(|p| anyhow::anyhow!("demo template {name}: {}", p.detail))?
                    {
                        DraftDecision::Append(e) => *e,
                        // Another writer drafted it in the meantime: look again.
                        DraftDecision::Existing(_) => continue,
                    },
                    Some((version, state)) => {
                        let (actor, action) = match state {
                            TemplateState::Draft => (&author, TemplateAction::Submit),
                            TemplateState::Submitted => (&approver, TemplateAction::Approve),
                            _ => {
                                // Approved (or later retired or rejected by a person):
                                // done; make sure the read model has it.
                                self.store(&aggregate).await?;
                                break;
                            }
                        };
                        let command = ChangeTemplateState {
                            template: wording.id.clone(),
                            version,
                            action,
                            reason: None,
                        };
                        templates::decide_step(&aggregate, actor, &command)
                            .map_err(|p| anyhow::anyhow!("demo template {name}: {}", p.detail))?
                    }
                };
                match self.append(&mut aggregate, &envelope).await {
                    Ok(()) | Err(AppendError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// What the template list shows of a version.
pub fn summary(t: &TemplateVersion) -> TemplateSummary {
    TemplateSummary {
        id: t.id.clone(),
        version: t.version,
        name: t.name.clone(),
        state: t.state,
        cap: t.cap.clone(),
        languages: t.languages.keys().cloned().collect(),
        variables: t.variables.clone(),
        author: t.author.clone(),
        approved_by: t.approved_by.clone(),
    }
}

/// 404 for a template that does not exist.
pub fn no_template(id: &str) -> Problem {
    Problem::not_found(format!("there is no template `{id}`"))
}

fn changing(id: &str) -> Problem {
    Problem::conflict(format!(
        "template `{id}` kept changing while this request was decided; try again"
    ))
}

/// 503 for a storage failure; the cause goes to the log, not the client.
pub fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "template storage failed");
    Problem::unavailable("the template store is unavailable; try again")
}
