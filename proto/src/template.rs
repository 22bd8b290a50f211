//! Templates: pre-approved wording with variables, rendered per language and channel.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{AlertStatus, CapInfo, Channel};

/// Names one version of one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateRef {
    pub id: String,
    pub version: u32,
}

/// The lifecycle state of a template version: draft → submitted → approved (or
/// rejected with a reason); approved → retired. Only approved versions can be declared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateState {
    /// Written, not yet handed in for approval.
    #[default]
    Draft,
    /// Waiting for a template approver.
    Submitted,
    /// Approved by someone other than the author; can be declared; never changes.
    Approved,
    /// Refused by an approver, with a reason.
    Rejected,
    /// Taken out of use; can no longer be declared.
    Retired,
}

impl TemplateState {
    /// The state's name as written in JSON and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateState::Draft => "draft",
            TemplateState::Submitted => "submitted",
            TemplateState::Approved => "approved",
            TemplateState::Rejected => "rejected",
            TemplateState::Retired => "retired",
        }
    }
}

impl std::fmt::Display for TemplateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so that widths in format strings line columns up.
        f.pad(self.as_str())
    }
}

/// The type of a template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VariableType {
    Text,
    Enum,
    Datetime,
    Url,
    Phone,
}

/// A blank the duty officer fills in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VariableSpec {
    pub name: String,
    /// What the duty officer sees, in Swedish.
    pub label: String,
    #[serde(rename = "type")]
    pub kind: VariableType,
    #[serde(default = "default_true")]
    pub required: bool,
    /// Longest value accepted, in characters.
    pub max_length: usize,
    /// The values an `enum` variable accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// The five crisis questions every message answers, as named parts a reviewer can check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisParts {
    /// Vad har hänt?
    pub what_happened: String,
    /// Får det konsekvenser för mig?
    pub affects_me: String,
    /// Vad gör ansvariga?
    pub city_actions: String,
    /// Hur ska jag förhålla mig?
    pub what_to_do: String,
    /// Var får jag veta mer?
    pub learn_more: String,
}

/// The wording of one language, before variables are filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LanguageTemplate {
    pub parts: CrisisParts,
    pub sms: String,
    pub email_subject: String,
    pub email_text: String,
    pub email_html: String,
    pub banner_headline: String,
    pub banner_body: String,
    pub banner_link_text: String,
    pub banner_link_url: String,
    pub banner_level: BannerLevel,
    pub intranet_title: String,
    /// Markdown.
    pub intranet_body: String,
    /// What this language says when the danger is over. Required for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_clear: Option<ClosingTemplate>,
    /// What this language says when a message went out in error. Required for
    /// approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<ClosingTemplate>,
}

/// The wording of an all-clear or a correction in one language, written and
/// approved with the rest of the template and filled in with the crisis's values.
/// The email's HTML is made from its text; the banner keeps the alert's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClosingTemplate {
    pub sms: String,
    pub email_subject: String,
    pub email_text: String,
    pub banner_headline: String,
    pub banner_body: String,
    pub intranet_title: String,
    /// Markdown.
    pub intranet_body: String,
}

/// How loud the banner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BannerLevel {
    Info,
    Warning,
    Danger,
}

/// One version of a template: its wording and where it is in its lifecycle.
///
/// This is also the shape of a template file (TOML, one file per version) and of
/// the body of a draft. A draft takes only the wording from it: the coordinator
/// numbers the new version and sets its state and author, so `version`, `state`,
/// `author` and `approved_by` may be left out there and are ignored when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateVersion {
    /// A slug, e.g. `vattenlacka`.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub state: TemplateState,
    /// Who wrote this version.
    #[serde(default)]
    pub author: String,
    /// Who approved it, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub cap: CapInfo,
    /// Most SMS segments any rendering may take.
    #[serde(default = "default_max_segments")]
    pub max_sms_segments: u32,
    #[serde(default)]
    pub variables: Vec<VariableSpec>,
    /// Wording per BCP 47 language tag (`sv`, `en`, `sv-x-lattlast` ...).
    pub languages: BTreeMap<String, LanguageTemplate>,
}

fn default_max_segments() -> u32 {
    3
}

impl TemplateVersion {
    /// The wording alone, as JSON with the lifecycle fields cleared: two versions
    /// with equal wording give equal text.
    pub fn wording_json(&self) -> String {
        let wording = TemplateVersion {
            version: 0,
            state: TemplateState::Draft,
            author: String::new(),
            approved_by: None,
            ..self.clone()
        };
        #[allow(
            clippy::expect_used,
            reason = "derived Serialize with string keys cannot fail"
        )]
        serde_json::to_string(&wording).expect("a template serializes")
    }

    /// Whether `other` says the same as this version (lifecycle aside).
    pub fn same_wording(&self, other: &TemplateVersion) -> bool {
        self.wording_json() == other.wording_json()
    }
}

