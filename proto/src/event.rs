//! Domain events: every state change of krisbud is one of these, appended to
//! KRISBUD_EVENTS on the subject of its aggregate.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::MsgType;
use crate::model::{AlertStatus, CapInfo, Channel};
use crate::subject;
use crate::template::{RenderedLanguage, TemplateRef, TemplateVersion};

/// Every event krisbud records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "payload")]
pub enum Event {
    /// A duty officer declared a crisis.
    CrisisDeclared(CrisisDeclared),
    /// A duty officer updated a crisis: new values, audiences or template version.
    CrisisUpdated(CrisisRevised),
    /// A duty officer gave the all-clear ("faran över").
    CrisisAllClear(CrisisRevised),
    /// A duty officer withdrew a crisis whose message was sent in error.
    CrisisCancelled(CrisisRevised),
    /// A duty officer closed a crisis: nothing more is sent, the banner goes.
    CrisisClosed(CrisisClosed),
    /// The coordinator planned the dispatch jobs of a crisis revision.
    DispatchPlanned(DispatchPlanned),
    /// A channel delivered (or failed to deliver) one dispatch job.
    DeliveryReported(DeliveryReported),
    /// An operator confirmed that a channel's message is really out.
    ChannelConfirmed(ChannelConfirmed),
    /// A template editor wrote a new template version (a draft).
    TemplateDrafted(TemplateDrafted),
    /// A draft was handed in for approval.
    TemplateSubmitted(TemplateSubmitted),
    /// A template approver (not the author) approved a submitted version.
    TemplateApproved(TemplateApproved),
    /// A template approver refused a submitted version, with a reason.
    TemplateRejected(TemplateRejected),
    /// An approved version was taken out of use.
    TemplateRetired(TemplateRetired),
    /// The audit service's checkpoint signing key was registered or changed.
    AuditKeyRotated(crate::audit::AuditKeyRotated),
    /// An auditor looked up whether a recipient was notified.
    RecipientLookedUp(crate::audit::RecipientLookedUp),
    /// Someone signed in to the console, signed out, or was refused.
    ConsoleSession(crate::audit::ConsoleSession),
    /// An admin created an audience.
    AudienceCreated(AudienceCreated),
    /// An admin replaced an audience's members from a file.
    AudienceMembersImported(AudienceMembersImported),
    /// An admin deleted an audience and its members.
    AudienceDeleted(AudienceDeleted),
    /// An exercise or test was kept from reaching people or a site not marked for
    /// exercises.
    ExerciseRefused(ExerciseRefused),
    /// A channel of the current revision was still unconfirmed when its
    /// confirmation deadline (or a repeat of it) passed.
    EscalationRaised(EscalationRaised),
    /// A crisis reached its `expires_at`: its banners come down.
    CrisisExpired(CrisisExpired),
    /// A service refused a command that did not come, signed and fresh, from the
    /// gateway: a forgery, a replay or a tampered message.
    CommandRefused(CommandRefused),
}

