//! The standalone audit binary: a thin wrapper around [`krisbud_audit::start`].

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    audit: krisbud_audit::Config,
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("audit", |s: Settings, rt, shutdown| {
        krisbud_audit::start(s.audit, rt, shutdown)
    })
}
