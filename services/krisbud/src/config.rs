//! The whole configuration of `krisbud up`: the common sections and every
//! service's own section, in one TOML file.

use serde::Deserialize;

/// Every section of `krisbud.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The common sections, read separately (see [`Config::load`]).
    #[serde(skip)]
    pub common: krisbud_kit::Common,
    pub gateway: krisbud_gateway::Config,
    pub coordinator: krisbud_coordinator::Config,
    pub sms: krisbud_channel_sms::Config,
    pub email: krisbud_channel_email::Config,
    pub banner: krisbud_channel_banner::Config,
    pub intranet: krisbud_channel_intranet::Config,
    pub audit: krisbud_audit::Config,
    /// `[local_nats]`: the server `krisbud up` starts when `nats.url` is empty.
    pub local_nats: LocalNats,
}

/// `[local_nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalNats {
    /// The `nats-server` binary: a path, or a name looked up on PATH and then in
    /// `/usr/sbin` (where Debian installs it).
    pub binary: String,
    /// Client port; 0 picks a free one.
    pub port: u16,
    /// The server's soft memory limit (Go's `GOMEMLIMIT`, e.g. `128MiB`; empty for
    /// none). nats-server keeps recently written blocks in memory, so a fan-out to
    /// a million grows it to ~400 MB without a limit; with 128 MiB its garbage
    /// collector works harder and it stays near 210 MB. A `GOMEMLIMIT` in
    /// krisbud's own environment wins.
    pub memory_limit: String,
}

impl Default for LocalNats {
    fn default() -> Self {
        LocalNats {
            binary: "nats-server".into(),
            port: 0,
            memory_limit: "128MiB".into(),
        }
    }
}

impl Config {
    /// Loads the file and the environment. The common sections are read on their
    /// own rather than flattened in, so an error still names its key.
    pub fn load(
        file: Option<&std::path::Path>,
    ) -> Result<Config, krisbud_kit::config::ConfigError> {
        let common = krisbud_kit::config::load(file)?;
        let config: Config = krisbud_kit::config::load(file)?;
        Ok(Config { common, ..config })
    }

    /// Parses a TOML text (tests build their configuration this way).
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        let common = toml::from_str(text)?;
        let config: Config = toml::from_str(text)?;
        Ok(Config { common, ..config })
    }
}

#[cfg(test)]
mod tests {
    /// The production example reads as krisbud reads it.
    #[test]
    fn the_shipped_production_configuration_parses() {
        let text = include_str!("../../../deploy/krisbud.toml");
        let config = super::Config::from_toml(text).unwrap();
        assert_eq!(config.common.nats.url, "nats://127.0.0.1:4222");
        assert!(config.common.commands.public_key.is_empty());
    }
}
