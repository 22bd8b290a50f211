//! The HTTP API over real HTTP against a real nats-server: authentication, roles,
//! body errors, commands passed through, the audit export and the OpenAPI document.

mod common;

use std::collections::BTreeSet;

use chrono::Utc;
use common::{AUDITOR, App, BODY_LIMIT, NOBODY, OPERATOR, Responder, TIB, ok, problem, refuse};
use krisbud_proto::audit::{AuditPage, AuditRecord, GENESIS_HASH};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::{Problem, subject};
use serde_json::{Value, json};

const DECLARATION: &str =
    r#"{"template":"vattenlacka","variables":{"district":"Kista"},"audiences":["kista-boende"]}"#;

fn declared(_subject: &str, _request: &Value) -> krisbud_proto::CommandReply<Value> {
    ok(json!({ "crisis_id": "c-1", "revision": 1, "recipients": { "sms": 2 } }))
}

#[tokio::test]
async fn a_missing_or_unknown_token_gets_401_with_a_bearer_challenge() {
    let app = App::spawn().await;
    let _responder = Responder::start(&app.client, |_, _| ok(json!([]))).await;

    let response = app.get("/api/v1/templates", None).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body = problem(response, 401, "unauthorized").await;
    assert_eq!(body["instance"], "/api/v1/templates");

    let response = app.get("/api/v1/templates", Some("not-a-token")).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    problem(response, 401, "unauthorized").await;

    let response = app
        .http
        .get(format!("{}/api/v1/templates", app.base))
        .header("authorization", format!("Basic {TIB}"))
        .send()
        .await
        .unwrap();
    problem(response, 401, "unauthorized").await;

    let response = app.get("/api/v1/templates", Some(NOBODY)).await;
    assert_eq!(response.status(), 200, "any user may list templates");
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_role_gets_403_before_the_body_is_read() {
    let app = App::spawn().await;
    let responder = Responder::start(&app.client, declared).await;

    let body = problem(
        app.post_json("/api/v1/crises", OPERATOR, DECLARATION).await,
        403,
        "forbidden",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("duty_officer"),
        "{body}"
    );
    // A malformed body from someone who may not declare still gets 403, not 400.
    problem(
        app.post_json("/api/v1/crises", NOBODY, "{oops").await,
        403,
        "forbidden",
    )
    .await;
    problem(app.get("/api/v1/audit", Some(TIB)).await, 403, "forbidden").await;
    problem(
        app.get("/api/v1/crises", Some(NOBODY)).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        app.post_json("/api/v1/crises/c-1/channels/sms/confirm", TIB, "")
            .await,
        403,
        "forbidden",
    )
    .await;
    assert!(
        responder.seen().is_empty(),
        "no refused request reaches a service"
    );
    app.stop().await;
}

#[tokio::test]
async fn declare_answers_201_with_location_and_passes_actor_key_and_trace_on() {
    let app = App::spawn().await;
    let responder = Responder::start(&app.client, declared).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";

    let response = app
        .http
        .post(format!("{}/api/v1/crises", app.base))
        .bearer_auth(TIB)
        .header("content-type", "application/json")
        .header("idempotency-key", "tib-2026-11-26-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(DECLARATION)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/api/v1/crises/c-1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "crisis_id": "c-1", "revision": 1, "recipients": { "sms": 2 } })
    );

    let seen = responder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].subject, subject::cmd::DECLARE);
    let request = &seen[0].request;
    assert_eq!(
        request["actor"],
        json!({ "user": "tib", "roles": ["duty_officer"] })
    );
    assert_eq!(request["idempotency_key"], "tib-2026-11-26-1");
    assert_eq!(request["body"]["template"], "vattenlacka");
    assert_eq!(request["body"]["variables"], json!({ "district": "Kista" }));
    let traceparent = seen[0]
        .traceparent
        .clone()
        .expect("the command carries traceparent");
    assert!(
        traceparent.contains(trace_id),
        "the command continues the caller's trace: {traceparent}"
    );

    // Without the header no key is passed on.
    let response = app.post_json("/api/v1/crises", TIB, DECLARATION).await;
    assert_eq!(response.status(), 201);
    assert!(responder.seen()[1].request.get("idempotency_key").is_none());
    app.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_400_413_415_and_422_naming_what_is_wrong() {
    let app = App::spawn().await;
    let responder = Responder::start(&app.client, declared).await;

    let body = problem(
        app.post_json("/api/v1/crises", TIB, "{\"template\": vattenlacka}")
            .await,
        400,
        "malformed-json",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("line 1 column 14"),
        "{body}"
    );

    let body = problem(
        app.post_json(
            "/api/v1/crises",
            TIB,
            r#"{"template":"vattenlacka","variables":{"district":5}}"#,
        )
        .await,
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(body["field"], "variables.district");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("variables.district: invalid type: integer"),
        "{body}"
    );

    let body = problem(
        app.post_json(
            "/api/v1/crises",
            TIB,
            r#"{"template":"vattenlacka","sender":"x"}"#,
        )
        .await,
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(body["field"], "sender");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `sender`"),
        "{body}"
    );

    let response = app
        .http
        .post(format!("{}/api/v1/crises", app.base))
        .bearer_auth(TIB)
        .header("content-type", "text/plain")
        .body(DECLARATION)
        .send()
        .await
        .unwrap();
    problem(response, 415, "unsupported-media-type").await;

    let padding = "x".repeat(BODY_LIMIT);
    let large = format!(r#"{{"template":"vattenlacka","variables":{{"note":"{padding}"}}}}"#);
    problem(
        app.post_json("/api/v1/crises", TIB, &large).await,
        413,
        "payload-too-large",
    )
    .await;

    assert!(responder.seen().is_empty(), "no bad body reaches a service");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_service_gets_503_and_service_problems_pass_through() {
    let app = App::spawn().await;

    let body = problem(
        app.get("/api/v1/templates", Some(TIB)).await,
        503,
        "service-unavailable",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(subject::cmd::LIST_TEMPLATES),
        "{body}"
    );
    problem(
        app.post_json("/api/v1/crises", TIB, DECLARATION).await,
        503,
        "service-unavailable",
    )
    .await;

    let _responder = Responder::start(&app.client, |subject, _| match subject {
        subject::cmd::DECLARE => refuse(Problem::invalid(
            "variables.district",
            "the template needs a district",
        )),
        _ => refuse(Problem::new(
            500,
            "internal error",
            "redis at 10.0.0.7 refused",
        )),
    })
    .await;
    let body = problem(
        app.post_json("/api/v1/crises", TIB, DECLARATION).await,
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(body["field"], "variables.district");
    assert_eq!(body["detail"], "the template needs a district");
    let body = problem(
        app.get("/api/v1/crises", Some(TIB)).await,
        500,
        "internal-error",
    )
    .await;
    assert!(
        !body.to_string().contains("10.0.0.7"),
        "internals stay in the log: {body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn crises_are_read_and_confirmed_with_404_for_an_unknown_channel() {
    let app = App::spawn().await;
    let status = serde_json::to_value(CrisisStatus {
        crisis_id: "c-1".into(),
        revision: 1,
        headline: "Vattenläcka i Kista".into(),
        ..CrisisStatus::default()
    })
    .unwrap();
    let reply = status.clone();
    let responder = Responder::start(&app.client, move |subject, request| match subject {
        subject::cmd::LIST_CRISES => ok(json!([reply.clone()])),
        subject::cmd::GET_CRISIS if request["body"]["crisis_id"] == "c-1" => ok(reply.clone()),
        subject::cmd::GET_CRISIS => refuse(Problem::not_found("there is no such crisis")),
        _ => ok(reply.clone()),
    })
    .await;

    let response = app.get("/api/v1/crises", Some(AUDITOR)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()[0]["crisis_id"],
        "c-1"
    );
    let response = app.get("/api/v1/crises/c-1", Some(OPERATOR)).await;
    assert_eq!(response.status(), 200);
    problem(
        app.get("/api/v1/crises/c-2", Some(TIB)).await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get("/api/v1/crises/c.1", Some(TIB)).await,
        404,
        "not-found",
    )
    .await;

    let body = problem(
        app.post_json("/api/v1/crises/c-1/channels/fax/confirm", OPERATOR, "")
            .await,
        404,
        "not-found",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("`fax`"), "{body}");

    // An empty body is a confirmation without a note.
    let response = app
        .http
        .post(format!(
            "{}/api/v1/crises/c-1/channels/banner/confirm",
            app.base
        ))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .post_json(
            "/api/v1/crises/c-1/channels/intranet/confirm",
            OPERATOR,
            r#"{"note":"syns på intranätets startsida"}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), status);
    let body = problem(
        app.post_json(
            "/api/v1/crises/c-1/channels/sms/confirm",
            OPERATOR,
            r#"{"notes":"x"}"#,
        )
        .await,
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(body["field"], "notes");

    let confirms: Vec<Value> = responder
        .seen()
        .into_iter()
        .filter(|s| s.subject == subject::cmd::CONFIRM)
        .map(|s| s.request)
        .collect();
    assert_eq!(confirms.len(), 2);
    assert_eq!(
        confirms[0]["body"],
        json!({ "crisis_id": "c-1", "channel": "banner" })
    );
    assert_eq!(confirms[0]["actor"]["user"], "olle");
    assert_eq!(
        confirms[1]["body"],
        json!({ "crisis_id": "c-1", "channel": "intranet", "note": "syns på intranätets startsida" })
    );
    app.stop().await;
}

fn record(sequence: u64) -> AuditRecord {
    AuditRecord {
        sequence,
        recorded_at: Utc::now(),
        event_sequence: sequence + 100,
        event: json!({ "id": format!("e-{sequence}"), "kind": "CrisisDeclared" }),
        prev_hash: if sequence == 1 {
            GENESIS_HASH.to_owned()
        } else {
            format!("{:064x}", sequence - 1)
        },
        chain_id: None,
        hash: format!("{sequence:064x}"),
    }
}

/// Five records served two at a time, like an audit service with a small page.
fn audit_pages(subject: &str, request: &Value) -> krisbud_proto::CommandReply<Value> {
    match subject {
        subject::cmd::AUDIT_QUERY => {
            let from = request["body"]["from_sequence"].as_u64().unwrap_or(1);
            let limit = request["body"]["limit"].as_u64().unwrap_or(2).min(2);
            let last = (from + limit - 1).min(5);
            let page = AuditPage {
                records: (from..=last).map(record).collect(),
                next_sequence: (last < 5).then_some(last + 1),
                last_sequence: Some(5),
            };
            ok(serde_json::to_value(page).unwrap())
        }
        _ => ok(json!({ "checked": 5, "ok": false, "first_bad": {
            "sequence": 3, "problem": "hash mismatch", "detail": "record 3 was changed" } })),
    }
}

#[tokio::test]
async fn the_jsonl_export_follows_every_page() {
    let app = App::spawn().await;
    let responder = Responder::start(&app.client, audit_pages).await;

    let response = app
        .get("/api/v1/audit?format=jsonl&crisis=c-1", Some(AUDITOR))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let records: Vec<AuditRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one record"))
        .collect();
    assert_eq!(
        records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let mut fifth = record(5);
    fifth.recorded_at = records[4].recorded_at;
    assert_eq!(records[4], fifth, "records pass through unchanged");

    let queries: Vec<Value> = responder.seen().into_iter().map(|s| s.request).collect();
    assert_eq!(queries.len(), 3);
    assert_eq!(queries[0]["body"], json!({ "crisis": "c-1" }));
    assert_eq!(
        queries[1]["body"],
        json!({ "crisis": "c-1", "from_sequence": 3 })
    );
    assert_eq!(
        queries[2]["body"],
        json!({ "crisis": "c-1", "from_sequence": 5 })
    );
    assert_eq!(queries[2]["actor"]["user"], "anna");

    // `limit` caps the whole export.
    let text = app
        .get("/api/v1/audit?format=jsonl&limit=3", Some(AUDITOR))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count(), 3);

    // JSON answers one page, saying where the next starts.
    let page: Value = app
        .get("/api/v1/audit?from_sequence=2", Some(AUDITOR))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_sequence"], 4);

    let body = problem(
        app.get("/api/v1/audit?from=2026-01-01", Some(AUDITOR))
            .await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(body["field"], "from");

    let report: Value = app
        .get("/api/v1/audit/verify", Some(AUDITOR))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad"]["sequence"], 3);
    app.stop().await;
}

#[tokio::test]
async fn an_export_cut_short_is_a_broken_transfer_not_a_short_file() {
    let app = App::spawn().await;
    let _responder = Responder::start(&app.client, |subject, request| {
        if request["body"]["from_sequence"] == 3 {
            refuse(Problem::unavailable("the audit store is gone"))
        } else {
            audit_pages(subject, request)
        }
    })
    .await;
    let response = app.get("/api/v1/audit?format=jsonl", Some(AUDITOR)).await;
    assert_eq!(response.status(), 200, "the first page is there");
    assert!(
        response.text().await.is_err(),
        "the client must see that the export is incomplete"
    );
    app.stop().await;
}

/// Every route of the API: method and path as in the OpenAPI document, and a
/// concrete path to call.
const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/api/v1/templates", "/api/v1/templates"),
    ("post", "/api/v1/templates", "/api/v1/templates"),
    (
        "get",
        "/api/v1/templates/{id}",
        "/api/v1/templates/vattenlacka",
    ),
    (
        "post",
        "/api/v1/templates/{id}/versions",
        "/api/v1/templates/vattenlacka/versions",
    ),
    (
        "get",
        "/api/v1/templates/{id}/versions/{version}",
        "/api/v1/templates/vattenlacka/versions/1",
    ),
    (
        "post",
        "/api/v1/templates/{id}/versions/{version}/submit",
        "/api/v1/templates/vattenlacka/versions/1/submit",
    ),
    (
        "post",
        "/api/v1/templates/{id}/versions/{version}/approve",
        "/api/v1/templates/vattenlacka/versions/1/approve",
    ),
    (
        "post",
        "/api/v1/templates/{id}/versions/{version}/reject",
        "/api/v1/templates/vattenlacka/versions/1/reject",
    ),
    (
        "post",
        "/api/v1/templates/{id}/versions/{version}/retire",
        "/api/v1/templates/vattenlacka/versions/1/retire",
    ),
    (
        "post",
        "/api/v1/templates/{id}/versions/{version}/preview",
        "/api/v1/templates/vattenlacka/versions/1/preview",
    ),
    (
        "get",
        "/api/v1/templates/{id}/versions/{version}/diff",
        "/api/v1/templates/vattenlacka/versions/1/diff",
    ),
    ("get", "/api/v1/crises", "/api/v1/crises"),
    ("post", "/api/v1/crises", "/api/v1/crises"),
    ("get", "/api/v1/crises/{id}", "/api/v1/crises/c-1"),
    (
        "get",
        "/api/v1/crises/{id}/events",
        "/api/v1/crises/c-1/events",
    ),
    ("get", "/api/v1/audiences", "/api/v1/audiences"),
    ("post", "/api/v1/audiences", "/api/v1/audiences"),
    ("get", "/api/v1/audiences/{id}", "/api/v1/audiences/kista"),
    (
        "delete",
        "/api/v1/audiences/{id}",
        "/api/v1/audiences/kista",
    ),
    (
        "put",
        "/api/v1/audiences/{id}/members",
        "/api/v1/audiences/kista/members",
    ),
    (
        "post",
        "/api/v1/crises/{id}/channels/{channel}/confirm",
        "/api/v1/crises/c-1/channels/sms/confirm",
    ),
    (
        "post",
        "/api/v1/crises/{id}/update",
        "/api/v1/crises/c-1/update",
    ),
    (
        "post",
        "/api/v1/crises/{id}/all-clear",
        "/api/v1/crises/c-1/all-clear",
    ),
    (
        "post",
        "/api/v1/crises/{id}/cancel",
        "/api/v1/crises/c-1/cancel",
    ),
    (
        "post",
        "/api/v1/crises/{id}/close",
        "/api/v1/crises/c-1/close",
    ),
    ("get", "/api/v1/audit", "/api/v1/audit"),
    ("get", "/api/v1/audit/verify", "/api/v1/audit/verify"),
    (
        "get",
        "/api/v1/audit/checkpoints",
        "/api/v1/audit/checkpoints",
    ),
    (
        "get",
        "/api/v1/audit/public-key",
        "/api/v1/audit/public-key",
    ),
    ("get", "/api/v1/audit/export", "/api/v1/audit/export"),
    (
        "get",
        "/api/v1/audit/crises/{id}/report",
        "/api/v1/audit/crises/c-1/report",
    ),
    ("post", "/api/v1/audit/lookup", "/api/v1/audit/lookup"),
    ("get", "/api/v1/openapi.json", "/api/v1/openapi.json"),
    ("get", "/healthz", "/healthz"),
    ("get", "/readyz", "/readyz"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = App::spawn().await;
    let response = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let listed: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(listed, routes);

    // Every route exists: without a token it is refused or answered, never 404.
    for (method, _, path) in ROUTES {
        let url = format!("{}{path}", app.base);
        let request = match *method {
            "get" => app.http.get(url),
            "put" => app.http.put(url),
            "delete" => app.http.delete(url),
            _ => app.http.post(url),
        };
        let status = request.send().await.unwrap().status();
        assert!(
            status == 401 || status == 200,
            "{method} {path} answered {status}"
        );
    }

    // Every reference resolves inside the document.
    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    assert!(refs.len() > 10, "the document references its schemas");
    for reference in refs {
        let pointer = reference.strip_prefix('#').expect("local references only");
        assert!(
            document.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
    app.stop().await;
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problems_and_health_answers() {
    let app = App::spawn().await;
    let body = problem(app.get("/api/v1/nope", Some(TIB)).await, 404, "not-found").await;
    assert_eq!(body["instance"], "/api/v1/nope");
    problem(app.get("/nope", None).await, 404, "not-found").await;
    // `/` leads to the console, which asks whoever is not signed in to sign in.
    let console = app.get("/", None).await;
    assert_eq!(console.status(), 200);
    assert_eq!(console.url().path(), "/konsol/logga-in");
    assert!(console.text().await.unwrap().contains("<h1>Logga in</h1>"));
    let response = app
        .http
        .delete(format!("{}/api/v1/crises", app.base))
        .bearer_auth(TIB)
        .send()
        .await
        .unwrap();
    problem(response, 405, "method-not-allowed").await;

    assert_eq!(app.get("/healthz", None).await.status(), 200);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["gateway"], true);
    app.stop().await;
}

/// The router and the document come from one route table; this checks the
/// outcome over HTTP: every documented operation is served (an unauthenticated
/// call gets 401 or, for the public ones, an answer, never 404 or 405), and no
/// documented path answers a method the document does not give it.
#[tokio::test]
async fn every_documented_operation_is_served_and_no_other_method_is() {
    let app = App::spawn().await;
    let document: Value = app
        .get("/api/v1/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() > 30, "{}", paths.len());
    let mut served = 0;
    for (path, item) in paths {
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{id}", "x")
                .replace("{version}", "1")
                .replace("{channel}", "sms")
        );
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let status = app
                .http
                .request(method.parse().unwrap(), &url)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if documented.contains(method) {
                let public = item[method.to_lowercase()]["security"] == json!([]);
                assert!(
                    if public {
                        matches!(status, 200 | 503)
                    } else {
                        status == 401
                    },
                    "{method} {path} is documented but answered {status}"
                );
                served += 1;
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented");
            }
        }
    }
    assert!(served > 30, "{served}");
    // A path the document does not have is not served.
    let status = app.get("/api/v1/crises/x/undo", None).await.status();
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = App::spawn().await;
    let _responder = Responder::start(&app.client, |_, _| ok(json!([]))).await;
    for (path, token) in [
        ("/api/v1/templates", Some(TIB)),
        ("/api/v1/templates", None),
        ("/api/v1/openapi.json", None),
        ("/nope", None),
    ] {
        let response = app.get(path, token).await;
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            headers.get("strict-transport-security").is_none(),
            "no HSTS over plain HTTP"
        );
    }
    // The console's pages keep their own policy.
    let console = app.get("/konsol/logga-in", None).await;
    let csp = console.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    // Behind a TLS proxy, browsers are told to stay on HTTPS.
    let behind_tls = app
        .http
        .get(format!("{}/api/v1/templates", app.base))
        .bearer_auth(TIB)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        behind_tls.headers()["strict-transport-security"],
        "max-age=31536000"
    );
}

/// What schemathesis (`--checks all`) found the document and the server
/// disagreeing on, each kept as a case: empty query values, an Idempotency-Key
/// outside its documented pattern, and a 415 every JSON operation documents.
#[tokio::test]
async fn the_server_does_what_the_document_says() {
    let app = App::spawn().await;
    let _responder = Responder::start(&app.client, declared).await;

    // `?all=` and `?against=` with no value are not a boolean or a version.
    let body = problem(
        app.get("/api/v1/templates?all=", Some(TIB)).await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(body["field"], "all", "{body}");
    let body = problem(
        app.get(
            "/api/v1/templates/vattenlacka/versions/2/diff?against=",
            Some(common::APPROVER),
        )
        .await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(body["field"], "against", "{body}");

    // The key's pattern is what the server checks: visible ASCII only.
    let document = krisbud_gateway::openapi::document();
    let key = document["paths"]["/api/v1/crises"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key["schema"]["pattern"], "^[!-~]{1,255}$");
    for bad in ["two words", "å", &"k".repeat(256)] {
        let response = app
            .http
            .post(format!("{}/api/v1/crises", app.base))
            .bearer_auth(TIB)
            .header("content-type", "application/json")
            .header("idempotency-key", bad)
            .body(DECLARATION)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    // Every operation that reads JSON documents 413 and 415.
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            if operation
                .pointer("/requestBody/content/application~1json")
                .is_some()
            {
                for status in ["413", "415"] {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
    let response = app
        .http
        .post(format!("{}/api/v1/audiences", app.base))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    app.stop().await;
}
