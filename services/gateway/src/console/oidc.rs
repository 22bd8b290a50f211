//! Console sign-in through the city's identity provider, by OpenID Connect:
//! discovery from the issuer URL (at the first sign-in, again after a failure, so
//! a provider that is down at start does not stop the gateway), authorization
//! code flow with PKCE (S256), `state` and `nonce`, and the ID token checked by
//! the `openidconnect` crate (signature against the provider's JWKS, `iss`, `aud`,
//! `exp`, nonce). The person's roles come from a configured claim through the
//! `[gateway.oidc.roles]` table; deny by default.
//!
//! A pending sign-in lives here, keyed by its `state`, for ten minutes, and is
//! taken once: a replayed `state` finds nothing. The browser that started it
//! carries the same `state` in a cookie, so a callback planted in another browser
//! (login CSRF) is refused.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use krisbud_proto::audit::{ConsoleSession, SessionChange, SignInMethod};
use krisbud_proto::{Actor, Role};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    TokenResponse as _,
};

use super::session;
use crate::config::OidcConfig;
use crate::state::AppState;

/// The cookie holding a pending sign-in's `state` in the browser that began it.
const STATE_COOKIE: &str = "krisbud_oidc";
/// How long a sign-in at the provider may take.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// At most this many sign-ins are pending; the oldest go first.
const MOST_PENDING: usize = 10_000;
/// Accepted difference between the provider's clock and ours.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What discovery found: the client and where signing out happens.
struct Provider {
    client: Client,
    end_session: Option<EndSessionUrl>,
}

/// A sign-in sent to the provider and not yet back.
struct Pending {
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    since: Instant,
}

/// The identity provider of this gateway.
pub struct Oidc {
    config: OidcConfig,
    http: openidconnect::reqwest::Client,
    provider: tokio::sync::Mutex<Option<std::sync::Arc<Provider>>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Why a sign-in did not succeed; the page says it in Swedish, the log in English.
#[derive(Debug)]
enum Refused {
    /// The provider could not be reached or answered nonsense.
    Unavailable(String),
    /// The callback does not belong to a sign-in begun in this browser.
    UnknownState,
    /// The provider said no (the person cancelled, or an error).
    Provider(String),
    /// The code or the ID token did not pass the checks.
    Invalid(String),
    /// Signed in, but no configured group gives a role: the name and the subject.
    NoRole(String, String),
}

impl Oidc {
    /// The provider of `config`; nothing is fetched until the first sign-in.
    pub fn new(config: OidcConfig) -> anyhow::Result<Oidc> {
        IssuerUrl::new(config.issuer_url.clone())
            .map_err(|e| anyhow::anyhow!("gateway.oidc.issuer_url: {e}"))?;
        RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| anyhow::anyhow!("gateway.oidc.redirect_url: {e}"))?;
        anyhow::ensure!(
            !config.roles.is_empty(),
            "gateway.oidc.roles: map at least one group of the provider to krisbud roles"
        );
        let http = openidconnect::reqwest::ClientBuilder::new()
            // The token endpoint must answer itself, not send us elsewhere (SSRF).
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Oidc {
            config,
            http,
            provider: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The discovered provider, discovering it when not yet done.
    async fn provider(&self) -> Result<std::sync::Arc<Provider>, Refused> {
        let mut slot = self.provider.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer_url.clone())
            .map_err(|e| Refused::Unavailable(e.to_string()))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| Refused::Unavailable(format!("discovery: {e}")))?;
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let redirect = RedirectUrl::new(self.config.redirect_url.clone())
            .map_err(|e| Refused::Unavailable(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(redirect);
        let provider = std::sync::Arc::new(Provider {
            client,
            end_session,
        });
        *slot = Some(provider.clone());
        Ok(provider)
    }

    /// Forgets the discovered provider, so the next sign-in reads it again (new
    /// signing keys, a moved endpoint).
    async fn forget_provider(&self) {
        *self.provider.lock().await = None;
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Begins a sign-in: where to send the browser, and its `state`.
    async fn begin(&self) -> Result<(String, String), Refused> {
        let provider = self.provider().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let mut pending = self.pending();
        let now = Instant::now();
        pending.retain(|_, p| now.duration_since(p.since) < PENDING_FOR);
        if pending.len() >= MOST_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                nonce,
                verifier,
                since: now,
            },
        );
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finishes a sign-in: the signed-in actor, the provider's subject and the
    /// raw ID token.
    async fn finish(
        &self,
        callback: &Callback,
        browser_state: Option<&str>,
    ) -> Result<(Actor, String, String), Refused> {
        let state = callback.state.as_deref().unwrap_or_default();
        // Taken out whatever happens next: a state is good for one try.
        let pending = self.pending().remove(state);
        if browser_state.is_none_or(|b| !session::same_token(b, state)) {
            return Err(Refused::UnknownState);
        }
        let Some(pending) = pending.filter(|p| p.since.elapsed() < PENDING_FOR) else {
            return Err(Refused::UnknownState);
        };
        if let Some(error) = &callback.error {
            return Err(Refused::Provider(error.clone()));
        }
        let code = callback
            .code
            .clone()
            .ok_or_else(|| Refused::Invalid("the callback has no code".into()))?;
        let provider = self.provider().await?;
        let exchange = provider
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| Refused::Unavailable(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await;
        let tokens = match exchange {
            Ok(tokens) => tokens,
            Err(e) => {
                self.forget_provider().await;
                return Err(Refused::Invalid(format!("code exchange: {e}")));
            }
        };
        let id_token = tokens
            .id_token()
            .ok_or_else(|| Refused::Invalid("the answer has no ID token".into()))?;
        let now = chrono::Utc::now();
        let verifier = provider
            .client
            .id_token_verifier()
            .set_time_fn(move || now - CLOCK_SKEW);
        let claims = match id_token.claims(&verifier, &pending.nonce) {
            Ok(claims) => claims,
            Err(e) => {
                // Perhaps the keys rotated: read them again for the next try.
                self.forget_provider().await;
                return Err(Refused::Invalid(format!("ID token: {e}")));
            }
        };
        if claims.issue_time() > now + CLOCK_SKEW {
            return Err(Refused::Invalid(
                "the ID token is issued in the future".into(),
            ));
        }
        // The claims beyond the standard ones, read from the token whose signature
        // and claims were just verified.
        let raw = id_token.to_string();
        let extra = payload(&raw).ok_or_else(|| Refused::Invalid("unreadable payload".into()))?;
        let subject = claims.subject().as_str().to_owned();
        let user = extra
            .get(&self.config.user_claim)
            .and_then(|v| v.as_str())
            .filter(|u| !u.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("oidc:{subject}"));
        let roles = self.roles(&extra);
        if roles.is_empty() {
            return Err(Refused::NoRole(user, subject));
        }
        let channels = self.channels(&extra);
        let mut roles = roles;
        if channels.is_none() {
            // Assigned no channel to confirm: not an operator at all.
            roles.retain(|r| *r != Role::Operator);
            if roles.is_empty() {
                return Err(Refused::NoRole(user, subject));
            }
        }
        Ok((
            Actor {
                user,
                roles,
                channels: channels.unwrap_or_default(),
            },
            subject,
            raw,
        ))
    }

    /// The person's groups, from the configured claim.
    fn groups<'a>(&self, claims: &'a serde_json::Value) -> Vec<&'a str> {
        match claims.get(&self.config.roles_claim) {
            Some(serde_json::Value::Array(list)) => {
                list.iter().filter_map(|g| g.as_str()).collect()
            }
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        }
    }

