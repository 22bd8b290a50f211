//! The console's pages as askama templates (`templates/console/`), and the
//! declaration form: read from the POSTed fields, checked with errors that name
//! the field in Swedish, and turned into the same `DeclareCrisis` the API takes.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use krisbud_kit::text::local_time;
use krisbud_proto::audience::Audience;
use krisbud_proto::command::DeclareCrisis;
use krisbud_proto::status::{CrisisState, CrisisStatus};
use krisbud_proto::template::{TemplatePreview, TemplateSummary};
use krisbud_proto::{AlertStatus, Channel, Role};

use super::session::SignedIn;
use super::{assets, channel_name, mode_name};
use crate::problem::ApiError;

/// What every page's frame shows.
pub struct Layout {
    pub css: String,
    pub htmx: String,
    pub htmx_sse: String,
    pub script: String,
    pub user: Option<String>,
    pub duty_officer: bool,
    pub approver: bool,
    pub editor: bool,
    pub operator: bool,
    pub auditor: bool,
    pub admin: bool,
    pub csrf: String,
}

impl Layout {
    /// The frame for the signed-in person, or for nobody.
    pub fn of(who: Option<&SignedIn>) -> Layout {
        Layout {
            css: assets::CSS.path.clone(),
            htmx: assets::HTMX.path.clone(),
            htmx_sse: assets::HTMX_SSE.path.clone(),
            script: assets::SCRIPT.path.clone(),
            user: who.map(|w| w.session.actor.user.clone()),
            duty_officer: who.is_some_and(|w| w.session.has(Role::DutyOfficer)),
            approver: who.is_some_and(|w| w.session.has(Role::TemplateApprover)),
            admin: who.is_some_and(|w| w.session.has(Role::Admin)),
            operator: who.is_some_and(|w| w.session.has(Role::Operator)),
            editor: who.is_some_and(|w| w.session.has(Role::TemplateEditor)),
            auditor: who.is_some_and(|w| w.session.has(Role::Auditor)),
            csrf: who.map(|w| w.session.csrf.clone()).unwrap_or_default(),
        }
    }

    /// The frame of the sign-in page, with its own CSRF token.
    pub fn anonymous(csrf: String) -> Layout {
        Layout {
            csrf,
            ..Layout::of(None)
        }
    }
}

/// The form fields of a POST, in order (a name may repeat).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// The first value of field `name`.
pub fn value<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Template)]
#[template(path = "console/message.html")]
pub struct Message<'a> {
    pub layout: Layout,
    pub heading: &'a str,
    pub text: &'a str,
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub struct SignIn {
    pub layout: Layout,
    /// Whether the city's identity provider is configured (its button shows).
    pub oidc: bool,
    pub failed: bool,
    /// The session ended while a form was being filled in.
    pub expired: bool,
    pub name: String,
    /// Where to go after signing in (the cut-off declaration).
    pub next: String,
    /// The fields of the cut-off form, carried through sign-in.
    pub keep: Vec<(String, String)>,
}

/// A crisis in the list.
pub struct CrisisCard {
    pub id: String,
    pub headline: String,
    pub state: &'static str,
    pub practice: Option<&'static str>,
    pub declared_at: Option<String>,
}

impl CrisisCard {
    pub fn of(s: &CrisisStatus) -> CrisisCard {
        CrisisCard {
            id: s.crisis_id.clone(),
            headline: s.headline.clone(),
            state: crisis_state(s.state),
            practice: practice(s.status),
            declared_at: s.declared_at.map(local_time),
        }
    }
}

#[derive(Template)]
#[template(path = "console/home.html")]
pub struct Home {
    pub layout: Layout,
    pub crises: Vec<CrisisCard>,
}

/// An approved template in the list.
pub struct TemplateCard {
    pub id: String,
    pub name: String,
    pub version: u32,
    pub approved_by: Option<String>,
    pub languages: String,
}

