//! `krisbud up` as a real process: the ready line, the CLI tour against it, offline
//! verification of a tampered export, and SIGTERM in the middle of delivery.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use krisbud_tests::{ElksSimulator, NatsServer, wait_until, wait_until_async};
use serde_json::{Value, json};

const KRISBUD: &str = env!("CARGO_BIN_EXE_krisbud");

/// A running `krisbud up` and the URLs from its ready line.
struct Up {
    child: Child,
    api: String,
    /// `GET /v1/banners` on the banner listener.
    banners: String,
    _lines: mpsc::Receiver<String>,
}

impl Up {
    fn start(data_dir: &Path, config: Option<&Path>, demo: bool) -> Up {
        Up::spawn(data_dir, config, demo, &[]).wait_ready()
    }

    fn spawn(data_dir: &Path, config: Option<&Path>, demo: bool, env: &[(&str, &str)]) -> Spawned {
        let mut command = Command::new(KRISBUD);
        command
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .env("KRISBUD_GATEWAY__LISTEN", "127.0.0.1:0")
            .env("KRISBUD_BANNER__LISTEN", "127.0.0.1:0")
            .env_remove("KRISBUD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if demo {
            command.arg("--demo");
        }
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.envs(env.iter().copied());
        let started = Instant::now();
        let mut child = command.spawn().expect("krisbud starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned {
            child,
            lines,
            started,
        }
    }
}

/// A `krisbud up` that has not printed its ready line yet.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    started: Instant,
}

impl Spawned {
    fn wait_ready(self) -> Up {
        let Spawned {
            child,
            lines,
            started,
        } = self;
        let ready = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("krisbud prints its ready line");
            if line.starts_with("krisbud ready") {
                break line;
            }
        };
        eprintln!("ready after {:?}: {ready}", started.elapsed());
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in {ready}"))
                .to_owned()
        };
        for name in ["console", "nats"] {
            field(name);
        }
        Up {
            child,
            api: field("api").trim_end_matches("/api/v1").to_owned(),
            banners: field("banner"),
            _lines: lines,
        }
    }
}

