//! The audit log of the whole system, end to end: a declared crisis is in the
//! crisis report with its declaration, delivery counts and confirmations; a
//! notified person is found by the recipient lookup while their number appears
//! nowhere in KRISBUD_AUDIT (messages and files on disk), KRISBUD_EVENTS or the
//! logs of every service; and the export bundle verifies offline. Its own test
//! binary, because the log capture is a global subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{TestApp, water_declaration};
use krisbud_proto::Role;
use krisbud_proto::audit::RecipientLookupAnswer;
use krisbud_tests::wait_until_async;
use serde_json::{Value, json};

/// Every log line of this test binary.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter(
                "info,krisbud=debug,krisbud_kit=debug,krisbud_audit=debug,\
                 krisbud_coordinator=debug,krisbud_gateway=debug,krisbud_channel_sms=debug,\
                 krisbud_channel_email=debug,krisbud_channel_banner=debug,\
                 krisbud_channel_intranet=debug",
            )
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .init();
        buffer
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every form a person might find the number or address in.
fn forms(phone: &str, email: &str) -> Vec<String> {
    let national = format!("0{}", &phone[3..]);
    vec![
        phone.to_owned(),
        phone[1..].to_owned(),
        national.clone(),
        format!("{}-{}", &national[..3], &national[3..]),
        email.to_owned(),
    ]
}

fn assert_absent(what: &str, haystack: &[u8], needles: &[String]) {
    let text = String::from_utf8_lossy(haystack).to_lowercase();
    for needle in needles {
        assert!(
            !text.contains(&needle.to_lowercase()),
            "{needle} appears in {what}"
        );
    }
}

