//! The approver's queue in the console: the versions waiting for approval, each
//! with a side-by-side diff against the last approved version per field (channel
//! and language), approve, or reject with a reason. The author of a version sees
//! no buttons for it, and the coordinator refuses them as it does over the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use krisbud_proto::command::{ChangeTemplateState, DiffTemplate, ListTemplates, TemplateAction};
use krisbud_proto::template::{TemplateDiff, TemplateState, TemplateSummary, VersionInfo};
use krisbud_proto::{Role, subject};

use super::pages::{self, Layout};
use super::session::{Posted, SignedIn};
use super::{message, not_allowed, page, unavailable};
use crate::state::AppState;

/// A version waiting in the queue.
pub struct Waiting {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub author: String,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
pub struct Queue {
    pub layout: Layout,
    pub waiting: Vec<Waiting>,
}

/// One field of the diff, before and after, line by line side by side.
pub struct FieldView {
    pub field: String,
    pub change: &'static str,
    pub rows: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "console/approval.html")]
pub struct Review {
    pub layout: Layout,
    pub id: String,
    pub version: u32,
    pub name: String,
    pub author: String,
    pub against: Option<u32>,
    pub fields: Vec<FieldView>,
    /// The signed-in person wrote this version and may not approve it.
    pub own: bool,
    pub error: Option<String>,
}

fn approver(who: &SignedIn) -> Result<(), Box<Response>> {
    if who.session.has(Role::TemplateApprover) {
        Ok(())
    } else {
        Err(Box::new(not_allowed(
            who,
            "Bara mallgodkännare ser kön med mallar att godkänna.",
        )))
    }
}

/// Every version waiting for approval.
async fn submitted(app: &AppState, who: &SignedIn) -> Result<Vec<TemplateSummary>, Box<Response>> {
    let all: Vec<TemplateSummary> = app
        .command(
            subject::cmd::LIST_TEMPLATES,
            who.session.actor.clone(),
            None,
            ListTemplates { all: true },
        )
        .await
        .map_err(|e| Box::new(unavailable(who, &e)))?;
    Ok(all
        .into_iter()
        .filter(|t| t.state == TemplateState::Submitted)
        .collect())
}

/// `GET /konsol/godkann`
pub async fn queue(State(app): State<AppState>, who: SignedIn) -> Response {
    if let Err(response) = approver(&who) {
        return *response;
    }
    let waiting = match submitted(&app, &who).await {
        Ok(w) => w,
        Err(response) => return *response,
    };
    page(
        StatusCode::OK,
        &Queue {
            layout: Layout::of(Some(&who)),
            waiting: waiting
                .into_iter()
                .map(|t| Waiting {
                    id: t.id,
                    version: t.version,
                    name: t.name,
                    author: t.author,
                })
                .collect(),
        },
    )
}

/// The review page of version `version` of `id`, with `error` at the top.
async fn review(
    app: &AppState,
    who: &SignedIn,
    id: &str,
    version: u32,
    error: Option<String>,
) -> Response {
    let waiting = match submitted(app, who).await {
        Ok(w) => w,
        Err(response) => return *response,
    };
    let Some(summary) = waiting
        .into_iter()
        .find(|t| t.id == id && t.version == version)
    else {
        return message(
            StatusCode::NOT_FOUND,
            Some(who),
            "Versionen väntar inte på godkännande",
            "Den är redan godkänd, avslagen eller finns inte. Se kön för det som väntar.",
        );
    };
    let diff: TemplateDiff = match app
        .command(
            subject::cmd::DIFF_TEMPLATE,
            who.session.actor.clone(),
            None,
            DiffTemplate {
                template: id.to_owned(),
                version,
                against: None,
            },
        )
        .await
    {
        Ok(d) => d,
        Err(e) => return unavailable(who, &e),
    };
    let fields = diff
        .changes
        .iter()
        .map(|c| FieldView {
            field: c.field.clone(),
            change: match c.change {
                krisbud_proto::template::ChangeKind::Added => "Ny",
                krisbud_proto::template::ChangeKind::Removed => "Borttagen",
                krisbud_proto::template::ChangeKind::Changed => "Ändrad",
            },
            rows: side_by_side(&c.lines),
        })
        .collect();
    let own = summary.author == who.session.actor.user;
    page(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &Review {
            layout: Layout::of(Some(who)),
            id: summary.id,
            version,
            name: summary.name,
            author: summary.author,
            against: diff.against,
            fields,
            own,
            error,
        },
    )
}

