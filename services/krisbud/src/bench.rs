//! `krisbud bench fanout`: how fast one SMS declaration reaches N recipients
//! through the real services, measured against raw JetStream on the same server.
//!
//! One run, in this order:
//! 1. a private `nats-server` (or `--nats <url>`);
//! 2. the baseline ([`baseline`]): N bare messages, each the size of one
//!    recipient's share of an SMS dispatch job, published asynchronously to a
//!    work-queue file stream and then pulled and acked, as msgs/s;
//! 3. an in-process simulator of the provider's HTTP API ([`simulator`]) and every
//!    service started as `krisbud up --demo` starts them, with channel-sms pointed
//!    at the simulator;
//! 4. the audiences, created over the HTTP API by the demo administrator (not timed):
//!    N members for the fan-out, one member for the latency runs;
//! 5. the latency runs: small declarations one after the other, each timed from
//!    its 201 to the simulator's arrival of its first submission;
//! 6. the fan-out: one declaration over `POST /api/v1/crises` by the demo duty
//!    officer, timed until the simulator has every recipient and
//!    `GET /api/v1/crises/{id}` counts every one as sent, delivered or failed;
//! 7. the peak RSS (VmHWM) of this process and of the private nats-server during
//!    the fan-out (the peaks are reset just before it) and since their start.
//!
//! The last line printed is `ratio <e2e recipients/s ÷ baseline msgs/s>`.

pub mod baseline;
pub mod console;
pub mod simulator;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use krisbud_proto::command::DeclareCrisis;
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::{Channel, Role};

use crate::client::Client;
use crate::config::Config;
use crate::local_nats::LocalNatsServer;
use crate::system::{self, UpOptions};
use baseline::Baseline;
use simulator::Simulator;

/// The demo template declared (approved by `krisbud up --demo`).
pub const TEMPLATE: &str = "vattenlacka";
/// The audience of the latency runs: one member.
pub const LATENCY_AUDIENCE: &str = "bench-1";
/// Bytes of CSV per piece of the audience upload.
const UPLOAD_PIECE: usize = 64 * 1024;
/// The most recipients: the numbers are `+4670` and seven digits.
pub const MAX_RECIPIENTS: u64 = 9_999_998;

/// `krisbud bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Declare one SMS crisis to N recipients through a provider simulator and the
    /// real services, and compare with raw JetStream on the same nats-server.
    Fanout(FanoutArgs),
}

/// `krisbud bench fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Recipients of the fan-out (the audience is created with this many members).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=MAX_RECIPIENTS))]
    pub recipients: u64,
    /// The provider API the SMS channel talks to (simulated in this process).
    #[arg(long, value_enum, default_value_t = BenchProvider::Sinch)]
    pub provider: BenchProvider,
    /// A NATS server to use instead of starting a private one (its memory is then
    /// not measured). The benchmark creates krisbud's streams and buckets there.
    #[arg(long)]
    pub nats: Option<String>,
    /// A configuration file (TOML) for the services, e.g. `[coordinator]
    /// batch_size` or `[sms] concurrency`; the NATS URL, listeners and the SMS
    /// provider are the benchmark's own. `KRISBUD_<SECTION>__<KEY>` also applies.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the NATS store and the services' files go; a temporary directory,
    /// removed afterwards, when left out.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Small declarations (to a one-member audience) timed from 201 to the first
    /// submission at the provider.
    #[arg(long, default_value_t = 50)]
    pub latency_runs: usize,
    /// Provider requests in flight (`sms.parallel_requests`); 64 with 46elks,
    /// the configuration's (default 8) with Sinch.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Dispatch jobs handled at once (`sms.concurrency`); the configuration's
    /// (default 4) when left out.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Give up when nothing moves for this many seconds.
    #[arg(long, default_value_t = 120)]
    pub stall_secs: u64,
    /// Print the fan-out's progress to stderr about twice a second: seconds since
    /// the declaration, recipients submitted to the provider, recipients counted
    /// in status.
    #[arg(long)]
    pub timeline: bool,
    /// Console clients (signed in as the demo duty officer) loading the crisis's
    /// status board, `/healthz` and, every fourth, declaring in the console during
    /// the fan-out; then this many times 62.5 (1,000 for 16) live boards are held
    /// open to measure their memory. 0 leaves the console out.
    #[arg(long, default_value_t = 0)]
    pub console_clients: usize,
}

