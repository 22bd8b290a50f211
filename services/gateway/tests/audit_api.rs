//! The audit routes against a stand-in audit service: CSV export, the export
//! bundle, checkpoints, the public key, the crisis report in its three formats
//! and the recipient lookup.

mod common;

use chrono::Utc;
use common::{AUDITOR, App, Responder, TIB, ok, problem, refuse};
use krisbud_proto::audit::{AuditPage, AuditRecord, BundleLine, GENESIS_HASH};
use krisbud_proto::{Problem, subject};
use serde_json::{Value, json};

fn record(sequence: u64) -> AuditRecord {
    AuditRecord {
        sequence,
        recorded_at: Utc::now(),
        event_sequence: sequence + 100,
        event: json!({
            "id": format!("e-{sequence}"), "kind": "ChannelConfirmed", "crisis_id": "c-1",
            "occurred_at": "2026-11-26T08:00:00Z", "actor": {"user": "ali"},
            "payload": {"note": format!("klart, nr {sequence}")}
        }),
        prev_hash: if sequence == 1 {
            GENESIS_HASH.to_owned()
        } else {
            format!("{:064x}", sequence - 1)
        },
        chain_id: None,
        hash: format!("{sequence:064x}"),
    }
}

fn checkpoint(sequence: u64) -> Value {
    json!({
        "sequence": sequence, "hash": format!("{sequence:064x}"),
        "signed_at": "2026-11-26T08:00:00Z", "key_id": "0123456789abcdef",
        "signature": "ab".repeat(64)
    })
}

/// An audit service with five records (two per page; a sixth appears after the
/// first page was read), checkpoints at 2, 4 and 6, one key, and a report.
fn audit_service(subject: &str, request: &Value) -> krisbud_proto::CommandReply<Value> {
    let body = &request["body"];
    match subject {
        subject::cmd::AUDIT_QUERY => {
            let from = body["from_sequence"].as_u64().unwrap_or(1);
            // The chain grows to six records after the first page.
            let last_now = if from == 1 { 5 } else { 6 };
            let limit = body["limit"].as_u64().unwrap_or(2).min(2);
            let last = (from + limit - 1).min(last_now);
            let page = AuditPage {
                records: (from..=last).map(record).collect(),
                next_sequence: (last < last_now).then_some(last + 1),
                last_sequence: Some(last_now),
            };
            ok(serde_json::to_value(page).unwrap())
        }
        subject::cmd::AUDIT_CHECKPOINTS => {
            let from = body["from_sequence"].as_u64().unwrap_or(1);
            let all: Vec<Value> = [2, 4, 6]
                .into_iter()
                .filter(|s| *s >= from)
                .map(checkpoint)
                .collect();
            let (page, rest) = all.split_at(all.len().min(2));
            let next = rest.first().map(|c| c["sequence"].as_u64().unwrap());
            ok(json!({ "checkpoints": page, "next_sequence": next }))
        }
        subject::cmd::AUDIT_KEYS => ok(json!({
            "current": {"key_id": "0123456789abcdef", "algorithm": "Ed25519", "public_key": "cd".repeat(32)},
            "history": [{"key_id": "0123456789abcdef", "algorithm": "Ed25519", "public_key": "cd".repeat(32), "since": "2026-11-26T07:00:00Z"}]
        })),
        subject::cmd::AUDIT_REPORT => {
            let text = match body["format"].as_str() {
                Some("markdown") => Some("# Krisrapport c-1\n"),
                Some("html") => Some("<!DOCTYPE html><title>Krisrapport c-1</title>"),
                _ => None,
            };
            ok(json!({
                "report": {
                    "crisis_id": body["crisis_id"], "generated_at": "2026-11-26T09:00:00Z",
                    "timeline": [], "channels": [], "confirmations": [], "escalations": []
                },
                "text": text
            }))
        }
        subject::cmd::AUDIT_LOOKUP => {
            if body["address"] == "inget nummer" {
                let mut problem =
                    Problem::invalid("address", "ange ett telefonnummer eller en e-postadress");
                problem.status = 422;
                return refuse(problem);
            }
            ok(json!({ "recipient": "rcp:00ff", "address_kind": "phone", "outcomes": [] }))
        }
        _ => refuse(Problem::not_found("unexpected command")),
    }
}

