//! Pre-approved templates end to end against a real nats-server: versions, four
//! eyes, what can be declared, preview, escaping, the worst-case SMS rule, the audit
//! trail of every lifecycle step, and export and import.

mod common;

use std::time::Duration;

use common::{TestApp, water_declaration};
use krisbud::client::Client;
use krisbud_kit::Bus;
use krisbud_kit::bus::Expect;
use krisbud_proto::event::TemplateSubmitted;
use krisbud_proto::template::TemplateVersion;
use krisbud_proto::{Actor, CommandRequest, Envelope, Event, Problem, Role, subject};
use krisbud_tests::wait_until_async;
use serde_json::{Value, json};

/// A user who may both write and approve templates, to show that four eyes is
/// the coordinator's rule and not only a matter of roles.
const BOTH_ROLES_TOKEN: &str = "kb_test_both_roles";

fn both_roles_user() -> String {
    format!(
        r#"
[[gateway.users]]
name = "kommunikator.lisa"
roles = ["template_editor", "template_approver"]
token_sha256 = "{}"
"#,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(BOTH_ROLES_TOKEN))
    )
}

/// What a test needs to drive templates through the API.
struct Api<'a> {
    app: &'a TestApp,
}

impl Api<'_> {
    fn token(&self, role: Role) -> String {
        self.app.token(role)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .app
            .http
            .request(method, format!("{}/api/v1{path}", self.app.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            path,
            &self.token(Role::DutyOfficer),
            None,
        )
        .await
    }

    async fn post(&self, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, body).await
    }

    /// A version's wording as JSON.
    async fn version(&self, id: &str, version: u32) -> Value {
        let (status, body) = self
            .get(&format!("/templates/{id}/versions/{version}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Drafts `body` as a new version of `id` as the template editor; the version.
    async fn draft(&self, id: &str, body: &Value) -> u32 {
        let (status, answer) = self
            .post(
                &format!("/templates/{id}/versions"),
                &self.token(Role::TemplateEditor),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["created"], true);
        answer["template"]["version"].as_u64().unwrap() as u32
    }

    async fn step(&self, id: &str, version: u32, action: &str, token: &str) -> (u16, Value) {
        let body = match action {
            "reject" | "retire" => Some(json!({ "reason": "Testskäl" })),
            _ => None,
        };
        self.post(
            &format!("/templates/{id}/versions/{version}/{action}"),
            token,
            body.as_ref(),
        )
        .await
    }

    async fn step_ok(&self, id: &str, version: u32, action: &str, role: Role) -> Value {
        let (status, body) = self.step(id, version, action, &self.token(role)).await;
        assert_eq!(status, 200, "{action} {id} v{version}: {body}");
        body
    }

    /// Drafts, submits and approves new wording of `id`; the version.
    async fn approved(&self, id: &str, body: &Value) -> u32 {
        let v = self.draft(id, body).await;
        self.step_ok(id, v, "submit", Role::TemplateEditor).await;
        self.step_ok(id, v, "approve", Role::TemplateApprover).await;
        v
    }

    async fn preview(&self, id: &str, version: u32, variables: Value) -> (u16, Value) {
        self.post(
            &format!("/templates/{id}/versions/{version}/preview"),
            &self.token(Role::TemplateEditor),
            Some(&json!({ "variables": variables })),
        )
        .await
    }
}

/// Version 1 of the demo water template with a new name: new wording.
async fn reworded(api: &Api<'_>, name: &str) -> Value {
    let mut body = api.version("vattenlacka", 1).await;
    body["name"] = json!(name);
    body
}

fn declaration_of(version: u32) -> Value {
    let mut d = water_declaration();
    d["template_version"] = json!(version);
    d
}

async fn declare_refused(app: &TestApp, body: &Value) -> Value {
    let response = app.declare(body).await;
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap();
    assert_eq!(status, 422, "{problem}");
    problem
}

#[tokio::test]
async fn an_author_approving_their_own_version_is_refused_with_a_reason() {
    let app = TestApp::spawn_with(&both_roles_user()).await;
    let api = Api { app: &app };
    let body = reworded(&api, "Vattenläcka (Lisas lydelse)").await;
    let (status, answer) = api
        .post(
            "/templates/vattenlacka/versions",
            BOTH_ROLES_TOKEN,
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["template"]["author"], "kommunikator.lisa");
    let (status, _) = api.step("vattenlacka", 2, "submit", BOTH_ROLES_TOKEN).await;
    assert_eq!(status, 200);

    // Lisa holds the approver role, so the gateway lets her through; the
    // coordinator refuses because she wrote the version.
    let (status, problem) = api
        .step("vattenlacka", 2, "approve", BOTH_ROLES_TOKEN)
        .await;
    assert_eq!(status, 403, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("four eyes"), "{detail}");
    assert!(detail.contains("kommunikator.lisa"), "{detail}");
    let (status, problem) = api.step("vattenlacka", 2, "reject", BOTH_ROLES_TOKEN).await;
    assert_eq!(status, 403, "{problem}");

    // The coordinator checks roles itself: a duty officer's approval signed and
    // sent as the gateway would, but past the gateway's own role check, is
    // refused too.
    let client = app.nats_as("gateway").await;
    let request = CommandRequest {
        actor: Actor {
            user: "tib.maria".into(),
            roles: vec![Role::DutyOfficer],
            channels: Vec::new(),
        },
        idempotency_key: None,
        body: krisbud_proto::command::ChangeTemplateState {
            template: "vattenlacka".into(),
            version: 2,
            action: krisbud_proto::command::TemplateAction::Approve,
            reason: None,
        },
    };
    let refused: Problem = krisbud_kit::command::request::<_, Value>(
        &client,
        &app.gateway_command_keys(),
        subject::cmd::CHANGE_TEMPLATE_STATE,
        &request,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.detail.contains("template_approver"), "{refused:?}");

    // Someone else may approve it.
    let info = api
        .step_ok("vattenlacka", 2, "approve", Role::TemplateApprover)
        .await;
    assert_eq!(info["state"], "approved");
    assert_eq!(info["approved_by"], "granskare.erik");
}

#[tokio::test]
async fn draft_submitted_rejected_and_retired_versions_cannot_be_declared() {
    let app = TestApp::spawn().await;
    let api = Api { app: &app };
    let body = reworded(&api, "Vattenläcka (utkast)").await;
    let v2 = api.draft("vattenlacka", &body).await;
    assert_eq!(v2, 2);

    let problem = declare_refused(&app, &declaration_of(2)).await;
    assert_eq!(problem["field"], "template_version");
    assert!(
        problem["detail"].as_str().unwrap().contains("is draft"),
        "{problem}"
    );

    api.step_ok("vattenlacka", 2, "submit", Role::TemplateEditor)
        .await;
    let problem = declare_refused(&app, &declaration_of(2)).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("is submitted"),
        "{problem}"
    );

    let rejected = api
        .step_ok("vattenlacka", 2, "reject", Role::TemplateApprover)
        .await;
    assert_eq!(rejected["history"][2]["reason"], "Testskäl");
    let problem = declare_refused(&app, &declaration_of(2)).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("is rejected"),
        "{problem}"
    );

    // Version 1 is approved and declarable until it is retired (by an admin here).
    let id = app.declare_ok(&declaration_of(1)).await;
    assert_eq!(app.status(&id).await.template.unwrap().version, 1);
    api.step_ok("vattenlacka", 1, "retire", Role::Admin).await;
    let problem = declare_refused(&app, &declaration_of(1)).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("is retired"),
        "{problem}"
    );
    let problem = declare_refused(&app, &water_declaration()).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no approved version"),
        "{problem}"
    );
    let (_, listed) = api.get("/templates").await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"vattenlacka"), "{ids:?}");
    assert!(ids.contains(&"varmebolja") && ids.contains(&"evakuering-aldreboende"));
}

