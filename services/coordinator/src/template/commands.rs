//! The template commands and queries: list, show, draft, lifecycle steps, preview
//! and diff. Roles and four eyes are decided in [`super::aggregate`], whatever
//! the gateway checked before.

use krisbud_proto::command::{
    ChangeTemplateState, DiffTemplate, DraftResult, DraftTemplate, GetTemplate, GetTemplateVersion,
    ListTemplates, PreviewTemplate,
};
use krisbud_proto::template::{
    PreviewLanguage, RenderedLanguage, TemplateDiff, TemplatePreview, TemplateRecord,
    TemplateState, TemplateSummary, TemplateVersion, VersionInfo,
};
use krisbud_proto::{CommandRequest, Problem};

use super::aggregate as templates;
use super::catalog::{Catalog, no_template, unavailable};
use super::diff;
use crate::render::{self, ClosingKind};

impl Catalog {
    /// The declarable templates, or with `all` every version of every template.
    pub async fn list_templates(
        &self,
        request: CommandRequest<ListTemplates>,
    ) -> Result<Vec<TemplateSummary>, Problem> {
        self.summaries(request.body.all).await.map_err(unavailable)
    }

    /// One template's versions and their history.
    pub async fn get_template(
        &self,
        request: CommandRequest<GetTemplate>,
    ) -> Result<TemplateRecord, Problem> {
        let id = &request.body.template;
        self.record(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| no_template(id))
    }

    /// One version with its wording.
    pub async fn get_template_version(
        &self,
        request: CommandRequest<GetTemplateVersion>,
    ) -> Result<TemplateVersion, Problem> {
        self.template_version(&request.body.template, request.body.version)
            .await
    }

    async fn template_version(&self, id: &str, version: u32) -> Result<TemplateVersion, Problem> {
        let record = self
            .record(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| no_template(id))?;
        self.version(&record, version)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Problem::not_found(format!("template `{id}` has no version {version}")))
    }

    /// Drafts a new version from the given wording.
    pub async fn draft_template(
        &self,
        request: CommandRequest<DraftTemplate>,
    ) -> Result<DraftResult, Problem> {
        let (created, template) = self
            .draft(
                &request.actor,
                request.body.draft,
                request.body.new_template,
            )
            .await?;
        Ok(DraftResult { created, template })
    }

    /// Submits, approves, rejects or retires a version.
    pub async fn change_template_state(
        &self,
        request: CommandRequest<ChangeTemplateState>,
    ) -> Result<VersionInfo, Problem> {
        let body = &request.body;
        let aggregate = self.step(&request.actor, body).await?;
        aggregate
            .record()
            .versions
            .into_iter()
            .find(|v| v.version == body.version)
            .ok_or_else(|| no_template(&body.template))
    }

    /// Renders every channel × language of a version with the given values, with
    /// warnings, the worst-case SMS cost, and what would stop its approval.
    pub async fn preview_template(
        &self,
        request: CommandRequest<PreviewTemplate>,
    ) -> Result<TemplatePreview, Problem> {
        let body = request.body;
        let template = self.template_version(&body.template, body.version).await?;
        let rendered = render::render(&template, &body.variables, body.status)?;
        let closing = |kind| {
            render::render_closing(&template, kind, &body.variables, body.status)
                .map(Option::unwrap_or_default)
        };
        let all_clear = closing(ClosingKind::AllClear)?;
        let cancel = closing(ClosingKind::Cancel)?;
        let in_language = |all: &[RenderedLanguage], language: &str| {
            all.iter().find(|m| m.language == language).cloned()
        };
        let languages = rendered
            .into_iter()
            .map(|r| PreviewLanguage {
                warnings: render::warnings(&template, &r, &body.variables),
                all_clear: in_language(&all_clear, &r.language),
                cancel: in_language(&cancel, &r.language),
                rendered: r,
            })
            .collect();
        let assessment = templates::assess(&template);
        Ok(TemplatePreview {
            template: template.id.clone(),
            version: template.version,
            state: template.state,
            status: body.status,
            languages,
            worst_case_sms: assessment.worst_case_sms,
            approval_problems: assessment.problems,
        })
    }

    /// What a version changes against the last approved one (or the one asked for).
    pub async fn diff_template(
        &self,
        request: CommandRequest<DiffTemplate>,
    ) -> Result<TemplateDiff, Problem> {
        let body = request.body;
        let id = &body.template;
        let record = self
            .record(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| no_template(id))?;
        let after = self.template_version(id, body.version).await?;
        let against = match body.against {
            Some(v) => Some(v),
            None => last_approved(&record, body.version),
        };
        let before = match against {
            Some(v) => Some(self.template_version(id, v).await?),
            None => None,
        };
        Ok(TemplateDiff {
            template: id.clone(),
            version: body.version,
            against,
            changes: diff::diff(before.as_ref(), &after),
        })
    }
}

/// The version an approver compares with: the newest approved one other than
/// `version`, or else the newest that was approved before it was retired.
fn last_approved(record: &TemplateRecord, version: u32) -> Option<u32> {
    let newest = |state| {
        record
            .versions
            .iter()
            .rev()
            .find(|v| v.version != version && v.state == state)
            .map(|v| v.version)
    };
    newest(TemplateState::Approved).or_else(|| newest(TemplateState::Retired))
}
