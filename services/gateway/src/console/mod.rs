//! The console: server-rendered pages under `/konsol` for the people krisbud is
//! for, in Swedish. Pages are askama templates (`templates/console/`), every
//! action is a plain form POST that works without JavaScript, and htmx (vendored,
//! served from here) refreshes the live parts. Each handler sends the same command
//! the API route does, as the signed-in person, so the services check the console
//! exactly as they check the API.
//!
//! Pages so far: sign-in and sign-out, the crisis list, the duty officer's
//! declaration (choose an approved template, fill it in, choose audiences, channels
//! and exercise/test, preview every channel in every language, send) and the live
//! status board.

mod admin;
mod approval;
mod assets;
mod audit;
mod board;
mod confirm;
mod editor;
pub mod oidc;
mod pages;
pub mod session;
mod texts;
mod update;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::CookieJar;
use krisbud_proto::audit::{ConsoleSession, SessionChange, SignInMethod};
use krisbud_proto::command::{Declared, ListCrises, ListTemplates};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::template::{TemplatePreview, TemplateState, TemplateSummary};
use krisbud_proto::{Actor, AlertStatus, Channel, Role, subject};

use crate::state::AppState;
use pages::{DeclareForm, Layout};
use session::{Posted, SignedIn, random_token, same_token};

/// The strict policy of every console page: nothing but what this server sends,
/// no inline script or style, no framing.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/konsol", get(home))
        .route("/konsol/logga-in", get(sign_in_page).post(sign_in))
        .route("/konsol/logga-ut", post(sign_out))
        .route("/konsol/logga-in/oidc", get(oidc::begin))
        .route("/konsol/oidc/tillbaka", get(oidc::callback))
        .route("/konsol/ny-kris", get(choose_template))
        .route(
            "/konsol/ny-kris/{template}",
            get(declare_form).post(declare),
        )
        .route("/konsol/att-bekrafta", get(confirm::to_confirm))
        .route("/konsol/kris/{id}", get(board::board))
        .route("/konsol/kris/{id}/tavla", get(board::fragment))
        .route("/konsol/kris/{id}/live", get(board::live))
        .route("/konsol/kris/{id}/bekrafta", post(confirm::confirm))
        .route(
            "/konsol/kris/{id}/uppdatera",
            get(update::form).post(update::update),
        )
        .route(
            "/konsol/kris/{id}/steg/{step}",
            get(board::step_page).post(board::step),
        )
        .route("/konsol/mallar", get(editor::list))
        .route(
            "/konsol/mallar/{id}/ny",
            get(editor::form).post(editor::draft),
        )
        .route(
            "/konsol/mallar/{id}/{version}",
            get(editor::show).post(editor::submit),
        )
        .route("/konsol/godkann", get(approval::queue))
        .route(
            "/konsol/godkann/{id}/{version}",
            get(approval::show).post(approval::decide),
        )
        .route("/konsol/revision", get(audit::log))
        .route("/konsol/revision/verifiera", post(audit::verify))
        .route("/konsol/revision/sok-mottagare", post(audit::lookup))
        .route("/konsol/revision/export", get(audit::export))
        .route("/konsol/revision/logg.csv", get(audit::csv))
        .route("/konsol/revision/rapport/{id}", get(audit::report))
        .route("/konsol/admin", get(admin::overview))
        .route("/konsol/admin/mottagare", post(admin::create))
        .route(
            "/konsol/admin/mottagare/{id}/medlemmar",
            post(admin::import).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/konsol/assets/{name}", get(assets::serve))
}

/// A rendered page with the console's security headers.
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (
            status,
            [
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ),
            ],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a console page");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Något gick fel",
                "Sidan kunde inte visas. Felet är loggat; försök igen om en stund.",
            )
        }
    }
}

/// A page that only says something: an error, or that something is not allowed.
fn message(status: StatusCode, who: Option<&SignedIn>, heading: &str, text: &str) -> Response {
    let template = pages::Message {
        layout: Layout::of(who),
        heading,
        text,
    };
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, heading.to_owned()).into_response(),
    }
}

/// The answer when the signed-in person lacks the role a page needs.
fn not_allowed(who: &SignedIn, what: &str) -> Response {
    message(
        StatusCode::FORBIDDEN,
        Some(who),
        "Du har inte behörighet",
        &format!("{what} Be en administratör om behörigheten om du behöver den."),
    )
}

