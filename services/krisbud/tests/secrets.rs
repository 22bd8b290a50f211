//! No secret and no recipient address in anything the stack writes for people
//! and machines to read: `krisbud up --demo` runs with recognisable secrets (the
//! 46elks password, the recipient key, every demo token) at debug level for its
//! own crates, a crisis goes out by SMS (through the 46elks simulator) and email,
//! someone signs in to the console and someone fails to, an auditor looks a
//! recipient up; then the whole log and the audit export are searched for every
//! secret and every address. (Outboxes hold addresses by design: they stand in
//! for the provider.)

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KRISBUD, tokens};
use krisbud_tests::wait_until_async;
use serde_json::{Value, json};

const ELKS_PASSWORD: &str = "ELKS-SECRET-4242-hemligt";
const RECIPIENT_KEY: &str = "RECIPIENT-KEY-4242-hemlig";
const WRONG_PASSWORD: &str = "WRONG-PASSWORD-4242-gissat";

/// The demo audience's people, as the demo seeds them, in every form an
/// address could leak in.
const ADDRESSES: &[&str] = &[
    "+46701740605",
    "0701740605",
    "070-174 06 05",
    "+46701740606",
    "+46701740607",
    "anna.lind@farsta.example",
    "omar.haddad@farsta.example",
    "greta.nilsson@farsta.example",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_address_in_the_log_or_the_audit_export() {
    let elks = krisbud_tests::ElksSimulator::start("elks-user", ELKS_PASSWORD).await;
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("krisbud.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let filter = [
        "info",
        "krisbud=debug",
        "krisbud_kit=debug",
        "krisbud_gateway=debug",
        "krisbud_coordinator=debug",
        "krisbud_channel_sms=debug",
        "krisbud_channel_email=debug",
        "krisbud_channel_banner=debug",
        "krisbud_channel_intranet=debug",
        "krisbud_audit=debug",
    ]
    .join(",");
    let mut child = Command::new(KRISBUD)
        .args(["up", "--demo", "--data-dir"])
        .arg(data.path())
        .env("KRISBUD_GATEWAY__LISTEN", "127.0.0.1:0")
        .env("KRISBUD_BANNER__LISTEN", "127.0.0.1:0")
        .env("KRISBUD_TELEMETRY__LOG", &filter)
        .env("KRISBUD_PRIVACY__RECIPIENT_KEY", RECIPIENT_KEY)
        .env("KRISBUD_SMS__PROVIDER", "46elks")
        .env("KRISBUD_SMS__ELKS_BASE_URL", elks.base_url())
        .env("KRISBUD_SMS__ELKS_USERNAME", "elks-user")
        .env("KRISBUD_SMS__ELKS_PASSWORD", ELKS_PASSWORD)
        .env_remove("KRISBUD_CONFIG")
        .env_remove("KRISBUD_NATS__URL")
        .stdout(Stdio::piped())
        .stderr(log.try_clone().unwrap())
        .spawn()
        .expect("krisbud up starts");
    let mut stdout = child.stdout.take().unwrap();
    let api = {
        // The ready line names the API; the demo tokens come before it.
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stdout.read(&mut buffer).unwrap();
            assert!(n > 0, "krisbud up ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if let Some(line) = seen.lines().find(|l| l.starts_with("krisbud ready")) {
                break line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("api="))
                    .unwrap()
                    .trim_end_matches("/api/v1")
                    .to_owned();
            }
        }
    };
    let tokens = tokens(data.path());
    let token = |user: &str| tokens[user].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();

    // A crisis to the demo residents, by SMS and email.
    let declared: Value = http
        .post(format!("{api}/api/v1/crises"))
        .bearer_auth(token("tib.maria"))
        .json(&json!({
            "template": "vattenlacka",
            "variables": {
                "omrade": "Farsta",
                "beraknat_klart": "i kväll kl. 20",
                "vattenpunkt": "Farsta centrum"
            },
            "audiences": ["farsta-boende"],
            "channels": ["sms", "email"]
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = declared["crisis_id"].as_str().unwrap().to_owned();
    wait_until_async("SMS and email out", Duration::from_secs(30), || async {
        let status: Value = http
            .get(format!("{api}/api/v1/crises/{id}"))
            .bearer_auth(token("tib.maria"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let done = |c: &str| {
            status["channels"][c]["pending"] == 0 && status["channels"][c]["planned"] == true
        };
        (done("sms") && done("email")).then_some(())
    })
    .await;
    assert_eq!(
        elks.received().len(),
        3,
        "every resident texted through 46elks"
    );

    // A console sign-in with the right password and one with a wrong one.
    let console = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    for (user, password) in [
        ("tib.maria", token("tib.maria")),
        ("tib.maria", WRONG_PASSWORD.to_owned()),
    ] {
        let page = console
            .get(format!("{api}/konsol/logga-in"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let marker = "name=\"_csrf\" value=\"";
        let start = page.find(marker).unwrap() + marker.len();
        let csrf = page[start..].split('"').next().unwrap().to_owned();
        console
            .post(format!("{api}/konsol/logga-in"))
            .form(&[
                ("_csrf", csrf),
                ("user", user.to_owned()),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
    }

    // An auditor asks whether a resident was notified.
    let lookup = http
        .post(format!("{api}/api/v1/audit/lookup"))
        .bearer_auth(token("revisor.karin"))
        .json(&json!({ "address": "070-174 06 05" }))
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 200);
    let export = http
        .get(format!("{api}/api/v1/audit"))
        .query(&[("format", "jsonl")])
        .bearer_auth(token("revisor.karin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        export.contains("RecipientLookedUp"),
        "the lookup is on record"
    );
    assert!(
        export.contains("ConsoleSession"),
        "the sign-ins are on record"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "a debug log was written"
    );

    let mut secrets: Vec<String> = vec![
        ELKS_PASSWORD.to_owned(),
        RECIPIENT_KEY.to_owned(),
        WRONG_PASSWORD.to_owned(),
    ];
    secrets.extend(
        tokens
            .as_object()
            .unwrap()
            .values()
            .map(|t| t.as_str().unwrap().to_owned()),
    );
    for (name, text) in [("the log", &log), ("the audit export", &export)] {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret in {name}");
        }
        for address in ADDRESSES {
            assert!(!text.contains(address), "{address} in {name}");
        }
    }
}
