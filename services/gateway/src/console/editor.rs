//! The template editor's console: the templates and their versions, a new
//! version drafted from the newest one with one field per text per language
//! (lättläst included, the all-clear and the correction too), the draft's
//! preview on every channel with segment counts, warnings and what would stop
//! its approval, and submission for approval.
//!
//! The form's fields are named by their path in the version's JSON
//! (`languages.sv.sms`, `languages.en.all_clear.banner_body`), so the draft is the
//! newest version with exactly the texts changed that were posted.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use krisbud_proto::command::{
    ChangeTemplateState, DraftResult, DraftTemplate, GetTemplateVersion, ListTemplates,
    PreviewTemplate, TemplateAction,
};
use krisbud_proto::template::{
    TemplatePreview, TemplateState, TemplateSummary, TemplateVersion, VariableType, VersionInfo,
};
use krisbud_proto::{AlertStatus, Role, subject};
use serde_json::Value;

use super::pages::{Layout, language_name};
use super::session::{Posted, SignedIn};
use super::{message, not_allowed, page, unavailable};
use crate::state::AppState;

/// The texts of a language an editor writes, with their Swedish labels.
const TEXTS: [(&str, &str); 9] = [
    ("sms", "SMS"),
    ("email_subject", "E-post, ämnesrad"),
    ("email_text", "E-post, text"),
    ("banner_headline", "Webbanner, rubrik"),
    ("banner_body", "Webbanner, text"),
    ("banner_link_text", "Webbanner, länktext"),
    ("intranet_title", "Intranät, rubrik"),
    ("intranet_body", "Intranät, text (Markdown)"),
    ("email_html", "E-post, HTML"),
];

/// The texts of an all-clear or a correction.
const CLOSING: [(&str, &str); 7] = [
    ("sms", "SMS"),
    ("email_subject", "E-post, ämnesrad"),
    ("email_text", "E-post, text"),
    ("banner_headline", "Webbanner, rubrik"),
    ("banner_body", "Webbanner, text"),
    ("intranet_title", "Intranät, rubrik"),
    ("intranet_body", "Intranät, text"),
];

/// One text field of the form.
pub struct TextField {
    /// The field's path in the version's JSON, also its form name.
    pub path: String,
    /// An element id derived from the path.
    pub id: String,
    pub label: String,
    pub value: String,
    /// Long texts get a larger box.
    pub long: bool,
}

/// One language's fields, grouped.
pub struct LanguageFields {
    pub name: String,
    pub groups: Vec<(String, Vec<TextField>)>,
}

/// A version in the list.
pub struct VersionRow {
    pub version: u32,
    pub state: &'static str,
    pub author: String,
}

/// A template in the list, with its versions.
pub struct TemplateRow {
    pub id: String,
    pub name: String,
    pub versions: Vec<VersionRow>,
}

#[derive(Template)]
#[template(path = "console/editor_list.html")]
pub struct ListPage {
    pub layout: Layout,
    pub templates: Vec<TemplateRow>,
}

#[derive(Template)]
#[template(path = "console/editor_form.html")]
pub struct FormPage {
    pub layout: Layout,
    pub id: String,
    pub name: String,
    pub base: u32,
    pub languages: Vec<LanguageFields>,
    pub error: Option<String>,
}

/// One language of a version's preview.
pub struct PreviewRow {
    pub name: String,
    pub sms: String,
    pub encoding: String,
    pub segments: u32,
    pub banner: String,
    pub warnings: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/editor_version.html")]
pub struct VersionPage {
    pub layout: Layout,
    pub id: String,
    pub version: u32,
    pub state: &'static str,
    pub draft: bool,
    pub languages: Vec<PreviewRow>,
    pub worst_case: Vec<String>,
    pub problems: Vec<String>,
    pub error: Option<String>,
}

fn editor(who: &SignedIn) -> Result<(), Box<Response>> {
    if who.session.has(Role::TemplateEditor) {
        Ok(())
    } else {
        Err(Box::new(not_allowed(
            who,
            "Bara mallredaktörer skriver mallar.",
        )))
    }
}

fn state_name(state: TemplateState) -> &'static str {
    match state {
        TemplateState::Draft => "Utkast",
        TemplateState::Submitted => "Väntar på godkännande",
        TemplateState::Approved => "Godkänd",
        TemplateState::Rejected => "Avslagen",
        TemplateState::Retired => "Tagen ur bruk",
    }
}

