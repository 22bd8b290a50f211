//! The standalone SMS channel: reads `[sms]` and the common sections, then runs
//! [`krisbud_channel_sms::start`] until SIGTERM or Ctrl-C.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    sms: krisbud_channel_sms::Config,
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("channel-sms", |s: Settings, rt, shutdown| {
        krisbud_channel_sms::start(s.sms, rt, shutdown)
    })
}
