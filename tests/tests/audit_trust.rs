//! An audit chain that cannot be quietly rebuilt: every signed checkpoint goes to
//! witnesses outside the NATS store, and a chain rebuilt after its streams were
//! deleted on disk verifies as BROKEN against what a witness saved, although its
//! own signatures are valid.

mod common;

use std::time::Duration;

use common::{TestApp, water_declaration};
use krisbud_proto::Role;
use krisbud_proto::audit::{ChainPoint, VerifyReport};
use krisbud_tests::{WebhookReceiver, wait_until_async};

const WAIT: Duration = Duration::from_secs(30);

/// The newest checkpoint in a witness file.
fn newest_witnessed(path: &std::path::Path) -> Option<ChainPoint> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<ChainPoint>(l).ok())
        .max_by_key(|p| p.sequence)
}

async fn verify(app: &TestApp, trust_key: &str, since: Option<&ChainPoint>) -> VerifyReport {
    let mut query = vec![("trust_key", trust_key.to_owned())];
    if let Some(point) = since {
        query.push(("since_sequence", point.sequence.to_string()));
        query.push(("since_hash", point.hash.clone()));
        if let Some(chain) = &point.chain_id {
            query.push(("since_chain", chain.clone()));
        }
    }
    let response = app
        .http
        .get(format!("{}/api/v1/audit/verify", app.api))
        .query(&query)
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rebuilt_after_its_streams_were_deleted_fails_against_its_witnesses() {
    let witness_dir = tempfile::tempdir().unwrap();
    let witness_file = witness_dir.path().join("witness.jsonl");
    let receiver = WebhookReceiver::start("unused").await;
    // The HTTP witness is down for the first checkpoint: it gets the next one.
    receiver.fail_next(1, 503);
    let mut app = TestApp::spawn_with(&format!(
        r#"
[audit]
checkpoint_interval_secs = 1
witness_files = ["{}"]
witness_urls = ["{}"]
"#,
        witness_file.display(),
        receiver.url()
    ))
    .await;
    let published = hex::encode(
        krisbud_audit::signing::read_key_file(&app.data_dir.path().join("audit-signing.key"))
            .unwrap()
            .verifying_key()
            .as_bytes(),
    );
    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;

    // Both witnesses hold a checkpoint of the chain as it stands now.
    let head = verify(&app, &published, None).await;
    assert!(head.ok, "{head:?}");
    // The chain's identity: 128 random bits in its genesis record, under its hash.
    let first: serde_json::Value = app
        .http
        .get(format!("{}/api/v1/audit?limit=1", app.api))
        .bearer_auth(app.token(krisbud_proto::Role::Auditor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let genesis = &first["records"][0];
    let chain_id = genesis["chain_id"].as_str().unwrap_or_default();
    assert_eq!(chain_id.len(), 32, "{genesis}");
    assert!(chain_id.bytes().all(|b| b.is_ascii_hexdigit()), "{genesis}");
    assert_eq!(head.chain_id.as_deref(), Some(chain_id));
    assert_ne!(Some(genesis["hash"].as_str().unwrap()), Some(chain_id));
    let saved = wait_until_async("a witness to hold the head", WAIT, || async {
        newest_witnessed(&witness_file).filter(|p| p.sequence >= head.checked)
    })
    .await;
    assert_eq!(
        saved.chain_id, head.chain_id,
        "checkpoints name their chain"
    );
    let posted = wait_until_async("the HTTP witness to get a checkpoint", WAIT, || async {
        receiver
            .received()
            .iter()
            .filter_map(|h| serde_json::from_value::<ChainPoint>(h.body.clone()).ok())
            .max_by_key(|p| p.sequence)
            .filter(|p| p.sequence >= head.checked)
    })
    .await;
    assert!(
        receiver.requests() >= 2,
        "the refused one was followed by another"
    );
    let extends = verify(&app, &published, Some(&saved)).await;
    assert!(extends.ok, "{extends:?}");
    assert_eq!(extends.extends.as_ref(), Some(&saved));

    // The attack: with the services and nats-server down, the audit streams are
    // deleted on disk; everything starts again and the audit service records the
    // events into a fresh chain, signed with the same key.
    app.stop().await;
    app.nats.stop();
    let streams = app.nats.store_dir().join("jetstream/KRISBUD/streams");
    for stream in ["KRISBUD_AUDIT", "KRISBUD_AUDIT_CHECKPOINTS"] {
        std::fs::remove_dir_all(streams.join(stream)).unwrap();
    }
    app.nats.restart();
    app.start_services().await;
    let rebuilt = wait_until_async("the chain to be rebuilt and signed", WAIT, || async {
        let report = verify(&app, &published, None).await;
        (report.checked >= saved.sequence && report.signed_up_to >= Some(saved.sequence))
            .then_some(report)
    })
    .await;
    assert!(
        rebuilt.ok,
        "on its own, the rebuilt chain verifies: {rebuilt:?}"
    );
    assert_ne!(rebuilt.chain_id, saved.chain_id, "a new chain id");

    for point in [&saved, &posted] {
        let broken = verify(&app, &published, Some(point)).await;
        assert!(!broken.ok, "{broken:?}");
        let bad = broken.first_bad.unwrap();
        assert_eq!(bad.problem, "not the saved chain", "{bad:?}");
        assert!(bad.detail.contains("rebuilt"), "{bad:?}");
    }
    // Without the chain id, the record hash at the saved sequence differs too.
    let anonymous = ChainPoint {
        chain_id: None,
        ..saved.clone()
    };
    let broken = verify(&app, &published, Some(&anonymous)).await;
    assert_eq!(
        broken.first_bad.map(|b| (b.sequence, b.problem)),
        Some((saved.sequence, "not the saved chain".to_owned()))
    );
}