#[tokio::test]
async fn csv_exports_every_page_with_a_header() {
    let app = App::spawn().await;
    let _audit = Responder::start(&app.client, audit_service).await;
    let response = app
        .get("/api/v1/audit?format=csv&limit=4", Some(AUDITOR))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("krisbud-audit.csv")
    );
    let text = response.text().await.unwrap();
    let rows: Vec<&str> = text.split("\r\n").filter(|r| !r.is_empty()).collect();
    assert_eq!(rows.len(), 5, "{text}");
    assert!(rows[0].starts_with("sequence,recorded_at,event_sequence,occurred_at,kind"));
    assert!(rows[1].starts_with("1,"), "{}", rows[1]);
    assert!(
        rows[1].contains(",ChannelConfirmed,c-1,ali,e-1,"),
        "{}",
        rows[1]
    );
    assert!(
        rows[1].contains(r#""{""note"":""klart, nr 1""}""#),
        "{}",
        rows[1]
    );
    assert!(rows[4].starts_with("4,"));
    app.stop().await;
}

#[tokio::test]
async fn the_bundle_holds_header_keys_checkpoints_and_records_up_to_one_end() {
    let app = App::spawn().await;
    let _audit = Responder::start(&app.client, audit_service).await;
    let response = app.get("/api/v1/audit/export", Some(AUDITOR)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: BundleLine = serde_json::from_str(lines[0]).unwrap();
    let BundleLine::Bundle(header) = header else {
        panic!("the first line is the header: {}", lines[0]);
    };
    assert_eq!(
        (header.format.as_str(), header.last_sequence),
        ("krisbud-audit-bundle", 5)
    );
    assert!(matches!(
        serde_json::from_str::<BundleLine>(lines[1]).unwrap(),
        BundleLine::PublicKey(_)
    ));
    // Checkpoints up to the chain's end when the export began: not the one at 6.
    let checkpoints: Vec<u64> = lines
        .iter()
        .filter_map(|l| match serde_json::from_str::<BundleLine>(l) {
            Ok(BundleLine::Checkpoint(c)) => Some(c.sequence),
            _ => None,
        })
        .collect();
    assert_eq!(checkpoints, [2, 4]);
    let records: Vec<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
        .map(|r| r.sequence)
        .collect();
    assert_eq!(records, [1, 2, 3, 4, 5]);

    problem(
        app.get("/api/v1/audit/export", Some(TIB)).await,
        403,
        "forbidden",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn checkpoints_keys_reports_and_lookups_pass_through() {
    let app = App::spawn().await;
    let audit = Responder::start(&app.client, audit_service).await;

    let page: Value = app
        .get("/api/v1/audit/checkpoints?from_sequence=3", Some(AUDITOR))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["checkpoints"][0]["sequence"], 4);
    let body = problem(
        app.get("/api/v1/audit/checkpoints?limit=0", Some(AUDITOR))
            .await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(body["field"], "limit");

    // Any signed-in user may read the public key.
    let keys: Value = app
        .get("/api/v1/audit/public-key", Some(TIB))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["current"]["algorithm"], "Ed25519");
    problem(
        app.get("/api/v1/audit/public-key", None).await,
        401,
        "unauthorized",
    )
    .await;

    let json = app
        .get("/api/v1/audit/crises/c-1/report", Some(AUDITOR))
        .await;
    assert_eq!(json.headers()["content-type"], "application/json");
    assert_eq!(json.json::<Value>().await.unwrap()["crisis_id"], "c-1");
    let markdown = app
        .get(
            "/api/v1/audit/crises/c-1/report?format=markdown",
            Some(AUDITOR),
        )
        .await;
    assert_eq!(
        markdown.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    assert_eq!(markdown.text().await.unwrap(), "# Krisrapport c-1\n");
    let html = app
        .get("/api/v1/audit/crises/c-1/report?format=html", Some(AUDITOR))
        .await;
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    let body = problem(
        app.get("/api/v1/audit/crises/c-1/report?format=pdf", Some(AUDITOR))
            .await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(body["field"], "format");

    let answer: Value = app
        .post_json(
            "/api/v1/audit/lookup",
            AUDITOR,
            r#"{"address": "070-123 45 67", "crisis": "c-1"}"#,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["recipient"], "rcp:00ff");
    let refused = app
        .post_json(
            "/api/v1/audit/lookup",
            AUDITOR,
            r#"{"address": "inget nummer"}"#,
        )
        .await;
    let body = problem(refused, 422, "invalid-field").await;
    assert_eq!(body["field"], "address");
    problem(
        app.post_json("/api/v1/audit/lookup", TIB, r#"{"address": "070"}"#)
            .await,
        403,
        "forbidden",
    )
    .await;

    let lookups: Vec<Value> = audit
        .seen()
        .into_iter()
        .filter(|s| s.subject == subject::cmd::AUDIT_LOOKUP)
        .map(|s| s.request)
        .collect();
    assert_eq!(
        lookups[0]["body"],
        json!({"address": "070-123 45 67", "crisis": "c-1"})
    );
    assert_eq!(lookups[0]["actor"]["user"], "anna");
    app.stop().await;
}
