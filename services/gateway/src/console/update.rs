//! The duty officer's update of an active crisis: new values for the template's
//! blanks and audiences to add, a preview of every channel in every language with
//! the values as they will be, then the update, against the revision the duty
//! officer saw.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use krisbud_proto::audience::Audience;
use krisbud_proto::command::{
    CrisisStep, GetCrisis, ListTemplates, PreviewTemplate, Revised, UpdateCrisis,
};
use krisbud_proto::status::{CrisisState, CrisisStatus};
use krisbud_proto::template::{TemplatePreview, TemplateSummary};
use krisbud_proto::{Role, subject};

use super::pages::{self, FieldError, Layout, VariableField, language_name, practice};
use super::session::{Posted, SignedIn};
use super::{message, not_allowed, page, unavailable};
use crate::state::AppState;

/// One language of the new texts.
pub struct NewTexts {
    pub name: String,
    pub sms: String,
    pub sms_segments: u32,
    pub banner_headline: String,
    pub banner_body: String,
    pub email_subject: String,
}

#[derive(Template)]
#[template(path = "console/update.html")]
pub struct UpdatePage {
    pub layout: Layout,
    pub id: String,
    pub headline: String,
    pub revision: u32,
    pub practice: Option<&'static str>,
    pub errors: Vec<FieldError>,
    pub variables: Vec<VariableField>,
    /// Audiences that can be added: (id, name, members, chosen).
    pub audiences: Vec<(String, String, u64, bool)>,
    /// Set once previewed: the texts as they will go out.
    pub preview: Vec<NewTexts>,
}

/// What the update needs: the crisis, its template version, the audiences.
async fn context(
    app: &AppState,
    who: &SignedIn,
    id: &str,
) -> Result<(CrisisStatus, TemplateSummary, Vec<Audience>), Box<Response>> {
    if !who.session.has(Role::DutyOfficer) {
        return Err(Box::new(not_allowed(
            who,
            "Bara tjänsteman i beredskap kan uppdatera en kris.",
        )));
    }
    let actor = who.session.actor.clone();
    let status: CrisisStatus = app
        .command(
            subject::cmd::GET_CRISIS,
            actor.clone(),
            None,
            GetCrisis {
                crisis_id: id.to_owned(),
            },
        )
        .await
        .map_err(|e| Box::new(unavailable(who, &e)))?;
    if status.state != CrisisState::Active {
        return Err(Box::new(message(
            StatusCode::CONFLICT,
            Some(who),
            "Det går inte nu",
            "Bara en pågående kris kan uppdateras.",
        )));
    }
    let Some(reference) = status.template.clone() else {
        return Err(Box::new(message(
            StatusCode::CONFLICT,
            Some(who),
            "Det går inte nu",
            "Krisen är inte färdigplanerad ännu. Försök igen om en stund.",
        )));
    };
    let templates: Vec<TemplateSummary> = app
        .command(
            subject::cmd::LIST_TEMPLATES,
            actor.clone(),
            None,
            ListTemplates { all: true },
        )
        .await
        .map_err(|e| Box::new(unavailable(who, &e)))?;
    let template = templates
        .into_iter()
        .find(|t| t.id == reference.id && t.version == reference.version)
        .ok_or_else(|| {
            Box::new(message(
                StatusCode::CONFLICT,
                Some(who),
                "Mallen finns inte längre",
                "Krisens mallversion kunde inte läsas.",
            ))
        })?;
    let audiences = app
        .command(subject::cmd::LIST_AUDIENCES, actor, None, ())
        .await
        .map_err(|e| Box::new(unavailable(who, &e)))?;
    Ok((status, template, audiences))
}

