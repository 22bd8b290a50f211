//! Signed checkpoints and tampering, against a real nats-server: an export bundle
//! verifies offline, and a changed, deleted or swapped record or a replaced
//! checkpoint signature is named; a byte flipped in KRISBUD_AUDIT's file store is
//! found by verifying the live stream; a key change is recorded in the chain and
//! endorsed by the old key.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use krisbud_audit::{bundle, chain, signing};
use krisbud_proto::audit::VerifyReport;
use krisbud_proto::{Role, spec, subject};
use krisbud_tests::wait_until_async;

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn check(lines: &[String]) -> VerifyReport {
    bundle::verify_reader((lines.join("\n") + "\n").as_bytes(), &[])
}

fn problem(report: &VerifyReport) -> (u64, String) {
    let bad = report.first_bad.as_ref().expect("a problem is found");
    (bad.sequence, bad.problem.clone())
}

/// The index of the line holding record `sequence`.
fn record_line(lines: &[String], sequence: u64) -> usize {
    let prefix = format!("{{\"sequence\":{sequence},");
    lines
        .iter()
        .position(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line of record {sequence}"))
}

#[tokio::test]
async fn checkpoints_are_signed_and_tampering_with_an_export_is_named() {
    let world = World::new().await;
    let audit = start_audit(&world).await;
    // Two batches, each signed, so the export holds several checkpoints.
    for batch in [1..=4, 5..=8] {
        for i in batch {
            world
                .append(&confirmed("c1", "anna", &format!("anteckning {i}")))
                .await;
        }
        world.wait_until_caught_up().await;
        world.wait_for_checkpoint_of_head().await;
    }
    let head = world.wait_for_checkpoint_of_head().await;
    assert_eq!(head.sequence, 9);

    // The key is public and names the key the chain registered.
    let keys = world.keys().await.unwrap();
    assert_eq!(keys.history.len(), 1);
    assert_eq!(keys.current.key_id, keys.history[0].key_id);
    assert_eq!(keys.current.key_id, head.key_id);
    let page = world.checkpoints().await.unwrap();
    assert!(page.checkpoints.len() >= 2, "{page:?}");
    let forbidden = world
        .command::<_, krisbud_proto::audit::CheckpointPage>(
            subject::cmd::AUDIT_CHECKPOINTS,
            person("tib", &[Role::DutyOfficer]),
            krisbud_proto::audit::CheckpointQuery::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(forbidden.status, 403);

    let live = world.verify(auditor()).await.unwrap();
    assert!(live.ok, "{live:?}");
    assert_eq!(live.signed_up_to, Some(9));

    let bytes = world.bundle().await;
    audit.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    let published = signing::parse_public_key(&keys.current.public_key).unwrap();
    let intact = bundle::verify_file(&path, &[published]).unwrap();
    assert!(intact.ok, "{intact:?}");
    assert_eq!(intact.checked, 9);
    assert_eq!(intact.checkpoints, page.checkpoints.len() as u64);
    assert_eq!(intact.signed_up_to, Some(9));
    let original = lines(&bytes);

    // A flipped byte in a record's payload: found at that record.
    let mut flipped = original.clone();
    let at = record_line(&flipped, 4);
    assert!(flipped[at].contains("anteckning 3"));
    flipped[at] = flipped[at].replace("anteckning 3", "anteckninG 3");
    assert_eq!(problem(&check(&flipped)), (4, chain::HASH_MISMATCH.into()));

    // A deleted record: a gap where it was.
    let mut deleted = original.clone();
    deleted.remove(record_line(&deleted, 5));
    assert_eq!(problem(&check(&deleted)), (5, chain::GAP.into()));

    // Two records swapped: found at the first of them.
    let mut swapped = original.clone();
    let (a, b) = (record_line(&swapped, 6), record_line(&swapped, 7));
    swapped.swap(a, b);
    assert_eq!(problem(&check(&swapped)), (6, chain::GAP.into()));

    // A checkpoint signature replaced by another valid-looking one.
    let mut resigned = original.clone();
    let cp = resigned
        .iter()
        .position(|l| l.starts_with("{\"checkpoint\":"))
        .unwrap();
    let mut checkpoint: serde_json::Value = serde_json::from_str(&resigned[cp]).unwrap();
    let sequence = checkpoint["checkpoint"]["sequence"].as_u64().unwrap();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let forged = signing::sign_checkpoint(
        &stranger,
        sequence,
        checkpoint["checkpoint"]["hash"].as_str().unwrap(),
        chrono::Utc::now(),
        checkpoint["checkpoint"]["chain_id"].as_str(),
    );
    checkpoint["checkpoint"]["signature"] = forged.signature.into();
    resigned[cp] = checkpoint.to_string();
    assert_eq!(
        problem(&check(&resigned)),
        (sequence, chain::BAD_SIGNATURE.into())
    );

    // The last records cut off: the header and the last checkpoint both know.
    let mut cut = original;
    cut.truncate(record_line(&cut, 8));
    assert_eq!(problem(&check(&cut)), (8, chain::GAP.into()));
}

#[tokio::test]
async fn a_byte_flipped_in_the_file_store_is_found_by_verify() {
    let mut world = World::new().await;
    let audit = start_audit(&world).await;
    for i in 1..=7 {
        world
            .append(&confirmed("c1", "anna", &format!("anteckning {i}")))
            .await;
    }
    world.wait_for_records(8).await;
    world.wait_until_caught_up().await;
    world.wait_for_checkpoint_of_head().await;
    let before = world.verify(auditor()).await.unwrap();
    assert!(before.ok, "{before:?}");
    audit.stop().await;

    // Record 5 holds "anteckning 4"; flip one bit of it on disk.
    let blocks = world
        .nats
        .store_dir()
        .join("jetstream/$G/streams")
        .join(spec::AUDIT.name)
        .join("msgs");
    let needle = b"anteckning 4";
    wait_until_async("the record on disk", WAIT, || async {
        find_in_blocks(&blocks, needle).map(|_| ())
    })
    .await;
    {
        let nats = Arc::get_mut(&mut world.nats).expect("no service holds the server now");
        nats.stop();
        let (block, at) = find_in_blocks(&blocks, needle).expect("the record is on disk");
        let mut bytes = std::fs::read(&block).unwrap();
        bytes[at + 3] ^= 0x01;
        std::fs::write(&block, bytes).unwrap();
        nats.restart();
    }

    // The client reconnects by itself; the restarted audit service verifies.
    let world = World {
        rt: krisbud_tests::service::runtime(&world.nats, &krisbud_kit::Common::default()).await,
        ..world
    };
    let audit = start_audit(&world).await;
    let report = world.verify(auditor()).await.unwrap();
    assert!(!report.ok, "a damaged store never verifies: {report:?}");
    let bad = report.first_bad.as_ref().unwrap();
    assert_eq!(bad.sequence, 5, "{report:?}");
    assert!(
        [chain::UNREADABLE, chain::HASH_MISMATCH].contains(&bad.problem.as_str()),
        "{report:?}"
    );
    audit.stop().await;
}

/// The block file holding `needle`, and where.
fn find_in_blocks(dir: &Path, needle: &[u8]) -> Option<(std::path::PathBuf, usize)> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.extension().is_some_and(|e| e == "blk") {
            let bytes = std::fs::read(&path).ok()?;
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                return Some((path, at));
            }
        }
    }
    None
}

