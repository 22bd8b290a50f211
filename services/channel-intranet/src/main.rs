//! The standalone intranet channel: reads `[intranet]` and the common sections,
//! then runs [`krisbud_channel_intranet::start`] until SIGTERM or Ctrl-C.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(flatten)]
    common: krisbud_kit::Common,
    #[serde(default)]
    intranet: krisbud_channel_intranet::Config,
}

impl krisbud_kit::ServiceConfig for Settings {
    fn common(&self) -> &krisbud_kit::Common {
        &self.common
    }
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("channel-intranet", |s: Settings, rt, shutdown| {
        krisbud_channel_intranet::start(s.intranet, rt, shutdown)
    })
}
