//! Exercise mode: an exercise reaches only audiences marked for exercises and
//! shows its banner only on the exercise site; an attempt to reach the public is
//! refused and recorded.

mod common;

use std::time::Duration;

use common::{TestApp, water_variables};
use krisbud_proto::Role;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_reaches_only_exercise_audiences_and_the_exercise_site() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin);
    // A public audience (not marked for exercises).
    let created = app
        .http
        .post(format!("{}/api/v1/audiences", app.api))
        .bearer_auth(&admin)
        .json(&json!({ "id": "alla-i-farsta", "name": "Alla i Farsta" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let imported = app
        .http
        .put(format!(
            "{}/api/v1/audiences/alla-i-farsta/members",
            app.api
        ))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body("phone\n0701740650\n")
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);

    // An exercise naming the public audience is refused, naming it, and on record.
    let response = app
        .declare(&json!({
            "template": "vattenlacka",
            "variables": water_variables(),
            "audiences": ["farsta-boende", "alla-i-farsta"],
            "status": "Exercise"
        }))
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "audiences[1]", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("alla-i-farsta")
    );
    let page: Value = app
        .http
        .get(format!("{}/api/v1/audit", app.api))
        .query(&[("kind", "ExerciseRefused")])
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{page}");
    assert_eq!(records[0]["event"]["actor"]["user"], "tib.maria");
    assert_eq!(
        records[0]["event"]["payload"]["audiences"],
        json!(["alla-i-farsta"])
    );
    let crises: Vec<Value> = app
        .http
        .get(format!("{}/api/v1/crises", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(crises.is_empty(), "nothing was declared: {crises:?}");

    // The same exercise to the exercise audiences goes out, marked ÖVNING, and its
    // banner is on the exercise site only.
    let id = app
        .declare_ok(&json!({
            "template": "vattenlacka",
            "variables": water_variables(),
            "audiences": ["farsta-boende"],
            "status": "Exercise"
        }))
        .await;
    app.wait_delivered(&id, Duration::from_secs(30)).await;
    let sms = app.sms_outbox();
    assert_eq!(sms.len(), 3);
    assert!(sms.iter().all(|l| l["to"] != "+46701740650"));
    for line in &sms {
        let text = line["message"].as_str().unwrap();
        assert!(
            text.starts_with("ÖVNING") || text.starts_with("EXERCISE"),
            "{text}"
        );
    }
    // Every channel's message carries the marker: email subjects, intranet
    // titles and, below, the exercise site's banner headlines.
    let marked = |text: &str| text.contains("ÖVNING") || text.contains("EXERCISE");
    let emails = app.email_outbox();
    assert_eq!(emails.len(), 3);
    for email in &emails {
        let subject = email
            .lines()
            .find(|l| l.starts_with("Subject:"))
            .expect("a subject");
        let decoded = mail_subject(email);
        assert!(marked(&decoded), "{subject} / {decoded}");
    }
    let articles = app.intranet_outbox();
    assert!(!articles.is_empty());
    for article in &articles {
        assert!(marked(article["title"].as_str().unwrap()), "{article}");
    }
    let site = |query: &'static str| {
        let app = &app;
        async move {
            let body: Vec<Value> = app
                .http
                .get(format!("{}/v1/banners{query}", app.banner))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body
        }
    };
    assert!(site("").await.is_empty(), "never on the public site");
    let exercise = site("?site=exercise").await;
    assert!(!exercise.is_empty());
    assert!(exercise.iter().all(|b| b["crisis_id"] == id.as_str()));
    assert!(exercise.iter().all(|b| b["status"] == "Exercise"));
    assert!(
        exercise
            .iter()
            .all(|b| marked(b["headline"].as_str().unwrap()))
    );

    // An actual crisis shows on the public site and not on the exercise site.
    let actual = app
        .declare_ok(&json!({
            "template": "vattenlacka",
            "variables": water_variables(),
            "audiences": ["alla-i-farsta"],
            "channels": ["sms", "banner"]
        }))
        .await;
    app.wait_delivered(&actual, Duration::from_secs(30)).await;
    let public = site("").await;
    assert!(!public.is_empty());
    assert!(public.iter().all(|b| b["crisis_id"] == actual.as_str()));
    assert!(
        site("?site=exercise")
            .await
            .iter()
            .all(|b| b["crisis_id"] == id.as_str())
    );
}

/// The decoded Subject of a raw message.
fn mail_subject(raw: &str) -> String {
    mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_default()
}