impl TemplateCard {
    pub fn of(t: &TemplateSummary) -> TemplateCard {
        TemplateCard {
            id: t.id.clone(),
            name: t.name.clone(),
            version: t.version,
            approved_by: t.approved_by.clone(),
            languages: t
                .languages
                .iter()
                .map(|l| language_name(l))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

#[derive(Template)]
#[template(path = "console/templates.html")]
pub struct Templates {
    pub layout: Layout,
    pub templates: Vec<TemplateCard>,
}

/// An error shown in the summary at the top, linking to its field.
pub struct FieldError {
    /// The id of the field it links to.
    pub field: String,
    pub message: String,
}

impl From<&ApiError> for FieldError {
    /// A refusal by the service, linked to the field it names when the form has it.
    fn from(e: &ApiError) -> FieldError {
        let field = match e.problem.field.as_deref() {
            Some(f) if f.starts_with("variables.") => {
                format!("var-{}", f.trim_start_matches("variables."))
            }
            Some(f) if f.starts_with("audiences") => "audiences".to_owned(),
            Some(f) if f.starts_with("channels") => "channels".to_owned(),
            _ => "main".to_owned(),
        };
        FieldError {
            field,
            message: e.problem.detail.clone(),
        }
    }
}

/// One blank of the template, as the form shows it.
pub struct VariableField {
    /// The form field's name and id: `var-<name>`.
    pub field: String,
    pub label: String,
    pub required: bool,
    pub max_length: usize,
    pub allowed: Vec<String>,
    pub value: String,
}

/// A choice among several (audience, channel, mode).
pub struct Choice {
    pub id: String,
    pub name: String,
    pub chosen: bool,
}

/// An audience to choose, with its counts.
pub struct AudienceChoice {
    pub id: String,
    pub name: String,
    pub members: u64,
    pub with_phone: u64,
    pub with_email: u64,
    pub chosen: bool,
}

#[derive(Template)]
#[template(path = "console/declare.html")]
pub struct DeclarePage<'a> {
    pub layout: Layout,
    pub template: &'a TemplateSummary,
    pub idempotency: String,
    pub errors: Vec<FieldError>,
    pub variables: Vec<VariableField>,
    pub audiences: Vec<AudienceChoice>,
    pub channels: Vec<Choice>,
    pub modes: Vec<Choice>,
}

/// The declaration form as filled in.
pub struct DeclareForm {
    pub variables: BTreeMap<String, String>,
    pub audiences: BTreeSet<String>,
    pub channels: BTreeSet<Channel>,
    pub status: AlertStatus,
    /// One key per form: sending it twice (a double click, a retried request)
    /// declares one crisis.
    pub idempotency: String,
}

impl DeclareForm {
    /// A fresh form: every channel, actual, nothing filled in.
    pub fn blank(template: &TemplateSummary) -> DeclareForm {
        DeclareForm {
            variables: template
                .variables
                .iter()
                .map(|v| (v.name.clone(), String::new()))
                .collect(),
            audiences: BTreeSet::new(),
            channels: Channel::ALL.into_iter().collect(),
            status: AlertStatus::Actual,
            idempotency: format!("konsol-{}", super::session::random_token()),
        }
    }

    /// The form as POSTed.
    pub fn read(template: &TemplateSummary, form: &[(String, String)]) -> DeclareForm {
        let variables = template
            .variables
            .iter()
            .map(|v| {
                let value = value(form, &format!("var-{}", v.name)).unwrap_or_default();
                (v.name.clone(), value.trim().to_owned())
            })
            .collect();
        let many = |name: &str| {
            form.iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect::<BTreeSet<String>>()
        };
        let status = match value(form, "status") {
            Some("exercise") => AlertStatus::Exercise,
            Some("test") => AlertStatus::Test,
            _ => AlertStatus::Actual,
        };
        let idempotency = value(form, "idempotency")
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("konsol-{}", super::session::random_token()));
        DeclareForm {
            variables,
            audiences: many("audience"),
            channels: many("channel")
                .iter()
                .filter_map(|c| Channel::parse(c))
                .collect(),
            status,
            idempotency,
        }
    }

    /// What must be put right before a preview, each naming its field.
    pub fn check(&self, template: &TemplateSummary, audiences: &[Audience]) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for v in &template.variables {
            let value = self
                .variables
                .get(&v.name)
                .map(String::as_str)
                .unwrap_or("");
            let field = format!("var-{}", v.name);
            if value.is_empty() {
                if v.required {
                    errors.push(FieldError {
                        field,
                        message: format!("Fyll i {}.", v.label),
                    });
                }
            } else if value.chars().count() > v.max_length {
                errors.push(FieldError {
                    field,
                    message: format!(
                        "{} får vara högst {} tecken, nu är det {}.",
                        v.label,
                        v.max_length,
                        value.chars().count()
                    ),
                });
            } else if !v.allowed.is_empty() && !v.allowed.iter().any(|a| a == value) {
                errors.push(FieldError {
                    field,
                    message: format!("Välj {} i listan.", v.label),
                });
            }
        }
        if self.channels.is_empty() {
            errors.push(FieldError {
                field: "channels".into(),
                message: "Välj minst en kanal.".into(),
            });
        }
        let personal =
            self.channels.contains(&Channel::Sms) || self.channels.contains(&Channel::Email);
        if personal && self.audiences.is_empty() {
            errors.push(FieldError {
                field: "audiences".into(),
                message: "SMS och e-post behöver minst en mottagargrupp. Välj en grupp, eller välj bort SMS och e-post.".into(),
            });
        }
        if let Some(unknown) = self
            .audiences
            .iter()
            .find(|a| !audiences.iter().any(|known| &known.id == *a))
        {
            errors.push(FieldError {
                field: "audiences".into(),
                message: format!("Mottagargruppen {unknown} finns inte längre."),
            });
        }
        errors
    }

