//! The CLI as a client of the HTTP API: declare, status, confirm, audit.

use std::collections::BTreeMap;

use anyhow::Context as _;
use krisbud_proto::audit::{AuditPage, VerifyReport};
use krisbud_proto::command::{DeclareCrisis, Declared};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::template::TemplateSummary;
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
            .with_context(|| format!("cannot reach the krisbud API at {}", self.base))?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            if let Ok(p) = serde_json::from_slice::<ProblemBody>(&body) {
                let mut text = format!(
                    "{} ({}): {}",
                    p.title.unwrap_or_default(),
                    status.as_u16(),
                    p.detail.unwrap_or_default()
                );
                if let Some(field) = p.field {
                    text.push_str(&format!(" [field: {field}]"));
                }
                anyhow::bail!(text);
            }
            anyhow::bail!(
                "the API answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).context("unreadable answer from the API")
    }

    /// `GET /templates`.
    pub async fn templates(&self) -> anyhow::Result<Vec<TemplateSummary>> {
        self.send(self.http.get(self.url("/templates"))).await
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

    /// `GET /crises`.
    pub async fn crises(&self) -> anyhow::Result<Vec<CrisisStatus>> {
        self.send(self.http.get(self.url("/crises"))).await
    }

    /// `GET /crises/{id}`.
    pub async fn crisis(&self, id: &str) -> anyhow::Result<CrisisStatus> {
        self.send(self.http.get(self.url(&format!("/crises/{id}"))))
            .await
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
            .with_context(|| format!("cannot reach the krisbud API at {}", self.base))?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "the API answered {status}: {}",
            String::from_utf8_lossy(&body)
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
                .with_context(|| format!("`{p}` is not name=value"))
        })
        .collect()
}

/// A status as a few lines for the terminal.
pub fn format_status(s: &CrisisStatus) -> String {
    let mut out = format!(
        "{}  rev {}  {:?}  {}\n  declared by {} at {}\n",
        s.crisis_id,
        s.revision,
        s.status,
        s.headline,
        s.declared_by.as_deref().unwrap_or("-"),
        s.declared_at.map(|t| t.to_rfc3339()).unwrap_or_default()
    );
    out.push_str(
        "  channel    state          total  sent  delivered  failed  pending  confirmed\n",
    );
    for (channel, c) in &s.channels {
        let confirmed = c
            .confirmations
            .last()
            .map(|c| format!("{} {}", c.by, c.at.format("%H:%M:%S")))
            .unwrap_or_else(|| "no".into());
        out.push_str(&format!(
            "  {:<10} {:<14} {:>5} {:>5} {:>10} {:>7} {:>8}  {}\n",
            channel.as_str(),
            format!("{:?}", c.state).to_lowercase(),
            c.total,
            c.sent,
            c.delivered,
            c.failed,
            c.pending,
            confirmed
        ));
    }
    out
}

/// The verification result as the one line the CLI prints.
pub fn format_report(report: &VerifyReport) -> String {
    match &report.first_bad {
        None => format!("audit chain ok: {} records verified", report.checked),
        Some(bad) => format!(
            "audit chain BROKEN at record {}: {}: {} ({} records checked)",
            bad.sequence, bad.problem, bad.detail, report.checked
        ),
    }
}