/// The answer when a service could not be reached or refused unexpectedly.
fn unavailable(who: &SignedIn, error: &crate::problem::ApiError) -> Response {
    let status =
        StatusCode::from_u16(error.problem.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    message(
        status,
        Some(who),
        "Det gick inte just nu",
        &format!(
            "krisbud svarade: {}. Försök igen om en stund.",
            error.problem.detail
        ),
    )
}

/// The answer to a form whose CSRF token is missing or not the session's.
fn expired_form(who: &SignedIn) -> Response {
    message(
        StatusCode::FORBIDDEN,
        Some(who),
        "Formuläret har gått ut",
        "Gå tillbaka, ladda om sidan och försök igen.",
    )
}

/// Whether the form's CSRF token is the session's.
fn csrf_ok(who: &SignedIn, form: &[(String, String)]) -> bool {
    pages::value(form, "_csrf").is_some_and(|t| same_token(t, &who.session.csrf))
}

/// Whether the request came through a TLS-terminating proxy, so cookies are
/// marked Secure.
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// `GET /konsol/logga-in`
async fn sign_in_page(State(app): State<AppState>, jar: CookieJar) -> Response {
    let app_oidc = app.oidc.is_some();
    let token = random_token();
    let jar = jar.add(session::cookie_named(
        session::PRE_COOKIE,
        token.clone(),
        false,
    ));
    let template = pages::SignIn {
        layout: Layout::anonymous(token),
        oidc: app_oidc,
        failed: false,
        expired: false,
        name: String::new(),
        next: String::new(),
        keep: Vec::new(),
    };
    (jar, page(StatusCode::OK, &template)).into_response()
}

/// The sign-in page for a declaration posted after the session ended: the
/// fields typed ride along, and signing in again brings the form back filled in.
fn sign_in_keeping(
    app: &AppState,
    jar: CookieJar,
    next: String,
    form: &[(String, String)],
) -> Response {
    let app_oidc = app.oidc.is_some();
    let token = random_token();
    let jar = jar.add(session::cookie_named(
        session::PRE_COOKIE,
        token.clone(),
        false,
    ));
    let keep = form
        .iter()
        .filter(|(k, _)| k != "_csrf" && k != "action")
        .map(|(k, v)| (format!("keep:{k}"), v.clone()))
        .collect();
    let template = pages::SignIn {
        layout: Layout::anonymous(token),
        oidc: app_oidc,
        failed: false,
        expired: true,
        name: String::new(),
        next,
        keep,
    };
    (jar, page(StatusCode::UNAUTHORIZED, &template)).into_response()
}

/// `POST /konsol/logga-in`
async fn sign_in(
    State(app): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    body: axum::body::Bytes,
) -> Response {
    let form = pages::parse_form(&body);
    let app_oidc = app.oidc.is_some();
    // Login CSRF: the form's token must match the cookie the form page set.
    let pre = jar.get(session::PRE_COOKIE).map(|c| c.value().to_owned());
    let fresh = random_token();
    let next = pages::value(&form, "next")
        .filter(|n| n.starts_with("/konsol/ny-kris/"))
        .unwrap_or_default()
        .to_owned();
    let keep: Vec<(String, String)> = form
        .iter()
        .filter(|(k, _)| k.starts_with("keep:"))
        .cloned()
        .collect();
    let retry = |name: String| {
        let template = pages::SignIn {
            layout: Layout::anonymous(fresh.clone()),
            oidc: app_oidc,
            failed: true,
            expired: !keep.is_empty(),
            name,
            next: next.clone(),
            keep: keep.clone(),
        };
        let jar = jar.clone().add(session::cookie_named(
            session::PRE_COOKIE,
            fresh.clone(),
            false,
        ));
        (jar, page(StatusCode::UNAUTHORIZED, &template)).into_response()
    };
    let name = pages::value(&form, "user").unwrap_or_default().to_owned();
    let token_ok = match (pre.as_deref(), pages::value(&form, "_csrf")) {
        (Some(a), Some(b)) => same_token(a, b),
        _ => false,
    };
    if !token_ok {
        return retry(name);
    }
    let secret = pages::value(&form, "password").unwrap_or_default();
    let Some(id) = app.sessions.sign_in(&app, &name, secret) else {
        tracing::info!("console sign-in refused");
        let tried = Actor {
            user: session::tried_name(&name),
            roles: Vec::new(),
            channels: Vec::new(),
        };
        session::record(
            &app,
            tried,
            ConsoleSession {
                change: SessionChange::SignInRefused,
                method: SignInMethod::Password,
                idp_subject: None,
                roles: Vec::new(),
                reason: Some("the name and password do not belong together".into()),
            },
        )
        .await;
        return retry(name);
    };
    if let Some(signed) = app.sessions.get(&id) {
        session::record(
            &app,
            signed.actor.clone(),
            ConsoleSession {
                change: SessionChange::SignedIn,
                method: SignInMethod::Password,
                idp_subject: None,
                roles: signed.actor.roles.clone(),
                reason: None,
            },
        )
        .await;
    }
    let secure = behind_tls(&headers);
    let jar = jar
        .remove(session::cookie_named(
            session::PRE_COOKIE,
            String::new(),
            false,
        ))
        .add(session::cookie(id.clone(), secure));
    // Back to the declaration that was cut off, filled in as it was.
    if let (Some(template_id), Some(session)) =
        (next.strip_prefix("/konsol/ny-kris/"), app.sessions.get(&id))
        && !keep.is_empty()
    {
        let who = SignedIn { session, id };
        let kept: Vec<(String, String)> = keep
            .iter()
            .map(|(k, v)| (k.trim_start_matches("keep:").to_owned(), v.clone()))
            .collect();
        let response = match form_context(&app, &who, template_id).await {
            Ok((template, audiences)) => {
                let form = DeclareForm::read(&template, &kept);
                page(
                    StatusCode::OK,
                    &form.page(&who, &template, &audiences, Vec::new()),
                )
            }
            Err(response) => response,
        };
        return (jar, response).into_response();
    }
    (jar, Redirect::to("/konsol")).into_response()
}

/// `POST /konsol/logga-ut`
async fn sign_out(
    State(app): State<AppState>,
    jar: CookieJar,
    Posted { who, form: _ }: Posted,
) -> Response {
    app.sessions.sign_out(&who.id);
    let method = if who.session.id_token.is_some() {
        SignInMethod::Oidc
    } else {
        SignInMethod::Password
    };
    session::record(
        &app,
        who.session.actor.clone(),
        ConsoleSession {
            change: SessionChange::SignedOut,
            method,
            idp_subject: None,
            roles: who.session.actor.roles.clone(),
            reason: None,
        },
    )
    .await;
    let jar = jar.remove(session::cookie(String::new(), false));
    let next = oidc::after_sign_out(&app, &who.session).await;
    (jar, Redirect::to(&next)).into_response()
}

/// `GET /konsol`: the crises the person may follow.
async fn home(State(app): State<AppState>, who: SignedIn) -> Response {
    let readers = [
        Role::DutyOfficer,
        Role::Operator,
        Role::Auditor,
        Role::Admin,
    ];
    let crises: Vec<CrisisStatus> = if readers.iter().any(|r| who.session.has(*r)) {
        match app
            .command(
                subject::cmd::LIST_CRISES,
                who.session.actor.clone(),
                None,
                ListCrises {},
            )
            .await
        {
            Ok(c) => c,
            Err(e) => return unavailable(&who, &e),
        }
    } else {
        Vec::new()
    };
    let template = pages::Home {
        layout: Layout::of(Some(&who)),
        crises: crises.iter().map(pages::CrisisCard::of).collect(),
    };
    page(StatusCode::OK, &template)
}

/// The approved templates a duty officer may declare with.
async fn approved(app: &AppState, who: &SignedIn) -> Result<Vec<TemplateSummary>, Response> {
    let all: Vec<TemplateSummary> = app
        .command(
            subject::cmd::LIST_TEMPLATES,
            who.session.actor.clone(),
            None,
            ListTemplates { all: false },
        )
        .await
        .map_err(|e| unavailable(who, &e))?;
    Ok(all
        .into_iter()
        .filter(|t| t.state == TemplateState::Approved)
        .collect())
}

/// `GET /konsol/ny-kris`: step 1, choose an approved template.
async fn choose_template(State(app): State<AppState>, who: SignedIn) -> Response {
    if !who.session.has(Role::DutyOfficer) {
        return not_allowed(&who, "Bara tjänsteman i beredskap kan utlysa en kris.");
    }
    let templates = match approved(&app, &who).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let template = pages::Templates {
        layout: Layout::of(Some(&who)),
        templates: templates.iter().map(pages::TemplateCard::of).collect(),
    };
    page(StatusCode::OK, &template)
}

/// Loads what the declaration form of `template_id` shows.
async fn form_context(
    app: &AppState,
    who: &SignedIn,
    template_id: &str,
) -> Result<(TemplateSummary, Vec<krisbud_proto::audience::Audience>), Response> {
    if !who.session.has(Role::DutyOfficer) {
        return Err(not_allowed(
            who,
            "Bara tjänsteman i beredskap kan utlysa en kris.",
        ));
    }
    let template = approved(app, who)
        .await?
        .into_iter()
        .find(|t| t.id == template_id)
        .ok_or_else(|| {
            message(
                StatusCode::NOT_FOUND,
                Some(who),
                "Mallen finns inte",
                "Det finns ingen godkänd mall med det namnet. Välj en mall i listan.",
            )
        })?;
    let audiences = app
        .command(
            subject::cmd::LIST_AUDIENCES,
            who.session.actor.clone(),
            None,
            (),
        )
        .await
        .map_err(|e| unavailable(who, &e))?;
    Ok((template, audiences))
}

/// `GET /konsol/ny-kris/{template}`: step 2, fill in and choose.
async fn declare_form(
    State(app): State<AppState>,
    who: SignedIn,
    Path(template_id): Path<String>,
) -> Response {
    let (template, audiences) = match form_context(&app, &who, &template_id).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let form = DeclareForm::blank(&template);
    page(
        StatusCode::OK,
        &form.page(&who, &template, &audiences, Vec::new()),
    )
}

/// `POST /konsol/ny-kris/{template}`: `action=preview` shows every channel in
/// every language with the summary; `action=declare` sends, once per form (the
/// form's idempotency key); `action=edit` goes back to the form as filled in.
async fn declare(
    State(app): State<AppState>,
    jar: CookieJar,
    Path(template_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let raw = pages::parse_form(&body);
    // A session that ended while the form was being filled in keeps the form.
    let Some(who) = session::signed_in(&app, &jar) else {
        return sign_in_keeping(&app, jar, format!("/konsol/ny-kris/{template_id}"), &raw);
    };
    if !csrf_ok(&who, &raw) {
        return message(
            StatusCode::FORBIDDEN,
            Some(&who),
            "Formuläret har gått ut",
            "Gå tillbaka, ladda om sidan och försök igen. Det du skrev finns kvar i webbläsarens historik.",
        );
    }
    let (template, audiences) = match form_context(&app, &who, &template_id).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let form = DeclareForm::read(&template, &raw);
    let errors = form.check(&template, &audiences);
    let action = pages::value(&raw, "action").unwrap_or("preview");
    if !errors.is_empty() || action == "edit" {
        let status = if errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return page(status, &form.page(&who, &template, &audiences, errors));
    }
    let declaration = form.declaration(&template);
    if action == "declare" {
        let declared: Result<Declared, _> = app
            .command(
                subject::cmd::DECLARE,
                who.session.actor.clone(),
                Some(form.idempotency.clone()),
                declaration,
            )
            .await;
        return match declared {
            Ok(d) => Redirect::to(&format!("/konsol/kris/{}", d.crisis_id)).into_response(),
            Err(e) if e.problem.status < 500 => page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &form.page(
                    &who,
                    &template,
                    &audiences,
                    vec![pages::FieldError::from(&e)],
                ),
            ),
            Err(e) => unavailable(&who, &e),
        };
    }
    let preview: TemplatePreview = match app
        .command(
            subject::cmd::PREVIEW_TEMPLATE,
            who.session.actor.clone(),
            None,
            krisbud_proto::command::PreviewTemplate {
                template: template.id.clone(),
                version: template.version,
                variables: declaration.variables.clone(),
                status: declaration.status,
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) if e.problem.status < 500 => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &form.page(
                    &who,
                    &template,
                    &audiences,
                    vec![pages::FieldError::from(&e)],
                ),
            );
        }
        Err(e) => return unavailable(&who, &e),
    };
    page(
        StatusCode::OK,
        &pages::Preview::of(&who, &template, &form, &audiences, &preview),
    )
}

/// The mode's name as the console shows it.
fn mode_name(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Actual => "Skarpt",
        AlertStatus::Exercise => "Övning",
        AlertStatus::Test => "Test",
    }
}

/// The channel's name as the console shows it.
fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "SMS",
        Channel::Email => "E-post",
        Channel::Banner => "Webbanner",
        Channel::Intranet => "Intranät",
    }
}