#[tokio::test]
async fn an_approved_version_never_changes_new_wording_makes_a_new_version() {
    let app = TestApp::spawn().await;
    let api = Api { app: &app };
    let approved = api.version("vattenlacka", 1).await;
    assert_eq!(approved["state"], "approved");

    // A draft that names version 1 and says it is approved becomes version 2, a draft.
    let mut body = approved.clone();
    body["name"] = json!("Vattenläcka – ny lydelse");
    body["languages"]["sv"]["sms"] = json!(
        "Stockholms stad: Inget vatten i {{ omrade }}. Klart {{ beraknat_klart }}. Vatten finns vid {{ vattenpunkt }}."
    );
    let (status, answer) = api
        .post(
            "/templates/vattenlacka/versions",
            &api.token(Role::TemplateEditor),
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["template"]["version"], 2);
    assert_eq!(answer["template"]["state"], "draft");
    assert_eq!(answer["template"]["author"], "redaktor.anna");
    assert_eq!(
        api.version("vattenlacka", 1).await,
        approved,
        "v1 untouched"
    );

    // The same wording as the approved version makes nothing new.
    let (status, answer) = api
        .post(
            "/templates/vattenlacka/versions",
            &api.token(Role::TemplateEditor),
            Some(&approved),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["created"], false);
    assert_eq!(answer["template"]["version"], 1);

    // No lifecycle step but retirement applies to it, and there is no way to edit it.
    for (action, role) in [
        ("submit", Role::TemplateEditor),
        ("approve", Role::TemplateApprover),
        ("reject", Role::TemplateApprover),
    ] {
        let (status, problem) = api.step("vattenlacka", 1, action, &api.token(role)).await;
        assert_eq!(status, 409, "{action}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("never changes"),
            "{problem}"
        );
    }
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/templates/vattenlacka/versions/1",
            &api.token(Role::TemplateEditor),
            Some(&body),
        )
        .await;
    assert_eq!(status, 405);
    assert_eq!(api.version("vattenlacka", 1).await, approved);

    // Declaring still uses version 1 until version 2 is approved.
    let id = app.declare_ok(&water_declaration()).await;
    assert_eq!(app.status(&id).await.template.unwrap().version, 1);
    api.step_ok("vattenlacka", 2, "submit", Role::TemplateEditor)
        .await;
    api.step_ok("vattenlacka", 2, "approve", Role::TemplateApprover)
        .await;
    let id = app.declare_ok(&water_declaration()).await;
    assert_eq!(app.status(&id).await.template.unwrap().version, 2);

    // The approver sees what version 2 changes against version 1.
    let (status, diff) = api.get("/templates/vattenlacka/versions/2/diff").await;
    assert_eq!(status, 200, "{diff}");
    assert_eq!(diff["against"], 1);
    let fields: Vec<&str> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["languages.sv.sms", "name"]);
    assert!(
        diff["changes"][0]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l
                .as_str()
                .unwrap()
                .starts_with("+Stockholms stad: Inget vatten")),
        "{diff}"
    );
}

