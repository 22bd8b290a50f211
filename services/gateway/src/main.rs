//! The standalone gateway binary: the `[gateway]` section plus the common ones.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(flatten)]
    common: krisbud_kit::Common,
    #[serde(default)]
    gateway: krisbud_gateway::Config,
}

impl krisbud_kit::ServiceConfig for Settings {
    fn common(&self) -> &krisbud_kit::Common {
        &self.common
    }
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("gateway", |s: Settings, rt, shutdown| {
        krisbud_gateway::start(s.gateway, rt, shutdown)
    })
}