async fn all_versions(
    app: &AppState,
    who: &SignedIn,
) -> Result<Vec<TemplateSummary>, Box<Response>> {
    app.command(
        subject::cmd::LIST_TEMPLATES,
        who.session.actor.clone(),
        None,
        ListTemplates { all: true },
    )
    .await
    .map_err(|e| Box::new(unavailable(who, &e)))
}

/// `GET /konsol/mallar`
pub async fn list(State(app): State<AppState>, who: SignedIn) -> Response {
    if let Err(response) = editor(&who) {
        return *response;
    }
    let versions = match all_versions(&app, &who).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let mut templates: Vec<TemplateRow> = Vec::new();
    for t in versions {
        let row = VersionRow {
            version: t.version,
            state: state_name(t.state),
            author: t.author.clone(),
        };
        match templates.iter_mut().find(|r| r.id == t.id) {
            Some(existing) => {
                existing.versions.push(row);
                existing.name = t.name;
            }
            None => templates.push(TemplateRow {
                id: t.id,
                name: t.name,
                versions: vec![row],
            }),
        }
    }
    for t in &mut templates {
        t.versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    }
    page(
        StatusCode::OK,
        &ListPage {
            layout: Layout::of(Some(&who)),
            templates,
        },
    )
}

/// The newest version of template `id`, with its wording.
async fn newest(
    app: &AppState,
    who: &SignedIn,
    id: &str,
) -> Result<TemplateVersion, Box<Response>> {
    let newest = all_versions(app, who)
        .await?
        .into_iter()
        .filter(|t| t.id == id)
        .map(|t| t.version)
        .max()
        .ok_or_else(|| {
            Box::new(message(
                StatusCode::NOT_FOUND,
                Some(who),
                "Mallen finns inte",
                "Det finns ingen mall med det namnet.",
            ))
        })?;
    app.command(
        subject::cmd::GET_TEMPLATE_VERSION,
        who.session.actor.clone(),
        None,
        GetTemplateVersion {
            template: id.to_owned(),
            version: newest,
        },
    )
    .await
    .map_err(|e| Box::new(unavailable(who, &e)))
}

/// The form's fields for `version`'s texts, language by language.
fn fields(version: &TemplateVersion) -> Vec<LanguageFields> {
    let value = serde_json::to_value(version).unwrap_or(Value::Null);
    let field = |path: String, label: &str, text: &Value| TextField {
        id: path.replace('.', "-"),
        value: text.as_str().unwrap_or_default().to_owned(),
        long: label.contains("text") || label.contains("HTML"),
        label: label.to_owned(),
        path,
    };
    version
        .languages
        .keys()
        .map(|tag| {
            let language = member(member(&value, "languages"), tag);
            let mut groups = vec![(
                "Larmet".to_owned(),
                TEXTS
                    .iter()
                    .map(|(key, label)| {
                        field(
                            format!("languages.{tag}.{key}"),
                            label,
                            member(language, key),
                        )
                    })
                    .collect(),
            )];
            for (closing, heading) in [("all_clear", "Faran över"), ("cancel", "Rättelse")] {
                groups.push((
                    heading.to_owned(),
                    CLOSING
                        .iter()
                        .map(|(key, label)| {
                            field(
                                format!("languages.{tag}.{closing}.{key}"),
                                label,
                                member(member(language, closing), key),
                            )
                        })
                        .collect(),
                ));
            }
            LanguageFields {
                name: language_name(tag),
                groups,
            }
        })
        .collect()
}