    /// The channels the person's groups assign them to confirm: every channel
    /// (`Some` of none) when no group is mapped to channels at all, `None` when
    /// groups are and none of this person's is.
    fn channels(&self, claims: &serde_json::Value) -> Option<Vec<krisbud_proto::Channel>> {
        if self.config.channels.is_empty() {
            return Some(Vec::new());
        }
        let mut channels: Vec<krisbud_proto::Channel> = self
            .groups(claims)
            .iter()
            .filter_map(|g| self.config.channels.get(*g))
            .flatten()
            .copied()
            .collect();
        channels.sort_by_key(|c| c.as_str());
        channels.dedup();
        (!channels.is_empty()).then_some(channels)
    }

    /// The krisbud roles the person's groups give, in the order roles are listed.
    fn roles(&self, claims: &serde_json::Value) -> Vec<Role> {
        let groups = self.groups(claims);
        let mut roles: Vec<Role> = groups
            .iter()
            .filter_map(|g| self.config.roles.get(*g))
            .flatten()
            .copied()
            .collect();
        roles.sort_by_key(|r| r.as_str());
        roles.dedup();
        roles
    }

    /// Where to send the browser to sign out at the provider too, if it says.
    async fn sign_out_url(&self, id_token: &str) -> Option<String> {
        let provider = self.provider().await.ok()?;
        let end_session = provider.end_session.clone()?;
        let mut request = LogoutRequest::from(end_session)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        let back = self
            .config
            .post_logout_url
            .clone()
            .or_else(|| {
                self.config
                    .redirect_url
                    .rsplit_once("/konsol/")
                    .map(|(base, _)| format!("{base}/konsol/logga-in"))
            })
            .and_then(|u| PostLogoutRedirectUrl::new(u).ok());
        if let Some(back) = back {
            request = request.set_post_logout_redirect_uri(back);
        }
        let hint: openidconnect::core::CoreIdToken = id_token.parse().ok()?;
        Some(request.set_id_token_hint(&hint).http_get_url().to_string())
    }
}

/// The JSON payload of a compact JWS.
fn payload(jwt: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The query the provider sends the browser back with.
#[derive(Debug, serde::Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /konsol/logga-in/oidc`: to the provider.
pub async fn begin(State(app): State<AppState>, headers: HeaderMap, jar: CookieJar) -> Response {
    let Some(oidc) = app.oidc.clone() else {
        return Redirect::to("/konsol/logga-in").into_response();
    };
    match oidc.begin().await {
        Ok((url, state)) => {
            let jar = jar.add(session::cookie_named(
                STATE_COOKIE,
                state,
                super::behind_tls(&headers),
            ));
            (jar, Redirect::to(&url)).into_response()
        }
        Err(refused) => refusal(&refused),
    }
}

/// `GET /konsol/oidc/tillbaka`: back from the provider.
pub async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(query): Query<Callback>,
) -> Response {
    let Some(oidc) = app.oidc.clone() else {
        return Redirect::to("/konsol/logga-in").into_response();
    };
    let browser_state = jar.get(STATE_COOKIE).map(|c| c.value().to_owned());
    let jar = jar.remove(session::cookie_named(STATE_COOKIE, String::new(), false));
    match oidc.finish(&query, browser_state.as_deref()).await {
        Ok((actor, subject, id_token)) => {
            tracing::info!(
                user = %actor.user,
                roles = %crate::auth::role_list(&actor.roles),
                "console sign-in by the identity provider"
            );
            session::record(
                &app,
                actor.clone(),
                ConsoleSession {
                    change: SessionChange::SignedIn,
                    method: SignInMethod::Oidc,
                    idp_subject: Some(subject),
                    roles: actor.roles.clone(),
                    reason: None,
                },
            )
            .await;
            let id = app.sessions.start(actor, Some(id_token));
            let jar = jar.add(session::cookie(id, super::behind_tls(&headers)));
            (jar, Redirect::to("/konsol")).into_response()
        }
        Err(refused) => {
            if let Some((actor, session)) = refused.record() {
                session::record(&app, actor, session).await;
            }
            (jar, refusal(&refused)).into_response()
        }
    }
}

impl Refused {
    /// What the audit chain records of a refused sign-in: who, as far as known,
    /// and why. An unreachable provider refused nobody.
    fn record(&self) -> Option<(Actor, ConsoleSession)> {
        let (user, subject, reason) = match self {
            Refused::Unavailable(_) => return None,
            Refused::UnknownState => (None, None, "unknown, reused or foreign state"),
            Refused::Provider(_) => (None, None, "the identity provider did not sign in"),
            Refused::Invalid(_) => (None, None, "the provider's answer failed a check"),
            Refused::NoRole(user, subject) => (
                Some(user.as_str()),
                Some(subject.clone()),
                "no group of the person maps to a role",
            ),
        };
        Some((
            Actor {
                user: session::tried_name(user.unwrap_or("-")),
                roles: Vec::new(),
                channels: Vec::new(),
            },
            ConsoleSession {
                change: SessionChange::SignInRefused,
                method: SignInMethod::Oidc,
                idp_subject: subject,
                roles: Vec::new(),
                reason: Some(reason.to_owned()),
            },
        ))
    }
}

/// Where signing out of the console sends the browser: the provider's sign-out
/// for a session begun there, the sign-in page otherwise.
pub async fn after_sign_out(app: &AppState, session: &session::Session) -> String {
    match (&app.oidc, &session.id_token) {
        (Some(oidc), Some(id_token)) => oidc
            .sign_out_url(id_token)
            .await
            .unwrap_or_else(|| "/konsol/logga-in".to_owned()),
        _ => "/konsol/logga-in".to_owned(),
    }
}

/// The page for a sign-in that did not succeed.
fn refusal(refused: &Refused) -> Response {
    let (status, heading, text) = match refused {
        Refused::Unavailable(why) => {
            tracing::warn!(why, "the identity provider cannot be used");
            (
                StatusCode::BAD_GATEWAY,
                "Inloggningstjänsten svarar inte",
                "Stadens inloggning gick inte att nå. Försök igen om en stund, eller logga \
                 in med användarnamn och lösenord om du har det.",
            )
        }
        Refused::UnknownState => {
            tracing::info!("console sign-in refused: unknown or reused state");
            (
                StatusCode::BAD_REQUEST,
                "Inloggningen gick ut",
                "Inloggningen hör inte till den här webbläsaren, har redan använts eller tog \
                 för lång tid. Börja om från inloggningssidan.",
            )
        }
        Refused::Provider(error) => {
            tracing::info!(error, "console sign-in refused by the identity provider");
            (
                StatusCode::UNAUTHORIZED,
                "Inloggningen avbröts",
                "Inloggningstjänsten loggade inte in dig. Börja om från inloggningssidan.",
            )
        }
        Refused::Invalid(why) => {
            tracing::warn!(
                why,
                "console sign-in refused: the provider's answer failed a check"
            );
            (
                StatusCode::UNAUTHORIZED,
                "Inloggningen misslyckades",
                "Svaret från inloggningstjänsten gick inte att lita på, så du loggades inte in. \
                 Börja om från inloggningssidan; kontakta IT om det händer igen.",
            )
        }
        Refused::NoRole(user, _) => {
            tracing::info!(user, "console sign-in without a role");
            (
                StatusCode::FORBIDDEN,
                "Du har ingen roll i krisbud",
                "Du är inloggad hos staden, men ingen av dina grupper ger en roll i krisbud, så \
                 du kan inte göra något här. Be en administratör om en roll om du behöver en.",
            )
        }
    };
    super::message(status, None, heading, text)
}