impl Up {
    /// SIGTERM, then wait for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = wait_until(
            "krisbud to exit after SIGTERM",
            Duration::from_secs(30),
            || self.child.try_wait().unwrap(),
        );
        assert!(
            status.success(),
            "krisbud exited with {status} after SIGTERM"
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(api: &str, token: &str, args: &[&str]) -> Output {
    Command::new(KRISBUD)
        .args(args)
        .env("KRISBUD_API", api)
        .env("KRISBUD_TOKEN", token)
        .env("KRISBUD_LANG", "sv")
        .output()
        .expect("the CLI runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read_tokens(data_dir: &Path) -> Value {
    let text =
        std::fs::read_to_string(data_dir.join("demo-tokens.json")).expect("demo-tokens.json");
    serde_json::from_str::<Value>(&text).unwrap()["tokens"].clone()
}

/// Creates audience `id` over the API and imports `csv` into it; returns the
/// import report.
async fn import_audience(
    http: &reqwest::Client,
    api: &str,
    admin: &str,
    id: &str,
    name: &str,
    csv: String,
) -> Value {
    let created = http
        .post(format!("{api}/api/v1/audiences"))
        .bearer_auth(admin)
        .json(&json!({ "id": id, "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    http.put(format!("{api}/api/v1/audiences/{id}/members"))
        .bearer_auth(admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Declares the water outage to `audience` on `channels`; returns the crisis id.
async fn declare_water(
    http: &reqwest::Client,
    api: &str,
    duty: &str,
    audience: &str,
    channels: &[&str],
) -> String {
    let response = http
        .post(format!("{api}/api/v1/crises"))
        .bearer_auth(duty)
        .json(&json!({
            "template": "vattenlacka",
            "variables": { "omrade": "Farsta", "beraknat_klart": "i kväll", "vattenpunkt": "Farsta centrum" },
            "audiences": [audience],
            "channels": channels
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["crisis_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn up_demo_and_the_cli_tour() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path(), None, true);
    let tokens = read_tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap();
    let operator = tokens["operator.ali"].as_str().unwrap();
    let auditor = tokens["revisor.karin"].as_str().unwrap();

    let listed = cli(&up.api, duty, &["templates"]);
    assert!(
        stdout(&listed).contains("vattenlacka"),
        "{}",
        stdout(&listed)
    );

    let declared = cli(
        &up.api,
        duty,
        &[
            "declare",
            "--template",
            "vattenlacka",
            "--var",
            "omrade=Farsta",
            "--var",
            "beraknat_klart=i kväll kl. 20",
            "--var",
            "vattenpunkt=Farsta centrum",
            "--audience",
            "farsta-boende",
        ],
    );
    assert!(
        declared.status.success(),
        "{}",
        String::from_utf8_lossy(&declared.stderr)
    );
    let id = stdout(&declared).trim().to_owned();

    wait_until(
        "every channel delivered in `krisbud status`",
        Duration::from_secs(15),
        || {
            let out = stdout(&cli(&up.api, duty, &["status", &id]));
            let delivered = out
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("klar"))
                .count();
            (delivered == 4).then_some(out)
        },
    );
    // The same with --api and --token instead of the environment; without either
    // the CLI says which is missing.
    let flagged = Command::new(KRISBUD)
        .args(["status", &id, "--api", &up.api, "--token", duty])
        .env_remove("KRISBUD_API")
        .env_remove("KRISBUD_TOKEN")
        .env("KRISBUD_LANG", "sv")
        .output()
        .unwrap();
    assert!(
        flagged.status.success(),
        "{}",
        String::from_utf8_lossy(&flagged.stderr)
    );
    assert!(stdout(&flagged).contains("klar"), "{}", stdout(&flagged));
    let missing = Command::new(KRISBUD)
        .args(["status", &id, "--api", &up.api])
        .env_remove("KRISBUD_TOKEN")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--token"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let confirmed = cli(
        &up.api,
        operator,
        &[
            "confirm",
            &id,
            "banner",
            "--note",
            "banner syns på stockholm.se",
        ],
    );
    assert!(
        confirmed.status.success(),
        "{}",
        String::from_utf8_lossy(&confirmed.stderr)
    );
    assert!(stdout(&confirmed).contains("operator.ali"));
    let refused = cli(&up.api, duty, &["confirm", &id, "sms"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));

    let listing = wait_until(
        "the confirmation in the audit",
        Duration::from_secs(10),
        || {
            let out = stdout(&cli(&up.api, auditor, &["audit", "list", "--crisis", &id]));
            out.contains("ChannelConfirmed").then_some(out)
        },
    );
    assert!(
        listing.contains("CrisisDeclared") && listing.contains("tib.maria"),
        "{listing}"
    );

    // The key the city publishes; the auditor has it from there, not from krisbud.
    let published = hex::encode(
        krisbud_audit::signing::read_key_file(&data.path().join("audit-signing.key"))
            .unwrap()
            .verifying_key()
            .as_bytes(),
    );
    let unanchored = cli(&up.api, auditor, &["audit", "verify"]);
    assert!(
        !unanchored.status.success(),
        "verify without a trust anchor is refused"
    );
    let verified = cli(
        &up.api,
        auditor,
        &["audit", "verify", "--trust-key", &published],
    );
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains("poster verifierade"),
        "{}",
        stdout(&verified)
    );

    let export = data.path().join("export.jsonl");
    let exported = cli(
        &up.api,
        auditor,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    assert!(exported.status.success());
    let offline = cli(
        "http://127.0.0.1:9",
        "",
        &[
            "audit",
            "verify",
            "--file",
            export.to_str().unwrap(),
            "--trust-key",
            &published,
        ],
    );
    assert!(offline.status.success(), "{}", stdout(&offline));

    // Change one character inside the third record's payload (the bundle's
    // header, keys and checkpoints come first).
    let text = std::fs::read_to_string(&export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("{\"bundle\":"), "{}", lines[0]);
    let third = (0..lines.len())
        .filter(|&i| lines[i].starts_with("{\"sequence\":"))
        .nth(2)
        .expect("three records");
    let record: Value = serde_json::from_str(&lines[third]).unwrap();
    let sequence = record["sequence"].as_u64().unwrap();
    let at = lines[third].find("\"kind\":\"").unwrap() + 8;
    let mut bytes = lines[third].clone().into_bytes();
    bytes[at] = if bytes[at] == b'X' { b'Y' } else { b'X' };
    lines[third] = String::from_utf8(bytes).unwrap();
    let tampered = data.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let caught = cli(
        "http://127.0.0.1:9",
        "",
        &[
            "audit",
            "verify",
            "--file",
            tampered.to_str().unwrap(),
            "--trust-key",
            &published,
        ],
    );
    assert!(
        !caught.status.success(),
        "a tampered export must fail: {}",
        stdout(&caught)
    );
    assert!(
        stdout(&caught).contains(&format!("post {sequence}")),
        "names the record: {}",
        stdout(&caught)
    );

    up.terminate();
    let pid_file = data.path().join("nats").join("nats-server.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
    assert!(
        pid.trim().is_empty() || !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the local nats-server stops with krisbud"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_delivery_then_restart_reaches_everyone() {
    const PEOPLE: usize = 400;
    let data = tempfile::tempdir().unwrap();
    let credentials = data.path().join("nats-credentials");
    let nats = NatsServer::start_closed(&credentials);
    let elks = ElksSimulator::start("elks-user", "elks-secret").await;
    elks.set_delay(Duration::from_millis(10));
    let config = data.path().join("krisbud.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[nats]
url = "{nats}"
credentials_dir = "{credentials}"
[privacy]
recipient_key = "restart-test"
[coordinator]
batch_size = 20
[sms]
provider = "46elks"
elks_base_url = "{elks}"
elks_username = "elks-user"
elks_password = "elks-secret"
"#,
            nats = nats.url(),
            credentials = credentials.display(),
            elks = elks.base_url()
        ),
    )
    .unwrap();

    let first = Up::start(data.path(), Some(&config), true);
    let tokens = read_tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap().to_owned();
    let admin = tokens["admin.olle"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    // A large audience, over the API.
    let mut csv = String::from("phone,language\n");
    for i in 0..PEOPLE {
        csv.push_str(&format!("+4670174{:04},sv\n", 1000 + i));
    }
    let imported =
        import_audience(&http, &first.api, &admin, "stor-publik", "Stor publik", csv).await;
    assert_eq!(imported["imported"], PEOPLE, "{imported}");
    let id = declare_water(&http, &first.api, &duty, "stor-publik", &["sms"]).await;

    wait_until_async(
        "delivery to be under way",
        Duration::from_secs(20),
        || async { (elks.requests() >= 60).then_some(()) },
    )
    .await;
    tokio::task::spawn_blocking(move || first.terminate())
        .await
        .unwrap();
    let before_restart = elks.received().len();
    assert!(
        before_restart < PEOPLE,
        "stopped in the middle: {before_restart} of {PEOPLE} sent"
    );

    let second = Up::start(data.path(), Some(&config), true);
    // The demo tokens survive the restart: the duty officer's token from before
    // still works, and `krisbud demo tokens` prints it again.
    let tokens = read_tokens(data.path());
    assert_eq!(tokens["tib.maria"].as_str().unwrap(), duty);
    let printed = Command::new(KRISBUD)
        .args(["demo", "tokens", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert!(stdout(&printed).contains(&duty), "{}", stdout(&printed));
    let status = wait_until_async(
        "every recipient sent after the restart",
        Duration::from_secs(60),
        || async {
            let s: Value = http
                .get(format!("{}/api/v1/crises/{id}", second.api))
                .bearer_auth(&duty)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (s["channels"]["sms"]["pending"] == 0 && s["channels"]["sms"]["total"] == PEOPLE)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(status["channels"]["sms"]["sent"], PEOPLE, "{status}");

    let received = elks.received();
    let mut numbers: Vec<&str> = received.iter().map(|s| s.to.as_str()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        PEOPLE,
        "every recipient reached at least once"
    );
    let duplicates = received.len() - PEOPLE;
    eprintln!("{before_restart} sent before SIGTERM; {duplicates} duplicates after restart");
    // At most the jobs in flight at SIGTERM are sent again (jobs of 20).
    assert!(duplicates <= 20 * 16, "{duplicates} duplicates");
    tokio::task::spawn_blocking(move || second.terminate())
        .await
        .unwrap();
}

/// The lines of `<data>/outbox/sms.jsonl` written so far; a line still being
/// written (no newline yet) is left out.
fn sms_outbox(data: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data.join("outbox").join("sms.jsonl")).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("an SMS outbox line is JSON"))
        .collect()
}

/// Recipients in the SMS outbox so far (one line apiece), without parsing them.
fn sms_outbox_lines(data: &Path) -> usize {
    std::fs::read(data.join("outbox").join("sms.jsonl"))
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// The `.eml` files of `<data>/outbox/email`.
fn email_outbox(data: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(data.join("outbox").join("email")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

/// The value of a top-level header of an `.eml`.
fn eml_header<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    eml.lines()
        .take_while(|l| !l.trim_end().is_empty())
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
}

/// How many times each key occurs.
fn tally<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Keys that occur more than once.
fn repeated(counts: &BTreeMap<&str, usize>) -> u64 {
    counts.values().filter(|&&n| n > 1).count() as u64
}

/// SIGTERM to `krisbud up` while all four channels deliver to their outboxes
/// (with the nats-server it started itself, which stops and starts with it), then
/// a restart on the same data directory: every recipient has an SMS line and an
/// `.eml`, the banner is up and the article is out, and the recipients found more
/// than once in an outbox are no more than the status counts as possible
/// duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_delivery_on_every_outbox_then_restart_loses_nobody() {
    const PEOPLE: usize = 3000;
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("krisbud.toml");
    // Jobs of 20 recipients, so there are many and a few are in hand at SIGTERM.
    std::fs::write(
        &config,
        r#"
[privacy]
recipient_key = "restart-all-outboxes"
[coordinator]
batch_size = 20
[sms]
provider = "outbox"
[email]
transport = "outbox"
[intranet]
mode = "outbox"
"#,
    )
    .unwrap();

    let first = Up::start(data.path(), Some(&config), true);
    let tokens = read_tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap().to_owned();
    let admin = tokens["admin.olle"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let phone = |i: usize| format!("+46701{i:06}");
    let email = |i: usize| format!("boende{i}@farsta.example");
    let mut csv = String::from("phone,email,language\n");
    for i in 0..PEOPLE {
        csv.push_str(&format!("{},{},sv\n", phone(i), email(i)));
    }
    let imported =
        import_audience(&http, &first.api, &admin, "hela-farsta", "Hela Farsta", csv).await;
    assert_eq!(imported["imported"], PEOPLE, "{imported}");

    let id = declare_water(
        &http,
        &first.api,
        &duty,
        "hela-farsta",
        &["sms", "email", "banner", "intranet"],
    )
    .await;
    let declared = Instant::now();

    let under_way = wait_until_async(
        "the SMS outbox to have some recipients but not all",
        Duration::from_secs(30),
        || async {
            let n = sms_outbox_lines(data.path());
            (n > 0 && n < PEOPLE).then_some(n)
        },
    )
    .await;
    eprintln!(
        "SIGTERM {:?} after the declaration, with {under_way} SMS lines and {} .eml",
        declared.elapsed(),
        email_outbox(data.path()).len()
    );
    tokio::task::spawn_blocking(move || first.terminate())
        .await
        .unwrap();
    let sms_before = sms_outbox_lines(data.path());
    let email_before = email_outbox(data.path()).len();
    eprintln!("after a clean exit: {sms_before} SMS lines and {email_before} .eml of {PEOPLE}");
    assert!(
        sms_before < PEOPLE || email_before < PEOPLE,
        "stopped in the middle of delivery: {sms_before} SMS and {email_before} emails of {PEOPLE}"
    );

    let restarted = Instant::now();
    let second = Up::start(data.path(), Some(&config), true);
    let tokens = read_tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap().to_owned();
    let status = wait_until_async(
        "every channel complete after the restart",
        Duration::from_secs(120),
        || async {
            let s: Value = http
                .get(format!("{}/api/v1/crises/{id}", second.api))
                .bearer_auth(&duty)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            ["sms", "email", "banner", "intranet"]
                .iter()
                .all(|c| {
                    let c = &s["channels"][c];
                    c["planned"] == true && c["pending"] == 0 && c["state"] == "delivered"
                })
                .then_some(s)
        },
    )
    .await;
    eprintln!("complete {:?} after the restart", restarted.elapsed());
    for (channel, total) in [("sms", PEOPLE), ("email", PEOPLE)] {
        let c = &status["channels"][channel];
        assert_eq!(c["total"], total, "{channel}: {c}");
        assert_eq!(c["delivered"], total, "{channel}: {c}");
        assert_eq!(c["failed"], 0, "{channel}: {c}");
    }
    let counted = |channel: &str| {
        status["channels"][channel]["possible_duplicates"]
            .as_u64()
            .unwrap_or_else(|| panic!("{channel} possible_duplicates in {status}"))
    };

    // SMS: one line per recipient, by phone number.
    let sms = sms_outbox(data.path());
    let sms_counts = tally(
        sms.iter()
            .filter(|l| l["crisis_id"] == id.as_str())
            .map(|l| l["to"].as_str().unwrap()),
    );
    let missing: Vec<String> = (0..PEOPLE)
        .map(phone)
        .filter(|p| !sms_counts.contains_key(p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} recipients without an SMS line, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(sms_counts.len(), PEOPLE, "nobody else got an SMS");

    // Email: one .eml per recipient, by its To header.
    let emails = email_outbox(data.path());
    let email_counts = tally(
        emails
            .iter()
            .filter(|e| eml_header(e, "Message-ID").is_some_and(|m| m.contains(id.as_str())))
            .map(|e| eml_header(e, "To").expect("an .eml has a To header")),
    );
    let missing: Vec<String> = (0..PEOPLE)
        .map(email)
        .filter(|a| !email_counts.contains_key(a.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} recipients without an .eml, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(email_counts.len(), PEOPLE, "nobody else got an email");

    // Banner: up on the restarted banner listener.
    let banners: Vec<Value> = http
        .get(&second.banners)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sv = banners
        .iter()
        .find(|b| b["crisis_id"] == id.as_str() && b["language"] == "sv")
        .unwrap_or_else(|| panic!("the Swedish banner is up: {banners:?}"));
    assert_eq!(sv["headline"], "Vattnet är avstängt i Farsta");

    // Intranet: the article of every language, by article id.
    let text = std::fs::read_to_string(data.path().join("outbox").join("intranet.jsonl"))
        .expect("the intranet outbox");
    let articles: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let article_counts = tally(
        articles
            .iter()
            .filter(|a| a["crisis_id"] == id.as_str())
            .map(|a| a["article_id"].as_str().unwrap()),
    );
    assert!(
        articles.iter().any(|a| a["crisis_id"] == id.as_str()
            && a["title"]
                .as_str()
                .is_some_and(|t| t.contains("Vattenläcka i Farsta"))),
        "the Swedish article is out"
    );
    assert_eq!(
        article_counts.len() as u64,
        status["channels"]["intranet"]["total"].as_u64().unwrap(),
        "one article per language: {article_counts:?}"
    );

    // (channel, lines or files written, distinct recipients, recipients more than once)
    let figures = [
        ("sms", &sms_counts),
        ("email", &email_counts),
        ("intranet", &article_counts),
    ]
    .map(|(channel, counts)| {
        (
            channel,
            counts.values().sum::<usize>(),
            counts.len(),
            repeated(counts),
        )
    });
    eprintln!(
        "before the restart: {sms_before} SMS lines, {email_before} .eml of {PEOPLE} recipients"
    );
    for (channel, written, distinct, twice) in figures {
        eprintln!(
            "{channel}: {written} written for {distinct} recipients, {twice} recipients more \
             than once, {} counted as possible duplicates",
            counted(channel)
        );
    }
    eprintln!(
        "banner: {} counted as possible duplicates",
        counted("banner")
    );
    for (channel, _, _, twice) in figures {
        assert!(
            twice <= counted(channel),
            "{channel}: {twice} recipients more than once in the outbox, only {} counted as \
             possible duplicates in {}",
            counted(channel),
            status["channels"][channel]
        );
    }
    tokio::task::spawn_blocking(move || second.terminate())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarts_its_nats_server_when_it_dies_and_work_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path(), None, true);
    let tokens = read_tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap().to_owned();
    let pid_file = data.path().join("nats").join("nats-server.pid");
    let first = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        Command::new("kill")
            .args(["-KILL", &first])
            .status()
            .unwrap()
            .success()
    );
    let http = reqwest::Client::new();
    // A new server (its own pid file), every connection back, and ready again.
    wait_until_async(
        "a new nats-server and /readyz 200",
        Duration::from_secs(30),
        || async {
            let now = std::fs::read_to_string(&pid_file).unwrap_or_default();
            let ready = http
                .get(format!("{}/readyz", up.api))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            (ready && !now.trim().is_empty() && now.trim() != first).then_some(())
        },
    )
    .await;
    let id = declare_water(&http, &up.api, &duty, "farsta-boende", &["sms", "banner"]).await;
    wait_until_async(
        "the declaration delivered",
        Duration::from_secs(30),
        || async {
            let status: Value = http
                .get(format!("{}/api/v1/crises/{id}", up.api))
                .bearer_auth(&duty)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (status["channels"]["sms"]["state"] == "delivered"
                && status["channels"]["banner"]["state"] == "delivered")
                .then_some(())
        },
    )
    .await;
    up.terminate();
}

#[test]
fn a_bad_configuration_exits_64_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(KRISBUD)
        .args(["up", "--data-dir"])
        .arg(data.path())
        .env("KRISBUD_NATS__REQUEST_TIMEOUT_SECS", "soon")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nats.request_timeout_secs"), "{stderr}");
}

#[test]
fn a_secret_published_in_the_repository_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(KRISBUD)
        .args(["up", "--data-dir"])
        .arg(data.path())
        .env("KRISBUD_PRIVACY__RECIPIENT_KEY", "change-me-in-production")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("privacy.recipient_key"), "{stderr}");
    assert!(
        !data.path().join("nats").exists(),
        "nothing was started: {stderr}"
    );
}

#[test]
fn up_waits_for_a_nats_server_that_starts_later() {
    let data = tempfile::tempdir().unwrap();
    let port = krisbud_tests::nats::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let credentials = data.path().join("nats-credentials");
    krisbud_kit::nats_auth::ensure_passwords(&credentials).unwrap();
    let spawned = Up::spawn(
        data.path(),
        None,
        true,
        &[
            ("KRISBUD_NATS__URL", url.as_str()),
            (
                "KRISBUD_NATS__CREDENTIALS_DIR",
                credentials.to_str().unwrap(),
            ),
        ],
    );
    // Nothing listens yet: krisbud must keep trying rather than give up.
    let _nats = NatsServer::start_closed_on(port, &credentials);
    let up = spawned.wait_ready();
    let tokens = read_tokens(data.path());
    let listed = cli(
        &up.api,
        tokens["tib.maria"].as_str().unwrap(),
        &["templates"],
    );
    assert!(listed.status.success());
    up.terminate();
}

#[test]
fn a_million_member_csv_imports_through_the_cli_with_progress() {
    const MEMBERS: usize = 1_000_000;
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path(), None, true);
    let tokens = read_tokens(data.path());
    let admin = tokens["admin.olle"].as_str().unwrap().to_owned();
    let cli = |args: &[&str]| -> Output {
        Command::new(KRISBUD)
            .args(args)
            .env("KRISBUD_API", &up.api)
            .env("KRISBUD_TOKEN", &admin)
            .env("KRISBUD_LANG", "sv")
            .output()
            .unwrap()
    };
    let created = cli(&["audiences", "create", "hela-stan", "--name", "Hela stan"]);
    assert!(created.status.success(), "{created:?}");

    // A million valid numbers in national form, then three bad rows and two
    // repeated numbers at the end.
    let file = data.path().join("hela-stan.csv");
    let mut csv = String::with_capacity(MEMBERS * 20);
    csv.push_str("telefon,språk\n");
    for i in 0..MEMBERS {
        csv.push_str(&format!("070-1{:06},sv\n", i));
    }
    csv.push_str(
        "070-12,sv\n0701000007,klingon-is-not-a-tag\nabc,sv\n0701000001,sv\n070-1000002,en\n",
    );
    std::fs::write(&file, csv).unwrap();

    let started = Instant::now();
    let import = cli(&["audiences", "import", "hela-stan", file.to_str().unwrap()]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&import.stdout);
    let stderr = String::from_utf8_lossy(&import.stderr);
    eprintln!("import of {MEMBERS} rows took {took:?}\n{stdout}");
    assert_eq!(
        import.status.code(),
        Some(1),
        "rows were refused: {stdout}{stderr}"
    );
    assert!(
        stdout.contains(
            "1000005 rader lästa, 1000000 medlemmar importerade, 2 dubbletter utelämnade, 3 rader avvisade"
        ),
        "{stdout}{stderr}"
    );
    for line in [
        "rad 1000002 (phone)",
        "rad 1000003 (language)",
        "rad 1000004 (phone)",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    let progress = stderr.lines().filter(|l| l.starts_with("skickat ")).count();
    assert!(progress >= 5, "progress shown while sending: {stderr}");
    assert!(stderr.contains("skickat 100 %"), "{stderr}");

    let show = cli(&["audiences", "show", "hela-stan"]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("1000000 medlemmar (1000000 med telefon"),
        "{shown}"
    );
}

/// Ctrl-C at a terminal: SIGINT to the whole foreground process group. krisbud
/// drains, says so, exits 0 and stops the nats-server it started, which the Ctrl-C
/// itself does not reach (the draining services still need it).
#[test]
fn ctrl_c_stops_up_cleanly() {
    use std::os::unix::process::CommandExt as _;

    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(KRISBUD);
    command
        .arg("up")
        .arg("--demo")
        .arg("--data-dir")
        .arg(data.path())
        .env("KRISBUD_GATEWAY__LISTEN", "127.0.0.1:0")
        .env("KRISBUD_BANNER__LISTEN", "127.0.0.1:0")
        .env("KRISBUD_TELEMETRY__LOG", "info")
        .env_remove("KRISBUD_CONFIG")
        .env_remove("KRISBUD_NATS__URL")
        // A process group of its own, as a shell gives a foreground job.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("krisbud starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("{line}");
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut up = Spawned {
        child,
        lines,
        started,
    }
    .wait_ready();
    let tokens = read_tokens(data.path());
    let listed = cli(
        &up.api,
        tokens["tib.maria"].as_str().unwrap(),
        &["templates"],
    );
    assert!(listed.status.success(), "the API answers before Ctrl-C");
    let nats_pid = std::fs::read_to_string(data.path().join("nats/nats-server.pid"))
        .expect("the local nats-server's pid file")
        .trim()
        .to_owned();

    // The Ctrl-C must not take the server away under the draining services: it
    // runs in a process group of its own, and krisbud stops it once they are done.
    let stat = std::fs::read_to_string(format!("/proc/{nats_pid}/stat")).unwrap();
    let nats_group = stat.rsplit(')').next().unwrap().split_whitespace().nth(2);
    assert_ne!(
        nats_group,
        Some(up.child.id().to_string().as_str()),
        "the local nats-server is outside krisbud's process group"
    );
    let group = format!("-{}", up.child.id());
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_until(
        "krisbud to exit after Ctrl-C",
        Duration::from_secs(30),
        || up.child.try_wait().unwrap(),
    );
    let log = log.join().unwrap();
    assert!(
        status.success(),
        "krisbud exited with {status} after Ctrl-C:\n{log}"
    );
    assert!(
        log.contains("shutdown requested"),
        "krisbud says it is shutting down:\n{log}"
    );
    assert!(
        !Path::new(&format!("/proc/{nats_pid}")).exists(),
        "the local nats-server {nats_pid} is gone"
    );
}
