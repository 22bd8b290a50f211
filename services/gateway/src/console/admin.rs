//! The admin's console: the audiences with their member counts, a new audience,
//! a members file uploaded with its refused rows named by line and column on the
//! page, and who holds which role.

use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use krisbud_proto::audience::{Audience, CreateAudience, ImportReport};
use krisbud_proto::{Role, subject};

use super::pages::{self, Layout};
use super::session::{Posted, SignedIn, same_token};
use super::{expired_form, not_allowed, page, unavailable};
use crate::state::AppState;

/// A person and their roles.
pub struct UserRow {
    pub name: String,
    pub roles: String,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
pub struct AdminPage {
    pub layout: Layout,
    pub audiences: Vec<Audience>,
    pub users: Vec<UserRow>,
    pub error: Option<String>,
    /// The new audience's fields as typed, when creating it was refused.
    pub new_id: String,
    pub new_name: String,
}

#[derive(Template)]
#[template(path = "console/import.html")]
pub struct ImportPage {
    pub layout: Layout,
    pub report: ImportReport,
}

fn admin(who: &SignedIn) -> Result<(), Box<Response>> {
    if who.session.has(Role::Admin) {
        Ok(())
    } else {
        Err(Box::new(not_allowed(
            who,
            "Bara administratörer hanterar mottagargrupper.",
        )))
    }
}

/// The role's name as the console shows it.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::DutyOfficer => "tjänsteman i beredskap",
        Role::Operator => "kanaloperatör",
        Role::TemplateEditor => "mallredaktör",
        Role::TemplateApprover => "mallgodkännare",
        Role::Auditor => "revisor",
        Role::Admin => "administratör",
        Role::System => "systemtjänst",
    }
}

async fn admin_page(
    app: &AppState,
    who: &SignedIn,
    error: Option<String>,
    new_id: String,
    new_name: String,
) -> Response {
    let audiences: Vec<Audience> = match app
        .command(
            subject::cmd::LIST_AUDIENCES,
            who.session.actor.clone(),
            None,
            (),
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return unavailable(who, &e),
    };
    let mut users: Vec<UserRow> = app
        .users
        .values()
        .map(|u| UserRow {
            name: u.name.clone(),
            roles: u
                .roles
                .iter()
                .map(|r| role_name(*r))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    page(
        status,
        &AdminPage {
            layout: Layout::of(Some(who)),
            audiences,
            users,
            error,
            new_id,
            new_name,
        },
    )
}

/// `GET /konsol/admin`
pub async fn overview(State(app): State<AppState>, who: SignedIn) -> Response {
    if let Err(response) = admin(&who) {
        return *response;
    }
    admin_page(&app, &who, None, String::new(), String::new()).await
}

/// `POST /konsol/admin/mottagare`: a new, empty audience.
pub async fn create(State(app): State<AppState>, Posted { who, form }: Posted) -> Response {
    if let Err(response) = admin(&who) {
        return *response;
    }
    let id = pages::value(&form, "id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let name = pages::value(&form, "name")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let created: Result<Audience, _> = app
        .command(
            subject::cmd::CREATE_AUDIENCE,
            who.session.actor.clone(),
            None,
            CreateAudience {
                id: id.clone(),
                name: name.clone(),
                exercise: pages::value(&form, "exercise").is_some(),
            },
        )
        .await;
    match created {
        Ok(_) => Redirect::to("/konsol/admin").into_response(),
        Err(e) if e.problem.status < 500 => {
            admin_page(&app, &who, Some(e.problem.detail), id, name).await
        }
        Err(e) => unavailable(&who, &e),
    }
}

/// `POST /konsol/admin/mottagare/{id}/medlemmar`: replaces the members with an
/// uploaded CSV file (multipart: `_csrf` first, then `file`), streamed in parts
/// as the API's upload is.
pub async fn import(
    State(app): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    mut multipart: Multipart,
) -> Response {
    if let Err(response) = admin(&who) {
        return *response;
    }
    let mut csrf_seen = false;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return admin_page(
                    &app,
                    &who,
                    Some(format!("Filen kom inte fram hel: {e}")),
                    String::new(),
                    String::new(),
                )
                .await;
            }
        };
        match field.name() {
            Some("_csrf") => {
                let token = field.text().await.unwrap_or_default();
                csrf_seen = same_token(&token, &who.session.csrf);
            }
            Some("file") if csrf_seen => {
                let report = crate::audience_routes::import_members(
                    &app,
                    who.session.actor.clone(),
                    id.clone(),
                    field,
                )
                .await;
                return match report {
                    Ok(report) => page(
                        StatusCode::OK,
                        &ImportPage {
                            layout: Layout::of(Some(&who)),
                            report,
                        },
                    ),
                    Err(e) if e.problem.status < 500 => {
                        admin_page(
                            &app,
                            &who,
                            Some(e.problem.detail),
                            String::new(),
                            String::new(),
                        )
                        .await
                    }
                    Err(e) => unavailable(&who, &e),
                };
            }
            _ => {}
        }
    }
    if !csrf_seen {
        return expired_form(&who);
    }
    admin_page(
        &app,
        &who,
        Some("Välj en fil att ladda upp.".into()),
        String::new(),
        String::new(),
    )
    .await
}
