//! The standalone audit binary: a thin wrapper around [`krisbud_audit::start`].

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(flatten)]
    common: krisbud_kit::Common,
    #[serde(default)]
    audit: krisbud_audit::Config,
}

impl krisbud_kit::ServiceConfig for Settings {
    fn common(&self) -> &krisbud_kit::Common {
        &self.common
    }
}

fn main() -> std::process::ExitCode {
    krisbud_kit::service::main("audit", |s: Settings, rt, shutdown| {
        krisbud_audit::start(s.audit, rt, shutdown)
    })
}
