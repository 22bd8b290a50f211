//! Who may read the audit, and how often "was this person notified?" may be
//! asked. Kept apart from `audit.rs`, whose log capture must see no refused
//! command.

mod common;

use std::time::Duration;

use common::TestApp;
use krisbud_proto::Role;
use krisbud_tests::wait_until_async;
use serde_json::{Value, json};

/// Only auditors read the audit (an admin manages users and audiences, not the
/// record), and "was this person notified?" is limited per user, so it cannot be
/// run down a list of numbers to learn who lives where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_read_the_audit_and_lookups_are_limited_per_user() {
    let app = TestApp::spawn().await;
    let lookup = |role: Role, number: usize| {
        let request = app
            .http
            .post(format!("{}/api/v1/audit/lookup", app.api))
            .bearer_auth(app.token(role))
            .json(&json!({ "address": format!("070-174 07 {number:02}") }));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let admin = app
        .http
        .get(format!("{}/api/v1/audit", app.api))
        .bearer_auth(app.token(Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403);
    assert_eq!(lookup(Role::Admin, 0).await.0, 403);
    let limit = krisbud_audit::LOOKUPS_PER_MINUTE as usize;
    for n in 0..limit {
        let (status, body) = lookup(Role::Auditor, n).await;
        assert_eq!(status, 200, "lookup {n}: {body}");
    }
    let (status, body) = lookup(Role::Auditor, limit).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("sökningar"), "{body}");
    // Refused lookups are not records of a lookup made.
    let recorded = wait_until_async("the lookups on record", Duration::from_secs(20), || async {
        let page: Value = app
            .http
            .get(format!("{}/api/v1/audit?kind=RecipientLookedUp", app.api))
            .bearer_auth(app.token(Role::Auditor))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let n = page["records"].as_array()?.len();
        (n >= limit).then_some(n)
    })
    .await;
    assert_eq!(recorded, limit);
}
