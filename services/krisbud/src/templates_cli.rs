//! `krisbud templates …`: list, show, draft, submit, approve, reject, retire,
//! preview, diff, export and import, as a client of the HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use krisbud_proto::AlertStatus;
use krisbud_proto::command::TemplateAction;
use rust_i18n::t;

use crate::client::{self, Client};
use crate::template_files;

/// Where the API is and who asks.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The API's base URL.
    #[arg(long, env = "KRISBUD_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Your bearer token.
    #[arg(long, env = "KRISBUD_TOKEN", hide_env_values = true)]
    token: String,
}

/// The subcommands of `krisbud templates`.
#[derive(Subcommand)]
pub enum TemplatesCommand {
    /// List the templates you can declare from, with their variables; --all lists
    /// every version in any state.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        all: bool,
    },
    /// Show a template's versions and their history, or one version as TOML.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        version: Option<u32>,
    },
    /// Draft a new version from a template file (TOML); starts the template when its
    /// id is new. The version number, state and author in the file are ignored.
    Draft {
        #[command(flatten)]
        api: ApiArgs,
        file: PathBuf,
    },
    /// Hand a draft in for approval (template_editor).
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        version: u32,
    },
    /// Approve a submitted version (template_approver, not its author).
    Approve {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        version: u32,
    },
    /// Reject a submitted version with a reason (template_approver, not its author).
    Reject {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        version: u32,
        /// What the author should change.
        #[arg(long)]
        reason: String,
    },
    /// Take an approved version out of use (template_approver or admin).
    Retire {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        version: u32,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Render a version on every channel and language, with warnings.
    Preview {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        version: u32,
        /// A variable as name=value; repeat for each.
        #[arg(long = "var")]
        vars: Vec<String>,
        /// Show the exercise marking (ÖVNING).
        #[arg(long)]
        exercise: bool,
    },
    /// What a version changes against the last approved one.
    Diff {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        version: u32,
        /// Compare with this version instead.
        #[arg(long)]
        against: Option<u32>,
    },
    /// Write every version of every template as TOML files into a directory.
    Export {
        #[command(flatten)]
        api: ApiArgs,
        dir: PathBuf,
    },
    /// Draft every TOML file of a directory; the drafts still need approval.
    Import {
        #[command(flatten)]
        api: ApiArgs,
        dir: PathBuf,
    },
}

/// Runs a `krisbud templates` subcommand; without one, lists the declarable
/// templates with `api` and `token` from the parent command.
pub async fn run(
    command: Option<TemplatesCommand>,
    api: String,
    token: Option<String>,
) -> anyhow::Result<ExitCode> {
    let command = match command {
        Some(command) => command,
        None => TemplatesCommand::List {
            api: ApiArgs {
                api,
                token: token.context(t!("cli.token_needed"))?,
            },
            all: false,
        },
    };
    let step = |api: ApiArgs, id: String, version: u32, action, reason: Option<String>| async move {
        let info = Client::new(&api.api, &api.token)
            .template_step(&id, version, action, reason.as_deref())
            .await?;
        println!(
            "{id} v{} {}",
            info.version,
            client::version_state(info.state)
        );
        anyhow::Ok(())
    };
    match command {
        TemplatesCommand::List { api, all } => {
            for t in Client::new(&api.api, &api.token).templates(all).await? {
                if all {
                    let by = match t.approved_by.as_deref() {
                        Some(approver) => {
                            t!(
                                "templates.by_approved",
                                author = t.author,
                                approver = approver
                            )
                        }
                        None => t!("templates.by", author = t.author),
                    };
                    println!(
                        "{} v{}  {:<10} {}  [{}] {by}",
                        t.id,
                        t.version,
                        client::version_state(t.state),
                        t.name,
                        t.languages.join(", "),
                    );
                    continue;
                }
                println!(
                    "{} v{}  {}  [{}]",
                    t.id,
                    t.version,
                    t.name,
                    t.languages.join(", ")
                );
                for v in t.variables {
                    println!(
                        "    --var {}=…   {} ({})",
                        v.name,
                        v.label,
                        t!("templates.max_chars", n = v.max_length)
                    );
                }
            }
        }
        TemplatesCommand::Show { api, id, version } => {
            let client = Client::new(&api.api, &api.token);
            match version {
                Some(v) => print!(
                    "{}",
                    template_files::to_toml(&client.template_version(&id, v).await?)?
                ),
                None => print!("{}", client::format_record(&client.template(&id).await?)),
            }
        }
        TemplatesCommand::Draft { api, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| t!("cli.cannot_read", path = file.display()))?;
            let draft = krisbud_coordinator::template::parse(&file.display().to_string(), &text)?;
            let result = Client::new(&api.api, &api.token).draft(&draft).await?;
            let t = &result.template;
            if result.created {
                println!(
                    "{}",
                    t!("templates.drafted", id = t.id, version = t.version)
                );
            } else {
                println!(
                    "{}",
                    t!(
                        "templates.same_wording",
                        id = t.id,
                        version = t.version,
                        state = client::version_state(t.state)
                    )
                );
            }
        }
        TemplatesCommand::Submit { api, id, version } => {
            step(api, id, version, TemplateAction::Submit, None).await?;
        }
        TemplatesCommand::Approve { api, id, version } => {
            step(api, id, version, TemplateAction::Approve, None).await?;
        }
        TemplatesCommand::Reject {
            api,
            id,
            version,
            reason,
        } => step(api, id, version, TemplateAction::Reject, Some(reason)).await?,
        TemplatesCommand::Retire {
            api,
            id,
            version,
            reason,
        } => step(api, id, version, TemplateAction::Retire, reason).await?,
        TemplatesCommand::Preview {
            api,
            id,
            version,
            vars,
            exercise,
        } => {
            let status = if exercise {
                AlertStatus::Exercise
            } else {
                AlertStatus::Actual
            };
            let preview = Client::new(&api.api, &api.token)
                .preview(&id, version, &client::parse_vars(&vars)?, status)
                .await?;
            print!("{}", client::format_preview(&preview));
        }
        TemplatesCommand::Diff {
            api,
            id,
            version,
            against,
        } => {
            let diff = Client::new(&api.api, &api.token)
                .diff(&id, version, against)
                .await?;
            print!("{}", client::format_diff(&diff));
        }
        TemplatesCommand::Export { api, dir } => {
            let client = Client::new(&api.api, &api.token);
            for path in template_files::export(&client, &dir).await? {
                println!("{}", path.display());
            }
        }
        TemplatesCommand::Import { api, dir } => {
            let client = Client::new(&api.api, &api.token);
            for imported in template_files::import(&client, &dir).await? {
                let t = &imported.template;
                if imported.created {
                    println!(
                        "{}: {}",
                        imported.path.display(),
                        t!("templates.imported", id = t.id, version = t.version)
                    );
                } else {
                    println!(
                        "{}: {}",
                        imported.path.display(),
                        t!(
                            "templates.unchanged",
                            id = t.id,
                            version = t.version,
                            state = client::version_state(t.state)
                        )
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
