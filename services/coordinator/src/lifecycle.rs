//! A crisis as it unfolds after the declaration: updates, the all-clear, a
//! cancellation of a message sent in error, and closing.
//!
//! The crisis's events on `krisbud.evt.crisis.<id>` are the truth. A step loads
//! them, decides on the state they give, and appends its event with
//! `Nats-Expected-Last-Subject-Sequence` set to the last event it read, so of two
//! duty officers acting at once one wins and the other is told the current
//! revision (409). Events that do not change the revision (a plan, a confirmation)
//! may land in between; the step then simply decides again.

use krisbud_kit::text::escape_html;
use std::collections::BTreeMap;

use anyhow::Context as _;
use async_nats::jetstream::stream::RawMessageErrorKind;
use chrono::{DateTime, Utc};
use krisbud_kit::bus::{AppendError, Expect};
use krisbud_proto::command::{CancelCrisis, CrisisStep, ExpectRevision, Revised, UpdateCrisis};
use krisbud_proto::event::{CrisisClosed, CrisisRevised};
use krisbud_proto::job::{MsgType, message_id};
use krisbud_proto::model::{CapInfo, ResponseType};
use krisbud_proto::status::CrisisState;
use krisbud_proto::template::{
    BannerLevel, BannerMessage, CrisisParts, EmailMessage, IntranetMessage, RenderedLanguage,
    SmsMessage, TemplateRef, TemplateVersion,
};
use krisbud_proto::{
    Actor, AlertStatus, Channel, CommandRequest, Envelope, Event, Problem, Role, spec, subject,
};
use sha2::{Digest, Sha256};

use crate::commands::{Coordinator, require};
use crate::{gsm, projection, render};

/// Attempts at a step while only plans and confirmations land in between.
const ATTEMPTS: usize = 8;
/// Longest cancellation reason accepted, in characters.
const MAX_REASON: usize = 500;

/// What the messages of the crisis were made from, as of its last declaration or
/// update.
#[derive(Debug, Clone)]
pub struct Current {
    pub template: TemplateRef,
    pub status: AlertStatus,
    pub cap: CapInfo,
    pub variables: BTreeMap<String, String>,
    pub audiences: Vec<String>,
    pub audience_generations: BTreeMap<String, u32>,
    pub channels: Vec<Channel>,
    /// The last alert or update's messages: the all-clear and the correction
    /// quote their headline.
    pub messages: Vec<RenderedLanguage>,
    pub expires_at: Option<DateTime<Utc>>,
    pub declared_at: DateTime<Utc>,
}

/// One crisis folded from its events.
#[derive(Debug, Clone, Default)]
pub struct Crisis {
    pub crisis_id: String,
    /// Stream sequence of the last event read (0: none).
    pub last_sequence: u64,
    /// 0 until declared.
    pub revision: u32,
    pub state: CrisisState,
    pub current: Option<Current>,
}

impl Crisis {
    /// Folds one event of the crisis in.
    pub fn apply(&mut self, envelope: &Envelope, sequence: u64) {
        self.last_sequence = self.last_sequence.max(sequence);
        match &envelope.event {
            Event::CrisisDeclared(e) => {
                self.revision = e.revision;
                self.state = CrisisState::Active;
                self.current = Some(Current {
                    template: e.template.clone(),
                    status: e.status,
                    cap: e.cap.clone(),
                    variables: e.variables.clone(),
                    audiences: e.audiences.clone(),
                    audience_generations: e.audience_generations.clone(),
                    channels: e.channels.clone(),
                    messages: e.messages.clone(),
                    expires_at: e.expires_at,
                    declared_at: envelope.occurred_at,
                });
            }
            Event::CrisisUpdated(e) => {
                self.revision = self.revision.max(e.revision);
                self.state = CrisisState::Active;
                self.current = Some(Current {
                    template: e.template.clone(),
                    status: e.status,
                    cap: e.cap.clone(),
                    variables: e.variables.clone(),
                    audiences: e.audiences.clone(),
                    audience_generations: e.audience_generations.clone(),
                    channels: e.channels.clone(),
                    messages: e.messages.clone(),
                    expires_at: e.expires_at,
                    declared_at: e.declared_at,
                });
            }
            Event::CrisisAllClear(e) => {
                self.revision = self.revision.max(e.revision);
                self.state = CrisisState::AllClear;
            }
            Event::CrisisCancelled(e) => {
                self.revision = self.revision.max(e.revision);
                self.state = CrisisState::Cancelled;
            }
            Event::CrisisClosed(_) => self.state = CrisisState::Closed,
            _ => {}
        }
    }
}

