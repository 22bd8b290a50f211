//! `krisbud status <id> --watch` as a real process against `krisbud up --demo`:
//! with stdout piped (not a terminal) it prints a plain line per change, follows
//! every channel to its total, waits for the operators' confirmations and then
//! exits 0 by itself.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use krisbud_tests::{wait_until, wait_until_async};
use serde_json::{Value, json};

mod common;

use common::{KRISBUD, Up, tokens};

/// Declares the water leak in Farsta to the demo audiences; its crisis id.
async fn declare_water_leak(http: &reqwest::Client, up: &Up, duty: &str) -> String {
    let response = http
        .post(format!("{}/api/v1/crises", up.api))
        .bearer_auth(duty)
        .json(&json!({
            "template": "vattenlacka",
            "variables": {
                "omrade": "Farsta",
                "beraknat_klart": "i kväll kl. 20",
                "vattenpunkt": "Farsta centrum"
            },
            "audiences": ["farsta-boende", "socialtjanst-personal"]
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

/// The lines a child prints, collected as they come.
fn collect_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Whether a line shows `channel` with every one of its `total` recipients done.
fn at_total(line: &str, channel: &str, total: u64) -> bool {
    let mut words = line.split_whitespace();
    words.next() == Some(channel) && words.next() == Some(format!("{total}/{total}").as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_every_channel_to_its_total_and_ends_when_all_are_confirmed() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let tokens = tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap().to_owned();
    let operator = tokens["operator.ali"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();

    let id = declare_water_leak(&http, &up, &duty).await;

    let mut watch = Command::new(KRISBUD)
        .args(["status", &id, "--watch"])
        .env("KRISBUD_API", &up.api)
        .env("KRISBUD_TOKEN", &duty)
        .env("KRISBUD_LANG", "sv")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("krisbud status --watch starts");
    let output = collect_lines(&mut watch);

    // Every channel settles; the totals come from the API.
    let status: Value = wait_until_async(
        "every channel with an outcome for every recipient",
        Duration::from_secs(30),
        || async {
            let s: Value = http
                .get(format!("{}/api/v1/crises/{id}", up.api))
                .bearer_auth(&duty)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let channels = s["channels"].as_object()?;
            (channels.len() == 4
                && channels
                    .values()
                    .all(|c| c["planned"] == true && c["pending"] == 0))
            .then_some(s)
        },
    )
    .await;
    let totals: BTreeMap<String, u64> = status["channels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| (name.clone(), c["total"].as_u64().unwrap()))
        .collect();
    assert!(totals["sms"] > 1, "{status}");

    // The watch shows each channel reaching its total, and keeps watching: no
    // channel is confirmed yet.
    wait_until(
        "the watch to show every channel at its total",
        Duration::from_secs(15),
        || {
            let lines = output.lock().unwrap();
            totals
                .iter()
                .all(|(channel, total)| lines.iter().any(|l| at_total(l, channel, *total)))
                .then_some(())
        },
    );

    // A second watch stops at Ctrl-C (SIGINT) with exit code 130, once it has
    // shown the crisis (its handler is in place by then).
    let mut interrupted = Command::new(KRISBUD)
        .args(["status", &id, "--watch"])
        .env("KRISBUD_API", &up.api)
        .env("KRISBUD_TOKEN", &duty)
        .env("KRISBUD_LANG", "sv")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let shown = collect_lines(&mut interrupted);
    wait_until(
        "the second watch to show the crisis",
        Duration::from_secs(15),
        || {
            shown
                .lock()
                .unwrap()
                .first()
                .is_some_and(|l| l.starts_with(&id))
                .then_some(())
        },
    );
    assert!(
        Command::new("kill")
            .args(["-INT", &interrupted.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let code = wait_until("the second watch to stop", Duration::from_secs(10), || {
        interrupted.try_wait().unwrap()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut interrupted.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(code.code(), Some(130), "{code}; stderr: {stderr}");
    assert!(stderr.contains("avbröts"), "{stderr}");

    let channels: Vec<&String> = totals.keys().collect();
    for (i, channel) in channels.iter().enumerate() {
        assert!(
            watch.try_wait().unwrap().is_none(),
            "the watch is still running with {} channel(s) unconfirmed:\n{}",
            channels.len() - i,
            output.lock().unwrap().join("\n")
        );
        let confirmed = http
            .post(format!(
                "{}/api/v1/crises/{id}/channels/{channel}/confirm",
                up.api
            ))
            .bearer_auth(&operator)
            .json(&json!({ "note": "kontrollerad" }))
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 200, "confirm {channel}");
    }

    let exit = wait_until(
        "the watch to exit by itself",
        Duration::from_secs(15),
        || watch.try_wait().unwrap(),
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    // The reader thread has seen the end of stdout once the child is gone.
    let lines = wait_until("the last line of the watch", Duration::from_secs(5), || {
        let lines = output.lock().unwrap();
        lines
            .last()
            .is_some_and(|l| l.starts_with("Klart"))
            .then(|| lines.clone())
    });
    let text = lines.join("\n");
    eprintln!("{text}");
    assert!(exit.success(), "exit {exit}; stderr: {stderr}\n{text}");
    assert!(lines[0].starts_with(&id), "a header first: {text}");
    assert!(!text.contains('\u{1b}'), "no escape sequences when piped");
    for (channel, total) in &totals {
        let last = lines
            .iter()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(channel.as_str()))
            .unwrap();
        assert!(at_total(last, channel, *total), "{channel}: {last}");
        assert!(last.contains("bekräftad av operator.ali"), "{last}");
        assert!(last.contains("möjliga dubbletter 0"), "{last}");
        assert!(
            lines
                .iter()
                .any(|l| at_total(l, channel, *total) && l.ends_with("ej bekräftad")),
            "{channel} was shown done before it was confirmed: {text}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("sms") && l.contains("via outbox")),
        "the provider split: {text}"
    );
}

#[test]
fn watch_needs_a_crisis_id() {
    let output = Command::new(KRISBUD)
        .args(["status", "--watch"])
        .env("KRISBUD_API", "http://127.0.0.1:9")
        .env("KRISBUD_TOKEN", "t")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("<ID>"), "{stderr}");
}

/// A tmux server of this test's own (its own socket), so the watch runs on a
/// real terminal of a chosen width and the test reads the screen as a person
/// would see it.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, command: &str) -> Tmux {
        let socket = format!("krisbud-watch-{}-{width}", std::process::id());
        // The pane stays when the watch ends, so its last screen can be read.
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &width.to_string(), "-y", "30", command])
            .args([";", "set-option", "remain-on-exit", "on"])
            .status()
            .expect("tmux runs (apt-get install tmux)");
        assert!(status.success(), "tmux new-session: {status}");
        Tmux { socket }
    }

    /// The screen's lines, without trailing blanks.
    fn screen(&self) -> Vec<String> {
        let output = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_each_channel_is_drawn_once_and_fits_at_80_and_200_columns() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let tokens = tokens(data.path());
    let duty = tokens["tib.maria"].as_str().unwrap().to_owned();
    let operator = tokens["operator.ali"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let id = declare_water_leak(&http, &up, &duty).await;
    let command = format!(
        "env KRISBUD_LANG=sv KRISBUD_API={} KRISBUD_TOKEN={} {} status {id} --watch",
        shell_quote(&up.api),
        shell_quote(&duty),
        shell_quote(KRISBUD)
    );
    let channels = ["sms", "email", "banner", "intranet"];
    let mut confirmed = false;
    for width in [80u16, 200] {
        let tmux = Tmux::start(width, &command);
        let screen = wait_until(
            &format!("every channel settled on the {width}-column screen"),
            Duration::from_secs(30),
            || {
                let screen = tmux.screen();
                channels
                    .iter()
                    .all(|c| {
                        let bar = |l: &String| {
                            l.starts_with(&format!("{c:<8} [")) && l.contains("väntar 0")
                        };
                        let confirmation =
                            |l: &String| l.trim_start().starts_with(&format!("{c}: "));
                        screen.iter().any(bar) && screen.iter().any(confirmation)
                    })
                    .then_some(screen)
            },
        );
        let text = screen.join("\n");
        assert!(screen[0].starts_with(&id), "the header first:\n{text}");
        for channel in channels {
            let bars = screen
                .iter()
                .filter(|l| l.split_whitespace().next() == Some(channel))
                .count();
            assert_eq!(
                bars, 1,
                "{channel} drawn {bars} times at {width} columns:\n{text}"
            );
            let confirmation = screen
                .iter()
                .filter(|l| l.trim_start().starts_with(&format!("{channel}: ")))
                .count();
            assert_eq!(confirmation, 1, "{channel}'s confirmation line:\n{text}");
        }
        // Header, four bars, four confirmation lines: nothing left behind.
        assert_eq!(screen.len(), 9, "stray lines at {width} columns:\n{text}");
        for line in &screen {
            let columns = console::measure_text_width(line);
            assert!(
                columns < usize::from(width),
                "a line of {columns} columns at {width}:\n{text}"
            );
        }

        if !confirmed {
            let response = http
                .post(format!(
                    "{}/api/v1/crises/{id}/channels/sms/confirm",
                    up.api
                ))
                .bearer_auth(&operator)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            confirmed = true;
        }
        // Who confirmed is shown whole, on its own line, even at 80 columns.
        wait_until(
            &format!("the confirmation on the {width}-column screen"),
            Duration::from_secs(15),
            || {
                tmux.screen()
                    .iter()
                    .any(|l| {
                        l.trim_start()
                            .starts_with("sms: bekräftad av operator.ali ")
                            && (l.ends_with(" CET") || l.ends_with(" CEST"))
                    })
                    .then_some(())
            },
        );
    }
}