impl Event {
    /// The event's kind as written in the envelope and the `Krisbud-Kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CrisisDeclared(_) => "CrisisDeclared",
            Event::CrisisUpdated(_) => "CrisisUpdated",
            Event::CrisisAllClear(_) => "CrisisAllClear",
            Event::CrisisCancelled(_) => "CrisisCancelled",
            Event::CrisisClosed(_) => "CrisisClosed",
            Event::DispatchPlanned(_) => "DispatchPlanned",
            Event::DeliveryReported(_) => "DeliveryReported",
            Event::ChannelConfirmed(_) => "ChannelConfirmed",
            Event::TemplateDrafted(_) => "TemplateDrafted",
            Event::TemplateSubmitted(_) => "TemplateSubmitted",
            Event::TemplateApproved(_) => "TemplateApproved",
            Event::TemplateRejected(_) => "TemplateRejected",
            Event::TemplateRetired(_) => "TemplateRetired",
            Event::AuditKeyRotated(_) => "AuditKeyRotated",
            Event::RecipientLookedUp(_) => "RecipientLookedUp",
            Event::ConsoleSession(_) => "ConsoleSession",
            Event::AudienceCreated(_) => "AudienceCreated",
            Event::AudienceMembersImported(_) => "AudienceMembersImported",
            Event::AudienceDeleted(_) => "AudienceDeleted",
            Event::ExerciseRefused(_) => "ExerciseRefused",
            Event::EscalationRaised(_) => "EscalationRaised",
            Event::CrisisExpired(_) => "CrisisExpired",
            Event::CommandRefused(_) => "CommandRefused",
        }
    }

    /// The crisis the event belongs to, where there is one.
    pub fn crisis_id(&self) -> Option<&str> {
        match self {
            Event::CrisisDeclared(e) => Some(&e.crisis_id),
            Event::CrisisUpdated(e) | Event::CrisisAllClear(e) | Event::CrisisCancelled(e) => {
                Some(&e.crisis_id)
            }
            Event::CrisisClosed(e) => Some(&e.crisis_id),
            Event::DispatchPlanned(e) => Some(&e.crisis_id),
            Event::DeliveryReported(e) => Some(&e.crisis_id),
            Event::ChannelConfirmed(e) => Some(&e.crisis_id),
            Event::RecipientLookedUp(e) => e.crisis_id.as_deref(),
            Event::ExerciseRefused(e) => e.crisis_id.as_deref(),
            Event::EscalationRaised(e) => Some(&e.crisis_id),
            Event::CrisisExpired(e) => Some(&e.crisis_id),
            Event::AuditKeyRotated(_)
            | Event::ConsoleSession(_)
            | Event::CommandRefused(_)
            | Event::AudienceCreated(_)
            | Event::AudienceMembersImported(_)
            | Event::AudienceDeleted(_)
            | Event::TemplateDrafted(_)
            | Event::TemplateSubmitted(_)
            | Event::TemplateApproved(_)
            | Event::TemplateRejected(_)
            | Event::TemplateRetired(_) => None,
        }
    }

    /// The template and version the event belongs to, for template lifecycle events.
    pub fn template(&self) -> Option<(&str, u32)> {
        match self {
            Event::TemplateDrafted(e) => Some((&e.template.id, e.template.version)),
            Event::TemplateSubmitted(e) => Some((&e.template_id, e.version)),
            Event::TemplateApproved(e) => Some((&e.template_id, e.version)),
            Event::TemplateRejected(e) => Some((&e.template_id, e.version)),
            Event::TemplateRetired(e) => Some((&e.template_id, e.version)),
            Event::CrisisDeclared(_)
            | Event::CrisisUpdated(_)
            | Event::CrisisAllClear(_)
            | Event::CrisisCancelled(_)
            | Event::CrisisClosed(_)
            | Event::DispatchPlanned(_)
            | Event::DeliveryReported(_)
            | Event::ChannelConfirmed(_)
            | Event::AuditKeyRotated(_)
            | Event::AudienceCreated(_)
            | Event::AudienceMembersImported(_)
            | Event::AudienceDeleted(_)
            | Event::ExerciseRefused(_)
            | Event::EscalationRaised(_)
            | Event::CrisisExpired(_)
            | Event::CommandRefused(_)
            | Event::ConsoleSession(_)
            | Event::RecipientLookedUp(_) => None,
        }
    }

    /// The subject of the event's aggregate.
    pub fn subject(&self) -> String {
        match self {
            Event::CrisisDeclared(e) => subject::crisis_events(&e.crisis_id),
            Event::CrisisUpdated(e) | Event::CrisisAllClear(e) | Event::CrisisCancelled(e) => {
                subject::crisis_events(&e.crisis_id)
            }
            Event::CrisisClosed(e) => subject::crisis_events(&e.crisis_id),
            Event::ChannelConfirmed(e) => subject::crisis_events(&e.crisis_id),
            Event::DispatchPlanned(e) => subject::crisis_events(&e.crisis_id),
            Event::DeliveryReported(e) => subject::delivery_events(e.channel, &e.crisis_id),
            Event::TemplateDrafted(e) => subject::template_events(&e.template.id),
            Event::TemplateSubmitted(e) => subject::template_events(&e.template_id),
            Event::TemplateApproved(e) => subject::template_events(&e.template_id),
            Event::TemplateRejected(e) => subject::template_events(&e.template_id),
            Event::TemplateRetired(e) => subject::template_events(&e.template_id),
            Event::AuditKeyRotated(_) => subject::AUDIT_KEY_EVENTS.to_owned(),
            Event::RecipientLookedUp(_) => subject::AUDIT_LOOKUP_EVENTS.to_owned(),
            Event::ConsoleSession(_) => subject::AUDIT_SESSION_EVENTS.to_owned(),
            Event::AudienceCreated(e) => subject::audience_events(&e.audience_id),
            Event::AudienceMembersImported(e) => subject::audience_events(&e.audience_id),
            Event::AudienceDeleted(e) => subject::audience_events(&e.audience_id),
            Event::ExerciseRefused(_) => subject::EXERCISE_GUARD_EVENTS.to_owned(),
            Event::EscalationRaised(e) => subject::crisis_events(&e.crisis_id),
            Event::CrisisExpired(e) => subject::crisis_events(&e.crisis_id),
            Event::CommandRefused(e) => subject::command_guard_events(&e.refused_by),
        }
    }
}

