//! The exact texts of a crisis's messages, rendered again from its template
//! version and the values in force: what an operator publishes by hand (with a
//! copy button), and the all-clear or correction a duty officer reads before
//! sending it.

use krisbud_proto::command::PreviewTemplate;
use krisbud_proto::status::{CrisisStatus, RevisionKind};
use krisbud_proto::template::{RenderedLanguage, TemplatePreview};
use krisbud_proto::{Channel, subject};

use super::session::SignedIn;
use super::{channel_name, pages};
use crate::state::AppState;

/// Which of a template's texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The alert (a declaration or an update).
    Alert,
    AllClear,
    Cancel,
}

impl Which {
    /// The text the crisis's current revision sent.
    pub fn of_current(status: &CrisisStatus) -> Which {
        let kind = status
            .revisions
            .iter()
            .find(|r| r.revision == status.revision)
            .map(|r| r.kind);
        match kind {
            Some(RevisionKind::AllClear) => Which::AllClear,
            Some(RevisionKind::Cancelled) => Which::Cancel,
            _ => Which::Alert,
        }
    }
}

/// One channel's text in one language.
pub struct ChannelText {
    /// An element id for the copy button.
    pub id: String,
    /// `sms`, `email`, `banner` or `intranet`.
    pub channel: &'static str,
    /// "SMS, Svenska".
    pub heading: String,
    /// A subject or headline, when the channel has one.
    pub title: String,
    pub text: String,
}

/// Every channel's text in every language of `status`'s template, or nothing
/// when they cannot be rendered now (the page then says so).
pub async fn render(
    app: &AppState,
    who: &SignedIn,
    status: &CrisisStatus,
    which: Which,
) -> Vec<ChannelText> {
    let Some(template) = &status.template else {
        return Vec::new();
    };
    let preview: TemplatePreview = match app
        .command(
            subject::cmd::PREVIEW_TEMPLATE,
            who.session.actor.clone(),
            None,
            PreviewTemplate {
                template: template.id.clone(),
                version: template.version,
                variables: status.variables.clone(),
                status: status.status,
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(detail = %e.problem.detail, "cannot render a crisis's texts");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for language in &preview.languages {
        let rendered: Option<&RenderedLanguage> = match which {
            Which::Alert => Some(&language.rendered),
            Which::AllClear => language.all_clear.as_ref(),
            Which::Cancel => language.cancel.as_ref(),
        };
        let Some(r) = rendered else { continue };
        let name = pages::language_name(&r.language);
        for channel in Channel::ALL {
            let (title, text) = match channel {
                Channel::Sms => (String::new(), r.sms.text.clone()),
                Channel::Email => (r.email.subject.clone(), r.email.text.clone()),
                Channel::Banner => (r.banner.headline.clone(), r.banner.body.clone()),
                Channel::Intranet => (r.intranet.title.clone(), r.intranet.body.clone()),
            };
            out.push(ChannelText {
                id: format!("text-{}-{}", channel.as_str(), out.len()),
                channel: channel.as_str(),
                heading: format!("{}, {name}", channel_name(channel)),
                title,
                text,
            });
        }
    }
    out
}
