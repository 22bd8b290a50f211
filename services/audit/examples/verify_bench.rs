//! Benchmark of offline verification: writes an export bundle of N records
//! (default 1,000,000) with signed checkpoints, then verifies it as
//! `krisbud audit verify --file` does and prints records/s, with two baselines
//! measured in the same run on the same file: reading and parsing the lines only,
//! and SHA-256 over the file's bytes.
//!
//! ```text
//! cargo run --release -p krisbud-audit --example verify_bench -- --records 1000000 --outcomes 4
//! ```
//!
//! Each record holds a `DeliveryReported` event with `--outcomes` recipient
//! outcomes (a fan-out's typical record), every tenth a `ChannelConfirmed`.

use std::io::{BufRead, BufWriter, Write};
use std::time::{Duration, Instant};

use chrono::Utc;
use ed25519_dalek::SigningKey;
use krisbud_audit::{bundle, chain, signing};
use krisbud_proto::audit::{AuditRecord, BUNDLE_FORMAT, BundleHeader, BundleLine, GENESIS_HASH};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The issue's target.
const TARGET: f64 = 200_000.0;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

fn event(i: u64, outcomes: u64) -> serde_json::Value {
    let at = Utc::now();
    if i.is_multiple_of(10) {
        return json!({
            "id": format!("0190-{i:012}"), "schema_version": 1, "occurred_at": at,
            "actor": {"user": "operator.ali", "roles": ["operator"]}, "crisis_id": "20261126-7f3a9c",
            "kind": "ChannelConfirmed",
            "payload": {"crisis_id": "20261126-7f3a9c", "revision": 1, "channel": "banner", "note": "bannern syns på stockholm.se"}
        });
    }
    let outcomes: Vec<_> = (0..outcomes)
        .map(|n| {
            json!({
                "recipient": format!("rcp:{:032x}", u128::from(i) * 1_000_003 + u128::from(n)),
                "state": if n % 7 == 0 { "sent" } else { "delivered" },
                "provider_ref": format!("s{:024x}", u128::from(i) << 8 | u128::from(n)),
            })
        })
        .collect();
    json!({
        "id": format!("20261126-7f3a9c.r1.sms.sv.{i}.outcome"), "schema_version": 1, "occurred_at": at,
        "actor": {"user": "service:channel-sms", "roles": ["system"]}, "crisis_id": "20261126-7f3a9c",
        "causation_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "kind": "DeliveryReported",
        "payload": {
            "crisis_id": "20261126-7f3a9c", "revision": 1, "channel": "sms",
            "job_id": format!("20261126-7f3a9c.r1.sms.sv.{i}"), "provider": "46elks",
            "outcomes": outcomes
        }
    })
}

fn main() -> anyhow::Result<()> {
    let records = arg("--records", 1_000_000);
    let outcomes = arg("--outcomes", 4);
    let every = arg("--checkpoint-every", 1000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bundle.jsonl");
    let key = SigningKey::from_bytes(&[7; 32]);

    let started = Instant::now();
    {
        let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        out.write_all(&bundle::line(&BundleLine::Bundle(BundleHeader {
            format: BUNDLE_FORMAT.into(),
            version: bundle::VERSION,
            exported_at: Utc::now(),
            last_sequence: records,
        })))?;
        out.write_all(&bundle::line(&BundleLine::PublicKey(signing::public_key(
            &key.verifying_key(),
        ))))?;
        // Checkpoints come before the records, so the chain is built twice: once
        // for the checkpoints' hashes, once to write it. Cheaper than holding it.
        let mut prev = GENESIS_HASH.to_owned();
        for sequence in 1..=records {
            let record = make(sequence, outcomes, &prev);
            if sequence.is_multiple_of(every) || sequence == records {
                let checkpoint =
                    signing::sign_checkpoint(&key, sequence, &record.hash, Utc::now(), None);
                out.write_all(&bundle::line(&BundleLine::Checkpoint(checkpoint)))?;
            }
            prev = record.hash;
        }
        let mut prev = GENESIS_HASH.to_owned();
        for sequence in 1..=records {
            let record = make(sequence, outcomes, &prev);
            out.write_all(&bundle::record_line(&record))?;
            prev = record.hash;
        }
        out.flush()?;
    }
    let size = std::fs::metadata(&path)?.len();
    println!(
        "wrote {records} records ({outcomes} outcomes each, every tenth a confirmation), {:.1} MB, {:.0} bytes/record, in {:.1?}",
        size as f64 / 1e6,
        size as f64 / records as f64,
        started.elapsed()
    );

    // Warm the page cache so every measurement reads from memory.
    let _ = std::fs::read(&path)?;

    let started = Instant::now();
    let report = bundle::verify_file(&path, &[key.verifying_key()])?;
    let verify = started.elapsed();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, records);

    let parse = baseline_parse(&path)?;
    let hash = baseline_sha256(&path)?;

    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    println!(
        "verify:   {records} records, {} checkpoints, in {:.2?}: {:.0} records/s, {:.0} MB/s",
        report.checkpoints,
        verify,
        rate(verify),
        mbps(verify)
    );
    println!(
        "baseline: read and parse every line only: {:.0} records/s ({:.0} MB/s)",
        rate(parse),
        mbps(parse)
    );
    println!(
        "baseline: SHA-256 over the whole file: {:.0} MB/s",
        mbps(hash)
    );
    println!(
        "target:   {TARGET:.0} records/s: {}",
        if rate(verify) >= TARGET {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

fn make(sequence: u64, outcomes: u64, prev: &str) -> AuditRecord {
    // Deterministic content, so both passes build the same chain.
    let mut event = if sequence == 1 {
        // The chain registers the signing key first, as the audit service does.
        let key = SigningKey::from_bytes(&[7; 32]);
        json!({
            "id": "audit-key", "schema_version": 1, "occurred_at": Utc::now(),
            "actor": {"user": "service:audit", "roles": ["system"]},
            "kind": "AuditKeyRotated",
            "payload": signing::rotation(&key.verifying_key(), None, None)
        })
    } else {
        event(sequence, outcomes)
    };
    event["occurred_at"] = json!("2026-11-26T10:00:00.123456Z");
    chain::seal(
        sequence,
        "2026-11-26T10:00:00.5Z".parse().expect("a time"),
        sequence + 1,
        event,
        prev.to_owned(),
    )
}

/// Reading and parsing the records without hashing: the floor under verify.
fn baseline_parse(path: &std::path::Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut line = Vec::new();
    let mut parsed = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if serde_json::from_slice::<AuditRecord>(&line).is_ok() {
            parsed += 1;
        }
    }
    assert!(parsed > 0);
    Ok(started.elapsed())
}

fn baseline_sha256(path: &std::path::Path) -> anyhow::Result<Duration> {
    let bytes = std::fs::read(path)?;
    let started = Instant::now();
    let digest = Sha256::digest(&bytes);
    std::hint::black_box(digest);
    Ok(started.elapsed())
}
