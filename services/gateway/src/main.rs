//! The standalone gateway binary: the `[gateway]` section plus the common ones.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    gateway: krisbud_gateway::Config,
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("gateway", |s: Settings, rt, shutdown| {
        krisbud_gateway::start(s.gateway, rt, shutdown)
    })
}