/// Which step is being taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Update,
    AllClear,
    Cancel,
    Close,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Update => "update",
            Step::AllClear => "all-clear",
            Step::Cancel => "cancel",
            Step::Close => "close",
        }
    }

    /// Whether the step may follow a crisis in `state`.
    fn allowed(self, state: CrisisState) -> bool {
        match self {
            Step::Update | Step::AllClear | Step::Cancel => state == CrisisState::Active,
            Step::Close => state != CrisisState::Closed,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "crisis lifecycle storage failed");
    Problem::unavailable("the crisis store is unavailable; try again")
}

impl Coordinator {
    /// Folds every event of crisis `id` from KRISBUD_EVENTS, in stream order.
    pub async fn load_crisis(&self, id: &str) -> anyhow::Result<Crisis> {
        let stream = self.bus.js.get_stream_no_info(spec::EVENTS.name).await?;
        let subject = subject::crisis_events(id);
        let mut crisis = Crisis {
            crisis_id: id.to_owned(),
            ..Crisis::default()
        };
        let mut next = 1;
        loop {
            let message = match stream
                .get_first_raw_message_by_subject(&subject, next)
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(e).context("cannot read crisis events"),
            };
            next = message.sequence + 1;
            match Envelope::read_on(&message.subject, &message.payload) {
                Ok(envelope) => crisis.apply(&envelope, message.sequence),
                Err(e) => {
                    tracing::warn!(crisis = %id, sequence = message.sequence, error = %e, "unreadable crisis event skipped");
                    crisis.last_sequence = message.sequence;
                }
            }
        }
        Ok(crisis)
    }

    /// `POST /crises/{id}/update`.
    pub async fn update(
        &self,
        request: CommandRequest<CrisisStep<UpdateCrisis>>,
    ) -> Result<Revised, Problem> {
        let body = request.body.body.clone();
        let id = request.body.crisis_id.clone();
        self.step(
            &request.actor,
            &id,
            body.expected_revision,
            Step::Update,
            &body,
            &Action::Update(&body),
        )
        .await
    }

    /// `POST /crises/{id}/all-clear`.
    pub async fn all_clear(
        &self,
        request: CommandRequest<CrisisStep<ExpectRevision>>,
    ) -> Result<Revised, Problem> {
        let body = request.body.body.clone();
        let id = request.body.crisis_id.clone();
        self.step(
            &request.actor,
            &id,
            body.expected_revision,
            Step::AllClear,
            &body,
            &Action::AllClear,
        )
        .await
    }

    /// `POST /crises/{id}/cancel`.
    pub async fn cancel(
        &self,
        request: CommandRequest<CrisisStep<CancelCrisis>>,
    ) -> Result<Revised, Problem> {
        let body = request.body.body.clone();
        let id = request.body.crisis_id.clone();
        let reason = body.reason.trim().to_owned();
        if reason.is_empty() {
            return Err(Problem::invalid(
                "reason",
                "say why the message is withdrawn",
            ));
        }
        if reason.chars().count() > MAX_REASON {
            return Err(Problem::invalid(
                "reason",
                format!("the reason is longer than {MAX_REASON} characters"),
            ));
        }
        if reason.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Problem::invalid(
                "reason",
                "the reason contains a control character",
            ));
        }
        self.step(
            &request.actor,
            &id,
            body.expected_revision,
            Step::Cancel,
            &body,
            &Action::Cancel(&reason),
        )
        .await
    }

    /// `POST /crises/{id}/close`.
    pub async fn close(
        &self,
        request: CommandRequest<CrisisStep<ExpectRevision>>,
    ) -> Result<Revised, Problem> {
        let body = request.body.body.clone();
        let id = request.body.crisis_id.clone();
        self.step(
            &request.actor,
            &id,
            body.expected_revision,
            Step::Close,
            &body,
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
        let unknown = || Problem::not_found(format!("there is no crisis `{crisis_id}`"));
        if !subject::is_token(crisis_id) {
            return Err(unknown());
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
            if crisis.current.is_none() {
                return Err(unknown());
            }
            if !step.allowed(crisis.state) {
                return Err(Problem::conflict(format!(
                    "crisis {crisis_id} is {} (revision {}); {}",
                    crisis.state,
                    crisis.revision,
                    match crisis.state {
                        CrisisState::Closed => "nothing more can be done with it".to_owned(),
                        _ => format!("only closing is possible, not {}", step.name()),
                    }
                )));
            }
            if crisis.revision != expected {
                return Err(stale(&crisis, expected));
            }
            let (event, recipients) = match action {
                Action::Update(body) => self.decide_update(actor, &crisis, body).await?,
                Action::AllClear => {
                    self.decide_closing(&crisis, Closing::AllClear, None)
                        .await?
                }
                Action::Cancel(reason) => {
                    self.decide_closing(&crisis, Closing::Cancel, Some((*reason).to_owned()))
                        .await?
                }
                Action::Close => (
                    Event::CrisisClosed(CrisisClosed {
                        crisis_id: crisis.crisis_id.clone(),
                        revision: crisis.revision,
                        languages: crisis
                            .current
                            .iter()
                            .flat_map(|c| c.messages.iter().map(|m| m.language.clone()))
                            .collect(),
                    }),
                    BTreeMap::new(),
                ),
            };
            let revision = match &event {
                Event::CrisisUpdated(e) | Event::CrisisAllClear(e) | Event::CrisisCancelled(e) => {
                    e.revision
                }
                _ => crisis.revision,
            };
            let state = match &event {
                Event::CrisisAllClear(_) => CrisisState::AllClear,
                Event::CrisisCancelled(_) => CrisisState::Cancelled,
                Event::CrisisClosed(_) => CrisisState::Closed,
                _ => CrisisState::Active,
            };
            let mut envelope = Envelope::with_id(
                format!(
                    "{crisis_id}.r{revision}.{}.{}",
                    step.name(),
                    hex::encode(&digest[..6])
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
                    if let Err(e) = projection::apply(&self.crises, &envelope).await {
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
        Err(stale(&crisis, expected))
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

    async fn decide_update(
        &self,
        actor: &Actor,
        crisis: &Crisis,
        body: &UpdateCrisis,
    ) -> Result<(Event, BTreeMap<Channel, u64>), Problem> {
        let current = crisis.current.as_ref().expect("declared");
        let template = match body.template_version {
            Some(v) if v <= current.template.version => {
                return Err(Problem::invalid(
                    "template_version",
                    format!(
                        "the crisis uses version {} of `{}`; an update can only move to a newer approved version",
                        current.template.version, current.template.id
                    ),
                ));
            }
            Some(v) => {
                self.templates
                    .declarable(&current.template.id, Some(v))
                    .await?
            }
            None => self.template_in_use(&current.template).await?,
        };
        let mut variables = current.variables.clone();
        for (name, value) in &body.variables {
            if value.trim().is_empty() {
                variables.remove(name);
            } else {
                variables.insert(name.clone(), value.clone());
            }
        }
        let mut audiences = current.audiences.clone();
        let mut generations = current.audience_generations.clone();
        let mut added = Vec::new();
        let mut added_audiences = Vec::new();
        for (i, id) in body.audiences.iter().enumerate() {
            if audiences.contains(id) {
                continue;
            }
            let audience = self.audiences.get(id).await?.ok_or_else(|| {
                Problem::invalid(
                    format!("audiences[{i}]"),
                    format!("there is no audience `{id}`"),
                )
            })?;
            audiences.push(id.clone());
            generations.insert(id.clone(), audience.generation);
            added.push(id.clone());
            added_audiences.push(audience);
        }
        // An exercise is widened only to audiences marked for exercises.
        self.exercise_guard(
            actor,
            current.status,
            &added_audiences,
            &current.template.id,
            Some(&crisis.crisis_id),
        )
        .await?;
        if !added.is_empty() && !current.channels.iter().any(|c| c.has_recipients()) {
            return Err(Problem::invalid(
                "audiences",
                format!(
                    "crisis {} goes out on neither SMS nor email, so an audience adds nobody",
                    crisis.crisis_id
                ),
            ));
        }
        if body.variables.is_empty() && added.is_empty() && body.template_version.is_none() {
            return Err(Problem::invalid(
                "variables",
                "an update needs new values, an added audience or a newer template version",
            ));
        }
        let mut messages = render::render(&template, &variables, current.status)?;
        for language in &mut messages {
            prefix_update(language, current.status);
        }
        render::check_sms_segments(&template, &messages, &variables)?;
        let recipients = self
            .recipients(&audiences, &current.channels, messages.len())
            .await?;
        let revision = crisis.revision + 1;
        Ok((
            Event::CrisisUpdated(CrisisRevised {
                crisis_id: crisis.crisis_id.clone(),
                revision,
                msg_type: MsgType::Update,
                references: references(&crisis.crisis_id, crisis.revision),
                template: TemplateRef {
                    id: template.id.clone(),
                    version: template.version,
                },
                status: current.status,
                cap: template.cap.clone(),
                variables,
                audiences,
                audience_generations: generations,
                added_audiences: added,
                channels: current.channels.clone(),
                messages,
                expires_at: current.expires_at,
                declared_at: current.declared_at,
                reason: None,
            }),
            recipients,
        ))
    }

    async fn decide_closing(
        &self,
        crisis: &Crisis,
        closing: Closing,
        reason: Option<String>,
    ) -> Result<(Event, BTreeMap<Channel, u64>), Problem> {
        let current = crisis.current.as_ref().expect("declared");
        let template = self.template_in_use(&current.template).await?;
        let messages: Vec<RenderedLanguage> = current
            .messages
            .iter()
            .map(|m| closing_message(closing, m, current.status, template.max_sms_segments))
            .collect();
        let recipients = self
            .recipients(&current.audiences, &current.channels, messages.len())
            .await?;
        let mut cap = current.cap.clone();
        if closing == Closing::AllClear {
            cap.response_type = ResponseType::AllClear;
        }
        let revised = CrisisRevised {
            crisis_id: crisis.crisis_id.clone(),
            revision: crisis.revision + 1,
            msg_type: match closing {
                Closing::AllClear => MsgType::Update,
                Closing::Cancel => MsgType::Cancel,
            },
            references: references(&crisis.crisis_id, crisis.revision),
            template: current.template.clone(),
            status: current.status,
            cap,
            variables: current.variables.clone(),
            audiences: current.audiences.clone(),
            audience_generations: current.audience_generations.clone(),
            added_audiences: Vec::new(),
            channels: current.channels.clone(),
            messages,
            expires_at: current.expires_at,
            declared_at: current.declared_at,
            reason,
        };
        let event = match closing {
            Closing::AllClear => Event::CrisisAllClear(revised),
            Closing::Cancel => Event::CrisisCancelled(revised),
        };
        Ok((event, recipients))
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
        Ok(channels
            .iter()
            .map(|c| {
                let n = match c {
                    Channel::Sms => found.iter().map(|a| a.with_phone).sum(),
                    Channel::Email => found.iter().map(|a| a.with_email).sum(),
                    Channel::Banner | Channel::Intranet => languages as u64,
                };
                (*c, n)
            })
            .collect())
    }
}

/// A step and what it needs.
enum Action<'a> {
    Update(&'a UpdateCrisis),
    AllClear,
    Cancel(&'a str),
    Close,
}

/// 409 for a request that read an older revision, naming the current one.
fn stale(crisis: &Crisis, expected: u32) -> Problem {
    Problem::conflict(format!(
        "crisis {} is at revision {} ({}), not {expected}: someone changed it first; \
         read it again and decide on revision {}",
        crisis.crisis_id, crisis.revision, crisis.state, crisis.revision
    ))
}

/// The message ids of revisions 1 to `up_to`.
fn references(crisis_id: &str, up_to: u32) -> Vec<String> {
    (1..=up_to).map(|r| message_id(crisis_id, r)).collect()
}

/// The all-clear or the correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    AllClear,
    Cancel,
}

/// How the language's messages are worded: Swedish, easy-to-read Swedish, or
/// English for every other language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wording {
    Swedish,
    EasySwedish,
    English,
}

fn wording(language: &str) -> Wording {
    if language == "sv-x-lattlast" {
        Wording::EasySwedish
    } else if language == "sv" || language.starts_with("sv-") {
        Wording::Swedish
    } else {
        Wording::English
    }
}

/// The word an update starts with, in the message's language.
pub fn update_prefix(language: &str) -> &'static str {
    match wording(language) {
        Wording::Swedish => "UPPDATERING",
        Wording::EasySwedish => "NY INFORMATION",
        Wording::English => "UPDATE",
    }
}

/// `text` with `word: ` after the practice marker (or at the start without one).
fn insert_after_marker(text: &str, marker: Option<&str>, word: &str) -> String {
    if let Some(m) = marker
        && let Some(rest) = text.strip_prefix(&format!("{m}: "))
    {
        return format!("{m}: {word}: {rest}");
    }
    format!("{word}: {text}")
}

/// Marks an update's rendering: "UPPDATERING: " (per language) after the practice
/// marker in every text a person reads first.
pub fn prefix_update(language: &mut RenderedLanguage, status: AlertStatus) {
    let word = update_prefix(&language.language);
    let marker = render::marker(status, &language.language);
    let add = |text: &str| insert_after_marker(text, marker, word);
    language.sms.text = add(&language.sms.text);
    let cost = gsm::cost(&language.sms.text);
    language.sms.encoding = cost.encoding.as_str().to_owned();
    language.sms.segments = cost.segments;
    language.email.subject = add(&language.email.subject);
    language.email.text = add(&language.email.text);
    language.banner.headline = add(&language.banner.headline);
    language.intranet.title = add(&language.intranet.title);
    let flag = format!("<p><strong>{word}</strong></p>\n");
    language.email.html = match marker {
        Some(m) => {
            let marked = format!("<p><strong>{m}</strong></p>\n");
            match language.email.html.strip_prefix(&marked) {
                Some(rest) => format!("{marked}{flag}{rest}"),
                None => format!("{flag}{}", language.email.html),
            }
        }
        None => format!("{flag}{}", language.email.html),
    };
}

/// The headline of a rendering without the practice marker and update prefix.
fn bare_headline(language: &RenderedLanguage, status: AlertStatus) -> String {
    let mut headline = language.banner.headline.as_str();
    if let Some(m) = render::marker(status, &language.language) {
        headline = headline.strip_prefix(&format!("{m}: ")).unwrap_or(headline);
    }
    let word = format!("{}: ", update_prefix(&language.language));
    headline = headline.strip_prefix(&word).unwrap_or(headline);
    headline.trim_end_matches('.').to_owned()
}

/// The fixed words of an all-clear or a correction in one language.
struct Words {
    label: &'static str,
    /// The text after the label, quoting the headline.
    core: fn(&str, &str) -> String,
    /// The banner's and intranet's body.
    body: fn(&str) -> String,
}

fn words(closing: Closing, wording: Wording) -> Words {
    fn link(url: &str) -> String {
        if url.is_empty() {
            String::new()
        } else {
            format!(" {url}")
        }
    }
    match (closing, wording) {
        (Closing::AllClear, Wording::Swedish) => Words {
            label: "FARAN ÖVER",
            core: |h, url| format!("{h}.{}", link(url)),
            body: |_| "Faran är över.".to_owned(),
        },
        (Closing::AllClear, Wording::EasySwedish) => Words {
            label: "FARAN ÄR ÖVER",
            core: |h, url| format!("{h}.{}", link(url)),
            body: |_| "Faran är över nu.".to_owned(),
        },
        (Closing::AllClear, Wording::English) => Words {
            label: "ALL CLEAR",
            core: |h, url| format!("{h}.{}", link(url)),
            body: |_| "The danger is over.".to_owned(),
        },
        (Closing::Cancel, Wording::Swedish) => Words {
            label: "RÄTTELSE",
            core: |h, _| format!("Meddelandet \"{h}\" skickades av misstag. Bortse från det."),
            body: |h| format!("Meddelandet \"{h}\" skickades av misstag. Bortse från det."),
        },
        (Closing::Cancel, Wording::EasySwedish) => Words {
            label: "RÄTTELSE",
            core: |h, _| format!("Meddelandet \"{h}\" skickades av misstag. Bry dig inte om det."),
            body: |h| format!("Meddelandet \"{h}\" skickades av misstag. Bry dig inte om det."),
        },
        (Closing::Cancel, Wording::English) => Words {
            label: "CORRECTION",
            core: |h, _| format!("The message \"{h}\" was sent in error. Please disregard it."),
            body: |h| format!("The message \"{h}\" was sent in error. Please disregard it."),
        },
    }
}

/// The all-clear or the correction in the language of `base` (the last alert or
/// update), quoting its headline; the SMS keeps within `max_segments`, cutting the
/// headline when it must.
pub fn closing_message(
    closing: Closing,
    base: &RenderedLanguage,
    status: AlertStatus,
    max_segments: u32,
) -> RenderedLanguage {
    let language = base.language.as_str();
    let words = words(closing, wording(language));
    let marker = render::marker(status, language);
    let mark = |text: String| match marker {
        Some(m) => format!("{m}: {text}"),
        None => text,
    };
    let headline = bare_headline(base, status);
    let url = base.banner.link_url.as_str();
    let sms_url = if closing == Closing::AllClear {
        url
    } else {
        ""
    };
    // Cut the headline, a character at a time, until the SMS fits.
    let mut chars: Vec<char> = headline.chars().collect();
    let mut short = headline.clone();
    let sms_text = loop {
        let text = mark(format!(
            "{}: {}",
            words.label,
            (words.core)(&short, sms_url)
        ));
        if gsm::cost(&text).segments <= max_segments.max(1) || chars.is_empty() {
            break text;
        }
        chars.pop();
        short = format!("{}...", chars.iter().collect::<String>().trim_end());
    };
    let cost = gsm::cost(&sms_text);
    let full = format!("{}: {}", words.label, (words.core)(&headline, sms_url));
    let body = (words.body)(&headline);
    let titled = mark(format!("{}: {headline}", words.label));
    let html = {
        let paragraph = format!("<p>{}</p>", escape_html(&full));
        match marker {
            Some(m) => format!("<p><strong>{m}</strong></p>\n{paragraph}"),
            None => paragraph,
        }
    };
    let mut intranet_body = render::escape_markdown(&body);
    if closing == Closing::AllClear && !url.is_empty() {
        intranet_body.push_str(&format!("\n\n{}", render::escape_markdown(url)));
    }
    RenderedLanguage {
        language: language.to_owned(),
        parts: CrisisParts {
            what_happened: body.clone(),
            learn_more: if closing == Closing::AllClear {
                url.to_owned()
            } else {
                String::new()
            },
            ..CrisisParts::default()
        },
        sms: SmsMessage {
            text: sms_text,
            encoding: cost.encoding.as_str().to_owned(),
            segments: cost.segments,
        },
        email: EmailMessage {
            subject: titled.clone(),
            text: mark(full),
            html,
        },
        banner: BannerMessage {
            headline: titled.clone(),
            body,
            link_text: base.banner.link_text.clone(),
            link_url: base.banner.link_url.clone(),
            level: BannerLevel::Info,
        },
        intranet: IntranetMessage {
            title: titled,
            body: intranet_body,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn water(status: AlertStatus) -> Vec<RenderedLanguage> {
        let t = crate::templates::parse("vattenlacka.toml", crate::templates::DEMO[0].1).unwrap();
        let values = [
            ("omrade", "Farsta"),
            ("beraknat_klart", "i kväll kl. 20"),
            ("vattenpunkt", "Farsta centrum"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        render::render(&t, &values, status).unwrap()
    }

    fn lang<'a>(all: &'a [RenderedLanguage], l: &str) -> &'a RenderedLanguage {
        all.iter().find(|m| m.language == l).unwrap()
    }

    #[test]
    fn an_update_is_prefixed_per_language_after_the_practice_marker() {
        let mut actual = water(AlertStatus::Actual);
        for l in &mut actual {
            prefix_update(l, AlertStatus::Actual);
        }
        assert!(
            lang(&actual, "sv")
                .sms
                .text
                .starts_with("UPPDATERING: Stockholms stad")
        );
        assert!(
            lang(&actual, "en")
                .banner
                .headline
                .starts_with("UPDATE: The water")
        );
        assert!(
            lang(&actual, "sv-x-lattlast")
                .email
                .subject
                .starts_with("NY INFORMATION: ")
        );
        let mut exercise = water(AlertStatus::Exercise);
        for l in &mut exercise {
            prefix_update(l, AlertStatus::Exercise);
        }
        let sv = lang(&exercise, "sv");
        assert!(
            sv.sms.text.starts_with("ÖVNING: UPPDATERING: "),
            "{}",
            sv.sms.text
        );
        assert!(
            sv.email
                .html
                .starts_with("<p><strong>ÖVNING</strong></p>\n<p><strong>UPPDATERING</strong></p>")
        );
        assert!(
            lang(&exercise, "en")
                .intranet
                .title
                .starts_with("EXERCISE: UPDATE: ")
        );
    }

    #[test]
    fn all_clear_and_correction_quote_the_bare_headline() {
        let mut updated = water(AlertStatus::Exercise);
        for l in &mut updated {
            prefix_update(l, AlertStatus::Exercise);
        }
        let sv = closing_message(
            Closing::AllClear,
            lang(&updated, "sv"),
            AlertStatus::Exercise,
            3,
        );
        assert_eq!(
            sv.sms.text,
            "ÖVNING: FARAN ÖVER: Vattnet är avstängt i Farsta. https://stockholm.se/vatten"
        );
        assert_eq!(
            sv.banner.headline,
            "ÖVNING: FARAN ÖVER: Vattnet är avstängt i Farsta"
        );
        assert_eq!(sv.banner.level, BannerLevel::Info);
        let actual = water(AlertStatus::Actual);
        let en = closing_message(Closing::Cancel, lang(&actual, "en"), AlertStatus::Actual, 3);
        assert_eq!(
            en.sms.text,
            "CORRECTION: The message \"The water is shut off in Farsta\" was sent in error. Please disregard it."
        );
        let sv = closing_message(Closing::Cancel, lang(&actual, "sv"), AlertStatus::Actual, 3);
        assert_eq!(
            sv.sms.text,
            "RÄTTELSE: Meddelandet \"Vattnet är avstängt i Farsta\" skickades av misstag. Bortse från det."
        );
        assert!(sv.email.html.contains("&quot;Vattnet"), "{}", sv.email.html);
    }

    #[test]
    fn a_long_headline_is_cut_to_keep_the_sms_within_the_limit() {
        let mut base = water(AlertStatus::Actual)[1].clone();
        base.banner.headline = "Vattnet är avstängt ".repeat(12);
        let one = closing_message(Closing::Cancel, &base, AlertStatus::Actual, 1);
        assert_eq!(one.sms.segments, 1, "{}", one.sms.text);
        assert!(
            one.sms.text.contains("...\" skickades av misstag"),
            "{}",
            one.sms.text
        );
        let three = closing_message(Closing::Cancel, &base, AlertStatus::Actual, 3);
        assert!(!three.sms.text.contains("..."));
    }
}
