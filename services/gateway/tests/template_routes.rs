//! The template routes over real HTTP, with a stand-in coordinator: roles are
//! checked before the body is read, path and body reach the coordinator as the
//! right command, and bad paths and bodies get problems naming what is wrong.

mod common;

use common::{
    ADMIN, APPROVER, AUDITOR, App, EDITOR, NOBODY, OPERATOR, Responder, TIB, ok, problem,
};
use krisbud_proto::subject;
use serde_json::{Value, json};

fn draft_body(id: Option<&str>) -> String {
    let mut body = json!({
        "name": "Provlarm",
        "cap": {
            "category": "Other", "event": "Provlarm", "urgency": "Future",
            "severity": "Minor", "certainty": "Likely", "response_type": "None"
        },
        "languages": {}
    });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    body.to_string()
}

fn version(id: &Value) -> Value {
    json!({
        "id": id, "version": 1, "name": "Provlarm", "state": "draft",
        "author": "redaktor",
        "cap": {
            "category": "Other", "event": "Provlarm", "urgency": "Future",
            "severity": "Minor", "certainty": "Likely", "response_type": "None"
        },
        "variables": [], "languages": {}
    })
}

/// The stand-in coordinator: a well-formed answer for each template command.
fn answer(subject: &str, request: &Value) -> krisbud_proto::CommandReply<Value> {
    let info = json!({ "version": 1, "state": "submitted", "author": "redaktor", "history": [] });
    ok(match subject {
        subject::cmd::LIST_TEMPLATES => json!([]),
        subject::cmd::GET_TEMPLATE => {
            json!({ "id": "provlarm", "name": "Provlarm", "last_sequence": 3, "versions": [info] })
        }
        subject::cmd::GET_TEMPLATE_VERSION => version(&json!("provlarm")),
        subject::cmd::DIFF_TEMPLATE => {
            json!({ "template": "provlarm", "version": 1, "changes": [] })
        }
        subject::cmd::PREVIEW_TEMPLATE => json!({
            "template": "provlarm", "version": 1, "state": "draft", "status": "Actual",
            "languages": [], "worst_case_sms": [], "approval_problems": []
        }),
        subject::cmd::DRAFT_TEMPLATE => json!({
            "created": request["body"]["new_template"] == true,
            "template": version(&request["body"]["draft"]["id"])
        }),
        _ => info,
    })
}

#[tokio::test]
async fn each_step_needs_its_role_before_the_body_is_read() {
    let app = App::spawn().await;
    let responder = Responder::start(&app.client, answer).await;
    let base = "/api/v1/templates/provlarm/versions/1";
    let routes = [
        ("/api/v1/templates".to_owned(), EDITOR, APPROVER),
        (
            "/api/v1/templates/provlarm/versions".to_owned(),
            EDITOR,
            TIB,
        ),
        (format!("{base}/submit"), EDITOR, APPROVER),
        (format!("{base}/approve"), APPROVER, EDITOR),
        (format!("{base}/reject"), APPROVER, EDITOR),
        (format!("{base}/retire"), APPROVER, OPERATOR),
        (format!("{base}/retire"), ADMIN, EDITOR),
    ];
    for (path, _, refused) in &routes {
        let body = problem(
            app.post_json(path, refused, "{not json").await,
            403,
            "forbidden",
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("template_"),
            "{body}"
        );
    }
    assert!(
        responder.seen().is_empty(),
        "nothing refused reaches the coordinator"
    );
    // The right role gets past the check (to the body's problem, or an answer).
    for (path, allowed, _) in &routes {
        let status = app.post_json(path, allowed, "{not json").await.status();
        assert!(status == 400 || status == 200, "{path}: {status}");
    }

    // Anyone signed in may read, preview and diff.
    for path in [
        "/api/v1/templates",
        "/api/v1/templates/provlarm",
        "/api/v1/templates/provlarm/versions/1",
        "/api/v1/templates/provlarm/versions/1/diff",
    ] {
        assert_eq!(app.get(path, Some(NOBODY)).await.status(), 200, "{path}");
    }
    let response = app
        .post_json(
            &format!("{base}/preview"),
            AUDITOR,
            r#"{"variables":{"a":"b"}}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn paths_and_bodies_become_the_coordinators_commands() {
    let app = App::spawn().await;
    let responder = Responder::start(&app.client, answer).await;

    // A new template: 201 with Location; the id comes from the body.
    let response = app
        .post_json("/api/v1/templates", EDITOR, &draft_body(Some("provlarm")))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        "/api/v1/templates/provlarm/versions/1"
    );
    // A new version: the id comes from the path; an answer that created nothing is 200.
    let response = app
        .post_json(
            "/api/v1/templates/provlarm/versions",
            EDITOR,
            &draft_body(None),
        )
        .await;
    assert_eq!(response.status(), 200);
    let seen = responder.seen();
    assert_eq!(seen[0].request["body"]["new_template"], true);
    assert_eq!(seen[1].request["body"]["new_template"], false);
    assert_eq!(seen[1].request["body"]["draft"]["id"], "provlarm");
    assert_eq!(seen[1].request["actor"]["user"], "redaktor");

    let body = problem(
        app.post_json(
            "/api/v1/templates/provlarm/versions",
            EDITOR,
            &draft_body(Some("annan")),
        )
        .await,
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(body["field"], "id");
    let body = problem(
        app.post_json("/api/v1/templates", EDITOR, &draft_body(None))
            .await,
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(body["field"], "id");
    let body = problem(
        app.post_json("/api/v1/templates", EDITOR, r#"{"name":"x"}"#)
            .await,
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(body["field"], "cap");

    // Lifecycle steps carry the action and the reason.
    let response = app
        .post_json(
            "/api/v1/templates/provlarm/versions/1/reject",
            APPROVER,
            r#"{"reason":"Ange ett telefonnummer"}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    let step = responder.seen().last().unwrap().clone();
    assert_eq!(step.subject, subject::cmd::CHANGE_TEMPLATE_STATE);
    assert_eq!(
        step.request["body"],
        json!({"template": "provlarm", "version": 1, "action": "reject", "reason": "Ange ett telefonnummer"})
    );
    let response = app
        .http
        .post(format!(
            "{}/api/v1/templates/provlarm/versions/1/approve",
            app.base
        ))
        .bearer_auth(APPROVER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "approve needs no body");
    assert_eq!(
        responder.seen().last().unwrap().request["body"]["action"],
        "approve"
    );

    // A version that is not a number, or an id that cannot be one, is 404.
    for path in [
        "/api/v1/templates/provlarm/versions/tre/submit",
        "/api/v1/templates/provlarm/versions/0/submit",
        "/api/v1/templates/prov%20larm/versions/1/submit",
    ] {
        problem(app.post_json(path, EDITOR, "").await, 404, "not-found").await;
    }
    let body = problem(
        app.get(
            "/api/v1/templates/provlarm/versions/1/diff?against=x",
            Some(TIB),
        )
        .await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(body["field"], "against");
    let body = problem(
        app.get("/api/v1/templates?all=maybe", Some(TIB)).await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(body["field"], "all");
    app.stop().await;
}