/// `value`'s member `key`, or null.
fn member<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// `GET /konsol/mallar/{id}/ny`: a new version, starting from the newest.
pub async fn form(State(app): State<AppState>, who: SignedIn, Path(id): Path<String>) -> Response {
    if let Err(response) = editor(&who) {
        return *response;
    }
    let base = match newest(&app, &who, &id).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    page(
        StatusCode::OK,
        &FormPage {
            layout: Layout::of(Some(&who)),
            id: base.id.clone(),
            name: base.name.clone(),
            base: base.version,
            languages: fields(&base),
            error: None,
        },
    )
}

/// Sets the string at dotted `path` of `value`, creating objects on the way; only
/// under `languages`, and only texts the form offers.
fn set_text(value: &mut Value, path: &str, text: &str) {
    let offered = path.split('.').next_back().is_some_and(|key| {
        TEXTS.iter().any(|(k, _)| *k == key) || CLOSING.iter().any(|(k, _)| *k == key)
    });
    if !path.starts_with("languages.") || !offered {
        return;
    }
    let mut at = value;
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, walk)) = parts.split_last() else {
        return;
    };
    for part in walk {
        if !at.get(*part).is_some_and(Value::is_object) {
            if let Value::Object(map) = at {
                map.insert((*part).to_owned(), Value::Object(Default::default()));
            } else {
                return;
            }
        }
        let Some(next) = at.get_mut(*part) else {
            return;
        };
        at = next;
    }
    if let Value::Object(map) = at {
        map.insert(
            (*last).to_owned(),
            Value::String(text.replace("\r\n", "\n")),
        );
    }
}

/// `POST /konsol/mallar/{id}/ny`: drafts the new version and shows its preview.
pub async fn draft(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { who, form }: Posted,
) -> Response {
    if let Err(response) = editor(&who) {
        return *response;
    }
    let base = match newest(&app, &who, &id).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let mut value = serde_json::to_value(&base).unwrap_or(Value::Null);
    for (path, text) in &form {
        set_text(&mut value, path, text);
    }
    // An all-clear or correction left wholly empty is none, not an empty one.
    if let Some(Value::Object(languages)) = value.get_mut("languages") {
        for language in languages.values_mut() {
            let Value::Object(fields) = language else {
                continue;
            };
            for closing in ["all_clear", "cancel"] {
                let empty = fields
                    .get(closing)
                    .and_then(Value::as_object)
                    .is_some_and(|c| {
                        c.values()
                            .all(|v| v.as_str().is_some_and(|t| t.trim().is_empty()))
                    });
                if empty {
                    fields.remove(closing);
                }
            }
        }
    }
    let refused = |error: String, value: &Value| {
        let shown: TemplateVersion =
            serde_json::from_value(value.clone()).unwrap_or_else(|_| base.clone());
        page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &FormPage {
                layout: Layout::of(Some(&who)),
                id: base.id.clone(),
                name: base.name.clone(),
                base: base.version,
                languages: fields(&shown),
                error: Some(error),
            },
        )
    };
    let draft: TemplateVersion = match serde_json::from_value(value.clone()) {
        Ok(d) => d,
        Err(e) => return refused(format!("Mallen kunde inte läsas: {e}"), &value),
    };
    let drafted: Result<DraftResult, _> = app
        .command(
            subject::cmd::DRAFT_TEMPLATE,
            who.session.actor.clone(),
            None,
            DraftTemplate {
                draft,
                new_template: false,
            },
        )
        .await;
    match drafted {
        Ok(d) => Redirect::to(&format!(
            "/konsol/mallar/{}/{}",
            d.template.id, d.template.version
        ))
        .into_response(),
        Err(e) if e.problem.status < 500 => refused(e.problem.detail, &value),
        Err(e) => unavailable(&who, &e),
    }
}