#[tokio::test]
async fn the_audit_log_reports_a_crisis_and_finds_a_person_without_holding_their_number() {
    let logs = logs();
    let mut app =
        TestApp::spawn_with("[audit]\ncheckpoint_every = 5\ncheckpoint_interval_secs = 1\n").await;
    let phone = "+46701740605";
    let email = "anna.lind@farsta.example";
    let auditor = app.token(Role::Auditor);

    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, Duration::from_secs(20)).await;
    let confirmed = app
        .confirm(
            Some(&app.token(Role::Operator)),
            &id,
            "banner",
            "bannern syns på stockholm.se",
        )
        .await;
    assert_eq!(confirmed.status(), 200);

    // The report, once the chain holds the confirmation.
    let report: Value = wait_until_async(
        "the confirmation in the crisis report",
        Duration::from_secs(20),
        || async {
            let response = app
                .http
                .get(format!("{}/api/v1/audit/crises/{id}/report", app.api))
                .bearer_auth(&auditor)
                .send()
                .await
                .ok()?;
            let report: Value = response.json().await.ok()?;
            (!report["confirmations"].as_array()?.is_empty()).then_some(report)
        },
    )
    .await;
    assert_eq!(report["declared"]["actor"], "tib.maria");
    assert_eq!(report["declared"]["kind"], "CrisisDeclared");
    let channels = report["channels"].as_array().unwrap();
    let sms = channels.iter().find(|c| c["channel"] == "sms").unwrap();
    // Five people in the two audiences, every one reached.
    assert_eq!(sms["planned"], 5, "{sms}");
    assert_eq!(
        sms["delivered"].as_u64().unwrap() + sms["sent"].as_u64().unwrap(),
        5,
        "{sms}"
    );
    assert_eq!(sms["failed"], 0);
    assert_eq!(channels.len(), 4, "{channels:?}");
    assert_eq!(report["confirmations"][0]["by"], "operator.ali");
    assert_eq!(report["confirmations"][0]["channel"], "banner");

    let markdown = app
        .http
        .get(format!(
            "{}/api/v1/audit/crises/{id}/report?format=markdown",
            app.api
        ))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        markdown.contains(&format!("# Krisrapport {id}")),
        "{markdown}"
    );
    assert!(markdown.contains("av tib.maria"), "{markdown}");
    assert!(markdown.contains("| sms | 5 |"), "{markdown}");
    assert!(markdown.contains("operator.ali"), "{markdown}");
    let html = app
        .http
        .get(format!(
            "{}/api/v1/audit/crises/{id}/report?format=html",
            app.api
        ))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<td>operator.ali</td>"), "{html}");

    // Was Anna notified? The auditor asks with the number as people write it.
    let answer: RecipientLookupAnswer = app
        .http
        .post(format!("{}/api/v1/audit/lookup", app.api))
        .bearer_auth(&auditor)
        .json(&json!({ "address": "070-174 06 05" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channels: Vec<String> = answer
        .outcomes
        .iter()
        .map(|o| o.channel.to_string())
        .collect();
    assert_eq!(channels, ["sms"], "{answer:?}");
    assert_eq!(answer.outcomes[0].crisis_id, id);
    let by_email: RecipientLookupAnswer = app
        .http
        .post(format!("{}/api/v1/audit/lookup", app.api))
        .bearer_auth(&auditor)
        .json(&json!({ "address": "Anna.Lind@Farsta.example", "crisis": id }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_email.outcomes.len(), 1);
    assert_eq!(by_email.outcomes[0].channel.to_string(), "email");

    // Both lookups are on record, by the auditor, with the hash.
    let lookups = wait_until_async(
        "both lookups in the audit log",
        Duration::from_secs(20),
        || async {
            let page: Value = app
                .http
                .get(format!("{}/api/v1/audit?kind=RecipientLookedUp", app.api))
                .bearer_auth(&auditor)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let records = page["records"].as_array()?.clone();
            (records.len() == 2).then_some(records)
        },
    )
    .await;
    assert_eq!(lookups[0]["event"]["actor"]["user"], "revisor.karin");
    assert_eq!(
        lookups[0]["event"]["payload"]["recipient"],
        answer.recipient.as_str()
    );

    // The chain verifies; the export below waits for a signed checkpoint, which
    // the audit service writes on its own schedule.
    let verified: Value = wait_until_async(
        "a verified chain with a signed checkpoint",
        Duration::from_secs(20),
        || async {
            let verified: Value = app
                .http
                .get(format!("{}/api/v1/audit/verify", app.api))
                .bearer_auth(&auditor)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            assert_eq!(verified["ok"], true, "{verified}");
            (verified["checkpoints"].as_u64() > Some(0)).then_some(verified)
        },
    )
    .await;
    assert_eq!(verified["completeness"]["ok"], true, "{verified}");

    // The export bundle verifies offline.
    let bundle = app
        .http
        .get(format!("{}/api/v1/audit/export", app.api))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let file = app.data_dir.path().join("bundle.jsonl");
    std::fs::write(&file, &bundle).unwrap();
    let offline = krisbud::audit_cli::verify_file(&file, &[]).unwrap();
    assert!(offline.ok, "{offline:?}");
    assert!(offline.checkpoints > 0, "{offline:?}");
    // And by an independent route: every hash recomputed by a verifier written
    // from docs/audit-format.md alone.
    let records = bundle
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"{\"sequence\""))
        .count();
    assert!(records > 10, "{records}");
    assert_eq!(python_verify(&file), records);

    // Nowhere in the audit stream, the events, their files, or the logs.
    let needles = forms(phone, email);
    app.stop().await;
    let client = app.nats_as("provision").await;
    let js = async_nats::jetstream::new(client);
    for name in [
        "KRISBUD_AUDIT",
        "KRISBUD_EVENTS",
        "KRISBUD_AUDIT_CHECKPOINTS",
    ] {
        let stream = js.get_stream(name).await.unwrap();
        let last = stream.cached_info().state.last_sequence;
        assert!(last > 0, "{name} holds messages");
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.unwrap();
            assert_absent(
                &format!("{name} message {sequence}"),
                &message.payload,
                &needles,
            );
        }
    }
    let streams = app.nats.store_dir().join("jetstream/KRISBUD/streams");
    for name in ["KRISBUD_AUDIT", "KRISBUD_EVENTS"] {
        for file in files(&streams.join(name)) {
            assert_absent(
                &file.display().to_string(),
                &std::fs::read(&file).unwrap(),
                &needles,
            );
        }
    }
    let captured = logs.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&captured).contains("recipient looked up"),
        "the logs were captured"
    );
    assert_absent("the logs", &captured, &needles);
    // Nothing asked for a command that got refused: no service probes another
    // with a request it must turn down (start-up once logged such a refusal).
    let text = String::from_utf8_lossy(&captured);
    assert!(
        !text.contains("command refused"),
        "a refused command in the logs: {}",
        text.lines()
            .find(|l| l.contains("command refused"))
            .unwrap_or_default()
    );
    // The outbox stands in for the provider, so the number is there: the check
    // above looks where it must not be, not at an empty system.
    assert!(
        app.sms_outbox()
            .iter()
            .any(|line| line.to_string().contains(phone)),
        "the SMS went out"
    );
}

