//! `krisbud`: run the whole system, or talk to its API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use krisbud::audit_cli::AuditCommand;
use krisbud::client::{self, Client};
use krisbud::system::{self, UpOptions};
use krisbud::templates_cli::TemplatesCommand;
use krisbud_proto::command::DeclareCrisis;
use krisbud_proto::{AlertStatus, Channel};
use rust_i18n::t;

// The binary's own few texts come from the same catalogue as the library's.
rust_i18n::i18n!("locales", fallback = "sv");

#[derive(Parser)]
#[command(
    name = "krisbud",
    version,
    about = "Crisis communication: one declaration, every channel, a record that holds"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Api {
    /// The API's base URL.
    #[arg(long, env = "KRISBUD_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Your bearer token.
    #[arg(long, env = "KRISBUD_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Print each demo user's token again.
    Tokens {
        /// The data directory `krisbud up --demo` ran with.
        #[arg(long, default_value = "var")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in this process (and a local nats-server when no URL is configured).
    Up {
        /// Seed demo users (tokens printed once), templates and audiences.
        #[arg(long)]
        demo: bool,
        /// Configuration file (TOML).
        #[arg(long, env = "KRISBUD_CONFIG")]
        config: Option<PathBuf>,
        /// Where outboxes, the local NATS store and demo tokens go.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Templates: list, show, draft, submit, approve, reject, retire, preview, diff,
    /// export and import. Without a subcommand, lists the declarable templates.
    #[command(args_conflicts_with_subcommands = true)]
    Templates {
        #[command(subcommand)]
        command: Option<TemplatesCommand>,
        /// The API's base URL.
        #[arg(long, env = "KRISBUD_API", default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Your bearer token.
        #[arg(long, env = "KRISBUD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Declare a crisis from an approved template.
    Declare {
        #[command(flatten)]
        api: Api,
        /// Template id, e.g. vattenlacka.
        #[arg(long)]
        template: String,
        /// Template version; the newest approved when left out.
        #[arg(long)]
        version: Option<u32>,
        /// A variable as name=value; repeat for each.
        #[arg(long = "var")]
        vars: Vec<String>,
        /// An audience for SMS and email; repeat for several.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// A channel (sms, email, banner, intranet); every channel when left out.
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// Mark it as an exercise (ÖVNING).
        #[arg(long, conflicts_with = "test")]
        exercise: bool,
        /// Mark it as a technical test.
        #[arg(long)]
        test: bool,
        /// Makes a retried declaration return the first one instead of a second crisis.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The demo users' tokens (`krisbud demo tokens`), as `up --demo` keeps them.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// NATS for a deployment: the users file, provisioning, the command key.
    Nats {
        #[command(subcommand)]
        command: krisbud::nats_cli::NatsCommand,
    },
    /// Show every crisis, or one crisis per channel.
    Status {
        #[command(flatten)]
        api: Api,
        /// The crisis id.
        id: Option<String>,
        /// Follow the crisis: a progress bar per channel (plain lines when stdout is
        /// not a terminal) until every channel has every outcome and is confirmed,
        /// or Ctrl-C (exit code 130).
        #[arg(long, requires = "id")]
        watch: bool,
    },
    /// Audiences: list, show, create, import members from CSV, delete.
    Audiences {
        #[command(flatten)]
        api: Api,
        #[command(subcommand)]
        command: krisbud::audiences_cli::AudiencesCommand,
    },
    /// Update a crisis: changed values, added audiences, a newer template version.
    /// Sends the revision the status shows as `expected_revision`.
    Update {
        #[command(flatten)]
        api: Api,
        /// The crisis id.
        id: String,
        /// A changed variable as name=value; repeat for each.
        #[arg(long = "var")]
        vars: Vec<String>,
        /// An audience to add; repeat for several.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// A newer approved version of the crisis's template.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Give the all-clear ("faran över").
    AllClear {
        #[command(flatten)]
        api: Api,
        /// The crisis id.
        id: String,
    },
    /// Withdraw a crisis whose message was sent in error; a correction goes out.
    Cancel {
        #[command(flatten)]
        api: Api,
        /// The crisis id.
        id: String,
        /// Why the message is withdrawn.
        #[arg(long)]
        reason: String,
    },
    /// Close a crisis: nothing more is sent and the banner comes down.
    Close {
        #[command(flatten)]
        api: Api,
        /// The crisis id.
        id: String,
    },
    /// Confirm that a channel's message is really out.
    Confirm {
        #[command(flatten)]
        api: Api,
        /// The crisis id.
        id: String,
        /// sms, email, banner or intranet.
        channel: String,
        /// What you checked, e.g. "banner live on stockholm.se".
        #[arg(long)]
        note: Option<String>,
    },
    /// Read, export and verify the audit log; crisis reports; recipient lookups.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Measure the system: `bench fanout` sends one SMS declaration to N recipients
    /// through a provider simulator and compares with raw JetStream.
    Bench {
        #[command(subcommand)]
        command: krisbud::bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let lang = krisbud::lang::pick(&args);
    let command = krisbud::lang::apply(Cli::command(), lang);
    let cli = match command
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(e) if lang == krisbud::lang::Lang::Sv => {
            e.apply::<krisbud::lang::SwedishErrors>().exit()
        }
        Err(e) => e.exit(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("an async runtime");
    match cli.command {
        Command::Up {
            demo,
            config,
            data_dir,
        } => runtime.block_on(up(demo, config, data_dir)),
        other => match runtime.block_on(client_command(other)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("krisbud: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn up(demo: bool, config_path: Option<PathBuf>, data_dir: Option<PathBuf>) -> ExitCode {
    // The common sections are read on their own (see `Config::load`), so an error
    // still names its key.
    let mut config = match krisbud::config::Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("krisbud: {e}");
            return ExitCode::from(krisbud_kit::config::EXIT_BAD_CONFIG as u8);
        }
    };
    if let Some(dir) = data_dir {
        config.common.data_dir = dir;
    }
    if let Err(e) = krisbud_kit::secret_file::refuse_known_default(
        "privacy.recipient_key",
        config.common.privacy.recipient_key.expose(),
    ) {
        eprintln!("krisbud: {}", t!("up.bad_config", error = e));
        return ExitCode::from(krisbud_kit::config::EXIT_BAD_CONFIG as u8);
    }
    let _telemetry = krisbud_kit::telemetry::init("krisbud", &config.common.telemetry);
    let shutdown = krisbud_kit::shutdown::on_signals();
    let system = match system::up(config, UpOptions { demo }, shutdown.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "krisbud could not start");
            eprintln!("krisbud: {e:#}");
            shutdown.cancel();
            return ExitCode::FAILURE;
        }
    };
    if let (Some(tokens), Some(path)) = (&system.demo_tokens, &system.demo_tokens_file) {
        println!("{}", t!("up.demo_tokens", path = path.display()));
        for (user, token) in &tokens.tokens {
            let roles: Vec<&str> = tokens.roles[user].iter().map(|r| r.as_str()).collect();
            println!("  {user:<16} {:<18} {token}", roles.join(","));
        }
    }
    println!("{}", system.ready_line());
    match system.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("krisbud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn client_command(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up { .. } => unreachable!("handled in main"),
        Command::Templates {
            command,
            api,
            token,
        } => {
            return krisbud::templates_cli::run(command, api, token).await;
        }
        Command::Declare {
            api,
            template,
            version,
            vars,
            audiences,
            channels,
            exercise,
            test,
            idempotency_key,
        } => {
            let channels = if channels.is_empty() {
                None
            } else {
                Some(
                    channels
                        .iter()
                        .map(|c| {
                            Channel::parse(c)
                                .with_context(|| t!("cli.unknown_channel", channel = c))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
            };
            let body = DeclareCrisis {
                template,
                template_version: version,
                variables: client::parse_vars(&vars)?,
                audiences,
                channels,
                status: if exercise {
                    AlertStatus::Exercise
                } else if test {
                    AlertStatus::Test
                } else {
                    AlertStatus::Actual
                },
                expires_at: None,
            };
            let declared = Client::new(&api.api, &api.token)
                .declare(&body, idempotency_key.as_deref())
                .await?;
            println!("{}", declared.crisis_id);
            for (channel, n) in &declared.recipients {
                eprintln!("  {channel}: {}", t!("cli.recipients", n = n));
            }
        }
        Command::Audiences { api, command } => {
            let client = Client::new(&api.api, &api.token);
            let code = krisbud::audiences_cli::run(&client, command).await?;
            return Ok(ExitCode::from(code as u8));
        }
        Command::Status { api, id, watch } => {
            let client = Client::new(&api.api, &api.token);
            match id {
                Some(id) if watch => {
                    return Ok(match client::watch::watch(&client, &id).await? {
                        client::watch::WatchEnd::Done => ExitCode::SUCCESS,
                        client::watch::WatchEnd::Interrupted => ExitCode::from(130),
                    });
                }
                Some(id) => print!("{}", client::format_status(&client.crisis(&id).await?)),
                None => {
                    for s in client.crises().await? {
                        print!("{}", client::format_status(&s));
                    }
                }
            }
        }
        Command::Update {
            api,
            id,
            vars,
            audiences,
            version,
        } => {
            let revised = Client::new(&api.api, &api.token)
                .update(&id, &client::parse_vars(&vars)?, &audiences, version)
                .await?;
            println!("{}", client::format_revised(&revised));
        }
        Command::AllClear { api, id } => {
            let revised = Client::new(&api.api, &api.token).all_clear(&id).await?;
            println!("{}", client::format_revised(&revised));
        }
        Command::Cancel { api, id, reason } => {
            let revised = Client::new(&api.api, &api.token)
                .cancel(&id, &reason)
                .await?;
            println!("{}", client::format_revised(&revised));
        }
        Command::Close { api, id } => {
            let revised = Client::new(&api.api, &api.token).close(&id).await?;
            println!("{}", client::format_revised(&revised));
        }
        Command::Confirm {
            api,
            id,
            channel,
            note,
        } => {
            let status = Client::new(&api.api, &api.token)
                .confirm(&id, &channel, note.as_deref())
                .await?;
            print!("{}", client::format_status(&status));
        }
        Command::Audit { command } => return krisbud::audit_cli::run(command).await,
        Command::Nats { command } => return krisbud::nats_cli::run(command).await,
        Command::Demo {
            command: DemoCommand::Tokens { data_dir },
        } => {
            let tokens = krisbud::demo::DemoTokens::read(&data_dir)?;
            for (user, token) in &tokens.tokens {
                let roles: Vec<&str> = tokens.roles[user].iter().map(|r| r.as_str()).collect();
                println!("{user:<16} {:<18} {token}", roles.join(","));
            }
        }
        Command::Bench { command } => return krisbud::bench::run(command).await,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and argument has its Swedish help in `locales/cli.toml`.
    #[test]
    fn every_command_and_argument_has_swedish_help() {
        let command = krisbud::lang::apply(Cli::command(), krisbud::lang::Lang::En);
        let missing = krisbud::lang::missing_swedish(&command);
        let listing: Vec<String> = missing
            .iter()
            .map(|(key, english)| format!("[{key}]\nsv = \"\" # {english}"))
            .collect();
        assert!(
            missing.is_empty(),
            "{} without Swedish help:\n{}",
            missing.len(),
            listing.join("\n")
        );
    }
}