    /// The declaration the API would take for this form.
    pub fn declaration(&self, template: &TemplateSummary) -> DeclareCrisis {
        DeclareCrisis {
            template: template.id.clone(),
            template_version: Some(template.version),
            variables: self
                .variables
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            audiences: self.audiences.iter().cloned().collect(),
            channels: Some(self.channels.iter().copied().collect()),
            status: self.status,
            expires_at: None,
        }
    }

    /// The form page, filled in as it stands, with `errors` at the top.
    pub fn page<'a>(
        &self,
        who: &SignedIn,
        template: &'a TemplateSummary,
        audiences: &[Audience],
        errors: Vec<FieldError>,
    ) -> DeclarePage<'a> {
        DeclarePage {
            layout: Layout::of(Some(who)),
            template,
            idempotency: self.idempotency.clone(),
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
                    value: self.variables.get(&v.name).cloned().unwrap_or_default(),
                })
                .collect(),
            audiences: audiences
                .iter()
                .map(|a| AudienceChoice {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    members: a.members,
                    with_phone: a.with_phone,
                    with_email: a.with_email,
                    chosen: self.audiences.contains(&a.id),
                })
                .collect(),
            channels: Channel::ALL
                .into_iter()
                .map(|c| Choice {
                    id: c.as_str().to_owned(),
                    name: channel_name(c).to_owned(),
                    chosen: self.channels.contains(&c),
                })
                .collect(),
            modes: [
                AlertStatus::Actual,
                AlertStatus::Exercise,
                AlertStatus::Test,
            ]
            .into_iter()
            .map(|m| Choice {
                id: mode_id(m).to_owned(),
                name: mode_name(m).to_owned(),
                chosen: self.status == m,
            })
            .collect(),
        }
    }

    /// The fields that carry this form through the preview unchanged.
    fn hidden(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("idempotency".to_owned(), self.idempotency.clone()),
            ("status".to_owned(), mode_id(self.status).to_owned()),
        ];
        for (name, value) in &self.variables {
            out.push((format!("var-{name}"), value.clone()));
        }
        for a in &self.audiences {
            out.push(("audience".to_owned(), a.clone()));
        }
        for c in &self.channels {
            out.push(("channel".to_owned(), c.as_str().to_owned()));
        }
        out
    }
}