/// What the template list shows a duty officer (and, with `all`, an editor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateSummary {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub state: TemplateState,
    pub cap: CapInfo,
    pub languages: Vec<String>,
    pub variables: Vec<VariableSpec>,
    /// Who wrote the version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// Who approved it, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// One step in the life of a template version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LifecycleStep {
    /// The state the version entered.
    pub state: TemplateState,
    /// Who took the step.
    pub by: String,
    pub at: DateTime<Utc>,
    /// Why, for a rejection or a retirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A version's lifecycle without its wording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    pub version: u32,
    pub state: TemplateState,
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Every step, oldest first: drafted, submitted, approved or rejected, retired.
    pub history: Vec<LifecycleStep>,
}

/// The template read model, one key per template in the KRISBUD_TEMPLATES bucket
/// (the wording of each version is under `<id>.<version>`), and the answer to
/// `GET /templates/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateRecord {
    pub id: String,
    /// The name of the newest version.
    pub name: String,
    /// Stream sequence (KRISBUD_EVENTS) of the last event folded in.
    pub last_sequence: u64,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
}

/// A hint about a rendering that a person should look at before it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RenderWarning {
    /// The channel the warning is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// What to look at, e.g. "typographic quote ” forces UCS-2".
    pub message: String,
}

/// One language's rendering in a preview, with its warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PreviewLanguage {
    #[serde(flatten)]
    pub rendered: RenderedLanguage,
    pub warnings: Vec<RenderWarning>,
    /// The all-clear this language would send, with the same values, so the
    /// approver reads it before approving. Absent when the language has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_clear: Option<RenderedLanguage>,
    /// The correction this language would send, with the same values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<RenderedLanguage>,
}

/// What one language's SMS costs with every variable at its maximum length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmsWorstCase {
    pub language: String,
    /// `gsm7` or `ucs2`.
    pub encoding: String,
    pub segments: u32,
    /// The template's `max_sms_segments`.
    pub limit: u32,
}

/// The answer to a preview: every channel × language rendered with the given
/// values, plus what would stop the version from being approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplatePreview {
    pub template: String,
    pub version: u32,
    pub state: TemplateState,
    /// The practice marking the preview was rendered with.
    pub status: AlertStatus,
    pub languages: Vec<PreviewLanguage>,
    /// Each language's SMS with every variable at its maximum length.
    pub worst_case_sms: Vec<SmsWorstCase>,
    /// Why approval would be refused; empty when the version can be approved.
    pub approval_problems: Vec<String>,
}

/// How a field differs between two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// One field that differs, with a line diff of its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    /// The field's path, e.g. `languages.sv.sms` or `variables.omrade.max_length`.
    pub field: String,
    pub change: ChangeKind,
    /// The lines of the field, each starting with `-` (only before), `+` (only
    /// after) or a space (both).
    pub lines: Vec<String>,
}

/// What a version changes against another, for the approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateDiff {
    pub template: String,
    pub version: u32,
    /// The version compared against: the last approved one unless asked otherwise;
    /// none when the template has never had an approved version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<u32>,
    /// Every field that differs, in field order.
    pub changes: Vec<FieldChange>,
}

/// An SMS text after rendering, with its encoding cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmsMessage {
    pub text: String,
    /// `gsm7` or `ucs2`.
    pub encoding: String,
    pub segments: u32,
}

/// An email after rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EmailMessage {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A banner after rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BannerMessage {
    pub headline: String,
    pub body: String,
    pub link_text: String,
    pub link_url: String,
    pub level: BannerLevel,
}

/// An intranet article after rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IntranetMessage {
    pub title: String,
    /// Markdown, with variable values escaped.
    pub body: String,
}

/// Every channel's message in one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RenderedLanguage {
    pub language: String,
    pub parts: CrisisParts,
    pub sms: SmsMessage,
    pub email: EmailMessage,
    pub banner: BannerMessage,
    pub intranet: IntranetMessage,
}

impl RenderedLanguage {
    /// The channel's message in this language.
    pub fn for_channel(&self, channel: Channel) -> crate::job::ChannelMessage {
        use crate::job::ChannelMessage;
        match channel {
            Channel::Sms => ChannelMessage::Sms(self.sms.clone()),
            Channel::Email => ChannelMessage::Email(self.email.clone()),
            Channel::Banner => ChannelMessage::Banner(self.banner.clone()),
            Channel::Intranet => ChannelMessage::Intranet(self.intranet.clone()),
        }
    }
}