/// A unified line diff (`-`, `+`, ` ` prefixes) as rows of before and after:
/// removed and added lines in a run pair up, unchanged lines stand on both sides.
fn side_by_side(lines: &[String]) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let (mut before, mut after): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let flush = |rows: &mut Vec<(String, String)>, b: &mut Vec<String>, a: &mut Vec<String>| {
        let n = b.len().max(a.len());
        let (mut b, mut a) = (b.drain(..), a.drain(..));
        for _ in 0..n {
            rows.push((b.next().unwrap_or_default(), a.next().unwrap_or_default()));
        }
    };
    for line in lines {
        let text = line.get(1..).unwrap_or_default().to_owned();
        match line.chars().next() {
            Some('-') => before.push(text),
            Some('+') => after.push(text),
            _ => {
                flush(&mut rows, &mut before, &mut after);
                rows.push((text.clone(), text));
            }
        }
    }
    flush(&mut rows, &mut before, &mut after);
    rows
}

/// `GET /konsol/godkann/{id}/{version}`
pub async fn show(
    State(app): State<AppState>,
    who: SignedIn,
    Path((id, version)): Path<(String, u32)>,
) -> Response {
    if let Err(response) = approver(&who) {
        return *response;
    }
    review(&app, &who, &id, version, None).await
}

/// `POST /konsol/godkann/{id}/{version}`: `action=approve`, or `action=reject`
/// with a `reason`.
pub async fn decide(
    State(app): State<AppState>,
    Path((id, version)): Path<(String, u32)>,
    Posted { who, form }: Posted,
) -> Response {
    if let Err(response) = approver(&who) {
        return *response;
    }
    let (action, reason) = match pages::value(&form, "action") {
        Some("approve") => (TemplateAction::Approve, None),
        Some("reject") => {
            let reason = pages::value(&form, "reason").unwrap_or_default().trim();
            if reason.is_empty() {
                return review(
                    &app,
                    &who,
                    &id,
                    version,
                    Some("Skriv varför versionen avslås, så att författaren kan rätta den.".into()),
                )
                .await;
            }
            (TemplateAction::Reject, Some(reason.to_owned()))
        }
        _ => {
            return review(
                &app,
                &who,
                &id,
                version,
                Some("Välj godkänn eller avslå.".into()),
            )
            .await;
        }
    };
    let done: Result<VersionInfo, _> = app
        .command(
            subject::cmd::CHANGE_TEMPLATE_STATE,
            who.session.actor.clone(),
            None,
            ChangeTemplateState {
                template: id.clone(),
                version,
                action,
                reason,
            },
        )
        .await;
    match done {
        Ok(_) => Redirect::to("/konsol/godkann").into_response(),
        Err(e) if e.problem.status < 500 => {
            review(&app, &who, &id, version, Some(e.problem.detail)).await
        }
        Err(e) => unavailable(&who, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(own: bool) -> String {
        Review {
            layout: Layout::of(None),
            id: "vattenlacka".into(),
            version: 2,
            name: "Vattenläcka".into(),
            author: "redaktor.anna".into(),
            against: Some(1),
            fields: Vec::new(),
            own,
            error: None,
        }
        .render()
        .unwrap()
    }

    #[test]
    fn the_author_sees_no_approve_button() {
        assert!(review(false).contains("Godkänn version 2"));
        let own = review(true);
        assert!(!own.contains("Godkänn version 2"), "{own}");
        assert!(!own.contains("name=\"action\""), "{own}");
        assert!(own.contains("Du skrev den här versionen"));
    }

    #[test]
    fn a_unified_diff_reads_side_by_side() {
        let lines: Vec<String> = [" same", "-old", "+new", "+added", " end"]
            .iter()
            .map(|l| (*l).to_owned())
            .collect();
        let rows = side_by_side(&lines);
        let expected: Vec<(String, String)> = [
            ("same", "same"),
            ("old", "new"),
            ("", "added"),
            ("end", "end"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(rows, expected);
    }
}
