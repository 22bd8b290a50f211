//! `krisbud bench fanout` as a real process: it runs the whole stack against a
//! provider simulator and prints its figures, ending with the `ratio` line. No
//! timing is asserted (the machine may be busy); the figures must be there and
//! every recipient accounted for.

use std::process::Command;

const KRISBUD: &str = env!("CARGO_BIN_EXE_krisbud");

/// Runs the benchmark and returns its stdout lines, failing on a non-zero exit.
fn bench(provider: &str, recipients: u64) -> Vec<String> {
    let output = Command::new(KRISBUD)
        .args(["bench", "fanout", "--provider", provider])
        .args(["--recipients", &recipients.to_string()])
        .args(["--latency-runs", "10", "--stall-secs", "60"])
        .env(
            "KRISBUD_LOCAL_NATS__BINARY",
            krisbud_tests::nats::nats_server_binary(),
        )
        .env_remove("KRISBUD_CONFIG")
        .output()
        .expect("krisbud runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    eprintln!("{stdout}");
    stdout.lines().map(str::to_owned).collect()
}

/// The line starting with `prefix`.
fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {lines:#?}"))
}

/// The number before the first `unit` in `text`, e.g. `(12,345 msgs/s`.
fn figure(text: &str, unit: &str) -> f64 {
    let before = text
        .split(unit)
        .next()
        .filter(|b| b.len() < text.len())
        .unwrap_or_else(|| panic!("no `{unit}` in {text}"));
    let number = before
        .split_whitespace()
        .last()
        .unwrap()
        .trim_start_matches('(')
        .replace(',', "");
    number
        .parse()
        .unwrap_or_else(|e| panic!("`{number}` before `{unit}` in {text}: {e}"))
}

fn check(lines: &[String], recipients: u64) {
    let n = format_thousands(recipients);
    let baseline = line(lines, "baseline:");
    assert!(baseline.contains(&format!("{n} msgs of")), "{baseline}");
    assert!(figure(baseline, "msgs/s") > 0.0, "{baseline}");

    let latency = line(lines, "latency:");
    assert!(latency.contains("over 10 declarations"), "{latency}");
    for p in ["p50", "p99"] {
        let value = latency
            .split(&format!("{p} "))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {p} in {latency}"));
        assert!(value.parse::<f64>().is_ok(), "{p} {value} in {latency}");
    }

    let e2e = line(lines, "e2e:");
    assert!(e2e.contains(&format!("{n} recipients in")), "{e2e}");
    assert!(figure(e2e, "recipients/s") > 0.0, "{e2e}");
    // Every recipient was counted, and none failed.
    assert!(e2e.contains(&format!("sent {n},")), "{e2e}");
    assert!(e2e.contains("failed 0)"), "{e2e}");

    let audit = line(lines, "audit:");
    assert!(figure(audit, "events;") > 0.0, "{audit}");
    assert!(figure(audit, "s later") >= 0.0, "{audit}");

    let rss = line(lines, "rss (VmHWM):");
    assert!(figure(rss, "MB +") > 0.0, "{rss}");
    assert!(!rss.contains("n/a"), "{rss}");

    let last = lines.last().expect("some output");
    let ratio: f64 = last
        .strip_prefix("ratio ")
        .unwrap_or_else(|| panic!("the last line is not the ratio: {last}"))
        .parse()
        .unwrap_or_else(|e| panic!("{last}: {e}"));
    assert!(ratio > 0.0 && ratio.is_finite(), "{last}");
}

fn format_thousands(n: u64) -> String {
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

#[test]
fn bench_fanout_via_sinch_prints_every_figure_and_the_ratio() {
    check(&bench("sinch", 2_000), 2_000);
}

#[test]
fn bench_fanout_via_46elks_prints_every_figure_and_the_ratio() {
    check(&bench("46elks", 300), 300);
}