/// Every file under `dir`.
/// A verifier written from docs/audit-format.md ("The record and its hash")
/// and nothing else: canonical JSON by hand, SHA-256, links and sequences.
const PYTHON_VERIFIER: &str = r#"
import hashlib, json, sys
ESCAPES = {'"': '\\"', '\\': '\\\\', '\b': '\\b', '\t': '\\t', '\n': '\\n', '\f': '\\f', '\r': '\\r'}
def string(s):
    return '"' + ''.join(ESCAPES.get(c) or ('\\u%04x' % ord(c) if ord(c) < 0x20 else c) for c in s) + '"'
def canonical(v):
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode('utf-8'))
        return '{' + ','.join(string(k) + ':' + canonical(v[k]) for k in keys) + '}'
    if isinstance(v, list):
        return '[' + ','.join(canonical(e) for e in v) + ']'
    if isinstance(v, str):
        return string(v)
    if v is True or v is False or v is None:
        return {True: 'true', False: 'false', None: 'null'}[v]
    if isinstance(v, int):
        return str(v)
    sys.exit('a number that is not an integer: %r' % v)
prev, n = '0' * 64, 0
for line in open(sys.argv[1], encoding='utf-8'):
    if not line.strip():
        continue
    record = json.loads(line)
    if 'sequence' not in record:
        continue  # the bundle's metadata lines
    n += 1
    stated = record.pop('hash')
    if record['sequence'] != n or record['prev_hash'] != prev:
        sys.exit('record %d: not linked to record %d' % (n, n - 1))
    if hashlib.sha256(canonical(record).encode('utf-8')).hexdigest() != stated:
        sys.exit('record %d: the hash differs' % n)
    prev = stated
print(n)
"#;

/// Runs [`PYTHON_VERIFIER`] on a bundle; the number of records it checked.
fn python_verify(bundle: &std::path::Path) -> usize {
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(PYTHON_VERIFIER)
        .arg(bundle)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the independent verifier refused the bundle: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_independent_verifier_finds_a_changed_record() {
    // Two records sealed by the chain, then one changed: the Python verifier
    // agrees with the first and refuses the second.
    let first = krisbud_audit::chain::seal(
        1,
        chrono::Utc::now(),
        1,
        serde_json::json!({"kind": "Test", "text": "Vattenläcka i Farsta\n\u{1}\t\"ö\" /\u{7f}", "n": -3, "list": [true, null]}),
        krisbud_proto::audit::GENESIS_HASH.to_string(),
    );
    let second = krisbud_audit::chain::seal(
        2,
        chrono::Utc::now(),
        5,
        serde_json::json!({"ä": 1, "z": 2, "A": {"é": "e"}}),
        first.hash.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.jsonl");
    let lines = |records: &[&krisbud_proto::audit::AuditRecord]| {
        records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>()
    };
    std::fs::write(&file, lines(&[&first, &second])).unwrap();
    assert_eq!(python_verify(&file), 2);

    let mut changed = first;
    changed.event["text"] = "Vattenläcka i Vällingby".into();
    std::fs::write(&file, lines(&[&changed, &second])).unwrap();
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(PYTHON_VERIFIER)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("record 1: the hash differs"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}
