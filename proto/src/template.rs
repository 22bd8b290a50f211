//! Templates: pre-approved wording with variables, rendered per language and channel.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{CapInfo, Channel};

/// Names one version of one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateRef {
    pub id: String,
    pub version: u32,
}

/// The lifecycle state of a template version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateState {
    Draft,
    Submitted,
    Approved,
    Rejected,
    Retired,
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
}

/// How loud the banner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BannerLevel {
    Info,
    Warning,
    Danger,
}

/// One version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateVersion {
    /// A slug, e.g. `vattenlacka`.
    pub id: String,
    pub version: u32,
    pub name: String,
    pub state: TemplateState,
    /// Who wrote this version.
    pub author: String,
    /// Who approved it, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub cap: CapInfo,
    /// Most SMS segments any rendering may take.
    #[serde(default = "default_max_segments")]
    pub max_sms_segments: u32,
    pub variables: Vec<VariableSpec>,
    /// Wording per BCP 47 language tag (`sv`, `en`, `sv-x-lattlast` ...).
    pub languages: BTreeMap<String, LanguageTemplate>,
}

fn default_max_segments() -> u32 {
    3
}

/// What the template list shows a duty officer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateSummary {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub state: TemplateState,
    pub cap: CapInfo,
    pub languages: Vec<String>,
    pub variables: Vec<VariableSpec>,
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
