//! Witnesses: every signed checkpoint is handed to places outside the NATS store,
//! as Certificate Transparency and Rekor hand their tree heads to witnesses. An
//! append-only file on another volume, or an HTTP endpoint the auditors run, then
//! holds the chain's history even if the streams are deleted: `krisbud audit
//! verify --since <witness file>` proves the chain verified now extends the
//! newest checkpoint a witness saw, and a chain rebuilt after a deletion fails.
//!
//! A checkpoint covers every record before it, so a witness needs only the newest:
//! one that was missed (a witness down for a while) is made good by the next.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use krisbud_proto::audit::Checkpoint;

/// Where checkpoints go.
#[derive(Debug, Clone)]
pub enum Witness {
    /// A JSON line per checkpoint, appended and synced.
    File(PathBuf),
    /// A POST of the checkpoint as JSON; any 2xx is a receipt.
    Http(String),
}

impl Witness {
    /// The witnesses of `[audit]` `witness_files` and `witness_urls`.
    pub fn configured(files: &[PathBuf], urls: &[String]) -> anyhow::Result<Vec<Witness>> {
        let mut witnesses: Vec<Witness> = files.iter().cloned().map(Witness::File).collect();
        for url in urls {
            let parsed = reqwest::Url::parse(url)
                .with_context(|| format!("key `audit.witness_urls`: `{url}` is not a URL"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "https" | "http"),
                "key `audit.witness_urls`: `{url}` is not http(s)"
            );
            witnesses.push(Witness::Http(url.clone()));
        }
        Ok(witnesses)
    }

    /// A name for the log, without credentials a URL may hold.
    pub fn name(&self) -> String {
        match self {
            Witness::File(path) => path.display().to_string(),
            Witness::Http(url) => reqwest::Url::parse(url).map_or_else(
                |_| "a witness URL".into(),
                |u| {
                    format!(
                        "{}://{}{}",
                        u.scheme(),
                        u.host_str().unwrap_or(""),
                        u.path()
                    )
                },
            ),
        }
    }

    /// Hands `checkpoint` to the witness.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        checkpoint: &Checkpoint,
    ) -> anyhow::Result<()> {
        match self {
            Witness::File(path) => {
                let mut line = serde_json::to_vec(checkpoint)?;
                line.push(b'\n');
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    file.write_all(&line)?;
                    file.sync_all()?;
                    Ok(())
                })
                .await?
            }
            Witness::Http(url) => {
                let response = http
                    .post(url)
                    .timeout(Duration::from_secs(10))
                    .json(checkpoint)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "the witness answered {}",
                    response.status()
                );
                Ok(())
            }
        }
    }
}

/// The newest checkpoint each witness has received, so each gets every newer
/// one once (and a missed one is replaced by the next).
pub struct Witnesses {
    witnesses: Vec<(Witness, u64)>,
    http: reqwest::Client,
}

impl Witnesses {
    pub fn new(witnesses: Vec<Witness>) -> Witnesses {
        Witnesses {
            witnesses: witnesses.into_iter().map(|w| (w, 0)).collect(),
            http: reqwest::Client::new(),
        }
    }

    /// Hands `checkpoint` to every witness that has not seen it or a newer one;
    /// a failure is logged and tried again with the next checkpoint.
    pub async fn hand(&mut self, checkpoint: &Checkpoint) {
        for (witness, seen) in &mut self.witnesses {
            if *seen >= checkpoint.sequence {
                continue;
            }
            match witness.send(&self.http, checkpoint).await {
                Ok(()) => *seen = checkpoint.sequence,
                Err(e) => tracing::warn!(
                    witness = %witness.name(),
                    sequence = checkpoint.sequence,
                    error = format!("{e:#}"),
                    "a witness did not take the checkpoint; the next one goes to it"
                ),
            }
        }
    }
}
