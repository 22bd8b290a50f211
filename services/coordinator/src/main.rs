//! The coordinator as its own process.

use krisbud_kit::{Common, ServiceConfig};

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    coordinator: krisbud_coordinator::Config,
}

impl ServiceConfig for Settings {
    fn common(&self) -> &Common {
        &self.common
    }
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("coordinator", |s: Settings, rt, shutdown| {
        krisbud_coordinator::start(s.coordinator, rt, shutdown)
    })
}
