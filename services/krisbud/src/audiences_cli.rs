//! `krisbud audiences`: list, show, create, import members from CSV, delete.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use krisbud_proto::audience::{Audience, CreateAudience, ImportReport};
use rust_i18n::t;
use tokio::io::AsyncReadExt as _;

use crate::client::Client;

/// What to do with audiences.
#[derive(Debug, Subcommand)]
pub enum AudiencesCommand {
    /// List the audiences with their member counts.
    List,
    /// Show one audience.
    Show { id: String },
    /// Create an empty audience.
    Create {
        /// A slug, e.g. farsta-boende.
        id: String,
        /// The name people see, e.g. "Boende i Farsta".
        #[arg(long)]
        name: String,
        /// Exercises and tests may reach this audience.
        #[arg(long)]
        exercise: bool,
    },
    /// Replace an audience's members with a CSV file (header: phone,email,language[,name,external_id]).
    Import {
        id: String,
        /// The CSV file, UTF-8.
        file: PathBuf,
    },
    /// Delete an audience and its members.
    Delete { id: String },
}

/// Runs one audiences command; the exit code is 1 when an import refused rows.
pub async fn run(client: &Client, command: AudiencesCommand) -> anyhow::Result<i32> {
    match command {
        AudiencesCommand::List => {
            let audiences = client.audiences().await?;
            if audiences.is_empty() {
                println!("{}", t!("audiences.none"));
            }
            for audience in audiences {
                println!("{}", format_audience(&audience));
            }
        }
        AudiencesCommand::Show { id } => {
            println!("{}", format_audience(&client.audience(&id).await?));
        }
        AudiencesCommand::Create { id, name, exercise } => {
            let audience = client
                .create_audience(&CreateAudience { id, name, exercise })
                .await?;
            println!("{} {}", t!("audiences.created"), format_audience(&audience));
        }
        AudiencesCommand::Delete { id } => {
            client.delete_audience(&id).await?;
            println!("{}", t!("audiences.deleted", id = id));
        }
        AudiencesCommand::Import { id, file } => {
            let report = import(client, &id, &file).await?;
            println!("{}", format_import(&report));
            if report.rejected > 0 {
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// Streams the file to the API with a progress bar over the bytes sent.
async fn import(client: &Client, id: &str, path: &PathBuf) -> anyhow::Result<ImportReport> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| t!("cli.cannot_read", path = path.display()))?;
    let size = file.metadata().await?.len();
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(t!("audiences.importing", id = id).into_owned());
    let progress = bar.clone();
    // Without a terminal the bar is hidden; a line per tenth shows progress in logs.
    let plain = !std::io::stderr().is_terminal();
    let mut printed = 0u64;
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(buffer), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            progress.inc(chunk.len() as u64);
            let tenth = (progress.position() * 10).checked_div(size).unwrap_or(10);
            if plain && tenth > printed {
                printed = tenth;
                eprintln!(
                    "{}",
                    t!(
                        "audiences.sent_part",
                        percent = tenth * 10,
                        n = progress.position(),
                        size = size
                    )
                );
            }
        }
    });
    let answer = client
        .import_members(id, reqwest::Body::wrap_stream(chunks))
        .await;
    bar.finish_and_clear();
    if plain {
        eprintln!("{}", t!("audiences.sent_all", size = size));
    }
    answer
}

pub fn format_audience(a: &Audience) -> String {
    let exercise = if a.exercise {
        format!("  [{}]", t!("audiences.exercise"))
    } else {
        String::new()
    };
    format!(
        "{:<24} {}{exercise}  {}",
        a.id,
        t!(
            "audiences.members",
            members = format!("{:>9}", a.members),
            phone = a.with_phone,
            email = a.with_email
        ),
        a.name
    )
}

pub fn format_import(report: &ImportReport) -> String {
    let mut out = t!(
        "audiences.import_report",
        audience = report.audience,
        rows = report.rows,
        imported = report.imported,
        duplicates = report.duplicates,
        rejected = report.rejected
    )
    .into_owned();
    for error in &report.errors {
        out.push_str(&format!(
            "\n  {}{}: {}",
            t!("audiences.line", n = error.line),
            error
                .column
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            error.reason
        ));
    }
    if report.rejected as usize > report.errors.len() {
        out.push_str(&format!(
            "\n  {}",
            t!(
                "audiences.more",
                n = report.rejected as usize - report.errors.len()
            )
        ));
    }
    out
}
