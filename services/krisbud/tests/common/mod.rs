//! What the process tests of the `krisbud` binary share: a running
//! `krisbud up --demo` of their own, and its demo tokens.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const KRISBUD: &str = env!("CARGO_BIN_EXE_krisbud");

/// A running `krisbud up --demo` with its own nats-server.
pub struct Up {
    child: Child,
    /// The API's base URL (without `/api/v1`).
    pub api: String,
    _lines: mpsc::Receiver<String>,
}

impl Up {
    pub fn start(data_dir: &Path) -> Up {
        let mut child = Command::new(KRISBUD)
            .args(["up", "--demo", "--data-dir"])
            .arg(data_dir)
            .env("KRISBUD_GATEWAY__LISTEN", "127.0.0.1:0")
            .env("KRISBUD_BANNER__LISTEN", "127.0.0.1:0")
            .env_remove("KRISBUD_CONFIG")
            .env_remove("KRISBUD_NATS__URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("krisbud up starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("krisbud prints its ready line");
            if line.starts_with("krisbud ready") {
                break line;
            }
        };
        let api = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .unwrap_or_else(|| panic!("api in {ready}"))
            .trim_end_matches("/api/v1")
            .to_owned();
        Up {
            child,
            api,
            _lines: lines,
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        // Not `wait_until`: a panic inside a drop during a failing test would abort.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tokens(data_dir: &Path) -> Value {
    let text =
        std::fs::read_to_string(data_dir.join("demo-tokens.json")).expect("demo-tokens.json");
    serde_json::from_str::<Value>(&text).unwrap()["tokens"].clone()
}