/// A command a service would not obey. Nothing of the command's body is kept but
/// its digest: a forged command may carry anything, personal data included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommandRefused {
    /// The command subject it arrived on.
    pub subject: String,
    /// Why it was refused: `unsigned`, `bad signature`, `stale`, `replayed`, ...
    pub reason: String,
    /// The actor the message claimed, if it could be read (never trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_user: Option<String>,
    /// SHA-256 of the message body, hex.
    pub body_sha256: String,
    /// The service that refused it.
    pub refused_by: String,
}

/// A crisis was declared from an approved template version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisDeclared {
    /// The new crisis's id.
    pub crisis_id: String,
    /// Revision of the crisis; 1 for the declaration.
    pub revision: u32,
    /// The approved template version that was used.
    pub template: TemplateRef,
    /// Whether this is real, an exercise or a test.
    pub status: AlertStatus,
    /// The CAP classification, from the template.
    pub cap: CapInfo,
    /// The values the duty officer filled in.
    pub variables: BTreeMap<String, String>,
    /// The audiences addressed on the person-to-person channels.
    pub audiences: Vec<String>,
    /// The member generation of each audience at the declaration, so the plan
    /// reads the members as they were then, whatever is imported later.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audience_generations: BTreeMap<String, u32>,
    /// The channels the crisis goes out on.
    pub channels: Vec<Channel>,
    /// Every language's rendered messages.
    pub messages: Vec<RenderedLanguage>,
    /// When the crisis stops being shown, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An exercise or test declaration, or one of its jobs, was refused because it
/// would have reached an audience not marked for exercises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExerciseRefused {
    /// The crisis, when the refusal is a channel's (the declaration was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis_id: Option<String>,
    /// The dispatch job a channel refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub status: AlertStatus,
    /// The template of a refused declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The audiences not marked for exercises.
    pub audiences: Vec<String>,
    /// Who refused: the coordinator or a channel service.
    pub refused_by: String,
}

/// A new revision of a crisis (an update, the all-clear or a cancellation): the
/// whole of what it sends, so the plan needs no other event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisRevised {
    pub crisis_id: String,
    /// The previous revision + 1.
    pub revision: u32,
    /// CAP `msgType`: `Update` for an update and the all-clear, `Cancel` for a
    /// cancellation.
    pub msg_type: MsgType,
    /// The earlier revisions' message ids (`<crisis>.r<n>`), oldest first.
    pub references: Vec<String>,
    /// The approved template version the messages come from.
    pub template: TemplateRef,
    pub status: AlertStatus,
    /// The CAP classification; the all-clear's `response_type` is `AllClear`.
    pub cap: CapInfo,
    /// Every value in force after this revision.
    pub variables: BTreeMap<String, String>,
    /// Every audience of the crisis, the added ones last.
    pub audiences: Vec<String>,
    /// The member generation of each audience: the one pinned when it was first
    /// addressed, so follow-ups reach the people who got the earlier messages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audience_generations: BTreeMap<String, u32>,
    /// Audiences this revision added (the audience was widened).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_audiences: Vec<String>,
    pub channels: Vec<Channel>,
    /// Every language's rendered messages of this revision.
    pub messages: Vec<RenderedLanguage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the crisis was declared.
    pub declared_at: DateTime<Utc>,
    /// Why a cancellation was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A crisis was closed at its current revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisClosed {
    pub crisis_id: String,
    /// The revision in force when it was closed.
    pub revision: u32,
    /// The languages of its messages: the banners to take down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
}

