//! The standalone email channel: reads `[email]` and the common sections, then runs
//! [`krisbud_channel_email::start`] until SIGTERM or Ctrl-C.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(flatten)]
    common: krisbud_kit::Common,
    #[serde(default)]
    email: krisbud_channel_email::Config,
}

impl krisbud_kit::ServiceConfig for Settings {
    fn common(&self) -> &krisbud_kit::Common {
        &self.common
    }
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("channel-email", |s: Settings, rt, shutdown| {
        krisbud_channel_email::start(s.email, rt, shutdown)
    })
}
