//! `krisbud audit …`: read, export and verify the audit log; the crisis report;
//! the recipient lookup; and the signing key. `verify --file` and `keygen` need
//! no server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use krisbud_proto::audit::{
    AuditKeys, AuditPage, ChainPoint, CheckpointPage, CrisisReport, RecipientLookup,
    RecipientLookupAnswer, VerifyReport,
};
use rust_i18n::t;
use serde::de::DeserializeOwned;

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

/// Record filters, as `GET /api/v1/audit` takes them.
#[derive(Args, Clone, Default)]
pub struct Filters {
    /// Only this crisis.
    #[arg(long)]
    crisis: Option<String>,
    /// Only this actor (user name or `service:<name>`).
    #[arg(long)]
    actor: Option<String>,
    /// Only this event kind, e.g. CrisisDeclared.
    #[arg(long)]
    kind: Option<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-11-26T08:00:00Z).
    #[arg(long)]
    from: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
}

impl Filters {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("crisis", &self.crisis),
            ("actor", &self.actor),
            ("kind", &self.kind),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// What `krisbud audit export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The bundle: keys, signed checkpoints and every record, for `verify --file`.
    Bundle,
    /// Matching records as JSON lines.
    Jsonl,
    /// Matching records as CSV.
    Csv,
}

/// The formats of the crisis report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Html,
    Json,
}

