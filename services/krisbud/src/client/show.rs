//! What the CLI prints of the API's answers, in the person's language and
//! Stockholm time: a crisis's status, a lifecycle step's answer, a template's
//! versions, a preview and a diff.

use krisbud_proto::status::CrisisStatus;
use krisbud_proto::template::{
    ChangeKind, TemplateDiff, TemplatePreview, TemplateRecord, TemplateState,
};
use krisbud_proto::{AlertStatus, Channel};
use rust_i18n::t;

/// A status as a few lines for the terminal, in the CLI's language and Stockholm
/// time: the crisis's state in words, each channel's truth (a banner taken down is
/// not out), who confirmed the current revision, and escalations.
pub fn format_status(s: &CrisisStatus) -> String {
    use krisbud_kit::text::local_time;
    use krisbud_proto::status::{ChannelState, CrisisState};
    let mut out = format!("{}\n", format_header(s));
    let state = match s.state {
        CrisisState::Active => t!("status.state.active").into_owned(),
        CrisisState::AllClear => t!("status.state.all_clear").into_owned(),
        CrisisState::Cancelled => t!("status.state.cancelled").into_owned(),
        CrisisState::Closed => t!(
            "status.state.closed",
            by = s.closed_by.as_deref().unwrap_or("-"),
            at = s.closed_at.map(local_time).unwrap_or_default()
        )
        .into_owned(),
    };
    out.push_str(&format!("  {state}\n"));
    if let Some(expired) = &s.expired {
        out.push_str(&format!(
            "  {}\n",
            t!("status.expired", at = local_time(expired.at))
        ));
    }
    out.push_str(&format!(
        "  {}\n",
        t!(
            "status.declared",
            by = s.declared_by.as_deref().unwrap_or("-"),
            at = s.declared_at.map(local_time).unwrap_or_default()
        )
    ));
    out.push_str(&format!(
        "  {:<10} {:<17} {:>7} {:>7} {:>9} {:>7} {:>7}  {}\n",
        t!("status.col.channel"),
        t!("status.col.state"),
        t!("status.col.total"),
        t!("status.col.sent"),
        t!("status.col.delivered"),
        t!("status.col.failed"),
        t!("status.col.pending"),
        t!("status.col.confirmed")
    ));
    let taken_down = s.state == CrisisState::Closed || s.expired.is_some();
    for (channel, c) in &s.channels {
        let state = match c.state {
            _ if taken_down && *channel == Channel::Banner => t!("status.channel.taken_down"),
            ChannelState::Pending => t!("status.channel.pending"),
            ChannelState::Delivered => t!("status.channel.delivered"),
            ChannelState::PartlyFailed => t!("status.channel.partly_failed"),
            ChannelState::Failed => t!("status.channel.failed"),
        };
        let confirmed = c
            .confirmations
            .iter()
            .rev()
            .find(|k| k.revision == s.revision)
            .map(|k| format!("{} {}", k.by, local_time(k.at)))
            .unwrap_or_else(|| t!("status.not_confirmed").into_owned());
        out.push_str(&format!(
            "  {:<10} {:<17} {:>7} {:>7} {:>9} {:>7} {:>7}  {}\n",
            channel.as_str(),
            state,
            c.total,
            c.sent,
            c.delivered,
            c.failed,
            c.pending,
            confirmed
        ));
        let mut notes = Vec::new();
        if !c.failed_by_reason.is_empty() {
            let reasons: Vec<String> = c
                .failed_by_reason
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            notes.push(t!("status.note.failed", reasons = reasons.join(", ")).into_owned());
        }
        if c.providers.len() > 1 {
            let split: Vec<String> = c
                .providers
                .iter()
                .map(|(provider, n)| format!("{provider} {n}"))
                .collect();
            notes.push(t!("status.note.carried_by", split = split.join(", ")).into_owned());
        }
        if c.retries > 0 {
            notes.push(t!("status.note.retries", n = c.retries).into_owned());
        }
        if c.possible_duplicates > 0 {
            notes.push(t!("status.note.duplicates", n = c.possible_duplicates).into_owned());
        }
        for e in &c.escalations {
            notes.push(
                t!(
                    "status.note.escalation",
                    level = e.level,
                    deadline = local_time(e.deadline),
                    at = local_time(e.at),
                    sent = e.notices_sent,
                    failed = e.notices_failed
                )
                .into_owned(),
            );
        }
        for note in notes {
            out.push_str(&format!("             {note}\n"));
        }
    }
    out
}

/// A status's first line: id, revision, actual/exercise/test, headline.
pub fn format_header(s: &CrisisStatus) -> String {
    format!(
        "{}  {}  {}  {}",
        s.crisis_id,
        t!("status.revision", n = s.revision),
        alert_status(s.status),
        s.headline
    )
}

/// Actual, exercise or test, in words.
fn alert_status(status: AlertStatus) -> std::borrow::Cow<'static, str> {
    match status {
        AlertStatus::Actual => t!("status.alert.actual"),
        AlertStatus::Exercise => t!("status.alert.exercise"),
        AlertStatus::Test => t!("status.alert.test"),
    }
}

/// The answer to an update, all-clear, cancellation or close, as one line.
pub fn format_revised(revised: &krisbud_proto::command::Revised) -> String {
    use krisbud_proto::status::CrisisState;
    let state = match revised.state {
        CrisisState::Active => t!("revised.active"),
        CrisisState::AllClear => t!("revised.all_clear"),
        CrisisState::Cancelled => t!("revised.cancelled"),
        CrisisState::Closed => t!("revised.closed"),
    };
    t!(
        "revised.line",
        id = revised.crisis_id,
        revision = revised.revision,
        state = state
    )
    .into_owned()
}