/// The provider API simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchProvider {
    /// Sinch's batch API (up to 1,000 recipients a request).
    Sinch,
    /// 46elks (one recipient a request).
    #[value(name = "46elks")]
    Elks46,
}

impl BenchProvider {
    fn name(self) -> &'static str {
        match self {
            BenchProvider::Sinch => "sinch",
            BenchProvider::Elks46 => "46elks",
        }
    }
}

/// Runs a bench subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Fanout(args) => {
            Box::pin(fanout(args)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The phone number of member `i`: `+4670` and seven digits.
pub fn phone(i: u64) -> String {
    format!("+4670{i:07}")
}

/// The whole benchmark; prints as it goes and ends with the `ratio` line.
pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let n = args.recipients;
    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("krisbud-bench-")
                .tempdir()?;
            temp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut config = Config::load(args.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    config.common.data_dir = data_dir.clone();
    config.gateway.listen = "127.0.0.1:0".into();
    // The console measurement holds a thousand boards open as one user.
    config.gateway.streams_per_user = usize::MAX;
    config.banner.listen = "127.0.0.1:0".into();
    if config.common.telemetry.log == "info" {
        // Info logs a line per job; they would bury the progress bar.
        config.common.telemetry.log = "warn".into();
    }
    let _telemetry = krisbud_kit::telemetry::init("krisbud-bench", &config.common.telemetry);

    // 1. NATS.
    // The baseline and the audit lag are measured as a user of their own, which
    // may do anything on the private server; the services run as their own users.
    let bench_password = krisbud_kit::secret_file::random_password();
    let local_nats = match &args.nats {
        Some(url) => {
            config.common.nats.url = url.clone();
            None
        }
        None => {
            let (settings, dir) = (config.local_nats.clone(), data_dir.clone());
            let unrestricted = vec![("bench".to_owned(), bench_password.clone())];
            let server = tokio::task::spawn_blocking(move || {
                LocalNatsServer::start_with(&settings, &dir, &unrestricted)
            })
            .await??;
            config.common.nats.url = server.url.clone();
            config.common.nats.credentials_dir = Some(server.credentials_dir.clone());
            Some(server)
        }
    };
    let bench_user = local_nats
        .as_ref()
        .map(|_| ("bench".to_owned(), bench_password));
    let nats_pid = match local_nats {
        Some(_) => Some(read_pid(&data_dir.join("nats").join("nats-server.pid"))?),
        None => None,
    };
    let nats_url = config.common.nats.url.clone();

    let simulator = Simulator::start(args.provider).await;
    simulator.configure(&mut config.sms);
    if let Some(c) = args.connections {
        config.sms.parallel_requests = c;
    } else if args.provider == BenchProvider::Elks46 {
        config.sms.parallel_requests = 64;
    }
    if let Some(j) = args.jobs {
        config.sms.concurrency = j;
    }
    let batch = config.coordinator.batch_size;
    let memory_limit = config.local_nats.memory_limit.clone();
    say(&format!(
        "krisbud bench fanout: {} recipients via {} (simulated at {}); sms: {} jobs at once, {} requests in flight, {} recipients a job{}",
        int(n),
        args.provider.name(),
        match &simulator {
            Simulator::Sinch(s) => s.base_url(),
            Simulator::Elks(s) => s.base_url(),
        },
        config.sms.concurrency,
        config.sms.parallel_requests,
        int(batch as u64),
        match args.provider {
            BenchProvider::Sinch => format!(
                ", {} a sinch batch",
                int(config.sms.sinch_batch_size as u64)
            ),
            BenchProvider::Elks46 => String::new(),
        }
    ));

    // 2. The baseline, before the services run, on the same server.
    let share = baseline::recipient_share(batch)?;
    let base = baseline::run(&nats_url, bench_user.as_ref(), n, share).await?;
    let memory_limit = std::env::var("GOMEMLIMIT").unwrap_or(memory_limit);
    say(&describe_baseline(
        &base,
        batch,
        local_nats.as_ref().map(|_| memory_limit.as_str()),
    ));

    // 3. The services.
    let shutdown = krisbud_kit::CancellationToken::new();
    let system = system::up(config, UpOptions { demo: true }, shutdown.clone()).await?;
    let tokens = system
        .demo_tokens
        .clone()
        .context("the demo users are missing")?;
    let api = format!("http://{}", system.api);
    let duty = Client::new(&api, tokens.token_for(Role::DutyOfficer));
    let http = reqwest::Client::new();
    let admin = tokens.token_for(Role::Admin).to_owned();

    // 4. Audiences (not timed as part of the fan-out).
    let started = Instant::now();
    let audience = format!("bench-{n}");
    let imported = create_audience(&http, &api, &admin, &audience, 0..n).await?;
    anyhow::ensure!(
        imported == n,
        "the audience holds {imported} members, not {n}"
    );
    create_audience(
        &http,
        &api,
        &admin,
        LATENCY_AUDIENCE,
        MAX_RECIPIENTS + 1..MAX_RECIPIENTS + 2,
    )
    .await?;
    say(&format!(
        "audience: {} members imported over the API in {:.3} s (not part of the fan-out)",
        int(imported),
        started.elapsed().as_secs_f64()
    ));

    // 5. Latency runs.
    if args.latency_runs > 0 {
        let latencies = latency_runs(&duty, &simulator, args.latency_runs).await?;
        say(&describe_latency(&latencies));
    }

    // 7 (before 6). Peaks so far, then reset so the next ones are the fan-out's.
    let own_pid = std::process::id().to_string();
    let nats_pid = nats_pid.map(|p| p.to_string());
    let peaks_before = Peaks::read(&own_pid, nats_pid.as_deref());
    let reset = reset_peak(&own_pid) && nats_pid.as_deref().is_none_or(reset_peak);

    // 6. The fan-out.
    let console = (args.console_clients > 0).then(|| console::Console {
        api: api.clone(),
        user: "tib.maria".to_owned(),
        password: tokens.token_for(Role::DutyOfficer).to_owned(),
        audience: LATENCY_AUDIENCE.to_owned(),
    });
    let fan = fan_out(&duty, &simulator, &audience, n, &args, console.as_ref()).await?;
    let audit_lag = audit_lag(&nats_url, bench_user.as_ref()).await?;
    let peaks = Peaks::read(&own_pid, nats_pid.as_deref());
    let e2e = n as f64 / fan.complete.as_secs_f64();
    say(&format!(
        "e2e: {} recipients in {:.3} s: {} recipients/s (201 after {:.1} ms, first submit at {:.1} ms, all submitted at {:.3} s, all counted in status at {:.3} s; sent {}, delivered {}, failed {}){}",
        int(n),
        fan.complete.as_secs_f64(),
        int(e2e.round() as u64),
        ms(fan.created),
        fan.first_submit.map_or(f64::NAN, ms),
        fan.all_submitted.as_secs_f64(),
        fan.complete.as_secs_f64(),
        int(fan.sent),
        int(fan.delivered),
        int(fan.failed),
        match args.provider {
            BenchProvider::Elks46 => " [target >= 20,000 recipients/s over 64 connections]",
            BenchProvider::Sinch => "",
        }
    ));
    say(&describe_peaks(
        &peaks,
        &peaks_before,
        reset,
        nats_pid.is_some(),
    ));
    if let (Some(report), Some(console)) = (&fan.console, &console) {
        say(&format!(
            "console during the fan-out, {} clients: status board {} [target p99 <= 50 ms]; declaration POST to board {} [target p99 <= 150 ms]; baseline /healthz {}; board p99 ÷ healthz p99 = {:.1}",
            args.console_clients,
            report.board.describe(),
            report.declare.describe(),
            report.healthz.describe(),
            report.board.p99().as_secs_f64() / report.healthz.p99().as_secs_f64().max(1e-9),
        ));
        let boards = args.console_clients * 1000 / 16;
        let (bare_before, bare_with) = console::bare_sse_memory(boards).await?;
        let (before, with) = console::sse_memory(console, &fan.crisis_id, boards).await?;
        let mb = |kb: u64| kb as f64 / 1024.0;
        let (live, bare) = (
            with.saturating_sub(before),
            bare_with.saturating_sub(bare_before),
        );
        say(&format!(
            "console live boards: {} open SSE boards add {:.1} MB to the process; baseline: as many bare axum SSE streams in the same process add {:.1} MB; the boards' own cost {:.1} MB [target <= 50 MB for 1,000]",
            int(boards as u64),
            mb(live),
            mb(bare),
            mb(live.saturating_sub(bare)),
        ));
    }
    say(&format!(
        "audit: when every recipient was counted, the chain was {} records behind the {} events; it held them all {:.3} s later [target <= 2 s]",
        int(audit_lag.behind),
        int(audit_lag.events),
        audit_lag.caught_up.as_secs_f64()
    ));
    let ratio = e2e / base.rate();
    say(&format!(
        "e2e/baseline: {} recipients/s ÷ {} msgs/s{}",
        int(e2e.round() as u64),
        int(base.rate().round() as u64),
        match args.provider {
            BenchProvider::Sinch => " [target >= 1.0 for 1,000,000 recipients via sinch]",
            BenchProvider::Elks46 => "",
        }
    ));

    shutdown.cancel();
    let stopped = system.wait().await;
    if let Some(server) = local_nats {
        tokio::task::spawn_blocking(move || drop(server)).await?;
    }
    stopped?;
    say(&format!("ratio {ratio:.2}"));
    Ok(())
}

/// How far the audit chain was behind the events at the end of the fan-out, and
/// how long it took to record them all.
struct AuditLag {
    events: u64,
    behind: u64,
    caught_up: Duration,
}

/// Compares the chain's length with the events stream's (one record per event)
/// now, then waits until the chain holds every event there was now.
async fn audit_lag(nats_url: &str, user: Option<&(String, String)>) -> anyhow::Result<AuditLag> {
    let started = Instant::now();
    let client = baseline::connect(nats_url, user).await?;
    let js = async_nats::jetstream::new(client);
    let mut events = js.get_stream(krisbud_proto::spec::EVENTS.name).await?;
    let mut audit = js.get_stream(krisbud_proto::spec::AUDIT.name).await?;
    let total = events.info().await?.state.last_sequence;
    let recorded = audit.info().await?.state.last_sequence;
    loop {
        if audit.info().await?.state.last_sequence >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the audit chain did not catch up within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(AuditLag {
        events: total,
        behind: total.saturating_sub(recorded),
        caught_up: started.elapsed(),
    })
}

fn describe_baseline(base: &Baseline, batch: usize, private: Option<&str>) -> String {
    format!(
        "baseline: {} msgs of {} B (one recipient's share of a {}-recipient sms job) on nats-server {} ({}): async publish {:.3} s ({} msgs/s), pull+ack {:.3} s ({} msgs/s), together {} msgs/s",
        int(base.messages),
        base.message_bytes,
        int(batch as u64),
        base.server,
        match private {
            Some("") => "private, no memory limit".to_owned(),
            Some(limit) => format!("private, GOMEMLIMIT {limit}"),
            None => "given".to_owned(),
        },
        base.publish.as_secs_f64(),
        int(base.publish_rate().round() as u64),
        base.consume.as_secs_f64(),
        int(base.consume_rate().round() as u64),
        int(base.rate().round() as u64),
    )
}

/// Creates audience `id` over the API as an administrator would (`POST
/// /audiences`, then `PUT /audiences/{id}/members` with a CSV of the members
/// `numbers`, see [`phone`]) and returns how many members it holds. The CSV is
/// streamed in pieces of [`UPLOAD_PIECE`] bytes as it is written, as `krisbud
/// audiences import` streams a file.
async fn create_audience(
    http: &reqwest::Client,
    api: &str,
    admin_token: &str,
    id: &str,
    numbers: std::ops::Range<u64>,
) -> anyhow::Result<u64> {
    let response = http
        .post(format!("{api}/api/v1/audiences"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({ "id": id, "name": "Bench", "exercise": false }))
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(
        status.as_u16() == 201 || status.as_u16() == 409,
        "POST /api/v1/audiences answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    let header = Some(Ok::<_, std::io::Error>(b"phone,email,language\n".to_vec()));
    let rows = futures::stream::iter(header).chain(futures::stream::unfold(
        numbers,
        |mut numbers| async move {
            let mut piece = String::with_capacity(UPLOAD_PIECE + 32);
            for i in numbers.by_ref() {
                let _ = writeln!(piece, "{},,sv", phone(i));
                if piece.len() >= UPLOAD_PIECE {
                    break;
                }
            }
            (!piece.is_empty()).then(|| (Ok(piece.into_bytes()), numbers))
        },
    ));
    let response = http
        .put(format!("{api}/api/v1/audiences/{id}/members"))
        .bearer_auth(admin_token)
        .header(reqwest::header::CONTENT_TYPE, "text/csv")
        .body(reqwest::Body::wrap_stream(rows))
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "PUT /api/v1/audiences/{id}/members answered {status}: {body}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&body).context("unreadable import report")?;
    report["imported"]
        .as_u64()
        .context("the import report has no `imported`")
}

/// An SMS-only declaration of the demo template to `audience`; `area` goes into
/// the text, so each declaration's message can be told apart at the provider.
/// The values of the benchmark's declarations, for the area `area`.
pub fn variables(area: &str) -> Vec<(String, String)> {
    vec![
        ("omrade".into(), area.into()),
        ("beraknat_klart".into(), "i kväll kl. 20".into()),
        ("vattenpunkt".into(), "Farsta centrum".into()),
    ]
}

fn declaration(audience: &str, area: &str) -> anyhow::Result<DeclareCrisis> {
    let variables: serde_json::Map<String, serde_json::Value> = variables(area)
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "template": TEMPLATE,
        "variables": variables,
        "audiences": [audience],
        "channels": ["sms"],
        "status": "Actual",
    }))?)
}