/// One language of the preview.
pub struct PreviewLanguageView {
    pub name: String,
    pub sms: String,
    pub sms_encoding: String,
    pub sms_segments: u32,
    pub email_subject: String,
    pub email_text: String,
    pub banner_headline: String,
    pub banner_body: String,
    pub intranet_title: String,
    pub intranet_body: String,
    pub warnings: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/preview.html")]
pub struct Preview {
    pub layout: Layout,
    pub template_id: String,
    pub template_name: String,
    pub version: u32,
    pub practice: Option<&'static str>,
    pub audiences: String,
    pub channels: String,
    pub phones: u64,
    pub emails: u64,
    pub languages: Vec<PreviewLanguageView>,
    pub hidden: Vec<(String, String)>,
}

impl Preview {
    pub fn of(
        who: &SignedIn,
        template: &TemplateSummary,
        form: &DeclareForm,
        audiences: &[Audience],
        preview: &TemplatePreview,
    ) -> Preview {
        let chosen: Vec<&Audience> = audiences
            .iter()
            .filter(|a| form.audiences.contains(&a.id))
            .collect();
        // Upper bounds: someone in two audiences is counted twice here and
        // reached once (the status counts the plan).
        let phones = if form.channels.contains(&Channel::Sms) {
            chosen.iter().map(|a| a.with_phone).sum()
        } else {
            0
        };
        let emails = if form.channels.contains(&Channel::Email) {
            chosen.iter().map(|a| a.with_email).sum()
        } else {
            0
        };
        Preview {
            layout: Layout::of(Some(who)),
            template_id: template.id.clone(),
            template_name: template.name.clone(),
            version: template.version,
            practice: practice(form.status),
            audiences: chosen
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            channels: form
                .channels
                .iter()
                .map(|c| channel_name(*c))
                .collect::<Vec<_>>()
                .join(", "),
            phones,
            emails,
            languages: preview
                .languages
                .iter()
                .map(|l| PreviewLanguageView {
                    name: language_name(&l.rendered.language),
                    sms: l.rendered.sms.text.clone(),
                    sms_encoding: l.rendered.sms.encoding.to_uppercase(),
                    sms_segments: l.rendered.sms.segments,
                    email_subject: l.rendered.email.subject.clone(),
                    email_text: l.rendered.email.text.clone(),
                    banner_headline: l.rendered.banner.headline.clone(),
                    banner_body: l.rendered.banner.body.clone(),
                    intranet_title: l.rendered.intranet.title.clone(),
                    intranet_body: l.rendered.intranet.body.clone(),
                    warnings: l.warnings.iter().map(|w| w.message.clone()).collect(),
                })
                .collect(),
            hidden: form.hidden(),
        }
    }
}

/// The mode's form value.
fn mode_id(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Actual => "actual",
        AlertStatus::Exercise => "exercise",
        AlertStatus::Test => "test",
    }
}

/// The word every screen of an exercise or test carries.
pub fn practice(status: AlertStatus) -> Option<&'static str> {
    match status {
        AlertStatus::Actual => None,
        AlertStatus::Exercise => Some("ÖVNING"),
        AlertStatus::Test => Some("TEST"),
    }
}

pub fn crisis_state(state: CrisisState) -> &'static str {
    match state {
        CrisisState::Active => "Pågår",
        CrisisState::AllClear => "Faran över",
        CrisisState::Cancelled => "Återkallad",
        CrisisState::Closed => "Avslutad",
    }
}

/// A language tag as people read it.
pub fn language_name(tag: &str) -> String {
    match tag {
        "sv" => "Svenska".to_owned(),
        "en" => "Engelska".to_owned(),
        "sv-x-lattlast" => "Lättläst svenska".to_owned(),
        other => other.to_owned(),
    }
}
