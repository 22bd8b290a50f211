//! The whole configuration of `krisbud up`: the common sections and every
//! service's own section, in one TOML file.

use serde::Deserialize;

/// Every section of `krisbud.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
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
    /// The `nats-server` binary; found on PATH when left as is.
    pub binary: String,
    /// Client port; 0 picks a free one.
    pub port: u16,
}

impl Default for LocalNats {
    fn default() -> Self {
        LocalNats {
            binary: "nats-server".into(),
            port: 0,
        }
    }
}

impl krisbud_kit::ServiceConfig for Config {
    fn common(&self) -> &krisbud_kit::Common {
        &self.common
    }
}
