//! The CLI's language rule, on the real binary: Swedish by default, English by
//! `--lang en`, `KRISBUD_LANG=en` or an English POSIX locale, for the help, a
//! parse error, an error of its own and a crisis's status, in Stockholm time.

use std::process::{Command, Output};

use serde_json::{Value, json};

mod common;

use common::{KRISBUD, Up, tokens};

/// Command-line words, and environment variables.
type Flags = &'static [&'static str];
type Env = &'static [(&'static str, &'static str)];

/// Runs the CLI with no language in its environment but `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(KRISBUD);
    command.args(args);
    for name in ["LANG", "LC_ALL", "LC_MESSAGES", "KRISBUD_LANG"] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the CLI runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_and_errors_are_swedish_unless_english_is_asked_for() {
    let swedish = run(&["status", "--help"], &[]);
    let text = stdout(&swedish);
    assert!(text.starts_with("Visa alla kriser"), "{text}");
    assert!(
        text.contains("Användning: krisbud status [FLAGGOR]"),
        "{text}"
    );
    assert!(text.contains("Din inloggningstoken"), "{text}");
    assert!(text.contains("[miljö: KRISBUD_TOKEN]"), "{text}");
    assert!(
        !text.contains("Usage") && !text.contains("Options"),
        "{text}"
    );

    let unknown = run(&["status", "--bogus"], &[]);
    assert_eq!(unknown.status.code(), Some(2));
    let text = stderr(&unknown);
    assert!(text.starts_with("fel: okänt argument '--bogus'"), "{text}");
    assert!(text.contains("Mer hjälp: --help"), "{text}");

    // An error of the CLI's own: the API is not there.
    let unreachable = ["status", "--api", "http://127.0.0.1:9", "--token", "t"];
    let text = stderr(&run(&unreachable, &[]));
    assert!(
        text.contains("kan inte nå krisbuds API på http://127.0.0.1:9"),
        "{text}"
    );

    // The same in English, each way of asking for it.
    let english: [(Flags, Env); 4] = [
        (&["--lang", "en"], &[]),
        (&["--lang=en"], &[("LANG", "sv_SE.UTF-8")]),
        (&[], &[("KRISBUD_LANG", "en")]),
        (&[], &[("LANG", "en_GB.UTF-8")]),
    ];
    for (flags, env) in english {
        let with = |args: &[&str]| -> Vec<String> {
            flags.iter().chain(args).map(|s| (*s).to_owned()).collect()
        };
        let args = with(&["status", "--help"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = stdout(&run(&args, env));
        assert!(
            text.starts_with("Show every crisis"),
            "{flags:?} {env:?}: {text}"
        );
        assert!(text.contains("Usage: krisbud status [OPTIONS]"), "{text}");

        let args = with(&["status", "--bogus"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = stderr(&run(&args, env));
        assert!(
            text.starts_with("error: unexpected argument '--bogus'"),
            "{text}"
        );

        let args = with(&unreachable);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = stderr(&run(&args, env));
        assert!(text.contains("cannot reach the krisbud API at"), "{text}");
    }

    // A locale that is neither gives Swedish, the city's language.
    let text = stdout(&run(&["status", "--help"], &[("LANG", "de_DE.UTF-8")]));
    assert!(text.starts_with("Visa alla kriser"), "{text}");
}

/// `krisbud status <id>` in both languages: the crisis's state in words, Stockholm
/// time marked with its zone, and after the close a banner that is taken down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crisis_status_reads_in_the_persons_language_and_local_time() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let tokens = tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let declared: Value = http
        .post(format!("{}/api/v1/crises", up.api))
        .bearer_auth(&duty)
        .json(&json!({
            "template": "vattenlacka",
            "variables": {
                "omrade": "Farsta",
                "beraknat_klart": "i kväll kl. 20",
                "vattenpunkt": "Farsta centrum"
            },
            "audiences": ["farsta-boende"],
            "channels": ["banner", "sms"]
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = declared["crisis_id"].as_str().unwrap().to_owned();
    let status = |lang: &'static str| {
        let out = run(
            &["status", &id, "--lang", lang],
            &[("KRISBUD_API", &up.api), ("KRISBUD_TOKEN", &duty)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // Stockholm is CET in winter and CEST in summer; never UTC on the screen.
    let local = |text: &str| text.contains(" CET") || text.contains(" CEST");

    let swedish = status("sv");
    assert!(swedish.contains("SKARPT"), "{swedish}");
    assert!(swedish.contains("Krisen pågår."), "{swedish}");
    assert!(swedish.contains("utlyst av tib.maria 20"), "{swedish}");
    assert!(local(&swedish) && !swedish.contains("UTC"), "{swedish}");
    assert!(swedish.contains("bekräftad av"), "{swedish}");
    let english = status("en");
    assert!(english.contains("ACTUAL"), "{english}");
    assert!(english.contains("The crisis is active."), "{english}");
    assert!(english.contains("declared by tib.maria at 20"), "{english}");

    let closed = run(
        &["close", &id],
        &[("KRISBUD_API", &up.api), ("KRISBUD_TOKEN", &duty)],
    );
    assert!(closed.status.success(), "{}", stderr(&closed));
    assert!(
        stdout(&closed).contains(": avslutad"),
        "{}",
        stdout(&closed)
    );
    let swedish = status("sv");
    assert!(
        swedish.contains("Krisen är avslutad av tib.maria"),
        "{swedish}"
    );
    let banner = swedish
        .lines()
        .find(|l| l.trim_start().starts_with("banner"))
        .unwrap_or_default();
    assert!(banner.contains("nedtagen"), "{swedish}");
    let english = status("en");
    assert!(english.contains("taken down"), "{english}");
}
