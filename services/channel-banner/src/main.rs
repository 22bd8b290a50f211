//! The standalone channel-banner binary: a thin wrapper around [`krisbud_channel_banner::start`].

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(flatten)]
    common: krisbud_kit::Common,
    #[serde(default)]
    banner: krisbud_channel_banner::Config,
}

impl krisbud_kit::ServiceConfig for Settings {
    fn common(&self) -> &krisbud_kit::Common {
        &self.common
    }
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("channel-banner", |s: Settings, rt, shutdown| {
        krisbud_channel_banner::start(s.banner, rt, shutdown)
    })
}
