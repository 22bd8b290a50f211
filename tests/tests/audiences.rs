//! Audiences end to end: created over the API, members imported from CSV
//! (normalised, deduplicated, bad rows named by line), then reached by a
//! declaration in each member's language.

mod common;

use std::time::Duration;

use common::{TestApp, water_variables};
use krisbud_proto::Role;
use serde_json::{Value, json};

impl TestApp {
    async fn audience(&self, id: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/audiences/{id}", self.api))
            .bearer_auth(self.token(Role::DutyOfficer))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// Rows in Swedish forms, with duplicates and mistakes (the header is line 1).
/// Language tags come in any case (`EN`, `SV-X-LattLast`), as spreadsheets
/// write them.
const MEMBERS_CSV: &str = "\
Telefon,E-post,Språk,Namn
070-174 06 20,karin.ek@farsta.example,sv,Karin Ek
+46 70 174 06 21,,EN,Sam Lee
0046701740622,leila.nasser@farsta.example,ar,\"Nasser, Leila\"
070-174 06 20,,sv,Karin again
070-12,bo@farsta.example,sv,Bo Short
,not-an-address,sv,Nobody
08-508 000 00,,xx-language-tag-that-is-far-too-long-to-be-real,Växeln
,KARIN.EK@farsta.example,sv,Karin by email
\"070-174 06 23\",,SV-X-LattLast,\"Nilsson, Greta\"
,,sv,Empty
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_normalises_dedupes_reports_bad_rows_and_reaches_each_language() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.create_audience("farsta-hemtjanst", "Hemtjänst i Farsta")
            .await
            .status(),
        201
    );

