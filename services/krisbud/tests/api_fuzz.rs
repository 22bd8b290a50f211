//! Schemathesis (PyPI, `st`) against a running `krisbud up --demo`: it reads
//! `/api/v1/openapi.json` and sends generated requests, valid and invalid, to
//! every operation, as a duty officer and as an admin, with every check
//! (`--checks all`: no 5xx, every answer as documented, schema-violating requests
//! refused, schema-valid ones accepted or refused for a documented rule, see
//! `schemathesis.toml`), and fails on any failure. Bounded in examples per
//! operation so it stays under a minute; `.ci/run` installs schemathesis.

mod common;

use std::process::Command;

use common::{Up, tokens};

/// Generated requests per operation and phase.
const EXAMPLES: &str = "10";

#[test]
fn every_generated_request_gets_the_documented_answer() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let tokens = tokens(data.path());
    let schema = format!("{}/api/v1/openapi.json", up.api);
    for user in ["tib.maria", "admin.olle"] {
        let token = tokens[user].as_str().unwrap();
        let output = Command::new("st")
            .arg("--config-file")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml"))
            .args(["run", &schema, "--checks", "all"])
            .args(["--max-examples", EXAMPLES, "--seed", "7", "--no-color"])
            .args(["--request-timeout", "10"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .output()
            .expect("schemathesis runs (pip install schemathesis)");
        let text = String::from_utf8_lossy(&output.stdout);
        let summary = text
            .lines()
            .filter(|l| l.contains("generated") || l.contains("failures"))
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("{user}: {summary}");
        assert!(
            output.status.success(),
            "schemathesis as {user} found a failure:\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains("generated"),
            "schemathesis ran no case:\n{text}"
        );
    }
}
