//! Commands and queries: NATS requests to the owning service, and their replies.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::Actor;
use crate::model::{AlertStatus, Channel};
use crate::template::TemplateVersion;

/// A request to a service, carrying who asks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CommandRequest<T> {
    pub actor: Actor,
    /// The client's `Idempotency-Key`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub body: T,
}

/// A service's answer: a result or a problem.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandReply<T> {
    Ok(T),
    Error(Problem),
}

/// An RFC 9457 problem, as services report it and the gateway serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// HTTP status the gateway answers with.
    pub status: u16,
    /// A short, fixed summary of the problem type.
    pub title: String,
    /// What exactly is wrong, for a person.
    pub detail: String,
    /// The offending field, as a JSON path (`variables.district`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    /// A problem with the given status and texts.
    pub fn new(status: u16, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title: title.to_owned(),
            detail: detail.into(),
            field: None,
        }
    }

    /// 422: the request is well-formed but a field's value is wrong.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.into()),
            ..Problem::new(422, "invalid field", detail)
        }
    }

    /// 404: the named thing does not exist.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(404, "not found", detail)
    }

    /// 403: the actor lacks the role.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(403, "forbidden", detail)
    }

    /// 409: the state changed under the request.
    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(409, "conflict", detail)
    }

    /// 503: a dependency is unavailable; the client may retry.
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(503, "service unavailable", detail)
    }
}

/// Declare a crisis from an approved template version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareCrisis {
    /// The template's id (slug).
    pub template: String,
    /// The approved version; the newest approved one when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
    /// Values for the template's variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Audiences for SMS and email.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Channels to use; every channel when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<Channel>>,
    /// Actual (default), Exercise or Test.
    #[serde(default)]
    pub status: AlertStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The answer to a declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Declared {
    pub crisis_id: String,
    pub revision: u32,
    /// Recipients per channel as the audiences count them; an address that
    /// several audiences share is counted once by the plan (see the status).
    pub recipients: BTreeMap<Channel, u64>,
}

/// A lifecycle step on one crisis: the crisis named by the URL and the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisStep<T> {
    pub crisis_id: String,
    pub body: T,
}

/// `POST /crises/{id}/update`: new values, added audiences and/or a newer approved
/// version of the crisis's template. Values are merged into those in force (an
/// empty value removes an optional one); at least one change is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCrisis {
    /// The revision the duty officer saw; a stale one is refused with 409.
    pub expected_revision: u32,
    /// Changed values.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Audiences to add; their members get this and later messages.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// A newer approved version of the same template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
}

/// `POST /crises/{id}/all-clear` and `POST /crises/{id}/close`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectRevision {
    /// The revision the duty officer saw; a stale one is refused with 409.
    pub expected_revision: u32,
}

/// `POST /crises/{id}/cancel`: the earlier message was sent in error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelCrisis {
    /// The revision the duty officer saw; a stale one is refused with 409.
    pub expected_revision: u32,
    /// Why the message is withdrawn; goes on record. Not blank, at most 500
    /// characters, no control character but line breaks.
    #[schemars(
        length(min = 1, max = 500),
        regex(
            pattern = r"^[^\x00-\x09\x0B-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x09\x0B-\x1F\x7F-\x9F]*$"
        )
    )]
    pub reason: String,
}

/// The answer to an update, all-clear, cancellation or close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Revised {
    pub crisis_id: String,
    /// The crisis's revision now.
    pub revision: u32,
    pub state: crate::status::CrisisState,
    /// Recipients per channel of the new revision as the audiences count them
    /// (empty for a close).
    pub recipients: BTreeMap<Channel, u64>,
}

/// Confirm that a channel's message is really out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmChannel {
    pub crisis_id: String,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Ask for one crisis's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GetCrisis {
    pub crisis_id: String,
}

/// Ask for every crisis, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListCrises {}

/// Ask for the declarable templates: the newest approved version of each; with
/// `all`, every version of every template in any state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListTemplates {
    #[serde(default)]
    pub all: bool,
}

/// Ask for one template's versions and their history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GetTemplate {
    pub template: String,
}

/// Ask for one template version with its wording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GetTemplateVersion {
    pub template: String,
    pub version: u32,
}

/// Draft a new version of a template from the given wording. The coordinator
/// numbers it (one past the newest) and makes the actor its author; `version`,
/// `state`, `author` and `approved_by` in `draft` are ignored, so an approved
/// version is never changed by a draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DraftTemplate {
    pub draft: TemplateVersion,
    /// Whether this starts a new template (`POST /templates`): refused when the id
    /// is taken. Otherwise the template must exist.
    #[serde(default)]
    pub new_template: bool,
}

/// The answer to a draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DraftResult {
    /// False when a draft, submitted or approved version with the same wording
    /// already existed; `template` is then that version and nothing was appended.
    pub created: bool,
    pub template: TemplateVersion,
}

/// A step in a version's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateAction {
    /// Draft → submitted (template_editor).
    Submit,
    /// Submitted → approved (template_approver, not the author).
    Approve,
    /// Submitted → rejected, with a reason (template_approver, not the author).
    Reject,
    /// Approved → retired (template_approver or admin).
    Retire,
}

impl TemplateAction {
    /// The action's name as used in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateAction::Submit => "submit",
            TemplateAction::Approve => "approve",
            TemplateAction::Reject => "reject",
            TemplateAction::Retire => "retire",
        }
    }
}

/// Take a lifecycle step with one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeTemplateState {
    pub template: String,
    pub version: u32,
    pub action: TemplateAction,
    /// Why: required to reject, optional to retire, not used otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Render one version with sample values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PreviewTemplate {
    pub template: String,
    pub version: u32,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Render as an exercise or test to see the marking; actual by default.
    #[serde(default)]
    pub status: AlertStatus,
}

/// Compare one version with another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiffTemplate {
    pub template: String,
    pub version: u32,
    /// The version to compare against; the last approved one when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<u32>,
}

/// Ask for audit records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only events that occurred at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Only events that occurred before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// First audit sequence to return (1 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_sequence: Option<u64>,
    /// Most records to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Ask the audit service to recompute the chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditVerify {
    /// A public key the auditor trusts (hex, from a source other than krisbud):
    /// every checkpoint must be signed by it or by a key it endorsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_key: Option<String>,
    /// A point of the chain saved earlier, which the chain must still hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<crate::audit::ChainPoint>,
}
