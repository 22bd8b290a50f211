//! The console under load (`krisbud bench fanout --console-clients N`): while the
//! fan-out runs, N signed-in browsers' worth of requests, each client in a loop:
//! the status board page of the crisis being fanned out, `/healthz` (the
//! gateway's floor, the same-run baseline), and for every fourth client a whole
//! console declaration (`POST /konsol/ny-kris/...`, followed to the board) to a
//! one-member audience. Afterwards, the gateway's extra memory for many open
//! live boards (server-sent events).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use krisbud_kit::CancellationToken;

/// Who signs in and where.
#[derive(Clone)]
pub struct Console {
    pub api: String,
    pub user: String,
    pub password: String,
    /// The one-member audience the declarations go to.
    pub audience: String,
}

/// Latencies of one kind of request.
#[derive(Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(at).copied().unwrap_or_default()
    }

    /// `n, p50 and p99 in ms`.
    pub fn describe(&self) -> String {
        format!(
            "{} requests, p50 {:.1} ms, p99 {:.1} ms",
            self.0.len(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3
        )
    }

    pub fn p99(&self) -> Duration {
        self.percentile(0.99)
    }
}

/// What the clients measured.
#[derive(Default)]
pub struct Report {
    pub board: Samples,
    pub healthz: Samples,
    pub declare: Samples,
}

/// The clients at work.
pub struct Load {
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<Report>>,
}

/// A browser-like client signed in to the console.
async fn signed_in(console: &Console) -> anyhow::Result<reqwest::Client> {
    let client = reqwest::Client::builder().cookie_store(true).build()?;
    let page = client
        .get(format!("{}/konsol/logga-in", console.api))
        .send()
        .await?
        .text()
        .await?;
    let csrf = hidden(&page, "_csrf").context("the sign-in page has no form token")?;
    let home = client
        .post(format!("{}/konsol/logga-in", console.api))
        .form(&[
            ("_csrf", csrf.as_str()),
            ("user", &console.user),
            ("password", &console.password),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        home.url().path() == "/konsol",
        "console sign-in as {} failed: {}",
        console.user,
        home.status()
    );
    Ok(client)
}

/// The value of hidden field `name` in `html`.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    html.get(start..)?.split('"').next().map(str::to_owned)
}

/// Starts `clients` clients on the board of `crisis_id`.
pub async fn start(console: &Console, crisis_id: &str, clients: usize) -> anyhow::Result<Load> {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..clients {
        let client = signed_in(console).await?;
        let (console, stop) = (console.clone(), stop.clone());
        let board = format!("{}/konsol/kris/{crisis_id}", console.api);
        let declares = n % 4 == 3;
        tasks.spawn(async move {
            let mut report = Report::default();
            while !stop.is_cancelled() {
                let t = Instant::now();
                let page = client.get(&board).send().await?;
                anyhow::ensure!(page.status() == 200, "the board answered {}", page.status());
                page.bytes().await?;
                report.board.0.push(t.elapsed());
                let t = Instant::now();
                client
                    .get(format!("{}/healthz", console.api))
                    .send()
                    .await?
                    .bytes()
                    .await?;
                report.healthz.0.push(t.elapsed());
                if declares {
                    report.declare.0.push(declare(&client, &console).await?);
                }
            }
            Ok(report)
        });
    }
    Ok(Load { stop, tasks })
}

/// One console declaration to the one-member audience: the POST and the board
/// it leads to, timed; the form is fetched first (not timed) for its tokens.
async fn declare(client: &reqwest::Client, console: &Console) -> anyhow::Result<Duration> {
    let url = format!("{}/konsol/ny-kris/{}", console.api, super::TEMPLATE);
    let form = client.get(&url).send().await?.text().await?;
    let csrf = hidden(&form, "_csrf").context("the form has no token")?;
    let key = hidden(&form, "idempotency").context("the form has no key")?;
    let mut fields = vec![
        ("_csrf".to_owned(), csrf),
        ("idempotency".to_owned(), key),
        ("audience".to_owned(), console.audience.clone()),
        ("channel".to_owned(), "sms".to_owned()),
        ("status".to_owned(), "actual".to_owned()),
        ("action".to_owned(), "declare".to_owned()),
    ];
    for (name, value) in super::variables("Bench console") {
        fields.push((format!("var-{name}"), value));
    }
    let t = Instant::now();
    let board = client.post(&url).form(&fields).send().await?;
    anyhow::ensure!(
        board.status() == 200 && board.url().path().starts_with("/konsol/kris/"),
        "a console declaration answered {} at {}",
        board.status(),
        board.url()
    );
    board.bytes().await?;
    Ok(t.elapsed())
}

impl Load {
    /// Stops the clients and gathers what they measured.
    pub async fn finish(mut self) -> anyhow::Result<Report> {
        self.stop.cancel();
        let mut all = Report::default();
        while let Some(done) = self.tasks.join_next().await {
            let report = done??;
            all.board.0.extend(report.board.0);
            all.healthz.0.extend(report.healthz.0);
            all.declare.0.extend(report.declare.0);
        }
        Ok(all)
    }
}

/// This process's resident set (VmRSS), in kB.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The same-run baseline for [`sse_memory`]: `n` connections to a bare axum
/// server-sent-events endpoint in this process that holds the stream open and
/// quiet, as an idle board is; the resident set before and with them, in kB.
pub async fn bare_sse_memory(n: usize) -> anyhow::Result<(u64, u64)> {
    use axum::response::sse::{Event, Sse};
    let stop = CancellationToken::new();
    let held = stop.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let held = held.clone();
            async move {
                // Like an idle board: open, nothing sent until something changes.
                let events = async_stream::stream! {
                    held.cancelled().await;
                    yield Ok::<_, std::convert::Infallible>(Event::default().event("board").data("end"));
                };
                Sse::new(events)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
    });
    let client = reqwest::Client::new();
    let before = rss_kb();
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let response = tokio::time::timeout(Duration::from_secs(30), client.get(&url).send())
            .await
            .context("a bare stream did not answer within 30 s")??;
        open.push(response.bytes_stream());
    }
    let with = rss_kb();
    drop(open);
    stop.cancel();
    let _ = server.await;
    Ok((before, with))
}

/// Opens `boards` live boards of `crisis_id` (one signed-in session, one SSE
/// connection each, as the board page names it), and returns this
/// process's resident set before and with them open, in kB. The services run in
/// this process, so the difference is the gateway's cost plus the clients'.
pub async fn sse_memory(
    console: &Console,
    crisis_id: &str,
    boards: usize,
) -> anyhow::Result<(u64, u64)> {
    let client = signed_in(console).await?;
    // As a browser does: the board page names the stream, with the status it
    // shows, and the stream stays quiet until that changes.
    let page = client
        .get(format!("{}/konsol/kris/{crisis_id}", console.api))
        .send()
        .await?
        .text()
        .await?;
    let path = page
        .split("sse-connect=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the board page names no live stream")?
        .replace("&#38;", "&");
    let url = format!("{}{path}", console.api);
    let before = rss_kb();
    let mut open = Vec::with_capacity(boards);
    for _ in 0..boards {
        let response = tokio::time::timeout(Duration::from_secs(30), client.get(&url).send())
            .await
            .context("a live board did not answer within 30 s")??;
        anyhow::ensure!(
            response.status() == 200,
            "a live board answered {}",
            response.status()
        );
        open.push(response.bytes_stream());
    }
    let with = rss_kb();
    drop(open);
    Ok((before, with))
}
