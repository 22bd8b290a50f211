//! The standalone channel-banner binary: a thin wrapper around [`krisbud_channel_banner::start`].

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    banner: krisbud_channel_banner::Config,
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("channel-banner", |s: Settings, rt, shutdown| {
        krisbud_channel_banner::start(s.banner, rt, shutdown)
    })
}