/// `krisbud audit …`
#[derive(Subcommand)]
pub enum AuditCommand {
    /// List records, in order, with their actor.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        filters: Filters,
    },
    /// Write the export bundle (default) for `verify --file`, or matching records
    /// as JSON lines or CSV.
    Export {
        #[command(flatten)]
        api: ApiArgs,
        /// Output file; standard output when left out.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "bundle")]
        format: ExportFormat,
        #[command(flatten)]
        filters: Filters,
    },
    /// Verify the chain on the server (with completeness), or an export bundle
    /// offline with --file.
    Verify {
        /// An export bundle (or plain JSON-lines export) to verify without a server.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The published public key (64 hex digits, from a source other than
        /// krisbud); every signing key must be it or endorsed by it. Required
        /// unless --no-trust-key.
        #[arg(long = "trust-key")]
        trust_keys: Vec<String>,
        /// Check only the chain's own consistency, on purpose: its signatures are
        /// then checked with the keys it names itself, which anybody who rewrote
        /// it could have made.
        #[arg(long, conflicts_with = "trust_keys")]
        no_trust_key: bool,
        /// A checkpoint saved earlier, or a witness file of them: the chain must
        /// still hold the newest one (same record hash, same chain).
        #[arg(long)]
        since: Option<PathBuf>,
        /// Most records allowed after the last signed checkpoint (twice the
        /// default `audit.checkpoint_every`).
        #[arg(long, default_value_t = 2000)]
        max_unsigned_records: u64,
        /// Longest time in seconds that records may go without a signed checkpoint
        /// (twice the default `audit.checkpoint_interval_secs`).
        #[arg(long, default_value_t = 120)]
        max_unsigned_secs: u64,
        #[arg(long, env = "KRISBUD_API", default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, env = "KRISBUD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// The signed checkpoints.
    Checkpoints {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The public key that signs the checkpoints, and the keys before it.
    PublicKey {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A crisis's report from the audit chain: timeline, deliveries per channel,
    /// confirmations, escalations.
    Report {
        #[command(flatten)]
        api: ApiArgs,
        /// The crisis id.
        crisis: String,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ReportFormat,
        /// Output file; standard output when left out.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Was this person notified? Give a phone number or an email address; the
    /// lookup is recorded in the audit log (with a keyed hash, never the address).
    Lookup {
        #[command(flatten)]
        api: ApiArgs,
        /// Phone number (070-123 45 67, +46701234567) or email address.
        address: String,
        /// Only this crisis.
        #[arg(long)]
        crisis: Option<String>,
    },
    /// Create a new checkpoint signing key file (offline); prints its public key.
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs one `krisbud audit` command; failure of a verification is exit code 1.
pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::List { api, filters } => {
            let client = Api::new(&api);
            let mut from = 1u64;
            loop {
                let mut query = filters.pairs();
                query.push(("from_sequence", from.to_string()));
                let page: AuditPage = client.get("/audit", &query).await?;
                for r in &page.records {
                    let text = |pointer: &str| {
                        r.event
                            .pointer(pointer)
                            .and_then(|k| k.as_str())
                            .unwrap_or("?")
                            .to_owned()
                    };
                    println!(
                        "{:>6}  {}  {:<18} {}",
                        r.sequence,
                        krisbud_kit::text::local_time(r.recorded_at),
                        text("/kind"),
                        text("/actor/user")
                    );
                }
                match page.next_sequence {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        AuditCommand::Export {
            api,
            out,
            format,
            filters,
        } => {
            let client = Api::new(&api);
            let (path, query) = match format {
                ExportFormat::Bundle => {
                    anyhow::ensure!(filters.pairs().is_empty(), t!("audit.bundle_no_filters"));
                    ("/audit/export", Vec::new())
                }
                ExportFormat::Jsonl | ExportFormat::Csv => {
                    let mut query = filters.pairs();
                    let name = if format == ExportFormat::Csv {
                        "csv"
                    } else {
                        "jsonl"
                    };
                    query.push(("format", name.to_owned()));
                    ("/audit", query)
                }
            };
            let bytes = client.download(path, &query, out.as_deref()).await?;
            if let Some(out) = &out {
                eprintln!("{}", t!("audit.wrote", bytes = bytes, path = out.display()));
            }
        }
        AuditCommand::Verify {
            file,
            trust_keys,
            no_trust_key,
            since,
            max_unsigned_records,
            max_unsigned_secs,
            api,
            token,
        } => {
            anyhow::ensure!(
                no_trust_key || !trust_keys.is_empty(),
                "give --trust-key <the published public key> (get it from where the city publishes it, \
                 not from this system), or --no-trust-key to check only the chain's own consistency"
            );
            let trusted = trust_keys
                .iter()
                .map(|k| {
                    krisbud_audit::signing::parse_public_key(k)
                        .map_err(|e| anyhow::anyhow!("--trust-key {k}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let since = since.as_deref().map(read_saved_point).transpose()?;
            let policy = krisbud_audit::bundle::TailPolicy {
                max_records: max_unsigned_records,
                max_age: chrono::Duration::seconds(
                    i64::try_from(max_unsigned_secs).unwrap_or(i64::MAX),
                ),
            };
            let (report, as_of) = match file {
                Some(path) => (verify_file_since(&path, &trusted, since)?, None),
                None => {
                    anyhow::ensure!(trusted.len() <= 1, t!("audit.one_trust_key"));
                    let token = token.context(t!("cli.token_needed"))?;
                    let mut query = Vec::new();
                    if let Some(key) = trust_keys.first() {
                        query.push(("trust_key", key.clone()));
                    }
                    if let Some(point) = &since {
                        query.push(("since_sequence", point.sequence.to_string()));
                        query.push(("since_hash", point.hash.clone()));
                        if let Some(chain) = &point.chain_id {
                            query.push(("since_chain", chain.clone()));
                        }
                    }
                    let report = Api {
                        http: reqwest::Client::new(),
                        base: base(&api),
                        token,
                    }
                    .get("/audit/verify", &query)
                    .await?;
                    (report, Some(chrono::Utc::now()))
                }
            };
            let doubts = krisbud_audit::bundle::doubts(&report, &policy, as_of);
            print!("{}", format_verdict(&report, &doubts));
            if !report.ok || !doubts.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        AuditCommand::Checkpoints { api } => {
            let client = Api::new(&api);
            let mut from = 1u64;
            loop {
                let page: CheckpointPage = client
                    .get("/audit/checkpoints", &[("from_sequence", from.to_string())])
                    .await?;
                for c in &page.checkpoints {
                    println!(
                        "{:>8}  {}  {}  {}",
                        c.sequence,
                        krisbud_kit::text::local_time(c.signed_at),
                        t!("audit.key_id", id = c.key_id),
                        c.hash
                    );
                }
                match page.next_sequence {
                    Some(next) if next > from => from = next,
                    _ => break,
                }
            }
        }
        AuditCommand::PublicKey { api } => {
            let keys: AuditKeys = Api::new(&api).get("/audit/public-key", &[]).await?;
            println!(
                "{} {} ({})",
                keys.current.algorithm,
                keys.current.public_key,
                t!("audit.key_id", id = keys.current.key_id)
            );
            for k in &keys.history {
                println!(
                    "  {}  {}  {}",
                    t!(
                        "audit.registered",
                        at = k
                            .since
                            .map(krisbud_kit::text::local_time)
                            .unwrap_or_else(|| "?".into())
                    ),
                    t!("audit.key_id", id = k.key_id),
                    k.public_key
                );
            }
        }
        AuditCommand::Report {
            api,
            crisis,
            format,
            out,
        } => {
            let client = Api::new(&api);
            let path = format!("/audit/crises/{crisis}/report");
            let text = match format {
                ReportFormat::Json => {
                    let report: CrisisReport = client.get(&path, &[]).await?;
                    serde_json::to_string_pretty(&report)? + "\n"
                }
                ReportFormat::Markdown | ReportFormat::Html => {
                    let name = if format == ReportFormat::Html {
                        "html"
                    } else {
                        "markdown"
                    };
                    client.text(&path, &[("format", name.to_owned())]).await?
                }
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| t!("cli.cannot_write", path = path.display()))?,
                None => print!("{text}"),
            }
        }
        AuditCommand::Lookup {
            api,
            address,
            crisis,
        } => {
            let answer: RecipientLookupAnswer = Api::new(&api)
                .post("/audit/lookup", &RecipientLookup { address, crisis })
                .await?;
            print!("{}", format_lookup(&answer));
        }
        AuditCommand::Keygen { out } => {
            let key = krisbud_audit::signing::create_key_file(&out)?;
            let public = krisbud_audit::signing::public_key(&key.verifying_key());
            println!("{}", t!("audit.key_written", path = out.display()));
            println!(
                "{}",
                t!(
                    "audit.key_public",
                    key = public.public_key,
                    id = public.key_id
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Verifies a bundle offline, with a progress bar on large files.
pub fn verify_file(
    path: &Path,
    trusted: &[krisbud_audit::signing::VerifyingKey],
) -> anyhow::Result<VerifyReport> {
    verify_file_since(path, trusted, None)
}

/// [`verify_file`] that also requires the chain to hold a saved point.
pub fn verify_file_since(
    path: &Path,
    trusted: &[krisbud_audit::signing::VerifyingKey],
    since: Option<ChainPoint>,
) -> anyhow::Result<VerifyReport> {
    let file =
        std::fs::File::open(path).with_context(|| t!("cli.cannot_read", path = path.display()))?;
    let size = file.metadata()?.len();
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid progress template"),
    );
    if size < 4 << 20 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let reader = std::io::BufReader::with_capacity(1 << 20, bar.wrap_read(file));
    let report = krisbud_audit::bundle::verify_reader_since(reader, trusted, since);
    bar.finish_and_clear();
    Ok(report)
}

/// The newest point in a file of saved checkpoints: one checkpoint (as JSON, or
/// as the bundle's `{"checkpoint":…}` line), or a witness file of them, one a line.
pub fn read_saved_point(path: &Path) -> anyhow::Result<ChainPoint> {
    use std::io::BufRead as _;
    let file =
        std::fs::File::open(path).with_context(|| t!("cli.cannot_read", path = path.display()))?;
    let mut newest: Option<ChainPoint> = None;
    let consider = |newest: &mut Option<ChainPoint>, value: serde_json::Value| {
        let value = value.get("checkpoint").cloned().unwrap_or(value);
        // A bundle's records carry a sequence and hash too; only checkpoints count.
        if value.get("prev_hash").is_some() {
            return;
        }
        if let Ok(point) = serde_json::from_value::<ChainPoint>(value)
            && newest.as_ref().is_none_or(|n| point.sequence > n.sequence)
        {
            *newest = Some(point);
        }
    };
    let mut text = String::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| t!("cli.cannot_read", path = path.display()))?;
        text.push_str(&line);
        text.push('\n');
        // One object per line, or one object over several lines (a pretty-printed
        // checkpoint): the text so far is tried whole when a line alone is no JSON.
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
            consider(&mut newest, value);
            text.clear();
        } else if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            consider(&mut newest, value);
            text.clear();
        } else if i > 10_000 && newest.is_none() {
            break;
        }
    }
    newest.with_context(|| t!("audit.no_checkpoint", path = path.display()))
}

/// The report, then what makes it untrustworthy even when the chain is intact.
pub fn format_verdict(report: &VerifyReport, doubts: &[String]) -> String {
    let full = format_report(report);
    if !report.ok || doubts.is_empty() {
        return full;
    }
    // The first line is what scripts read: never "ok" when in doubt.
    let details = full.split_once('\n').map_or("", |(_, rest)| rest);
    let mut out = format!("{}\n", t!("audit.not_trusted", n = report.checked));
    for doubt in doubts {
        out.push_str(&format!("  - {doubt}\n"));
    }
    out.push_str(details);
    out
}

/// What a verification found, as lines for the terminal. The first line keeps
/// the form scripts look for: `audit chain ok: …` or `audit chain BROKEN at
/// record N: problem: detail`.
pub fn format_report(report: &VerifyReport) -> String {
    let mut out = match &report.first_bad {
        None if report.ok => format!("{}\n", t!("audit.chain_ok", n = report.checked)),
        None => format!("{}\n", t!("audit.chain_not_ok", n = report.checked)),
        Some(bad) => format!(
            "{}\n",
            t!(
                "audit.chain_broken",
                sequence = bad.sequence,
                problem = bad.problem,
                detail = bad.detail,
                n = report.checked
            )
        ),
    };
    if report.checkpoints > 0 {
        out.push_str(&format!(
            "  {}\n",
            t!(
                "audit.checkpoints_verified",
                n = report.checkpoints,
                last = report.signed_up_to.unwrap_or_default(),
                keys = report.keys.join(", ")
            )
        ));
        if report.ok
            && let Some(signed) = report.signed_up_to
            && signed < report.checked
        {
            out.push_str(&format!(
                "  {}\n",
                t!(
                    "audit.not_yet_signed",
                    first = signed + 1,
                    last = report.checked
                )
            ));
        }
    } else if report.ok {
        out.push_str(&format!("  {}\n", t!("audit.no_checkpoints")));
    }
    if let Some(tail) = &report.unsigned_tail
        && report.checkpoints > 0
        && let (Some(first), Some(last)) = (tail.first_recorded_at, tail.last_recorded_at)
    {
        out.push_str(&format!(
            "  {}\n",
            t!(
                "audit.unsigned_tail",
                n = tail.records,
                first = krisbud_kit::text::local_time(first),
                last = krisbud_kit::text::local_time(last)
            )
        ));
    }
    if let Some(chain) = &report.chain_id {
        out.push_str(&format!("  {}\n", t!("audit.chain_id", id = chain)));
    }
    if let Some(point) = &report.extends {
        let key = if point.chain_id.is_some() {
            "audit.extends_same_chain"
        } else {
            "audit.extends"
        };
        out.push_str(&format!("  {}\n", t!(key, n = point.sequence)));
    }
    if !report.trusted_key_checked && report.checkpoints > 0 {
        out.push_str(&format!(
            "  {}\n",
            t!("audit.untrusted_keys", keys = report.keys.join(", "))
        ));
    }
    if let Some(c) = &report.completeness {
        out.push_str(&format!(
            "  {}\n",
            t!(
                "audit.completeness",
                events = c.events,
                missing = c.missing_count,
                orphans = c.orphan_count,
                pending = c.pending
            )
        ));
        if !c.missing.is_empty() {
            let listed: Vec<String> = c.missing.iter().map(u64::to_string).collect();
            out.push_str(&format!(
                "    {}\n",
                t!("audit.events_without_record", list = listed.join(", "))
            ));
        }
        for o in &c.orphans {
            out.push_str(&format!(
                "    {}\n",
                t!(
                    "audit.orphan",
                    n = o.sequence,
                    event = o.event_sequence,
                    problem = o.problem
                )
            ));
        }
    }
    for warning in &report.warnings {
        out.push_str(&format!("  {}\n", t!("audit.note", text = warning)));
    }
    out
}

fn format_lookup(answer: &RecipientLookupAnswer) -> String {
    let mut out = format!(
        "{}\n",
        t!(
            "audit.lookup",
            recipient = answer.recipient,
            kind = format!("{:?}", answer.address_kind),
            n = answer.outcomes.len()
        )
    );
    for o in &answer.outcomes {
        out.push_str(&format!(
            "  {}  {:<16} {:<8} {:<9} {}{}\n",
            krisbud_kit::text::local_time(o.occurred_at),
            o.crisis_id,
            o.channel,
            format!("{:?}", o.state).to_lowercase(),
            t!(
                "audit.outcome_via",
                provider = o.provider,
                record = o.sequence,
                job = o.job_id
            ),
            o.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    out
}

fn base(api: &str) -> String {
    api.trim_end_matches('/')
        .trim_end_matches("/api/v1")
        .to_owned()
}

/// The few HTTP calls the audit commands make.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(args: &ApiArgs) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base(&args.api),
            token: args.token.clone(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| t!("api.unreachable", url = self.base))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(crate::client::refusal(status, &body))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let response = self
            .send(self.http.get(self.url(path)).query(query))
            .await?;
        response.json().await.context(t!("api.unreadable"))
    }

    async fn text(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<String> {
        let response = self
            .send(self.http.get(self.url(path)).query(query))
            .await?;
        Ok(response.text().await?)
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self.send(self.http.post(self.url(path)).json(body)).await?;
        response.json().await.context(t!("api.unreadable"))
    }

    /// Streams a download to `out` (or standard output); the byte count. A
    /// transfer that breaks off is an error, never a short file taken as whole.
    async fn download(
        &self,
        path: &str,
        query: &[(&str, String)],
        out: Option<&Path>,
    ) -> anyhow::Result<u64> {
        let mut response = self
            .send(self.http.get(self.url(path)).query(query))
            .await?;
        let mut sink: Box<dyn std::io::Write> = match out {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| t!("cli.cannot_write", path = path.display()))?,
            )),
            None => Box::new(std::io::stdout()),
        };
        let mut written = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .context(t!("audit.export_broke_off"))?
        {
            sink.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        sink.flush()?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use krisbud_audit::{bundle, chain, signing};
    use krisbud_proto::audit::{BUNDLE_FORMAT, BundleHeader, GENESIS_HASH};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AuditCommand,
    }

    fn parse(args: &[&str]) -> AuditCommand {
        Cli::try_parse_from(std::iter::once("audit").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn the_commands_parse() {
        assert!(matches!(
            parse(&["report", "c1", "--format", "html", "--token", "t"]),
            AuditCommand::Report {
                format: ReportFormat::Html,
                ..
            }
        ));
        assert!(matches!(
            parse(&["lookup", "070-123 45 67", "--crisis", "c1", "--token", "t"]),
            AuditCommand::Lookup { .. }
        ));
        let AuditCommand::Export {
            format, filters, ..
        } = parse(&[
            "export",
            "--format",
            "csv",
            "--crisis",
            "c1",
            "--from",
            "2026-11-26T00:00:00Z",
            "--token",
            "t",
        ])
        else {
            panic!("export");
        };
        assert_eq!(format, ExportFormat::Csv);
        assert_eq!(
            filters.pairs(),
            [
                ("crisis", "c1".to_owned()),
                ("from", "2026-11-26T00:00:00Z".to_owned())
            ]
        );
        assert!(matches!(
            parse(&["verify", "--file", "b.jsonl", "--trust-key", "ab", "--trust-key", "cd"]),
            AuditCommand::Verify { trust_keys, .. } if trust_keys.len() == 2
        ));
        assert!(
            Cli::try_parse_from(["audit", "export", "--format", "xml", "--token", "t"]).is_err()
        );
    }

    /// A bundle of `n` records signed by `key`, the key registered at record 1.
    fn signed_bundle(key: &signing::SigningKey, n: u64) -> Vec<u8> {
        bundle_with(key, n, &[n], 1).0
    }

    /// A bundle of `n` records a second apart times `spacing`, with checkpoints
    /// over `signed`; also its records and checkpoints.
    fn bundle_with(
        key: &signing::SigningKey,
        n: u64,
        signed: &[u64],
        spacing: i64,
    ) -> (
        Vec<u8>,
        Vec<krisbud_proto::audit::AuditRecord>,
        Vec<krisbud_proto::audit::Checkpoint>,
    ) {
        let start: chrono::DateTime<chrono::Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        let rotation = signing::rotation(&key.verifying_key(), None, None);
        let mut records: Vec<krisbud_proto::audit::AuditRecord> = Vec::new();
        for i in 1..=n {
            let event = if i == 1 {
                serde_json::json!({"kind": "AuditKeyRotated", "payload": rotation})
            } else {
                serde_json::json!({"kind": "ChannelConfirmed", "payload": {"note": i}})
            };
            let prev = records
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            let at = start + chrono::Duration::seconds(spacing * i as i64);
            records.push(chain::seal(i, at, i, event, prev));
        }
        let checkpoints: Vec<_> = signed
            .iter()
            .map(|&c| {
                signing::sign_checkpoint(
                    key,
                    c,
                    &records[c as usize - 1].hash,
                    records[c as usize - 1].recorded_at,
                    Some(&records[0].hash),
                )
            })
            .collect();
        let mut out = Vec::new();
        bundle::write(
            &mut out,
            BundleHeader {
                format: BUNDLE_FORMAT.into(),
                version: bundle::VERSION,
                exported_at: start + chrono::Duration::seconds(spacing * n as i64),
                last_sequence: n,
            },
            &[signing::public_key(&key.verifying_key())],
            &checkpoints,
            &records,
        )
        .unwrap();
        (out, records, checkpoints)
    }

    fn hex_key(key: &signing::SigningKey) -> String {
        hex::encode(key.verifying_key().as_bytes())
    }

    async fn verify_code(args: &[&str]) -> ExitCode {
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        run(parse(&all)).await.unwrap()
    }

    #[tokio::test]
    async fn verify_needs_a_trust_key_or_says_on_purpose_that_it_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let key = signing::SigningKey::from_bytes(&[3; 32]);
        let path = dir.path().join("b.jsonl");
        std::fs::write(&path, signed_bundle(&key, 5)).unwrap();
        let file = path.to_str().unwrap();
        let refused = run(parse(&["verify", "--file", file])).await.unwrap_err();
        assert!(refused.to_string().contains("--trust-key"), "{refused}");
        assert_eq!(
            verify_code(&["--file", file, "--no-trust-key"]).await,
            ExitCode::SUCCESS
        );
        let report = verify_file(&path, &[]).unwrap();
        let text = format_verdict(&report, &[]);
        assert!(
            text.contains("authenticity NOT checked") && text.contains(&report.keys[0]),
            "{text}"
        );
        // Re-signed by a fresh key: consistent, but not by the published key.
        let fresh = signing::SigningKey::from_bytes(&[4; 32]);
        std::fs::write(&path, signed_bundle(&fresh, 5)).unwrap();
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &hex_key(&key)]).await,
            ExitCode::FAILURE
        );
    }

    #[tokio::test]
    async fn a_rewritten_bundle_without_its_checkpoints_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let key = signing::SigningKey::from_bytes(&[3; 32]);
        // Record 3 changed and every later hash recomputed (a fresh chain), and
        // the checkpoint lines left out.
        let (_, mut records, _) = bundle_with(&key, 6, &[6], 1);
        records[2].event["payload"]["note"] = serde_json::json!(99);
        let mut prev = records[1].hash.clone();
        for r in records.iter_mut().skip(2) {
            *r = chain::seal(
                r.sequence,
                r.recorded_at,
                r.event_sequence,
                r.event.clone(),
                prev,
            );
            prev = r.hash.clone();
        }
        let mut out = Vec::new();
        bundle::write(
            &mut out,
            BundleHeader {
                format: BUNDLE_FORMAT.into(),
                version: bundle::VERSION,
                exported_at: records[5].recorded_at,
                last_sequence: 6,
            },
            &[signing::public_key(&key.verifying_key())],
            &[],
            &records,
        )
        .unwrap();
        let path = dir.path().join("rewritten.jsonl");
        std::fs::write(&path, out).unwrap();
        let file = path.to_str().unwrap();
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &hex_key(&key)]).await,
            ExitCode::FAILURE
        );
        let report = verify_file(&path, &[key.verifying_key()]).unwrap();
        assert!(report.ok, "the chain itself is consistent: {report:?}");
        let policy = krisbud_audit::bundle::TailPolicy {
            max_records: 2000,
            max_age: chrono::Duration::seconds(120),
        };
        let doubts = krisbud_audit::bundle::doubts(&report, &policy, None);
        let text = format_verdict(&report, &doubts);
        assert!(
            text.starts_with("audit chain NOT TRUSTED") && text.contains("no signed checkpoint"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unsigned_tail_longer_than_the_checkpoint_interval_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let key = signing::SigningKey::from_bytes(&[3; 32]);
        let public = hex_key(&key);
        let path = dir.path().join("b.jsonl");
        let file = path.to_str().unwrap();
        // 30 records a minute apart, signed up to record 2: the last checkpoints
        // were taken out.
        std::fs::write(&path, bundle_with(&key, 30, &[2], 60).0).unwrap();
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &public]).await,
            ExitCode::FAILURE
        );
        let report = verify_file(&path, &[key.verifying_key()]).unwrap();
        let tail = report.unsigned_tail.clone().unwrap();
        assert_eq!(
            (tail.records, tail.first_sequence, tail.last_sequence),
            (28, 3, 30)
        );
        let text = format_verdict(
            &report,
            &krisbud_audit::bundle::doubts(
                &report,
                &krisbud_audit::bundle::TailPolicy {
                    max_records: 2000,
                    max_age: chrono::Duration::seconds(120),
                },
                None,
            ),
        );
        assert!(text.contains("recorded over 1620 s"), "{text}");
        assert!(text.contains("unsigned tail: 28 records"), "{text}");
        // A count limit of its own.
        assert_eq!(
            verify_code(&[
                "--file",
                file,
                "--trust-key",
                &public,
                "--max-unsigned-secs",
                "100000",
                "--max-unsigned-records",
                "10",
            ])
            .await,
            ExitCode::FAILURE
        );
        // Within both limits, a short tail is fine.
        std::fs::write(&path, bundle_with(&key, 30, &[28], 1).0).unwrap();
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &public]).await,
            ExitCode::SUCCESS
        );
    }

    #[tokio::test]
    async fn a_chain_cut_short_or_rebuilt_fails_against_a_saved_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let key = signing::SigningKey::from_bytes(&[3; 32]);
        let public = hex_key(&key);
        let (full, _, checkpoints) = bundle_with(&key, 10, &[5, 10], 1);
        let saved = dir.path().join("saved.json");
        std::fs::write(&saved, serde_json::to_string(&checkpoints[1]).unwrap()).unwrap();
        let saved = saved.to_str().unwrap();
        let path = dir.path().join("b.jsonl");
        let file = path.to_str().unwrap();
        std::fs::write(&path, &full).unwrap();
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &public, "--since", saved]).await,
            ExitCode::SUCCESS
        );
        // A whole bundle saved earlier serves too: its newest checkpoint counts.
        let saved_bundle = dir.path().join("saved-bundle.jsonl");
        std::fs::write(&saved_bundle, &full).unwrap();
        assert_eq!(
            read_saved_point(&saved_bundle).unwrap(),
            read_saved_point(Path::new(saved)).unwrap()
        );
        // Its tail cut off, with the header and the checkpoints to match: a
        // consistent prefix, which only the saved checkpoint contradicts.
        std::fs::write(&path, bundle_with(&key, 7, &[5], 1).0).unwrap();
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &public]).await,
            ExitCode::SUCCESS
        );
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &public, "--since", saved]).await,
            ExitCode::FAILURE
        );
        // Rebuilt: the same events recorded again, later, signed by the same key.
        std::fs::write(&path, bundle_with(&key, 10, &[10], 2).0).unwrap();
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &public]).await,
            ExitCode::SUCCESS,
            "its own signatures are valid"
        );
        assert_eq!(
            verify_code(&["--file", file, "--trust-key", &public, "--since", saved]).await,
            ExitCode::FAILURE
        );
        let report = verify_file_since(
            &path,
            &[key.verifying_key()],
            Some(read_saved_point(Path::new(saved)).unwrap()),
        )
        .unwrap();
        let bad = report.first_bad.unwrap();
        assert_eq!(
            (bad.sequence, bad.problem.as_str()),
            (1, chain::NOT_THE_SAVED_CHAIN)
        );
        assert!(bad.detail.contains("rebuilt"), "{}", bad.detail);
    }

    #[tokio::test]
    async fn a_generated_key_signs_a_bundle_that_verifies_offline_and_tampering_fails() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("audit.key");
        let code = run(parse(&["keygen", "--out", key_file.to_str().unwrap()]))
            .await
            .unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        assert!(
            run(parse(&["keygen", "--out", key_file.to_str().unwrap()]))
                .await
                .is_err(),
            "never overwritten"
        );
        let key = signing::read_key_file(&key_file).unwrap();
        let public = hex::encode(key.verifying_key().as_bytes());

        let path = dir.path().join("bundle.jsonl");
        std::fs::write(&path, signed_bundle(&key, 5)).unwrap();
        let report = verify_file(&path, &[key.verifying_key()]).unwrap();
        assert!(report.ok, "{report:?}");
        let text = format_report(&report);
        assert!(
            text.starts_with("audit chain ok: 5 records verified\n"),
            "{text}"
        );
        assert!(
            text.contains("1 signed checkpoints verified, the last over record 5"),
            "{text}"
        );
        let file = path.to_str().unwrap();
        let code = run(parse(&["verify", "--file", file, "--trust-key", &public]))
            .await
            .unwrap();
        assert_eq!(code, ExitCode::SUCCESS);

        let tampered = String::from_utf8(std::fs::read(&path).unwrap())
            .unwrap()
            .replace("\"note\":3", "\"note\":4");
        std::fs::write(&path, tampered).unwrap();
        let report = verify_file(&path, &[]).unwrap();
        assert!(
            format_report(&report).starts_with("audit chain BROKEN at record 3: hash mismatch")
        );
        let code = run(parse(&["verify", "--file", file, "--no-trust-key"]))
            .await
            .unwrap();
        assert_eq!(code, ExitCode::FAILURE);
        let other = signing::SigningKey::from_bytes(&[5; 32]);
        let stranger = hex::encode(other.verifying_key().as_bytes());
        std::fs::write(&path, signed_bundle(&key, 5)).unwrap();
        let code = run(parse(&["verify", "--file", file, "--trust-key", &stranger]))
            .await
            .unwrap();
        assert_eq!(code, ExitCode::FAILURE);
    }
}
