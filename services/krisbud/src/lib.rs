//! The krisbud binary's library: `krisbud up` (every service in one process) and
//! the API client behind the other subcommands.

pub mod audiences_cli;
pub mod audit_cli;
pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod lang;
pub mod local_nats;
pub mod nats_cli;
pub mod system;
pub mod template_files;
pub mod templates_cli;

// The CLI's texts in Swedish and English (`locales/cli.toml`, see `lang`).
rust_i18n::i18n!("locales", fallback = "sv");