#[tokio::test]
async fn a_key_change_is_recorded_in_the_chain_and_endorsed_by_the_old_key() {
    let world = World::new().await;
    let old_file = world.key_file("old");
    let new_file = world.key_file("new");
    let old = signing::read_key_file(&old_file).unwrap();
    let new = signing::read_key_file(&new_file).unwrap();

    let audit = start_audit_with(&world, config(&old_file)).await;
    for i in 1..=3 {
        world
            .append(&confirmed("c1", "anna", &format!("före {i}")))
            .await;
    }
    world.wait_for_records(4).await;
    world.wait_for_checkpoint_of_head().await;
    audit.stop().await;

    // The new key, with the old one at hand to endorse it.
    let audit = start_audit_with(
        &world,
        krisbud_audit::Config {
            previous_signing_key_file: Some(old_file.clone()),
            ..config(&new_file)
        },
    )
    .await;
    for i in 1..=3 {
        world
            .append(&confirmed("c1", "anna", &format!("efter {i}")))
            .await;
    }
    world.wait_for_records(8).await;
    let head = world.wait_for_checkpoint_of_head().await;
    assert_eq!(head.key_id, signing::key_id(&new.verifying_key()));

    let records = world.records().await;
    let rotation = &records[4].1.event;
    assert_eq!(rotation["kind"], "AuditKeyRotated");
    assert_eq!(
        rotation["payload"]["previous_key_id"],
        signing::key_id(&old.verifying_key())
    );
    assert!(rotation["payload"]["endorsement"].is_string());
    let keys = world.keys().await.unwrap();
    assert_eq!(keys.history.len(), 2);
    assert_eq!(keys.current.key_id, head.key_id);

    // Trusting only the old (published) key, the endorsement carries the trust.
    let bytes = world.bundle().await;
    let report = bundle::verify_reader(&bytes[..], &[old.verifying_key()]);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.keys.len(), 2);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    audit.stop().await;

    // A key changed without the old key: recorded, but not trusted through it.
    let stray_file = world.key_file("stray");
    let audit = start_audit_with(&world, config(&stray_file)).await;
    world.append(&confirmed("c1", "anna", "sist")).await;
    world.wait_for_records(10).await;
    world.wait_for_checkpoint_of_head().await;
    let bytes = world.bundle().await;
    audit.stop().await;
    let untrusted = bundle::verify_reader(&bytes[..], &[]);
    assert!(untrusted.ok, "{untrusted:?}");
    assert_eq!(untrusted.warnings.len(), 1, "{:?}", untrusted.warnings);
    let trusted = bundle::verify_reader(&bytes[..], &[old.verifying_key()]);
    assert_eq!(problem(&trusted), (9, chain::BAD_SIGNATURE.into()));
}
