//! Configuration: typed structs loaded in layers (defaults, one TOML file, then
//! `KRISBUD_<SECTION>__<KEY>` environment variables). A bad configuration exits 64
//! with the offending key named.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Exit code for a bad configuration (`EX_CONFIG` is 78, but 64 `EX_USAGE` is the
/// contract of DESIGN.md).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// A configuration error that names the key.
#[derive(Debug, thiserror::Error)]
#[error("bad configuration: {0}")]
pub struct ConfigError(String);

/// Loads `T` from defaults, the optional TOML file and the environment.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    // Only `SECTION__KEY` variables are configuration; `KRISBUD_API` and
    // `KRISBUD_TOKEN` belong to the CLI client.
    figment = figment.merge(
        Env::prefixed("KRISBUD_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    figment.extract().map_err(|e| {
        let mut text = String::new();
        for err in e {
            if !text.is_empty() {
                text.push_str("; ");
            }
            let key = err.path.join(".");
            let source = err
                .metadata
                .as_ref()
                .map(|m| m.interpolate(&err.profile.clone().unwrap_or_default(), &err.path))
                .unwrap_or_default();
            if key.is_empty() {
                text.push_str(&err.kind.to_string());
            } else if source.is_empty() {
                text.push_str(&format!("key `{key}`: {}", err.kind));
            } else {
                text.push_str(&format!("key `{key}` ({source}): {}", err.kind));
            }
        }
        ConfigError(text)
    })
}

/// Loads `T`, or prints the error and exits with [`EXIT_BAD_CONFIG`].
pub fn load_or_exit<T: DeserializeOwned>(file: Option<&Path>) -> T {
    match load(file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("krisbud: {e}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    }
}

/// A secret value: never printed by `Debug`, only read where it is used.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[nats]`: where the NATS server is.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port`; empty means `krisbud up` starts a local server.
    pub url: String,
    /// Seconds a command request waits for its answer.
    pub request_timeout_secs: u64,
    /// The NATS user a standalone service connects as (its service name, see
    /// `krisbud_proto::access`).
    pub user: String,
    /// That user's password; `password_file` is read when this is empty.
    pub password: Secret,
    /// A file holding the password (a mounted secret).
    #[serde(deserialize_with = "empty_as_none")]
    pub password_file: Option<std::path::PathBuf>,
    /// A directory with one `<user>.password` file per user, for `krisbud up`
    /// against a NATS server of its own choosing: every service connects as its
    /// own user.
    #[serde(deserialize_with = "empty_as_none")]
    pub credentials_dir: Option<std::path::PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: String::new(),
            request_timeout_secs: 10,
            user: String::new(),
            password: Secret::default(),
            password_file: None,
            credentials_dir: None,
        }
    }
}

/// A NATS user and password.
#[derive(Clone)]
pub struct NatsCredentials {
    pub user: String,
    pub password: Secret,
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NatsCredentials({}, ***)", self.user)
    }
}

impl NatsConfig {
    /// The credentials `user` connects with: its file in `credentials_dir`, else
    /// `user` and `password` (or `password_file`) when they name that user.
    /// `None` means an anonymous connection (a server without authentication).
    pub fn credentials_for(&self, user: &str) -> Result<Option<NatsCredentials>, ConfigError> {
        if let Some(dir) = &self.credentials_dir {
            let path = dir.join(format!("{user}.password"));
            let password = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError(format!(
                    "key `nats.credentials_dir`: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            return Ok(Some(NatsCredentials {
                user: user.to_owned(),
                password: Secret::new(password.trim()),
            }));
        }
        self.own_credentials()
    }

    /// The credentials of `nats.user`, if one is configured.
    pub fn own_credentials(&self) -> Result<Option<NatsCredentials>, ConfigError> {
        if self.user.is_empty() {
            return Ok(None);
        }
        let password = if !self.password.is_empty() {
            self.password.clone()
        } else if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "key `nats.password_file`: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            Secret::new(text.trim())
        } else {
            return Err(ConfigError(format!(
                "key `nats.password`: user `{}` needs a password (or nats.password_file)",
                self.user
            )));
        };
        Ok(Some(NatsCredentials {
            user: self.user.clone(),
            password,
        }))
    }
}

/// `[commands]`: the Ed25519 key pair that proves a command came from the gateway.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// The gateway's public key (hex), with which every serving service checks
    /// the commands it receives.
    pub public_key: String,
    /// The gateway's private key (a file holding the 32-byte seed in hex).
    #[serde(deserialize_with = "empty_as_none")]
    pub signing_key_file: Option<std::path::PathBuf>,
}

/// `[telemetry]`: logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP endpoint (`http://localhost:4318`); traces are exported only when set.
    #[serde(deserialize_with = "empty_as_none")]
    pub otlp_endpoint: Option<String>,
    /// `tracing` filter, e.g. `info,krisbud_gateway=debug`.
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people at a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Reads an empty string as `None`, so an environment variable can unset a value.
pub fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let value = Option::<String>::deserialize(d)?;
    Ok(value.filter(|s| !s.trim().is_empty()).map(T::from))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        nats: NatsConfig,
        telemetry: TelemetryConfig,
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            "[nats]\nurl = \"nats://a:1\"\nrequest_timeout_secs = 3\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("KRISBUD_TELEMETRY__OTLP_ENDPOINT", "http://collector:4318");
            jail.set_env("KRISBUD_NATS__REQUEST_TIMEOUT_SECS", "7");
            jail.set_env("KRISBUD_TOKEN", "not configuration");
            let c: Sample = load(Some(&path)).unwrap();
            assert_eq!(c.nats.url, "nats://a:1");
            assert_eq!(c.nats.request_timeout_secs, 7);
            assert_eq!(
                c.telemetry.otlp_endpoint.as_deref(),
                Some("http://collector:4318")
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KRISBUD_NATS__REQUEST_TIMEOUT_SECS", "soon");
            let err = load::<Sample>(None).unwrap_err().to_string();
            assert!(err.contains("nats.request_timeout_secs"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "[nats]\nurll = \"x\"\n").unwrap();
        let err = load::<Sample>(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