/// A channel of the crisis's current revision was unconfirmed when the deadline
/// of `level` passed. Its id (and `Nats-Msg-Id`) is
/// `<crisis>.r<revision>.<channel>.escalation.<level>`, so two coordinators raise
/// each level once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EscalationRaised {
    pub crisis_id: String,
    /// The revision whose confirmation is missing.
    pub revision: u32,
    /// The unconfirmed channel.
    pub channel: Channel,
    /// 1 when the first deadline passed, +1 for every repeat interval after it.
    pub level: u32,
    /// When this level fell due.
    pub deadline: DateTime<Utc>,
    /// The CAP severity that set the deadline.
    pub severity: crate::model::Severity,
    /// Real, exercise or test: notices of an exercise are marked and reach only
    /// audiences marked for exercises.
    #[serde(default)]
    pub status: AlertStatus,
    /// The crisis's Swedish headline, for the notices.
    #[serde(default)]
    pub headline: String,
    /// The audiences notified by SMS and email, with the member generation read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notify: BTreeMap<String, u32>,
}

impl EscalationRaised {
    /// The event id: `<crisis>.r<revision>.<channel>.escalation.<level>`.
    pub fn event_id(&self) -> String {
        format!(
            "{}.r{}.{}.escalation.{}",
            self.crisis_id, self.revision, self.channel, self.level
        )
    }

    /// The id of one notice job: the event id, the notice's channel and batch.
    pub fn notice_job_id(&self, notice_channel: Channel, batch: usize) -> String {
        format!("{}.{notice_channel}.{batch}", self.event_id())
    }
}

/// What an escalation notice job's id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeJob {
    pub revision: u32,
    /// The unconfirmed channel the notice is about.
    pub channel: Channel,
    pub level: u32,
}

/// Reads an escalation notice job id
/// (`<crisis>.r<revision>.<channel>.escalation.<level>.<notice channel>.<batch>`);
/// `None` for every other job id (a crisis's own jobs have five parts).
pub fn notice_job(job_id: &str) -> Option<NoticeJob> {
    let parts: Vec<&str> = job_id.split('.').collect();
    let [_, revision, channel, "escalation", level, notice, batch] = parts[..] else {
        return None;
    };
    Channel::parse(notice)?;
    batch.parse::<usize>().ok()?;
    Some(NoticeJob {
        revision: revision.strip_prefix('r')?.parse().ok()?,
        channel: Channel::parse(channel)?,
        level: level.parse().ok()?,
    })
}

/// A crisis reached its `expires_at` while not closed; the banner channel takes
/// its banners down. Id `<crisis>.r<revision>.expired`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisExpired {
    pub crisis_id: String,
    /// The revision in force (whose `expires_at` passed).
    pub revision: u32,
    pub expires_at: DateTime<Utc>,
    /// The languages of its messages: the banners to take down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
}

/// An audience was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AudienceCreated {
    pub audience_id: String,
    pub name: String,
    pub exercise: bool,
}

/// An audience's members were replaced by an import. Counts only: the members
/// themselves are personal data and stay in the members bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AudienceMembersImported {
    pub audience_id: String,
    pub generation: u32,
    pub rows: u64,
    pub members: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub with_phone: u64,
    pub with_email: u64,
}

/// An audience and its members were deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AudienceDeleted {
    pub audience_id: String,
}

/// The dispatch jobs planned for one crisis revision: how many recipients each
/// channel has, so status can show what is still pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchPlanned {
    pub crisis_id: String,
    pub revision: u32,
    pub channels: BTreeMap<Channel, PlannedChannel>,
}

/// One channel's share of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedChannel {
    /// Recipients (one per language for banner and intranet).
    pub recipients: u64,
    /// Dispatch jobs published.
    pub jobs: u64,
    /// Addresses left out because they appeared more than once.
    #[serde(default)]
    pub duplicates_removed: u64,
}

