//! The standalone email channel: reads `[email]` and the common sections, then runs
//! [`krisbud_channel_email::start`] until SIGTERM or Ctrl-C.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    email: krisbud_channel_email::Config,
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("channel-email", |s: Settings, rt, shutdown| {
        krisbud_channel_email::start(s.email, rt, shutdown)
    })
}
