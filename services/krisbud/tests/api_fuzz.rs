//! Schemathesis (PyPI, `st`) against a running `krisbud up --demo`: it reads
//! `/api/v1/openapi.json` and sends generated requests, valid and invalid, to
//! every operation, as a duty officer and as an admin, and fails on any 5xx.
//! Bounded in examples per operation so it stays under a minute; `.ci/run`
//! installs schemathesis.

mod common;

use std::process::Command;

use common::{Up, tokens};

/// Generated requests per operation and phase.
const EXAMPLES: &str = "10";

#[test]
fn no_generated_request_gets_a_server_error() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let tokens = tokens(data.path());
    let schema = format!("{}/api/v1/openapi.json", up.api);
    for user in ["tib.maria", "admin.olle"] {
        let token = tokens[user].as_str().unwrap();
        let output = Command::new("st")
            .args(["run", &schema, "--checks", "not_a_server_error"])
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
            "schemathesis as {user} found a server error:\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains("generated"),
            "schemathesis ran no case:\n{text}"
        );
    }
}
