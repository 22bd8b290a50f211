//! The CLI as a client of the HTTP API: templates, declare, status, confirm, audit.

pub mod watch;

use std::collections::BTreeMap;

use anyhow::Context as _;
use krisbud_proto::audience::{Audience, CreateAudience, ImportReport};
use krisbud_proto::audit::{AuditPage, VerifyReport};
use krisbud_proto::command::{DeclareCrisis, Declared, DraftResult, TemplateAction};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::template::{
    ChangeKind, TemplateDiff, TemplatePreview, TemplateRecord, TemplateState, TemplateSummary,
    TemplateVersion, VersionInfo,
};
use krisbud_proto::{AlertStatus, Channel};
use rust_i18n::t;
use serde::de::DeserializeOwned;

/// An authenticated API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A problem+json answer, shown to the person at the terminal.
#[derive(Debug, serde::Deserialize)]
struct ProblemBody {
    title: Option<String>,
    detail: Option<String>,
    field: Option<String>,
}

/// An API's refusal as the error the person reads: its problem+json title,
/// status, detail and field, or the body as it came.
pub fn refusal(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    if let Ok(p) = serde_json::from_slice::<ProblemBody>(body) {
        let mut text = t!(
            "api.refused",
            status = status.as_u16(),
            title = p.title.unwrap_or_default(),
            detail = p.detail.unwrap_or_default()
        )
        .into_owned();
        if let Some(field) = p.field {
            text.push_str(&t!("api.field", field = field));
        }
        return anyhow::anyhow!(text);
    }
    anyhow::anyhow!(t!(
        "api.answered",
        status = status,
        body = String::from_utf8_lossy(body)
    ))
}