/// What happened to each recipient of one dispatch job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryReported {
    pub crisis_id: String,
    pub revision: u32,
    pub channel: Channel,
    /// The dispatch job these outcomes belong to.
    pub job_id: String,
    /// The provider or transport that carried the job (`46elks`, `smtp`, `outbox` ...).
    pub provider: String,
    /// One outcome per recipient of the job. Stored grouped: recipients whose
    /// outcomes differ in nothing else (a Sinch batch: same state, same batch id)
    /// share one entry (see [`outcome_groups`]).
    #[serde(with = "outcome_groups")]
    #[schemars(with = "Vec<OutcomeGroup>")]
    pub outcomes: Vec<RecipientOutcome>,
    /// How often the job was delivered to the channel again after a transient
    /// failure (a provider outage, a rate limit, an unreachable relay) before this
    /// report: 0 when the first try settled everyone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The fate of one recipient on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecipientOutcome {
    /// The recipient's keyed hash (`rcp:<hex>`), or the target name for channels
    /// without personal recipients (`banner`, `intranet`).
    pub recipient: String,
    pub state: DeliveryState,
    /// The provider's id for the message, when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<String>,
    /// Why it failed, or the provider's own status word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The recipient's batch was sent again after a crash while it was in flight,
    /// so the recipient may have got the message twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub possible_duplicate: bool,
}

/// Outcomes as stored: an entry names one `recipient` or several `recipients`
/// that share the state, provider reference, reason and duplicate flag.
///
/// A job's report repeats the same outcome for a thousand recipients when a
/// batch API answers for all of them at once; written out per recipient that is
/// ~115 bytes each in the events, again in the audit chain and again in the send
/// claims. Grouped, a recipient costs its reference (~39 bytes). A group of one
/// is written exactly as a single outcome, so reports with a provider id per
/// recipient (46elks, Twilio, SMTP) look as they always did, and records written
/// before grouping read the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutcomeGroup {
    /// The one recipient of this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The recipients of this entry, in the job's order, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub state: DeliveryState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub possible_duplicate: bool,
}

/// Serde for `Vec<RecipientOutcome>` as [`OutcomeGroup`]s: consecutive outcomes
/// that differ only in the recipient become one group; reading expands them in
/// order, so a round trip gives the same vector.
pub mod outcome_groups {
    use serde::ser::SerializeSeq as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::{DeliveryState, OutcomeGroup, RecipientOutcome};

    /// A group borrowed from the outcomes, so writing copies nothing.
    #[derive(serde::Serialize)]
    struct GroupRef<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        recipient: Option<&'a str>,
        #[serde(skip_serializing_if = "References::is_empty")]
        recipients: References<'a>,
        state: DeliveryState,
        #[serde(skip_serializing_if = "Option::is_none")]
        provider_ref: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        possible_duplicate: bool,
    }

    fn same_but_recipient(a: &RecipientOutcome, b: &RecipientOutcome) -> bool {
        a.state == b.state
            && a.provider_ref == b.provider_ref
            && a.reason == b.reason
            && a.possible_duplicate == b.possible_duplicate
    }

    /// Writes the groups.
    pub fn serialize<S: Serializer>(
        outcomes: &[RecipientOutcome],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let groups = outcomes.chunk_by(same_but_recipient);
        let mut seq = serializer.serialize_seq(Some(groups.clone().count()))?;
        for group in groups {
            let Some(first) = group.first() else { continue };
            let single = group.len() == 1;
            seq.serialize_element(&GroupRef {
                recipient: single.then_some(first.recipient.as_str()),
                recipients: References(if single { &[] } else { group }),
                state: first.state,
                provider_ref: first.provider_ref.as_deref(),
                reason: first.reason.as_deref(),
                possible_duplicate: first.possible_duplicate,
            })?;
        }
        seq.end()
    }

    /// Reads groups (and single outcomes, the same thing) back into outcomes.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<RecipientOutcome>, D::Error> {
        let groups = Vec::<OutcomeGroup>::deserialize(deserializer)?;
        let mut outcomes = Vec::with_capacity(
            groups
                .iter()
                .map(|g| g.recipients.len() + usize::from(g.recipient.is_some()))
                .sum(),
        );
        for group in groups {
            if group.recipient.is_none() && group.recipients.is_empty() {
                return Err(serde::de::Error::custom(
                    "an outcome names no recipient (`recipient` or `recipients`)",
                ));
            }
            let OutcomeGroup {
                recipient,
                recipients,
                state,
                provider_ref,
                reason,
                possible_duplicate,
            } = group;
            for recipient in recipient.into_iter().chain(recipients) {
                outcomes.push(RecipientOutcome {
                    recipient,
                    state,
                    provider_ref: provider_ref.clone(),
                    reason: reason.clone(),
                    possible_duplicate,
                });
            }
        }
        Ok(outcomes)
    }

    /// A group's outcomes written as their recipients' references only.
    struct References<'a>(&'a [RecipientOutcome]);

    impl References<'_> {
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    impl serde::Serialize for References<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.iter().map(|o| o.recipient.as_str()))
        }
    }
}

