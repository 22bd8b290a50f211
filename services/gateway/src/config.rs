//! The `[gateway]` configuration section: where to listen, how large a body may be,
//! and who may call the API.

use std::collections::HashMap;

use krisbud_proto::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `[gateway]`: the HTTP API's listener, body limit and users.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8080`); port 0 picks a free port.
    pub listen: String,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Largest audience CSV accepted by `PUT /audiences/{id}/members`, in bytes
    /// (256 MiB holds several million rows).
    pub members_limit_bytes: usize,
    /// Live streams (API event streams and console boards together) one user may
    /// hold open; one more gets 429.
    pub streams_per_user: usize,
    /// The people and programs allowed to call the API.
    pub users: Vec<User>,
    /// Console sign-in through the city's identity provider (OpenID Connect);
    /// without it the console signs in with the configured users' tokens only.
    pub oidc: Option<OidcConfig>,
}

/// `[gateway.oidc]`: the identity provider the console signs people in with,
/// and which of its groups give which krisbud roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer (`https://login.stad.example/realms/krisbud`); its
    /// `/.well-known/openid-configuration` is read at the first sign-in.
    pub issuer_url: String,
    /// krisbud's client id at the provider.
    pub client_id: String,
    /// The client secret, for a confidential client (PKCE is used either way).
    #[serde(default)]
    pub client_secret: Option<krisbud_kit::Secret>,
    /// Where the provider sends the browser back: this gateway's public
    /// `/konsol/oidc/tillbaka` (`https://krisbud.stad.example/konsol/oidc/tillbaka`).
    pub redirect_url: String,
    /// Where the provider sends the browser after signing out there; the
    /// console's sign-in page when left out.
    #[serde(default)]
    pub post_logout_url: Option<String>,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID-token claim holding the person's groups (`groups`, or `roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// The ID-token claim whose value is recorded as the actor; the subject
    /// (`sub`) when the token lacks it.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Provider group → krisbud roles. A person with no mapped group gets no role
    /// and can do nothing.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<Role>>,
    /// Provider group → the channels its operators confirm. When any is given, an
    /// operator confirms only the channels of their groups; when none is, every
    /// channel.
    #[serde(default)]
    pub channels: std::collections::BTreeMap<String, Vec<krisbud_proto::Channel>>,
}

fn default_scopes() -> Vec<String> {
    vec!["profile".into(), "email".into()]
}

fn default_roles_claim() -> String {
    "groups".into()
}

fn default_user_claim() -> String {
    "preferred_username".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 64 * 1024,
            members_limit_bytes: 256 * 1024 * 1024,
            streams_per_user: 20,
            users: Vec::new(),
            oidc: None,
        }
    }
}

/// A user of the API: a name, roles, and the SHA-256 of their bearer token.
///
/// Only the hash is configured, so a leaked configuration file does not leak tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The name recorded as the actor of everything the user does.
    pub name: String,
    /// What the user may do.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// For an operator, the channels they confirm; every channel when left out.
    #[serde(default)]
    pub channels: Vec<krisbud_proto::Channel>,
    /// Lowercase hex SHA-256 of the bearer token (64 digits).
    pub token_sha256: String,
}

impl User {
    /// A user whose token is `token`; only its hash is kept.
    pub fn with_token(name: impl Into<String>, roles: Vec<Role>, token: &str) -> User {
        User {
            name: name.into(),
            roles,
            channels: Vec::new(),
            token_sha256: token_sha256(token),
        }
    }
}

// The hash is not the token, but a weak token can be guessed from it, so it stays
// out of logs like a secret.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("token_sha256", &"***")
            .finish()
    }
}

/// The lowercase hex SHA-256 of a bearer token, as `token_sha256` expects it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The raw SHA-256 of a bearer token: the key users are looked up by.
pub(crate) type TokenHash = [u8; 32];

/// Hashes a presented token for lookup.
pub(crate) fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Checks the configured users and indexes them by token hash; an error names the
/// user whose entry is wrong.
pub(crate) fn index_users(users: &[User]) -> anyhow::Result<HashMap<TokenHash, User>> {
    let mut by_hash: HashMap<TokenHash, User> = HashMap::with_capacity(users.len());
    for user in users {
        if user.name.trim().is_empty() {
            anyhow::bail!("gateway.users: a user has an empty name");
        }
        let digits = user.token_sha256.trim();
        let hash: TokenHash = hex::decode(digits)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "gateway.users: user `{}` has a bad token_sha256: expected 64 hex digits \
                     (the SHA-256 of the token), got {} characters",
                    user.name,
                    digits.chars().count()
                )
            })?;
        if let Some(other) = by_hash.get(&hash) {
            anyhow::bail!(
                "gateway.users: users `{}` and `{}` have the same token",
                other.name,
                user.name
            );
        }
        by_hash.insert(hash, user.clone());
    }
    Ok(by_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_section() {
        let config = Config::default();
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.body_limit_bytes, 65536);
        assert!(config.users.is_empty());
    }

    #[test]
    fn the_section_reads_from_toml() {
        let config: Config = toml::from_str(
            r#"
            listen = "0.0.0.0:9000"
            [[users]]
            name = "tib"
            roles = ["duty_officer"]
            token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.body_limit_bytes, 65536);
        assert_eq!(config.users[0].roles, vec![Role::DutyOfficer]);
        let index = index_users(&config.users).unwrap();
        assert_eq!(index[&hash_token("test")].name, "tib");
    }

    #[test]
    fn a_bad_hash_names_the_user() {
        let users = vec![User {
            name: "anna".into(),
            roles: vec![Role::Auditor],
            channels: Vec::new(),
            token_sha256: "abc123".into(),
        }];
        let err = index_users(&users).unwrap_err().to_string();
        assert!(
            err.contains("`anna`") && err.contains("64 hex digits"),
            "{err}"
        );
        let users = vec![User {
            token_sha256: "z".repeat(64),
            ..users[0].clone()
        }];
        let err = index_users(&users).unwrap_err().to_string();
        assert!(err.contains("`anna`"), "{err}");
    }

    #[test]
    fn a_shared_token_names_both_users() {
        let users = vec![
            User::with_token("anna", vec![], "same"),
            User::with_token("bo", vec![], "same"),
        ];
        let err = index_users(&users).unwrap_err().to_string();
        assert!(err.contains("`anna`") && err.contains("`bo`"), "{err}");
    }

    #[test]
    fn debug_hides_the_hash() {
        let user = User::with_token("anna", vec![], "secret");
        assert!(!format!("{user:?}").contains(&user.token_sha256));
    }
}