/// The SMS channel's counts: (planned, total, sent, delivered, failed).
fn sms_counts(status: &CrisisStatus) -> (bool, u64, u64, u64, u64) {
    status
        .channels
        .get(&Channel::Sms)
        .map_or((false, 0, 0, 0, 0), |c| {
            (c.planned, c.total, c.sent, c.delivered, c.failed)
        })
}

/// Signed milliseconds from `from` to `to`.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => ms(d),
        None => -ms(from.duration_since(to)),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `runs` declarations to the one-member audience, one after the other (each
/// waits until its recipient is counted), timed from the 201 to the simulator's
/// arrival of the first submission holding the declaration's text.
async fn latency_runs(duty: &Client, sim: &Simulator, runs: usize) -> anyhow::Result<Vec<f64>> {
    let bar = ProgressBar::new(runs as u64).with_style(
        ProgressStyle::with_template("latency {bar:30} {pos}/{len} declarations")
            .expect("a valid template"),
    );
    let mut latencies = Vec::with_capacity(runs);
    for i in 0..runs {
        let area = format!("Bench {i:05}");
        let first = sim.notify_first(&area);
        let declared = duty
            .declare(&declaration(LATENCY_AUDIENCE, &area)?, None)
            .await?;
        let created = Instant::now();
        let submitted = tokio::time::timeout(Duration::from_secs(30), first)
            .await
            .with_context(|| format!("no submission of crisis {} within 30 s", declared.crisis_id))?
            .context("the simulator stopped")?;
        latencies.push(signed_ms(created, submitted));
        wait_counted(duty, &declared.crisis_id, 1, Duration::from_secs(30)).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(latencies)
}

/// Waits until the SMS channel of `crisis` counts `n` recipients as sent,
/// delivered or failed out of `n` planned.
async fn wait_counted(
    client: &Client,
    crisis: &str,
    n: u64,
    within: Duration,
) -> anyhow::Result<CrisisStatus> {
    let deadline = Instant::now() + within;
    loop {
        let status = client.crisis(crisis).await?;
        let (planned, total, sent, delivered, failed) = sms_counts(&status);
        if planned && total == n && sent + delivered + failed == n {
            return Ok(status);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "crisis {crisis}: sms {sent}+{delivered}+{failed} of {total} counted after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn describe_latency(latencies: &[f64]) -> String {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "latency: 201 -> first submit over {} declarations to one recipient: p50 {:.2} ms, p99 {:.2} ms (min {:.2}, max {:.2}) [target p99 <= 20 ms]",
        sorted.len(),
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

/// What the fan-out measured, each from the moment the declaration was sent.
struct FanOut {
    crisis_id: String,
    /// What the console clients measured, when there were any.
    console: Option<console::Report>,
    created: Duration,
    first_submit: Option<Duration>,
    all_submitted: Duration,
    complete: Duration,
    sent: u64,
    delivered: u64,
    failed: u64,
}

/// Declares to `audience` and waits until the simulator has `n` recipients and the
/// status counts all of them, showing a progress bar on stderr.
async fn fan_out(
    duty: &Client,
    sim: &Simulator,
    audience: &str,
    n: u64,
    args: &FanoutArgs,
    console: Option<&console::Console>,
) -> anyhow::Result<FanOut> {
    let stall_secs = args.stall_secs;
    let area = "Bench fan-out";
    let body = declaration(audience, area)?;
    let bar = ProgressBar::new(n).with_style(
        ProgressStyle::with_template(
            "fan-out {elapsed_precise} [{bar:40}] {human_pos}/{human_len} submitted ({per_sec}) {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let before = sim.submitted();
    let first = sim.notify_first(area);
    let start = Instant::now();
    let declared = duty.declare(&body, None).await?;
    let created = start.elapsed();
    let planned = declared.recipients.get(&Channel::Sms).copied().unwrap_or(0);
    anyhow::ensure!(
        planned == n,
        "the declaration plans {planned} sms recipients, not {n}"
    );
    let load = match console {
        Some(c) => Some(console::start(c, &declared.crisis_id, args.console_clients).await?),
        None => None,
    };
    let mut first = Some(first);
    let mut first_submit = None;
    let mut all_submitted = None;
    let mut last_poll: Option<Instant> = None;
    let mut last_line: Option<Instant> = None;
    let mut moved = (Instant::now(), 0u64, 0u64);
    loop {
        if let Some(rx) = &mut first
            && let Ok(at) = rx.try_recv()
        {
            first_submit = Some(at.saturating_duration_since(start));
            first = None;
        }
        let submitted = sim.submitted() - before;
        bar.set_position(submitted.min(n));
        if submitted >= n && all_submitted.is_none() {
            all_submitted = Some(start.elapsed());
        }
        let tail = submitted >= n;
        if tail || last_poll.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            last_poll = Some(Instant::now());
            let status = duty.crisis(&declared.crisis_id).await?;
            let (planned, total, sent, delivered, failed) = sms_counts(&status);
            let counted = sent + delivered + failed;
            bar.set_message(format!("{} counted", int(counted)));
            if args.timeline
                && (counted == n
                    || last_line.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)))
            {
                last_line = Some(Instant::now());
                bar.suspend(|| {
                    eprintln!(
                        "timeline {:>8.3} s: submitted {submitted:>9} counted {counted:>9}",
                        start.elapsed().as_secs_f64()
                    );
                });
            }
            if tail && planned && total == n && counted == n {
                let complete = start.elapsed();
                bar.finish_and_clear();
                let console = match load {
                    Some(load) => Some(load.finish().await?),
                    None => None,
                };
                return Ok(FanOut {
                    crisis_id: declared.crisis_id.clone(),
                    console,
                    created,
                    first_submit,
                    all_submitted: all_submitted.unwrap_or(complete),
                    complete,
                    sent,
                    delivered,
                    failed,
                });
            }
            if (submitted, counted) != (moved.1, moved.2) {
                moved = (Instant::now(), submitted, counted);
            }
        }
        if moved.0.elapsed() >= Duration::from_secs(stall_secs) {
            bar.abandon();
            anyhow::bail!(
                "crisis {}: stalled for {stall_secs} s with {} of {n} submitted and {} counted",
                declared.crisis_id,
                moved.1,
                moved.2
            );
        }
        // Near the end the status is read often enough to time the end within
        // 0.2 %, but not so often that reading it slows the projection down.
        let pause = if tail {
            (start.elapsed() / 500).clamp(Duration::from_millis(2), Duration::from_millis(50))
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(pause).await;
    }
}

/// Peak resident set sizes (VmHWM), in kB.
struct Peaks {
    own: Option<u64>,
    nats: Option<u64>,
}

impl Peaks {
    fn read(own_pid: &str, nats_pid: Option<&str>) -> Peaks {
        Peaks {
            own: vm_hwm_kb(own_pid),
            nats: nats_pid.and_then(vm_hwm_kb),
        }
    }
}

fn vm_hwm_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets a process's peak RSS to its current RSS (Linux: `5` to `clear_refs`).
fn reset_peak(pid: &str) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn read_pid(path: &Path) -> anyhow::Result<u32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no pid", path.display()))
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or_else(
        || "n/a".into(),
        |kb| format!("{:.1} MB", kb as f64 / 1024.0),
    )
}

fn describe_peaks(peaks: &Peaks, before: &Peaks, reset: bool, private: bool) -> String {
    let sum = |p: &Peaks| match (p.own, p.nats) {
        (Some(a), Some(b)) => Some(a + b),
        (Some(a), None) if !private => Some(a),
        _ => None,
    };
    let total_since_start = match (peaks.own.max(before.own), peaks.nats.max(before.nats)) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    let mut line = format!(
        "rss (VmHWM): krisbud {} + nats-server {} = {} {} [target <= 300 MB]",
        mb(peaks.own),
        if private {
            mb(peaks.nats)
        } else {
            "not measured (--nats)".into()
        },
        mb(sum(peaks)),
        if reset {
            "during the fan-out"
        } else {
            "since start"
        },
    );
    if reset {
        let _ = write!(
            line,
            "; since start (audience import included): krisbud {} + nats-server {} = {}",
            mb(peaks.own.max(before.own)),
            mb(peaks.nats.max(before.nats)),
            mb(total_since_start),
        );
    }
    line
}

/// `1234567` as `1,234,567`.
fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line of the report on stdout (the progress bars are on stderr).
fn say(line: &str) {
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(1_000_000), "1,000,000");
        assert_eq!(phone(7), "+46700000007");
        assert_eq!(phone(MAX_RECIPIENTS + 1), "+46709999999");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 25.0);
        assert_eq!(percentile(&values, 99.0), 50.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn the_share_of_a_recipient_is_its_entry_and_a_bit() {
        let share = baseline::recipient_share(1000).unwrap();
        // `{"reference":"rcp:<32 hex>","address":"+4670xxxxxxx"},` is 68 bytes.
        assert!((68..80).contains(&share), "{share}");
        assert!(baseline::recipient_share(1).unwrap() > share * 3);
    }
}