/// The form's values: the blanks as typed (the values in force to begin with)
/// and the audiences ticked.
fn read(
    template: &TemplateSummary,
    status: &CrisisStatus,
    form: Option<&[(String, String)]>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let variables = template
        .variables
        .iter()
        .map(|v| {
            let value = match form {
                Some(form) => pages::value(form, &format!("var-{}", v.name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                None => status.variables.get(&v.name).cloned().unwrap_or_default(),
            };
            (v.name.clone(), value)
        })
        .collect();
    let audiences = form
        .map(|form| {
            form.iter()
                .filter(|(k, _)| k == "audience")
                .map(|(_, v)| v.clone())
                .collect()
        })
        .unwrap_or_default();
    (variables, audiences)
}

#[allow(clippy::too_many_arguments)]
fn view(
    who: &SignedIn,
    status: &CrisisStatus,
    template: &TemplateSummary,
    audiences: &[Audience],
    variables: &BTreeMap<String, String>,
    added: &[String],
    errors: Vec<FieldError>,
    preview: Vec<NewTexts>,
) -> UpdatePage {
    UpdatePage {
        layout: Layout::of(Some(who)),
        id: status.crisis_id.clone(),
        headline: status.headline.clone(),
        revision: status.revision,
        practice: practice(status.status),
        errors,
        variables: template
            .variables
            .iter()
            .map(|v| VariableField {
                field: format!("var-{}", v.name),
                label: v.label.clone(),
                required: v.required,
                max_length: v.max_length,
                allowed: v.allowed.clone(),
                value: variables.get(&v.name).cloned().unwrap_or_default(),
            })
            .collect(),
        audiences: audiences
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    a.name.clone(),
                    a.members,
                    added.contains(&a.id),
                )
            })
            .collect(),
        preview,
    }
}

/// `GET /konsol/kris/{id}/uppdatera`
pub async fn form(State(app): State<AppState>, who: SignedIn, Path(id): Path<String>) -> Response {
    let (status, template, audiences) = match context(&app, &who, &id).await {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let (variables, added) = read(&template, &status, None);
    page(
        StatusCode::OK,
        &view(
            &who,
            &status,
            &template,
            &audiences,
            &variables,
            &added,
            Vec::new(),
            Vec::new(),
        ),
    )
}

/// `POST /konsol/kris/{id}/uppdatera`: `action=preview` renders the texts with
/// the new values; `action=send` updates the crisis.
pub async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { who, form: raw }: Posted,
) -> Response {
    let (status, template, audiences) = match context(&app, &who, &id).await {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let (variables, added) = read(&template, &status, Some(&raw));
    let refused = |errors: Vec<FieldError>| {
        page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &view(
                &who,
                &status,
                &template,
                &audiences,
                &variables,
                &added,
                errors,
                Vec::new(),
            ),
        )
    };
    let changed: BTreeMap<String, String> = variables
        .iter()
        .filter(|(k, v)| status.variables.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if changed.is_empty() && added.is_empty() {
        return refused(vec![FieldError {
            field: "main".into(),
            message: "Ändra minst ett värde eller lägg till en mottagargrupp.".into(),
        }]);
    }
    if pages::value(&raw, "action") == Some("send") {
        let expected_revision = pages::value(&raw, "expected_revision")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let sent: Result<Revised, _> = app
            .command(
                subject::cmd::UPDATE,
                who.session.actor.clone(),
                None,
                CrisisStep {
                    crisis_id: id.clone(),
                    body: UpdateCrisis {
                        expected_revision,
                        variables: changed,
                        audiences: added.clone(),
                        template_version: None,
                    },
                },
            )
            .await;
        return match sent {
            Ok(_) => Redirect::to(&format!("/konsol/kris/{id}")).into_response(),
            Err(e) if e.problem.status == 409 => refused(vec![FieldError {
                field: "main".into(),
                message:
                    "Krisen har ändrats sedan du öppnade sidan. Granska på nytt och skicka igen."
                        .into(),
            }]),
            Err(e) if e.problem.status < 500 => refused(vec![FieldError::from(&e)]),
            Err(e) => unavailable(&who, &e),
        };
    }
    let preview: TemplatePreview = match app
        .command(
            subject::cmd::PREVIEW_TEMPLATE,
            who.session.actor.clone(),
            None,
            PreviewTemplate {
                template: template.id.clone(),
                version: template.version,
                variables: variables
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                status: status.status,
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) if e.problem.status < 500 => return refused(vec![FieldError::from(&e)]),
        Err(e) => return unavailable(&who, &e),
    };
    let texts = preview
        .languages
        .iter()
        .map(|l| NewTexts {
            name: language_name(&l.rendered.language),
            sms: l.rendered.sms.text.clone(),
            sms_segments: l.rendered.sms.segments,
            banner_headline: l.rendered.banner.headline.clone(),
            banner_body: l.rendered.banner.body.clone(),
            email_subject: l.rendered.email.subject.clone(),
        })
        .collect();
    page(
        StatusCode::OK,
        &view(
            &who,
            &status,
            &template,
            &audiences,
            &variables,
            &added,
            Vec::new(),
            texts,
        ),
    )
}
