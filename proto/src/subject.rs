//! Subject names. Every subject krisbud uses is built here.

use crate::model::Channel;

/// Prefix of every event subject.
pub const EVENTS_PREFIX: &str = "krisbud.evt";
/// Every event.
pub const ALL_EVENTS: &str = "krisbud.evt.>";
/// Every crisis aggregate's events.
pub const ALL_CRISIS_EVENTS: &str = "krisbud.evt.crisis.*";
/// Every template aggregate's events.
pub const ALL_TEMPLATE_EVENTS: &str = "krisbud.evt.template.*";
/// Every delivery outcome.
pub const ALL_DELIVERY_EVENTS: &str = "krisbud.evt.delivery.>";
/// Every dispatch job.
pub const ALL_DISPATCH: &str = "krisbud.dispatch.>";
/// The audit chain.
pub const AUDIT_LOG: &str = "krisbud.audit.log";
/// The audit chain's signed checkpoints.
pub const AUDIT_CHECKPOINTS: &str = "krisbud.audit.checkpoint";
/// The audit service's key rotations.
pub const AUDIT_KEY_EVENTS: &str = "krisbud.evt.audit.keys";
/// The auditors' recipient lookups.
pub const AUDIT_LOOKUP_EVENTS: &str = "krisbud.evt.audit.lookups";
/// Console sign-ins, sign-outs and refused sign-ins.
pub const AUDIT_SESSION_EVENTS: &str = "krisbud.evt.audit.sessions";

/// The subject of one crisis's events.
pub fn crisis_events(crisis_id: &str) -> String {
    format!("krisbud.evt.crisis.{crisis_id}")
}

/// Exercises and tests kept from the public.
pub const EXERCISE_GUARD_EVENTS: &str = "krisbud.evt.guard.exercise";

/// Commands a service refused (a bad signature, a replay, a stale time): each
/// serving service records its own refusals on its own subject.
pub fn command_guard_events(service: &str) -> String {
    format!("krisbud.evt.guard.command.{service}")
}

/// Every audience aggregate's events.
pub const ALL_AUDIENCE_EVENTS: &str = "krisbud.evt.audience.*";

/// The subject of one audience's events.
pub fn audience_events(audience_id: &str) -> String {
    format!("krisbud.evt.audience.{audience_id}")
}

/// The subject of one template's events.
pub fn template_events(template_id: &str) -> String {
    format!("krisbud.evt.template.{template_id}")
}

/// The subject of one channel's delivery outcomes for one crisis.
pub fn delivery_events(channel: Channel, crisis_id: &str) -> String {
    format!("krisbud.evt.delivery.{channel}.{crisis_id}")
}

/// The subject of one channel's dispatch jobs for one crisis.
pub fn dispatch(channel: Channel, crisis_id: &str) -> String {
    format!("krisbud.dispatch.{channel}.{crisis_id}")
}

/// Every dispatch job of one channel.
pub fn dispatch_filter(channel: Channel) -> String {
    format!("krisbud.dispatch.{channel}.>")
}

/// Command subjects: NATS requests served by the owning service in a queue group.
pub mod cmd {
    /// Declare a crisis (coordinator).
    pub const DECLARE: &str = "krisbud.cmd.crisis.declare";
    /// Update a crisis (coordinator).
    pub const UPDATE: &str = "krisbud.cmd.crisis.update";
    /// Give the all-clear (coordinator).
    pub const ALL_CLEAR: &str = "krisbud.cmd.crisis.allclear";
    /// Cancel a crisis sent in error (coordinator).
    pub const CANCEL: &str = "krisbud.cmd.crisis.cancel";
    /// Close a crisis (coordinator).
    pub const CLOSE: &str = "krisbud.cmd.crisis.close";
    /// Confirm a channel (coordinator).
    pub const CONFIRM: &str = "krisbud.cmd.crisis.confirm";
    /// One crisis's status (coordinator).
    pub const GET_CRISIS: &str = "krisbud.cmd.crisis.get";
    /// Every crisis (coordinator).
    pub const LIST_CRISES: &str = "krisbud.cmd.crisis.list";
    /// Declarable templates, or every version (coordinator).
    pub const LIST_TEMPLATES: &str = "krisbud.cmd.template.list";
    /// One template's versions and their history (coordinator).
    pub const GET_TEMPLATE: &str = "krisbud.cmd.template.get";
    /// One template version's wording (coordinator).
    pub const GET_TEMPLATE_VERSION: &str = "krisbud.cmd.template.version";
    /// Draft a new template version (coordinator).
    pub const DRAFT_TEMPLATE: &str = "krisbud.cmd.template.draft";
    /// Submit, approve, reject or retire a version (coordinator).
    pub const CHANGE_TEMPLATE_STATE: &str = "krisbud.cmd.template.state";
    /// Render a version with sample values (coordinator).
    pub const PREVIEW_TEMPLATE: &str = "krisbud.cmd.template.preview";
    /// A version's differences from another (coordinator).
    pub const DIFF_TEMPLATE: &str = "krisbud.cmd.template.diff";
    /// Audit records (audit).
    pub const AUDIT_QUERY: &str = "krisbud.cmd.audit.query";
    /// Recompute the audit chain (audit).
    pub const AUDIT_VERIFY: &str = "krisbud.cmd.audit.verify";
    /// Signed checkpoints of the audit chain (audit).
    pub const AUDIT_CHECKPOINTS: &str = "krisbud.cmd.audit.checkpoints";
    /// The keys that sign the checkpoints (audit).
    pub const AUDIT_KEYS: &str = "krisbud.cmd.audit.keys";
    /// One crisis's report from the chain (audit).
    pub const AUDIT_REPORT: &str = "krisbud.cmd.audit.report";
    /// Was this person notified? (audit).
    pub const AUDIT_LOOKUP: &str = "krisbud.cmd.audit.lookup";
    /// Record a console sign-in, sign-out or refused sign-in.
    pub const AUDIT_SESSION: &str = "krisbud.cmd.audit.session";
    /// List the audiences (coordinator).
    pub const LIST_AUDIENCES: &str = "krisbud.cmd.audience.list";
    /// One audience (coordinator).
    pub const GET_AUDIENCE: &str = "krisbud.cmd.audience.get";
    /// Create an audience (coordinator).
    pub const CREATE_AUDIENCE: &str = "krisbud.cmd.audience.create";
    /// Delete an audience and its members (coordinator).
    pub const DELETE_AUDIENCE: &str = "krisbud.cmd.audience.delete";
    /// Store one piece of a member import (coordinator).
    pub const IMPORT_PART: &str = "krisbud.cmd.audience.import.part";
    /// Finish a member import: dedupe and make it current (coordinator).
    pub const IMPORT_COMMIT: &str = "krisbud.cmd.audience.import.commit";
}

/// Whether `s` can be one token of a subject: crisis and template ids must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