/// A value for each blank that the renderer accepts, for a preview.
fn sample_values(template: &TemplateVersion) -> std::collections::BTreeMap<String, String> {
    template
        .variables
        .iter()
        .map(|v| {
            let value = match v.kind {
                VariableType::Enum => v.allowed.first().cloned().unwrap_or_default(),
                VariableType::Datetime => "2026-12-06 20:00".to_owned(),
                VariableType::Url => "https://stockholm.se".to_owned(),
                VariableType::Phone => "08-508 000 00".to_owned(),
                VariableType::Text => v.label.chars().take(v.max_length).collect(),
            };
            (v.name.clone(), value)
        })
        .collect()
}

async fn version_page(
    app: &AppState,
    who: &SignedIn,
    id: &str,
    version: u32,
    error: Option<String>,
) -> Response {
    let actor = who.session.actor.clone();
    let template: TemplateVersion = match app
        .command(
            subject::cmd::GET_TEMPLATE_VERSION,
            actor.clone(),
            None,
            GetTemplateVersion {
                template: id.to_owned(),
                version,
            },
        )
        .await
    {
        Ok(t) => t,
        Err(e) if e.problem.status == 404 => {
            return message(
                StatusCode::NOT_FOUND,
                Some(who),
                "Versionen finns inte",
                "Det finns ingen sådan version av mallen.",
            );
        }
        Err(e) => return unavailable(who, &e),
    };
    let preview: TemplatePreview = match app
        .command(
            subject::cmd::PREVIEW_TEMPLATE,
            actor,
            None,
            PreviewTemplate {
                template: id.to_owned(),
                version,
                variables: sample_values(&template),
                status: AlertStatus::Actual,
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return unavailable(who, &e),
    };
    page(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &VersionPage {
            layout: Layout::of(Some(who)),
            id: id.to_owned(),
            version,
            state: state_name(template.state),
            draft: template.state == TemplateState::Draft,
            languages: preview
                .languages
                .iter()
                .map(|l| PreviewRow {
                    name: language_name(&l.rendered.language),
                    sms: l.rendered.sms.text.clone(),
                    encoding: l.rendered.sms.encoding.to_uppercase(),
                    segments: l.rendered.sms.segments,
                    banner: l.rendered.banner.headline.clone(),
                    warnings: l.warnings.iter().map(|w| w.message.clone()).collect(),
                })
                .collect(),
            worst_case: preview
                .worst_case_sms
                .iter()
                .map(|w| {
                    format!(
                        "{}: högst {} delar ({}), gränsen är {}",
                        language_name(&w.language),
                        w.segments,
                        w.encoding.to_uppercase(),
                        w.limit
                    )
                })
                .collect(),
            problems: preview.approval_problems.clone(),
            error,
        },
    )
}

/// `GET /konsol/mallar/{id}/{version}`: the version on every channel.
pub async fn show(
    State(app): State<AppState>,
    who: SignedIn,
    Path((id, version)): Path<(String, u32)>,
) -> Response {
    if let Err(response) = editor(&who) {
        return *response;
    }
    version_page(&app, &who, &id, version, None).await
}

/// `POST /konsol/mallar/{id}/{version}`: submits a draft for approval.
pub async fn submit(
    State(app): State<AppState>,
    Path((id, version)): Path<(String, u32)>,
    Posted { who, form: _ }: Posted,
) -> Response {
    if let Err(response) = editor(&who) {
        return *response;
    }
    let submitted: Result<VersionInfo, _> = app
        .command(
            subject::cmd::CHANGE_TEMPLATE_STATE,
            who.session.actor.clone(),
            None,
            ChangeTemplateState {
                template: id.clone(),
                version,
                action: TemplateAction::Submit,
                reason: None,
            },
        )
        .await;
    match submitted {
        Ok(_) => Redirect::to(&format!("/konsol/mallar/{id}/{version}")).into_response(),
        Err(e) if e.problem.status < 500 => {
            version_page(&app, &who, &id, version, Some(e.problem.detail)).await
        }
        Err(e) => unavailable(&who, &e),
    }
}
