//! Every endpoint × every role, from one table: each documented operation with
//! the roles that may call it. The test reads the OpenAPI document, so a route
//! without a row here fails; then it calls every operation with no token, a
//! malformed one, an unknown one (401, problem+json) and each role's token:
//! a role outside the row gets 403 with problem+json before anything is read,
//! a role in it gets past the door (the fake services behind may refuse what
//! they are sent, but never with 401 or 403).

mod common;

use std::collections::BTreeSet;

use common::{ADMIN, APPROVER, AUDITOR, App, EDITOR, NOBODY, OPERATOR, Responder, TIB, ok};
use serde_json::{Value, json};

/// A role's test user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum R {
    Duty,
    Operator,
    Editor,
    Approver,
    Auditor,
    Admin,
}

const ALL: [R; 6] = [
    R::Duty,
    R::Operator,
    R::Editor,
    R::Approver,
    R::Auditor,
    R::Admin,
];
const READERS: &[R] = &[R::Duty, R::Operator, R::Auditor, R::Admin];

/// Who may call what: `None` is public, `Some(&[])` any signed-in user.
const MATRIX: &[(&str, &str, Option<&[R]>)] = &[
    ("GET", "/api/v1/audiences", Some(&[R::Duty, R::Admin])),
    ("POST", "/api/v1/audiences", Some(&[R::Admin])),
    ("DELETE", "/api/v1/audiences/{id}", Some(&[R::Admin])),
    ("GET", "/api/v1/audiences/{id}", Some(&[R::Duty, R::Admin])),
    ("PUT", "/api/v1/audiences/{id}/members", Some(&[R::Admin])),
    ("GET", "/api/v1/audit", Some(&[R::Auditor])),
    ("GET", "/api/v1/audit/checkpoints", Some(&[R::Auditor])),
    (
        "GET",
        "/api/v1/audit/crises/{id}/report",
        Some(&[R::Auditor]),
    ),
    ("GET", "/api/v1/audit/export", Some(&[R::Auditor])),
    ("POST", "/api/v1/audit/lookup", Some(&[R::Auditor])),
    ("GET", "/api/v1/audit/public-key", Some(&[])),
    ("GET", "/api/v1/audit/verify", Some(&[R::Auditor])),
    ("GET", "/api/v1/crises", Some(READERS)),
    ("POST", "/api/v1/crises", Some(&[R::Duty])),
    ("GET", "/api/v1/crises/{id}", Some(READERS)),
    ("POST", "/api/v1/crises/{id}/all-clear", Some(&[R::Duty])),
    ("POST", "/api/v1/crises/{id}/cancel", Some(&[R::Duty])),
    (
        "POST",
        "/api/v1/crises/{id}/channels/{channel}/confirm",
        Some(&[R::Operator]),
    ),
    ("POST", "/api/v1/crises/{id}/close", Some(&[R::Duty])),
    ("GET", "/api/v1/crises/{id}/events", Some(READERS)),
    ("POST", "/api/v1/crises/{id}/update", Some(&[R::Duty])),
    ("GET", "/api/v1/openapi.json", None),
    ("GET", "/api/v1/templates", Some(&[])),
    ("POST", "/api/v1/templates", Some(&[R::Editor])),
    ("GET", "/api/v1/templates/{id}", Some(&[])),
    (
        "POST",
        "/api/v1/templates/{id}/versions",
        Some(&[R::Editor]),
    ),
    (
        "GET",
        "/api/v1/templates/{id}/versions/{version}",
        Some(&[]),
    ),
    (
        "POST",
        "/api/v1/templates/{id}/versions/{version}/approve",
        Some(&[R::Approver]),
    ),
    (
        "GET",
        "/api/v1/templates/{id}/versions/{version}/diff",
        Some(&[]),
    ),
    (
        "POST",
        "/api/v1/templates/{id}/versions/{version}/preview",
        Some(&[]),
    ),
    (
        "POST",
        "/api/v1/templates/{id}/versions/{version}/reject",
        Some(&[R::Approver]),
    ),
    (
        "POST",
        "/api/v1/templates/{id}/versions/{version}/retire",
        Some(&[R::Approver, R::Admin]),
    ),
    (
        "POST",
        "/api/v1/templates/{id}/versions/{version}/submit",
        Some(&[R::Editor]),
    ),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
];

fn token(role: R) -> &'static str {
    match role {
        R::Duty => TIB,
        R::Operator => OPERATOR,
        R::Editor => EDITOR,
        R::Approver => APPROVER,
        R::Auditor => AUDITOR,
        R::Admin => ADMIN,
    }
}

/// Asserts a 401 or 403 with a problem+json body.
async fn refused(response: reqwest::Response, status: u16, what: &str) {
    assert_eq!(response.status().as_u16(), status, "{what}");
    let media = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(media, "application/problem+json", "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{what}: {body}");
}

#[tokio::test]
async fn every_endpoint_answers_every_role_as_the_table_says() {
    let app = App::spawn().await;
    // Whatever the gateway sends, the fake services answer with an empty list.
    let _responder = Responder::start(&app.client, |_, _| ok(json!([]))).await;
    let document: Value = app
        .get("/api/v1/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let table: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let unlisted: Vec<_> = documented.difference(&table).collect();
    assert!(
        unlisted.is_empty(),
        "routes without a row in MATRIX: {unlisted:?}"
    );
    let stale: Vec<_> = table.difference(&documented).collect();
    assert!(stale.is_empty(), "rows for routes that are gone: {stale:?}");

    let mut calls = 0;
    for (method, path, allowed) in MATRIX {
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{id}", "x")
                .replace("{version}", "1")
                .replace("{channel}", "sms")
        );
        let call = |authorization: Option<&str>| {
            let mut request = app.http.request(method.parse().unwrap(), &url);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            request.send()
        };
        let what = |who: &str| format!("{method} {path} as {who}");
        let Some(allowed) = allowed else {
            let status = call(None).await.unwrap().status().as_u16();
            assert!(matches!(status, 200 | 503), "{}: {status}", what("nobody"));
            continue;
        };
        refused(call(None).await.unwrap(), 401, &what("nobody")).await;
        refused(
            call(Some("Bearer")).await.unwrap(),
            401,
            &what("a malformed token"),
        )
        .await;
        refused(
            call(Some("Basic dGliOnRpYg==")).await.unwrap(),
            401,
            &what("basic auth"),
        )
        .await;
        refused(
            call(Some("Bearer not-a-token")).await.unwrap(),
            401,
            &what("an unknown token"),
        )
        .await;
        for role in ALL {
            let response = call(Some(&format!("Bearer {}", token(role))))
                .await
                .unwrap();
            let may = allowed.is_empty() || allowed.contains(&role);
            if may {
                let status = response.status().as_u16();
                assert!(
                    !matches!(status, 401 | 403),
                    "{}: {status} though the table allows it",
                    what(&format!("{role:?}"))
                );
            } else {
                refused(response, 403, &what(&format!("{role:?}"))).await;
            }
            calls += 1;
        }
        // A user with no role at all gets in only where any user may.
        let response = call(Some(&format!("Bearer {NOBODY}"))).await.unwrap();
        if allowed.is_empty() {
            assert!(
                !matches!(response.status().as_u16(), 401 | 403),
                "{}",
                what("no role")
            );
        } else {
            refused(response, 403, &what("no role")).await;
        }
    }
    assert!(calls > 150, "{calls} role calls");
    app.stop().await;
}
