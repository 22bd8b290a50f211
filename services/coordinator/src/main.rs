//! The coordinator as its own process.

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    coordinator: krisbud_coordinator::Config,
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("coordinator", |s: Settings, rt, shutdown| {
        krisbud_coordinator::start(s.coordinator, rt, shutdown)
    })
}