/// The state of one recipient's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Accepted by the transport (SMTP 250, provider 2xx); final delivery unknown.
    Sent,
    /// Confirmed as delivered, or written where it is read (outbox, banner, webhook 2xx).
    Delivered,
    /// Will not be delivered; `reason` says why.
    Failed,
}

/// An operator confirmed that a channel's message is really out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelConfirmed {
    pub crisis_id: String,
    /// The crisis revision that was confirmed.
    pub revision: u32,
    pub channel: Channel,
    /// The operator's note ("banner live on stockholm.se").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A new template version, with its whole wording. Its `state` is `draft` and its
/// `author` the actor of the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateDrafted {
    pub template: TemplateVersion,
}

/// A draft was handed in for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateSubmitted {
    pub template_id: String,
    pub version: u32,
}

/// A submitted version was approved by the envelope's actor, who is not its author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateApproved {
    pub template_id: String,
    pub version: u32,
}

/// A submitted version was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateRejected {
    pub template_id: String,
    pub version: u32,
    /// What the author should change.
    pub reason: String,
}

/// An approved version was taken out of use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateRetired {
    pub template_id: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(
        recipient: &str,
        state: DeliveryState,
        provider_ref: Option<&str>,
    ) -> RecipientOutcome {
        RecipientOutcome {
            recipient: recipient.into(),
            state,
            provider_ref: provider_ref.map(Into::into),
            reason: None,
            possible_duplicate: false,
        }
    }

    fn report(outcomes: Vec<RecipientOutcome>) -> DeliveryReported {
        DeliveryReported {
            crisis_id: "c".into(),
            revision: 1,
            channel: Channel::Sms,
            job_id: "c.r1.sms.sv.0".into(),
            provider: "sinch".into(),
            outcomes,
            retries: 0,
        }
    }

    #[test]
    fn outcomes_that_differ_only_in_the_recipient_are_written_once() {
        let mut failed = outcome("rcp:c", DeliveryState::Failed, Some("b1"));
        failed.reason = Some("expired".into());
        let outcomes = vec![
            outcome("rcp:a", DeliveryState::Sent, Some("b1")),
            outcome("rcp:b", DeliveryState::Sent, Some("b1")),
            failed,
            outcome("rcp:d", DeliveryState::Sent, Some("b1")),
        ];
        let json = serde_json::to_value(report(outcomes.clone())).unwrap();
        assert_eq!(
            json["outcomes"],
            serde_json::json!([
                { "recipients": ["rcp:a", "rcp:b"], "state": "sent", "provider_ref": "b1" },
                { "recipient": "rcp:c", "state": "failed", "provider_ref": "b1", "reason": "expired" },
                { "recipient": "rcp:d", "state": "sent", "provider_ref": "b1" },
            ])
        );
        let back: DeliveryReported = serde_json::from_value(json).unwrap();
        assert_eq!(
            back.outcomes, outcomes,
            "a round trip keeps every outcome in order"
        );
    }

    #[test]
    fn reports_written_one_outcome_per_recipient_still_read() {
        let json = serde_json::json!({
            "crisis_id": "c", "revision": 1, "channel": "sms", "job_id": "j", "provider": "46elks",
            "outcomes": [
                { "recipient": "rcp:a", "state": "sent", "provider_ref": "s1" },
                { "recipient": "rcp:b", "state": "delivered", "possible_duplicate": true },
            ]
        });
        let read: DeliveryReported = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read.outcomes.len(), 2);
        assert!(read.outcomes[1].possible_duplicate);
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            json,
            "outcomes with their own provider ids are written as before"
        );
    }

    #[test]
    fn an_outcome_without_a_recipient_is_refused() {
        let json = serde_json::json!({
            "crisis_id": "c", "revision": 1, "channel": "sms", "job_id": "j", "provider": "x",
            "outcomes": [ { "state": "sent" } ]
        });
        let error = serde_json::from_value::<DeliveryReported>(json).unwrap_err();
        assert!(error.to_string().contains("names no recipient"), "{error}");
    }
}
