//! Console sessions: a random id in an HttpOnly, SameSite=Lax cookie (Secure
//! behind TLS) names who signed in, until they sign out or it expires; every form
//! POST carries the session's CSRF token.
//!
//! Sign-in checks a user name and that user's secret: the same secret as their
//! API token (for `krisbud up --demo`, the printed demo credentials), looked up by
//! hash as the bearer check does. A sign-in by OpenID Connect (`oidc.rs`) creates
//! the same session from the identity provider's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use krisbud_proto::audit::ConsoleSession;
use krisbud_proto::{Actor, Role, subject};
use sha2::{Digest, Sha256};

use crate::config::hash_token;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "krisbud_session";
/// A session ends this long after sign-in, whatever happens.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions are kept; the oldest go first.
const MOST_SESSIONS: usize = 10_000;

/// One signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub actor: Actor,
    /// The token every form POST of this session carries.
    pub csrf: String,
    /// The identity provider's ID token of an OIDC sign-in, the hint for
    /// signing out there too.
    pub id_token: Option<String>,
    ends: Instant,
}

impl Session {
    /// Whether the signed-in person holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.actor.roles.contains(&role)
    }
}

/// The sessions of this gateway instance.
#[derive(Clone, Default)]
pub struct Sessions {
    by_id_hash: Arc<Mutex<HashMap<[u8; 32], Session>>>,
}

impl Sessions {
    /// Signs `name` in with `secret`: the session id for the cookie, or `None`
    /// when the name and secret do not belong together.
    pub fn sign_in(&self, app: &AppState, name: &str, secret: &str) -> Option<String> {
        let user = app.users.get(&hash_token(secret.trim()))?;
        if !user.name.eq_ignore_ascii_case(name.trim()) {
            return None;
        }
        let actor = Actor {
            user: user.name.clone(),
            roles: user.roles.clone(),
            channels: user.channels.clone(),
        };
        Some(self.start(actor, None))
    }

    /// Starts a session for `actor` (signed in by password or by the identity
    /// provider, whose ID token is kept for signing out there): its cookie value.
    pub fn start(&self, actor: Actor, id_token: Option<String>) -> String {
        let id = random_token();
        let session = Session {
            actor,
            csrf: random_token(),
            id_token,
            ends: Instant::now() + LIFETIME,
        };
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.ends > now);
        if sessions.len() >= MOST_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.ends).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id_hash(&id), session);
        id
    }

    /// The live session with cookie value `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let sessions = self.lock();
        sessions
            .get(&id_hash(id))
            .filter(|s| s.ends > Instant::now())
            .cloned()
    }

    /// Ends the session with cookie value `id`.
    pub fn sign_out(&self, id: &str) {
        self.lock().remove(&id_hash(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_id_hash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records a sign-in, sign-out or refused sign-in in the audit chain, through
/// the audit service. The person is not held up when it cannot be recorded: the
/// failure is logged as an error (a refused sign-in past the audit service's rate
/// limit as a warning).
pub async fn record(app: &AppState, actor: Actor, session: ConsoleSession) {
    let change = session.change;
    let answer: Result<(), crate::problem::ApiError> = app
        .command(subject::cmd::AUDIT_SESSION, actor, None, session)
        .await;
    match answer {
        Ok(()) => {}
        Err(e) if e.problem.status == 429 => {
            tracing::warn!(
                ?change,
                "console session not recorded: {}",
                e.problem.detail
            );
        }
        Err(e) => {
            tracing::error!(
                ?change,
                "console session not recorded: {}",
                e.problem.detail
            );
        }
    }
}

/// The name a refused sign-in was tried with, as recorded: trimmed, without
/// control characters, at most 64 characters.
pub fn tried_name(name: &str) -> String {
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if name.is_empty() {
        "-".to_owned()
    } else {
        name
    }
}

/// Sessions are kept by the hash of their id, so a memory dump does not hand out
/// live cookies.
fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The cookie the sign-in form's CSRF token is checked against.
pub const PRE_COOKIE: &str = "krisbud_signin";

/// The session cookie for `id`.
pub fn cookie(id: String, secure: bool) -> Cookie<'static> {
    cookie_named(COOKIE, id, secure)
}

/// A console cookie: HttpOnly, SameSite=Lax, for `/konsol` only.
pub fn cookie_named(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/konsol")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .build()
}

/// The signed-in person of a console page; anyone else is sent to sign in.
pub struct SignedIn {
    pub session: Session,
    /// The cookie value, to end the session.
    pub id: String,
}

/// Why a page needs sign-in: the redirect to the sign-in page.
pub struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to("/konsol/logga-in").into_response()
    }
}

/// The signed-in person of the session cookie in `jar`, if it is live.
pub fn signed_in(app: &AppState, jar: &CookieJar) -> Option<SignedIn> {
    let id = jar.get(COOKIE).map(|c| c.value().to_owned())?;
    let session = app.sessions.get(&id)?;
    Some(SignedIn { session, id })
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = SignInFirst;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, SignInFirst> {
        signed_in(app, &CookieJar::from_headers(&parts.headers)).ok_or(SignInFirst)
    }
}

/// A form POST of the signed-in person whose CSRF token is the session's: the
/// person and the form's fields. Anyone else is sent to sign in; a form without
/// the session's token is refused with a page that says it has expired.
pub struct Posted {
    pub who: SignedIn,
    pub form: Vec<(String, String)>,
}

impl axum::extract::FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, app: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let who = SignedIn::from_request_parts(&mut parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let req = axum::extract::Request::from_parts(parts, body);
        let body = axum::body::Bytes::from_request(req, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let form = super::pages::parse_form(&body);
        if !super::csrf_ok(&who, &form) {
            return Err(super::expired_form(&who));
        }
        Ok(Posted { who, form })
    }
}