impl Client {
    /// A client of the API at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base
                .trim_end_matches('/')
                .trim_end_matches("/api/v1")
                .to_owned(),
            token: token.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| t!("api.unreachable", url = self.base))?;
        Client::answer(response).await
    }

    /// The body of an answer, or its problem as the error.
    async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        serde_json::from_slice(&body).context(t!("api.unreadable"))
    }

    /// `GET /templates`: the declarable templates, or with `all` every version.
    pub async fn templates(&self, all: bool) -> anyhow::Result<Vec<TemplateSummary>> {
        let mut request = self.http.get(self.url("/templates"));
        if all {
            request = request.query(&[("all", "true")]);
        }
        self.send(request).await
    }

    /// `GET /templates/{id}`.
    pub async fn template(&self, id: &str) -> anyhow::Result<TemplateRecord> {
        self.send(self.http.get(self.url(&format!("/templates/{id}"))))
            .await
    }

    /// Whether a template with this id exists.
    pub async fn template_exists(&self, id: &str) -> anyhow::Result<bool> {
        let response = self
            .http
            .get(self.url(&format!("/templates/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| t!("api.unreachable", url = self.base))?;
        match response.status().as_u16() {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => self
                .send::<TemplateRecord>(self.http.get(self.url(&format!("/templates/{id}"))))
                .await
                .map(|_| true),
        }
    }

    /// `GET /templates/{id}/versions/{version}`.
    pub async fn template_version(
        &self,
        id: &str,
        version: u32,
    ) -> anyhow::Result<TemplateVersion> {
        self.send(
            self.http
                .get(self.url(&format!("/templates/{id}/versions/{version}"))),
        )
        .await
    }

    /// Drafts a new version: `POST /templates` for a new template, otherwise
    /// `POST /templates/{id}/versions`.
    pub async fn draft(&self, draft: &TemplateVersion) -> anyhow::Result<DraftResult> {
        anyhow::ensure!(!draft.id.is_empty(), t!("templates.no_id"));
        let url = if self.template_exists(&draft.id).await? {
            self.url(&format!("/templates/{}/versions", draft.id))
        } else {
            self.url("/templates")
        };
        self.send(self.http.post(url).json(draft)).await
    }

    /// `POST /templates/{id}/versions/{version}/{action}`.
    pub async fn template_step(
        &self,
        id: &str,
        version: u32,
        action: TemplateAction,
        reason: Option<&str>,
    ) -> anyhow::Result<VersionInfo> {
        let url = self.url(&format!(
            "/templates/{id}/versions/{version}/{}",
            action.as_str()
        ));
        let mut request = self.http.post(url);
        if let Some(reason) = reason {
            request = request.json(&serde_json::json!({ "reason": reason }));
        }
        self.send(request).await
    }

    /// `POST /templates/{id}/versions/{version}/preview`.
    pub async fn preview(
        &self,
        id: &str,
        version: u32,
        variables: &BTreeMap<String, String>,
        status: AlertStatus,
    ) -> anyhow::Result<TemplatePreview> {
        let body = serde_json::json!({ "variables": variables, "status": status });
        self.send(
            self.http
                .post(self.url(&format!("/templates/{id}/versions/{version}/preview")))
                .json(&body),
        )
        .await
    }

    /// `GET /templates/{id}/versions/{version}/diff`.
    pub async fn diff(
        &self,
        id: &str,
        version: u32,
        against: Option<u32>,
    ) -> anyhow::Result<TemplateDiff> {
        let mut request = self
            .http
            .get(self.url(&format!("/templates/{id}/versions/{version}/diff")));
        if let Some(against) = against {
            request = request.query(&[("against", against.to_string())]);
        }
        self.send(request).await
    }

    /// `POST /crises`.
    pub async fn declare(
        &self,
        body: &DeclareCrisis,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Declared> {
        let mut request = self.http.post(self.url("/crises")).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// `GET /audiences`.
    pub async fn audiences(&self) -> anyhow::Result<Vec<Audience>> {
        self.send(self.http.get(self.url("/audiences"))).await
    }

    /// `GET /audiences/{id}`.
    pub async fn audience(&self, id: &str) -> anyhow::Result<Audience> {
        self.send(self.http.get(self.url(&format!("/audiences/{id}"))))
            .await
    }

    /// `POST /audiences`.
    pub async fn create_audience(&self, body: &CreateAudience) -> anyhow::Result<Audience> {
        self.send(self.http.post(self.url("/audiences")).json(body))
            .await
    }

    /// `DELETE /audiences/{id}`.
    pub async fn delete_audience(&self, id: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(self.url(&format!("/audiences/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| t!("api.unreachable", url = self.base))?;
        if response.status().is_success() {
            return Ok(());
        }
        Client::answer::<serde_json::Value>(response)
            .await
            .map(|_| ())
    }

    /// `PUT /audiences/{id}/members` with a CSV body.
    pub async fn import_members(
        &self,
        id: &str,
        csv: reqwest::Body,
    ) -> anyhow::Result<ImportReport> {
        self.send(
            self.http
                .put(self.url(&format!("/audiences/{id}/members")))
                .header(reqwest::header::CONTENT_TYPE, "text/csv; charset=utf-8")
                .body(csv),
        )
        .await
    }

    /// `GET /crises`.
    pub async fn crises(&self) -> anyhow::Result<Vec<CrisisStatus>> {
        self.send(self.http.get(self.url("/crises"))).await
    }

    /// `GET /crises/{id}`.
    pub async fn crisis(&self, id: &str) -> anyhow::Result<CrisisStatus> {
        self.send(self.http.get(self.url(&format!("/crises/{id}"))))
            .await
    }

    /// `GET /crises/{id}`, or `None` when the API knows no such crisis (yet: the
    /// status of a crisis declared a moment ago may not be written).
    pub async fn crisis_if_known(&self, id: &str) -> anyhow::Result<Option<CrisisStatus>> {
        let url = self.url(&format!("/crises/{id}"));
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| t!("api.unreachable", url = self.base))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Client::answer(response).await.map(Some)
    }

    /// `POST /crises/{id}/channels/{channel}/confirm`.
    pub async fn confirm(
        &self,
        id: &str,
        channel: &str,
        note: Option<&str>,
    ) -> anyhow::Result<CrisisStatus> {
        let body = serde_json::json!({ "note": note });
        self.send(
            self.http
                .post(self.url(&format!("/crises/{id}/channels/{channel}/confirm")))
                .json(&body),
        )
        .await
    }

    /// `POST /crises/{id}/{step}` (`update`, `all-clear`, `cancel`, `close`) with
    /// `body`; the body's `expected_revision` is the crisis's current revision as
    /// the status reads it now.
    pub async fn lifecycle(
        &self,
        id: &str,
        step: &str,
        mut body: serde_json::Value,
    ) -> anyhow::Result<krisbud_proto::command::Revised> {
        let status = self.crisis(id).await?;
        body["expected_revision"] = serde_json::json!(status.revision);
        self.send(
            self.http
                .post(self.url(&format!("/crises/{id}/{step}")))
                .json(&body),
        )
        .await
    }

    /// `POST /crises/{id}/update`: changed values and added audiences.
    pub async fn update(
        &self,
        id: &str,
        variables: &BTreeMap<String, String>,
        audiences: &[String],
        template_version: Option<u32>,
    ) -> anyhow::Result<krisbud_proto::command::Revised> {
        let mut body = serde_json::json!({ "variables": variables, "audiences": audiences });
        if let Some(v) = template_version {
            body["template_version"] = serde_json::json!(v);
        }
        self.lifecycle(id, "update", body).await
    }

    /// `POST /crises/{id}/all-clear`.
    pub async fn all_clear(&self, id: &str) -> anyhow::Result<krisbud_proto::command::Revised> {
        self.lifecycle(id, "all-clear", serde_json::json!({})).await
    }

    /// `POST /crises/{id}/cancel` with the reason.
    pub async fn cancel(
        &self,
        id: &str,
        reason: &str,
    ) -> anyhow::Result<krisbud_proto::command::Revised> {
        self.lifecycle(id, "cancel", serde_json::json!({ "reason": reason }))
            .await
    }

    /// `POST /crises/{id}/close`.
    pub async fn close(&self, id: &str) -> anyhow::Result<krisbud_proto::command::Revised> {
        self.lifecycle(id, "close", serde_json::json!({})).await
    }

    /// `GET /audit` as one page.
    pub async fn audit_page(&self, query: &[(&str, String)]) -> anyhow::Result<AuditPage> {
        self.send(self.http.get(self.url("/audit")).query(query))
            .await
    }

    /// `GET /audit?format=jsonl`: the whole chain as JSON lines.
    pub async fn audit_export(&self) -> anyhow::Result<Vec<u8>> {
        let response = self
            .http
            .get(self.url("/audit"))
            .query(&[("format", "jsonl")])
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| t!("api.unreachable", url = self.base))?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            t!(
                "api.answered",
                status = status,
                body = String::from_utf8_lossy(&body)
            )
        );
        Ok(body.to_vec())
    }

    /// `GET /audit/verify`.
    pub async fn audit_verify(&self) -> anyhow::Result<VerifyReport> {
        self.send(self.http.get(self.url("/audit/verify"))).await
    }
}

/// Parses `name=value` pairs from `--var`.
pub fn parse_vars(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .with_context(|| t!("cli.not_name_value", pair = p))
        })
        .collect()
}

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
