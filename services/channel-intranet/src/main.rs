//! The standalone intranet channel: reads `[intranet]` and the common sections,
//! then runs [`krisbud_channel_intranet::start`] until SIGTERM or Ctrl-C.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    intranet: krisbud_channel_intranet::Config,
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("channel-intranet", |s: Settings, rt, shutdown| {
        krisbud_channel_intranet::start(s.intranet, rt, shutdown)
    })
}