#[tokio::test]
async fn the_approval_sees_what_any_coordinator_instance_approved() {
    let app = TestApp::spawn().await;
    // A second system on the same NATS: its coordinator answers the same queue
    // group, so requests land on either instance.
    let shutdown = krisbud_kit::CancellationToken::new();
    let second = krisbud::system::up(
        app.config(),
        krisbud::system::UpOptions { demo: false },
        shutdown.clone(),
    )
    .await
    .expect("a second system starts");
    let api = Api { app: &app };
    let v = api
        .approved("vattenlacka", &reworded(&api, "Vattenläcka (v2)").await)
        .await;
    for _ in 0..12 {
        let id = app.declare_ok(&declaration_of(v)).await;
        assert_eq!(app.status(&id).await.template.unwrap().version, v);
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), second.wait())
        .await
        .expect("the second system stops")
        .unwrap();
}

#[tokio::test]
async fn preview_renders_every_channel_and_language_and_names_bad_variables() {
    let app = TestApp::spawn().await;
    let api = Api { app: &app };
    let (status, preview) = api
        .preview(
            "vattenlacka",
            1,
            json!({
                "omrade": "”Farsta”",
                "beraknat_klart": "i kväll kl. 20",
                "vattenpunkt": "Farsta centrum"
            }),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    let languages: Vec<&str> = preview["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["language"].as_str().unwrap())
        .collect();
    assert_eq!(languages, ["en", "sv", "sv-x-lattlast"]);
    for l in preview["languages"].as_array().unwrap() {
        assert_eq!(l["sms"]["encoding"], "ucs2", "{l}");
        assert!(l["sms"]["segments"].as_u64().unwrap() >= 2, "{l}");
        for channel in ["email", "banner", "intranet"] {
            assert!(l[channel].is_object(), "{channel} in {l}");
        }
        assert!(
            l["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["channel"] == "sms"
                    && w["message"].as_str().unwrap().starts_with(
                        "typographic quote ” (U+201D) forces UCS-2 (in the value of `omrade`)"
                    )),
            "{l}"
        );
    }
    assert_eq!(preview["approval_problems"], json!([]));
    assert_eq!(preview["worst_case_sms"].as_array().unwrap().len(), 3);
    // The approver reads the all-clear and the correction with the same values.
    let sv = &preview["languages"][1];
    assert_eq!(sv["language"], "sv");
    let all_clear = sv["all_clear"]["sms"]["text"].as_str().unwrap();
    assert!(
        all_clear.contains("Faran är över") && all_clear.contains("”Farsta”"),
        "{all_clear}"
    );
    let cancel = sv["cancel"]["banner"]["headline"].as_str().unwrap();
    assert!(cancel.starts_with("Rättelse: "), "{cancel}");

    let good = json!({
        "omrade": "Farsta",
        "beraknat_klart": "i kväll kl. 20",
        "vattenpunkt": "Farsta centrum"
    });
    let (_, plain) = api.preview("vattenlacka", 1, good.clone()).await;
    assert_eq!(plain["languages"][1]["sms"]["encoding"], "gsm7");
    assert_eq!(plain["languages"][1]["sms"]["segments"], 2);
    assert_eq!(plain["languages"][1]["warnings"], json!([]));

    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("vattenpunkt");
    let mut unknown = good.clone();
    unknown["gata"] = json!("Storgatan");
    let mut too_long = good.clone();
    too_long["omrade"] = json!("x".repeat(41));
    for (case, variables, field, says) in [
        ("missing", missing, "variables.vattenpunkt", "missing"),
        ("unknown", unknown, "variables.gata", "unknown"),
        ("too long", too_long, "variables.omrade", "41"),
    ] {
        let (status, problem) = api.preview("vattenlacka", 1, variables).await;
        assert_eq!(status, 422, "{case}: {problem}");
        assert_eq!(problem["field"], field, "{case}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{case}: {problem}"
        );
    }
    let (status, _) = api.preview("vattenlacka", 9, good).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_script_in_a_value_is_escaped_in_the_email_html_the_banner_and_the_intranet() {
    let app = TestApp::spawn().await;
    let api = Api { app: &app };
    let hostile = "<script>alert(1)</script>";
    let values = json!({
        "omrade": hostile,
        "beraknat_klart": "i kväll kl. 20",
        "vattenpunkt": "Farsta centrum"
    });

    // Through preview.
    let (status, preview) = api.preview("vattenlacka", 1, values.clone()).await;
    assert_eq!(status, 200, "{preview}");
    let sv = &preview["languages"][1];
    let html = sv["email"]["html"].as_str().unwrap();
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;"),
        "{html}"
    );
    let body = sv["intranet"]["body"].as_str().unwrap();
    assert!(
        !body.contains("<script>") && body.contains("&lt;script&gt;"),
        "{body}"
    );

    // Through a declaration, to what the channels publish.
    let mut declaration = water_declaration();
    declaration["variables"] = values;
    let id = app.declare_ok(&declaration).await;
    app.wait_delivered(&id, Duration::from_secs(15)).await;
    let records = app.audit(&id).await;
    let declared = records
        .iter()
        .find(|r| r["event"]["kind"] == "CrisisDeclared")
        .unwrap();
    for m in declared["event"]["payload"]["messages"].as_array().unwrap() {
        let html = m["email"]["html"].as_str().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
    let articles = app.intranet_outbox();
    assert!(!articles.is_empty());
    for a in &articles {
        let body = a["body"].as_str().unwrap();
        assert!(
            !body.contains("<script>") && body.contains("&lt;script&gt;"),
            "{body}"
        );
    }
    // The delivered email: its HTML part carries the value escaped.
    let emails = app.email_outbox();
    assert!(!emails.is_empty(), "the email outbox is empty");
    for raw in &emails {
        let message = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .expect("a parseable .eml");
        assert_eq!(message.html_body_count(), 1, "{raw}");
        let part = message.html_part(0).expect("an HTML part");
        assert!(
            mail_parser::MimeHeaders::is_content_type(part, "text", "html"),
            "{raw}"
        );
        let html = message.body_html(0).unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;"), "{html}");
        assert!(!html.to_lowercase().contains("<script"), "{html}");
    }

    // The banner is an HTML context (pages insert its text into their HTML), so
    // its JSON carries the value HTML-escaped, and nowhere a raw `<script`.
    let response = app
        .http
        .get(format!("{}/v1/banners", app.banner))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = response.text().await.unwrap();
    assert!(!text.to_lowercase().contains("<script"), "{text}");
    let banners: Vec<Value> = serde_json::from_str(&text).unwrap();
    let sv = banners
        .iter()
        .find(|b| b["crisis_id"] == id.as_str() && b["language"] == "sv")
        .expect("the Swedish banner");
    assert_eq!(
        sv["headline"],
        "Vattnet är avstängt i &lt;script&gt;alert(1)&lt;/script&gt;"
    );
    assert_eq!(banners.len(), 3, "{text}");
    for b in &banners {
        for field in ["headline", "body", "link_text"] {
            let value = b[field].as_str().unwrap();
            assert!(!value.contains(['<', '>']), "{field}: {value}");
        }
    }
    // The preview and the declared event keep the banner text as typed: the
    // channel escapes it when it serves it, once.
    assert_eq!(
        preview["languages"][1]["banner"]["headline"],
        format!("Vattnet är avstängt i {hostile}")
    );
}

#[tokio::test]
async fn enum_datetime_url_and_phone_values_are_checked_when_declaring() {
    let app = TestApp::spawn().await;
    let api = Api { app: &app };
    let mut body = reworded(&api, "Vattenläcka (med nivå, tid, länk och telefon)").await;
    let variables = body["variables"].as_array_mut().unwrap();
    variables.extend([
        json!({"name": "niva", "label": "Nivå", "type": "enum", "max_length": 6,
               "allowed": ["gul", "orange", "röd"]}),
        json!({"name": "tid", "label": "Från när", "type": "datetime", "max_length": 25}),
        json!({"name": "lank", "label": "Länk", "type": "url", "max_length": 80}),
        json!({"name": "telefon", "label": "Telefon", "type": "phone", "max_length": 20}),
    ]);
    let sv = &mut body["languages"]["sv"]["email_text"];
    *sv = json!(format!(
        "{}\n\nNivå {{{{ niva }}}} från {{{{ tid }}}}. Ring {{{{ telefon }}}} eller läs {{{{ lank }}}}.",
        sv.as_str().unwrap()
    ));
    let v = api.approved("vattenlacka", &body).await;

    let good = json!({
        "omrade": "Farsta",
        "beraknat_klart": "i kväll kl. 20",
        "vattenpunkt": "Farsta centrum",
        "niva": "orange",
        "tid": "2026-11-26 14:00",
        "lank": "https://stockholm.se/vatten?omrade=farsta&sida=1",
        "telefon": "08-508 000 00"
    });
    let (status, preview) = api.preview("vattenlacka", v, good.clone()).await;
    assert_eq!(status, 200, "{preview}");
    let text = preview["languages"][1]["email"]["text"].as_str().unwrap();
    assert!(
        text.contains("Nivå orange från 2026-11-26 14:00. Ring 08-508 000 00 eller läs https://stockholm.se/vatten?omrade=farsta&sida=1."),
        "{text}"
    );
    let mut declaration = declaration_of(v);
    declaration["variables"] = good.clone();
    let id = app.declare_ok(&declaration).await;
    assert_eq!(app.status(&id).await.template.unwrap().version, v);

    for (name, bad, reason) in [
        ("niva", "lila", "must be one of: gul, orange, röd"),
        ("tid", "i morgon kl. 14", "must be a date and time"),
        ("tid", "2026-02-30 10:00", "must be a date and time"),
        ("lank", "javascript:alert(1)", "must be a web address"),
        (
            "lank",
            "https://stockholm.se/\"><script>alert(1)</script>",
            "must be a web address",
        ),
        ("telefon", "ring växeln", "must be a phone number"),
        ("omrade", "Farsta\u{1b}[2J", "control character U+001B"),
        ("omrade", "Farsta\nHökarängen", "control character U+000A"),
        ("omrade", "Farsta\u{202E}atsraF", "control character U+202E"),
    ] {
        let mut variables = good.clone();
        variables[name] = json!(bad);
        let mut declaration = declaration_of(v);
        declaration["variables"] = variables;
        let problem = declare_refused(&app, &declaration).await;
        assert_eq!(
            problem["field"],
            format!("variables.{name}"),
            "{bad:?}: {problem}"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("`{name}`")) && detail.contains(reason),
            "{bad:?}: {problem}"
        );
    }
}

#[tokio::test]
async fn the_worst_case_rule_blocks_submission_and_approval_of_a_template_that_can_overflow() {
    let app = TestApp::spawn().await;
    let api = Api { app: &app };
    let mut body = reworded(&api, "Vattenläcka (en del)").await;
    body["max_sms_segments"] = json!(2);
    let v = api.draft("vattenlacka", &body).await;

    let (_, preview) = api
        .preview(
            "vattenlacka",
            v,
            json!({"omrade": "Farsta", "beraknat_klart": "i kväll", "vattenpunkt": "Farsta C"}),
        )
        .await;
    let problems = preview["approval_problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p
            .as_str()
            .unwrap()
            .contains("the sv SMS can take 3 segments")),
        "{preview}"
    );

    let (status, problem) = api
        .step("vattenlacka", v, "submit", &api.token(Role::TemplateEditor))
        .await;
    assert_eq!(status, 422, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("the sv SMS can take 3 segments") && detail.contains("at most 2"),
        "{detail}"
    );

    // Even a version that got to `submitted` some other way (here appended straight
    // to the stream as the coordinator's own user) is refused at approval.
    let client = app.nats_as("coordinator").await;
    let bus = Bus::new(client);
    let submitted = Envelope::new(
        Actor {
            user: "redaktor.anna".into(),
            roles: vec![Role::TemplateEditor],
            channels: Vec::new(),
        },
        Event::TemplateSubmitted(TemplateSubmitted {
            template_id: "vattenlacka".into(),
            version: v,
        }),
    );
    bus.append(&submitted, Expect::Any).await.unwrap();
    let (status, info) = wait_until_async(
        "the read model to show the version submitted",
        Duration::from_secs(10),
        || async {
            let (status, record) = api.get("/templates/vattenlacka").await;
            (record["versions"][v as usize - 1]["state"] == "submitted").then_some((status, record))
        },
    )
    .await;
    assert_eq!(status, 200, "{info}");
    let (status, problem) = api
        .step(
            "vattenlacka",
            v,
            "approve",
            &api.token(Role::TemplateApprover),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("segments"),
        "{problem}"
    );
    assert_eq!(api.version("vattenlacka", v).await["state"], "submitted");
}

#[tokio::test]
async fn every_lifecycle_step_is_in_the_audit_log_with_its_actor() {
    let app = TestApp::spawn().await;
    let api = Api { app: &app };
    let v2 = api
        .approved("vattenlacka", &reworded(&api, "Vattenläcka (v2)").await)
        .await;
    let v3 = api
        .draft("vattenlacka", &reworded(&api, "Vattenläcka (v3)").await)
        .await;
    api.step_ok("vattenlacka", v3, "submit", Role::TemplateEditor)
        .await;
    api.step_ok("vattenlacka", v3, "reject", Role::TemplateApprover)
        .await;
    api.step_ok("vattenlacka", 1, "retire", Role::Admin).await;

    let expected = [
        ("TemplateDrafted", 1, "demo.redaktor"),
        ("TemplateSubmitted", 1, "demo.redaktor"),
        ("TemplateApproved", 1, "demo.granskare"),
        ("TemplateDrafted", v2, "redaktor.anna"),
        ("TemplateSubmitted", v2, "redaktor.anna"),
        ("TemplateApproved", v2, "granskare.erik"),
        ("TemplateDrafted", v3, "redaktor.anna"),
        ("TemplateSubmitted", v3, "redaktor.anna"),
        ("TemplateRejected", v3, "granskare.erik"),
        ("TemplateRetired", 1, "admin.olle"),
    ];
    let steps = wait_until_async(
        "every lifecycle step in the audit log",
        Duration::from_secs(10),
        || async {
            let response = app
                .http
                .get(format!("{}/api/v1/audit", app.api))
                .query(&[("format", "jsonl")])
                .bearer_auth(app.token(Role::Auditor))
                .send()
                .await
                .ok()?;
            let text = response.text().await.ok()?;
            let steps: Vec<(String, u32, String)> = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .map(|r| r["event"].clone())
                .filter(|e| {
                    e["payload"]["template_id"] == "vattenlacka"
                        || e["payload"]["template"]["id"] == "vattenlacka"
                })
                .map(|e| {
                    let version = e["payload"]["version"]
                        .as_u64()
                        .or(e["payload"]["template"]["version"].as_u64())
                        .unwrap() as u32;
                    (
                        e["kind"].as_str().unwrap().to_owned(),
                        version,
                        e["actor"]["user"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (steps.len() >= expected.len()).then_some(steps)
        },
    )
    .await;
    let expected: Vec<(String, u32, String)> = expected
        .iter()
        .map(|(k, v, a)| ((*k).to_owned(), *v, (*a).to_owned()))
        .collect();
    assert_eq!(steps, expected);

    // The rejection's reason and the whole wording of each draft are on record.
    let response = app
        .http
        .get(format!("{}/api/v1/audit", app.api))
        .query(&[("kind", "TemplateRejected")])
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap();
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["records"][0]["event"]["payload"]["reason"], "Testskäl");
    let verify: Value = app
        .http
        .get(format!("{}/api/v1/audit/verify", app.api))
        .bearer_auth(app.token(Role::Auditor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
}

#[tokio::test]
async fn export_then_import_reproduces_the_same_versions_and_never_bypasses_approval() {
    let source = TestApp::spawn().await;
    let api = Api { app: &source };
    // A template of its own with an approved, a rejected and a draft version.
    let mut first = api.version("varmebolja", 1).await;
    first["id"] = json!("provlarm");
    first["name"] = json!("Provlarm");
    let (status, answer) = api
        .post("/templates", &api.token(Role::TemplateEditor), Some(&first))
        .await;
    assert_eq!(status, 201, "{answer}");
    api.step_ok("provlarm", 1, "submit", Role::TemplateEditor)
        .await;
    api.step_ok("provlarm", 1, "approve", Role::TemplateApprover)
        .await;
    let mut second = first.clone();
    second["name"] = json!("Provlarm, andra lydelsen");
    let v2 = api.draft("provlarm", &second).await;
    api.step_ok("provlarm", v2, "submit", Role::TemplateEditor)
        .await;
    api.step_ok("provlarm", v2, "reject", Role::TemplateApprover)
        .await;
    let mut third = first.clone();
    third["max_sms_segments"] = json!(4);
    let v3 = api.draft("provlarm", &third).await;
    assert_eq!((v2, v3), (2, 3));

    let dir = tempfile::tempdir().unwrap();
    let exporter = Client::new(&source.api, &source.token(Role::TemplateEditor));
    let files = krisbud::template_files::export(&exporter, dir.path())
        .await
        .unwrap();
    // Four demo templates and three versions of provlarm.
    assert_eq!(files.len(), 7, "{files:?}");
    let approved_file = std::fs::read_to_string(dir.path().join("provlarm.v1.toml")).unwrap();
    assert!(
        approved_file.contains("state = \"approved\""),
        "{approved_file}"
    );
    assert!(approved_file.contains("approved_by = \"granskare.erik\""));

    let target = TestApp::spawn().await;
    let importer = Client::new(&target.api, &target.token(Role::TemplateEditor));
    let imported = krisbud::template_files::import(&importer, dir.path())
        .await
        .unwrap();
    let outcome: Vec<(String, u32, bool)> = imported
        .iter()
        .map(|i| (i.template.id.clone(), i.template.version, i.created))
        .collect();
    assert_eq!(
        outcome,
        [
            ("evakuering-aldreboende".to_owned(), 1, false),
            ("it-storning".to_owned(), 1, false),
            ("provlarm".to_owned(), 1, true),
            ("provlarm".to_owned(), 2, true),
            ("provlarm".to_owned(), 3, true),
            ("varmebolja".to_owned(), 1, false),
            ("vattenlacka".to_owned(), 1, false),
        ],
        "the demo set is already there; provlarm comes in version by version"
    );

    // The same versions, word for word; every imported one a draft by the importer.
    let target_api = Api { app: &target };
    for v in 1..=3 {
        let exported: TemplateVersion =
            serde_json::from_value(api.version("provlarm", v).await).unwrap();
        let copy: TemplateVersion =
            serde_json::from_value(target_api.version("provlarm", v).await).unwrap();
        assert!(copy.same_wording(&exported), "provlarm v{v}");
        assert_eq!(copy.state, krisbud_proto::template::TemplateState::Draft);
        assert_eq!(copy.author, "redaktor.anna");
        assert_eq!(copy.approved_by, None);
    }
    let mut declaration = water_declaration();
    declaration["template"] = json!("provlarm");
    declaration["variables"] =
        json!({"datum": "12/7-16/7", "temperatur": "31", "telefon": "08-508 000 00"});
    let problem = declare_refused(&target, &declaration).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no approved version"),
        "an import never approves: {problem}"
    );

    // Importing the same files again changes nothing.
    let again = krisbud::template_files::import(&importer, dir.path())
        .await
        .unwrap();
    assert!(again.iter().all(|i| !i.created), "{again:?}");

    // Importing needs the editor's role like any draft.
    let auditor = Client::new(&target.api, &target.token(Role::Auditor));
    let err = krisbud::template_files::import(&auditor, dir.path())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("403"), "{err:#}");
}

#[tokio::test]
async fn demo_seeding_is_idempotent_and_leaves_a_retired_demo_version_retired() {
    let mut app = TestApp::spawn().await;
    let api = Api { app: &app };
    let (_, listed) = api.get("/templates").await;
    let listed: Vec<(String, u64, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["version"].as_u64().unwrap(),
                t["approved_by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "evakuering-aldreboende".to_owned(),
                1,
                "demo.granskare".to_owned()
            ),
            ("it-storning".to_owned(), 1, "demo.granskare".to_owned()),
            ("varmebolja".to_owned(), 1, "demo.granskare".to_owned()),
            ("vattenlacka".to_owned(), 1, "demo.granskare".to_owned()),
        ]
    );
    api.step_ok("it-storning", 1, "retire", Role::TemplateApprover)
        .await;
    let ids = [
        "evakuering-aldreboende",
        "it-storning",
        "varmebolja",
        "vattenlacka",
    ];
    // Each template's last event, and its steps: drafted, submitted, approved.
    let mut before = Vec::new();
    for id in ids {
        let (_, record) = api.get(&format!("/templates/{id}")).await;
        let steps = record["versions"][0]["history"].as_array().unwrap().len();
        assert_eq!(steps, if id == "it-storning" { 4 } else { 3 }, "{record}");
        before.push(record["last_sequence"].clone());
    }

    app.restart().await;
    let api = Api { app: &app };
    for (id, last) in ids.iter().zip(&before) {
        let (_, record) = api.get(&format!("/templates/{id}")).await;
        assert_eq!(
            &record["last_sequence"], last,
            "a restart appends nothing to {id}"
        );
    }
    assert_eq!(api.version("it-storning", 1).await["state"], "retired");
    let (_, record) = api.get("/templates/it-storning").await;
    assert_eq!(record["versions"].as_array().unwrap().len(), 1);
    app.declare_ok(&water_declaration()).await;
}