/// A template version's state in words: `utkast`, `godkänd`.
pub fn version_state(state: TemplateState) -> String {
    let text = match state {
        TemplateState::Draft => t!("version.draft"),
        TemplateState::Submitted => t!("version.submitted"),
        TemplateState::Approved => t!("version.approved"),
        TemplateState::Rejected => t!("version.rejected"),
        TemplateState::Retired => t!("version.retired"),
    };
    text.into_owned()
}

/// A template's versions and their history, for the terminal.
pub fn format_record(record: &TemplateRecord) -> String {
    let mut out = format!("{}  {}\n", record.id, record.name);
    for v in &record.versions {
        out.push_str(&format!(
            "  v{:<3} {:<10} {}\n",
            v.version,
            version_state(v.state),
            v.author
        ));
        for step in &v.history {
            out.push_str(&format!(
                "         {}  {:<10} {}{}\n",
                krisbud_kit::text::local_time(step.at),
                version_state(step.state),
                step.by,
                step.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

/// A preview, channel by channel and language by language, for the terminal.
pub fn format_preview(preview: &TemplatePreview) -> String {
    let mut out = format!(
        "{} v{} ({})\n",
        preview.template,
        preview.version,
        version_state(preview.state)
    );
    for l in &preview.languages {
        let r = &l.rendered;
        out.push_str(&format!("\n== {} ==\n", r.language));
        out.push_str(&format!(
            "[sms] {}, {}\n{}\n",
            r.sms.encoding,
            t!("preview.segments", n = r.sms.segments),
            r.sms.text
        ));
        out.push_str(&format!("[email] {}\n{}\n", r.email.subject, r.email.text));
        out.push_str(&format!(
            "[banner] {:?}: {}\n{}\n{} <{}>\n",
            r.banner.level, r.banner.headline, r.banner.body, r.banner.link_text, r.banner.link_url
        ));
        out.push_str(&format!(
            "[intranet] {}\n{}\n",
            r.intranet.title, r.intranet.body
        ));
        for w in &l.warnings {
            let channel = w.channel.map(Channel::as_str).unwrap_or("all");
            out.push_str(&format!(
                "{} [{channel}] {}\n",
                t!("preview.warning"),
                w.message
            ));
        }
        for (label, closing) in [
            (t!("preview.all_clear"), &l.all_clear),
            (t!("preview.cancel"), &l.cancel),
        ] {
            match closing {
                Some(c) => out.push_str(&format!(
                    "[{label}: sms] {}\n[{label}: banner] {}\n",
                    c.sms.text, c.banner.headline
                )),
                None => out.push_str(&format!("[{label}] {}\n", t!("preview.missing"))),
            }
        }
    }
    out.push_str(&format!("\n{}\n", t!("preview.worst_case")));
    for w in &preview.worst_case_sms {
        out.push_str(&format!(
            "  {:<14} {} {}\n",
            w.language,
            w.encoding,
            t!("preview.segments_of", n = w.segments, limit = w.limit)
        ));
    }
    if preview.approval_problems.is_empty() {
        out.push_str(&format!("{}\n", t!("preview.approvable")));
    } else {
        out.push_str(&format!("{}\n", t!("preview.not_approvable")));
        for p in &preview.approval_problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

/// A diff for the approver, field by field.
pub fn format_diff(diff: &TemplateDiff) -> String {
    let mut out = match diff.against {
        Some(v) => format!(
            "{}\n",
            t!(
                "diff.against",
                id = diff.template,
                version = diff.version,
                against = v
            )
        ),
        None => format!(
            "{}\n",
            t!("diff.all_new", id = diff.template, version = diff.version)
        ),
    };
    if diff.changes.is_empty() {
        out.push_str(&format!("  {}\n", t!("diff.no_changes")));
    }
    for change in &diff.changes {
        let kind = match change.change {
            ChangeKind::Added => t!("diff.added"),
            ChangeKind::Removed => t!("diff.removed"),
            ChangeKind::Changed => t!("diff.changed"),
        };
        out.push_str(&format!("\n{} ({kind})\n", change.field));
        for line in &change.lines {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use krisbud_proto::status::{ChannelStatus, CrisisState, Escalation};

    use super::*;

    /// In English (the unit tests' language); `tests/language.rs` reads the
    /// Swedish status from the binary. An escalation across the change to summer
    /// time shows each moment in its own Stockholm offset.
    #[test]
    fn the_status_shows_escalations_in_stockholm_time() {
        let deadline = chrono::Utc.with_ymd_and_hms(2026, 3, 29, 0, 59, 0).unwrap();
        let raised = chrono::Utc.with_ymd_and_hms(2026, 3, 29, 1, 1, 0).unwrap();
        let sms = ChannelStatus {
            total: 3,
            sent: 3,
            escalations: vec![Escalation {
                level: 1,
                deadline,
                at: raised,
                notices_sent: 2,
                notices_failed: 0,
            }],
            ..ChannelStatus::default()
        };
        let status = CrisisStatus {
            crisis_id: "c1".into(),
            revision: 1,
            headline: "Vattnet är avstängt".into(),
            state: CrisisState::Active,
            channels: [(Channel::Sms, sms)].into(),
            ..CrisisStatus::default()
        };
        let text = format_status(&status);
        assert!(
            text.contains(
                "ESCALATION level 1: unconfirmed at the deadline 2026-03-29 01:59:00 CET, \
                 escalated 2026-03-29 03:01:00 CEST (2 notices sent, 0 failed)"
            ),
            "{text}"
        );
        assert!(text.contains("not confirmed"), "{text}");
        assert!(!text.contains("UTC"), "{text}");
    }
}