    let (status, report) = app
        .import_csv("farsta-hemtjanst", Role::Admin, MEMBERS_CSV)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rows"], 10, "{report}");
    assert_eq!(report["imported"], 4, "{report}");
    assert_eq!(
        report["duplicates"], 2,
        "line 5 repeats a phone, line 9 an email: {report}"
    );
    assert_eq!(report["rejected"], 4, "{report}");
    let errors: Vec<(u64, Option<&str>)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (5, Some("phone")),
            (6, Some("phone")),
            (7, Some("email")),
            (8, Some("language")),
            (9, Some("email")),
            (11, None)
        ],
        "{report}"
    );
    let reasons: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons[0], "left out: the same phone number as line 2");
    assert_eq!(reasons[4], "left out: the same email address as line 2");
    let text = report.to_string();
    assert!(
        !text.contains("070-12") && !text.contains("not-an-address"),
        "{text}"
    );

    let audience = app.audience("farsta-hemtjanst").await;
    assert_eq!(audience["members"], 4);
    assert_eq!(audience["with_phone"], 4);
    assert_eq!(audience["with_email"], 2);

    // A declaration reaches each member once, in E.164, in their language
    // (Arabic is not in the template, so Leila gets Swedish).
    let id = app
        .declare_ok(&json!({
            "template": "vattenlacka",
            "variables": water_variables(),
            "audiences": ["farsta-hemtjanst"],
            "channels": ["sms", "email"]
        }))
        .await;
    let status = app.wait_delivered(&id, Duration::from_secs(30)).await;
    assert_eq!(status.channels[&krisbud_proto::Channel::Sms].total, 4);
    assert_eq!(status.channels[&krisbud_proto::Channel::Email].total, 2);
    let sms = app.sms_outbox();
    let mut to: Vec<&str> = sms.iter().map(|l| l["to"].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(
        to,
        [
            "+46701740620",
            "+46701740621",
            "+46701740622",
            "+46701740623"
        ]
    );
    let text_to = |phone: &str| {
        sms.iter()
            .find(|l| l["to"] == phone)
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let swedish = text_to("+46701740620");
    assert_ne!(
        text_to("+46701740621"),
        swedish,
        "Sam reads English (imported as `EN`)"
    );
    assert_eq!(
        text_to("+46701740622"),
        swedish,
        "no Arabic version: Swedish"
    );
    assert_ne!(text_to("+46701740623"), swedish, "Greta reads easy Swedish");
    assert_eq!(app.email_outbox().len(), 2);

    // The audit holds the import as counts, never the members.
    let page: Value = app
        .http
        .get(format!("{}/api/v1/audit", app.api))
        .query(&[("kind", "AudienceMembersImported")])
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = page["records"].as_array().unwrap().clone();
    let import = records
        .iter()
        .find(|r| r["event"]["payload"]["audience_id"] == "farsta-hemtjanst")
        .expect("the import is on record");
    assert_eq!(import["event"]["actor"]["user"], "admin.olle", "{import}");
    assert_eq!(import["event"]["payload"]["members"], 4, "{import}");
    let chain = serde_json::to_string(&records).unwrap();
    assert!(!chain.contains("+46701740620") && !chain.contains("karin.ek"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_whole_and_the_old_members_stay() {
    let app = TestApp::spawn().await;
    assert_eq!(app.create_audience("kista", "Kista").await.status(), 201);
    let (status, report) = app
        .import_csv("kista", Role::Admin, "phone\n0701740630\n0701740631\n")
        .await;
    assert_eq!((status, report["imported"].as_u64()), (200, Some(2)));

    // An unknown column, a quote never closed, bytes that are not UTF-8, an empty
    // file: each is refused, naming the line, and nothing changes.
    for (csv, words) in [
        (
            b"phone,fax\n0701740632,1\n".to_vec(),
            "unknown column `fax`",
        ),
        (b"phone\n0701740632\n\"0701740633\n".to_vec(), "line 3"),
        (
            b"phone\n0701740632\n07017406\xff\n".to_vec(),
            "line 3 is not UTF-8",
        ),
        (Vec::new(), "empty"),
    ] {
        let (status, problem) = app.import_csv("kista", Role::Admin, csv).await;
        assert_eq!(status, 422, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(words),
            "{problem}"
        );
    }
    assert_eq!(app.audience("kista").await["members"], 2);

    // Wrong role, wrong media type, unknown audience, taken id.
    let (status, _) = app.import_csv("kista", Role::DutyOfficer, "phone\n").await;
    assert_eq!(status, 403);
    let response = app
        .http
        .put(format!("{}/api/v1/audiences/kista/members", app.api))
        .bearer_auth(app.token(Role::Admin))
        .json(&json!({ "phone": "0701740632" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let (status, _) = app.import_csv("finns-inte", Role::Admin, "phone\n").await;
    assert_eq!(status, 404);
    assert_eq!(
        app.create_audience("kista", "Något annat").await.status(),
        409
    );
    let response = app
        .http
        .post(format!("{}/api/v1/audiences", app.api))
        .bearer_auth(app.token(Role::Admin))
        .json(&json!({ "id": "inte giltig", "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);

    // Deleting removes it from the list and from declarations.
    let response = app
        .http
        .delete(format!("{}/api/v1/audiences/kista", app.api))
        .bearer_auth(app.token(Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let list: Vec<Value> = app
        .http
        .get(format!("{}/api/v1/audiences", app.api))
        .bearer_auth(app.token(Role::Admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.iter().all(|a| a["id"] != "kista"), "{list:?}");
    assert!(list.iter().any(|a| a["id"] == "farsta-boende"), "{list:?}");
    let response = app
        .declare(&json!({
            "template": "vattenlacka",
            "variables": water_variables(),
            "audiences": ["kista"],
            "channels": ["sms"]
        }))
        .await;
    assert_eq!(response.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_in_two_audiences_is_reached_once() {
    let app = TestApp::spawn().await;
    for (id, csv) in [
        (
            "farsta-a",
            "phone,email,language\n070-174 06 30,,sv\n070-174 06 31,delad@farsta.example,sv\n",
        ),
        (
            "farsta-b",
            "phone,email,language\n+46701740631,delad@farsta.example,sv\n070-174 06 32,,sv\n",
        ),
    ] {
        assert_eq!(app.create_audience(id, id).await.status(), 201);
        let (status, report) = app.import_csv(id, Role::Admin, csv).await;
        assert_eq!(status, 200, "{report}");
    }
    let id = app
        .declare_ok(&json!({
            "template": "vattenlacka",
            "variables": water_variables(),
            "audiences": ["farsta-a", "farsta-b"],
            "channels": ["sms", "email"]
        }))
        .await;
    let status = app.wait_delivered(&id, Duration::from_secs(30)).await;
    assert_eq!(status.channels[&krisbud_proto::Channel::Sms].total, 3);
    assert_eq!(status.channels[&krisbud_proto::Channel::Email].total, 1);
    let mut to: Vec<String> = app
        .sms_outbox()
        .iter()
        .map(|l| l["to"].as_str().unwrap().to_owned())
        .collect();
    to.sort();
    assert_eq!(to, ["+46701740630", "+46701740631", "+46701740632"]);
    assert_eq!(app.email_outbox().len(), 1);
}
