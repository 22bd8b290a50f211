//! The CLI as a client of the HTTP API: templates, declare, status, confirm, audit.

mod show;
pub mod watch;

pub use show::{
    format_diff, format_header, format_preview, format_record, format_revised, format_status,
    version_state,
};

use std::collections::BTreeMap;

use anyhow::Context as _;
use krisbud_proto::AlertStatus;
use krisbud_proto::audience::{Audience, CreateAudience, ImportReport};
use krisbud_proto::audit::{AuditPage, VerifyReport};
use krisbud_proto::command::{DeclareCrisis, Declared, DraftResult, TemplateAction};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::template::{
    TemplateDiff, TemplatePreview, TemplateRecord, TemplateSummary, TemplateVersion, VersionInfo,
};
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
