//! The console in a browser's place: sign-in, the duty officer's declaration
//! (form, errors naming the field, preview of every channel in every language,
//! send once however often it is posted) and the live board reaching delivered,
//! over HTTP with cookies against the whole system; then the same flow in Debian's
//! chromium driven by playwright-core, with an axe-core scan of every page.

mod common;

use std::time::Duration;

use common::console::{
    board_page, browser, credentials, csrf, hidden_fields, idempotency, post_form, signed_in,
    submit_a_second_water_version, water_form,
};
use common::{TestApp, water_variables};
use krisbud_proto::Role;
use krisbud_tests::wait_until_async;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_a_wrong_password_and_a_missing_form_token() {
    let app = TestApp::spawn().await;
    let client = browser();
    let html = client
        .get(format!("{}/konsol/logga-in", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (name, secret) = credentials(&app, Role::DutyOfficer);
    let wrong = client
        .post(format!("{}/konsol/logga-in", app.api))
        .form(&[
            ("_csrf", csrf(&html)),
            ("user", name.clone()),
            ("password", "not-the-password".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let page = wrong.text().await.unwrap();
    assert!(page.contains("Inloggningen misslyckades"), "{page}");
    assert!(page.contains("lang=\"sv\""));
    // The right password without the form's token (a login forged by another
    // site) is refused too.
    let forged = browser()
        .post(format!("{}/konsol/logga-in", app.api))
        .form(&[("user", name), ("password", secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // Nobody signed in: every page leads to the sign-in.
    let board = client
        .get(format!("{}/konsol/ny-kris", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(board.url().path(), "/konsol/logga-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_officer_declares_in_the_console_once_and_watches_the_board() {
    let app = TestApp::spawn().await;
    let (client, token) = signed_in(&app, Role::DutyOfficer).await;
    let page = client
        .get(format!("{}/konsol/ny-kris", app.api))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/konsol/ny-kris/vattenlacka"), "{html}");

    let form_html = client
        .get(format!("{}/konsol/ny-kris/vattenlacka", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = idempotency(&form_html);
    assert!(form_html.contains("Farsta"), "audiences are offered");

    // A blank left empty is named, with a link to its field.
    let mut missing = water_form(&token, &key, "preview");
    missing.retain(|(k, _)| k != "var-omrade");
    let refused = client
        .post(format!("{}/konsol/ny-kris/vattenlacka", app.api))
        .form(&missing)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let html = refused.text().await.unwrap();
    assert!(html.contains("href=\"#var-omrade\""), "{html}");
    assert!(html.contains("Fyll i"), "{html}");
    assert!(html.contains("i kväll kl. 20"), "what was typed is kept");

    // Without the form token nothing is sent.
    let mut forged = water_form(&token, &key, "declare");
    forged.retain(|(k, _)| k != "_csrf");
    let forged = client
        .post(format!("{}/konsol/ny-kris/vattenlacka", app.api))
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let preview = client
        .post(format!("{}/konsol/ny-kris/vattenlacka", app.api))
        .form(&water_form(&token, &key, "preview"))
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), 200);
    let html = preview.text().await.unwrap();
    assert!(html.contains("Granska innan du skickar"), "{html}");
    assert!(html.contains("Vattnet är avstängt i Farsta"), "{html}");
    for language in ["Svenska", "Engelska", "Lättläst svenska"] {
        assert!(html.contains(language), "{language} in the preview");
    }
    assert!(html.contains("GSM7"), "the SMS encoding is shown");

    // Sent twice (a double click): one crisis.
    let mut boards = Vec::new();
    for _ in 0..2 {
        let sent = client
            .post(format!("{}/konsol/ny-kris/vattenlacka", app.api))
            .form(&water_form(&token, &key, "declare"))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
        boards.push(sent.url().path().to_owned());
    }
    assert_eq!(boards[0], boards[1], "one crisis for one form");
    let id = boards[0].trim_start_matches("/konsol/kris/").to_owned();
    let crises: Vec<serde_json::Value> = app
        .http
        .get(format!("{}/api/v1/crises", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(crises.len(), 1, "{crises:?}");
    let status = app.wait_delivered(&id, WAIT).await;
    assert_eq!(
        status.declared_by.as_deref(),
        Some(credentials(&app, Role::DutyOfficer).0.as_str())
    );
    wait_until_async("the board to show every channel done", WAIT, || async {
        let fragment = client
            .get(format!("{}/konsol/kris/{id}/tavla", app.api))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        fragment.contains("4 av 4 kanaler klara").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_marked_and_an_operator_cannot_declare() {
    let app = TestApp::spawn().await;
    let (client, token) = signed_in(&app, Role::DutyOfficer).await;
    let mut form = water_form(&token, "konsol-exercise-1", "preview");
    for (k, v) in &mut form {
        if k == "status" {
            *v = "exercise".into();
        }
    }
    let html = client
        .post(format!("{}/konsol/ny-kris/vattenlacka", app.api))
        .form(&form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("class=\"practice\""), "{html}");
    assert!(html.contains("ÖVNING"), "{html}");

    let (operator, _) = signed_in(&app, Role::Operator).await;
    let refused = operator
        .get(format!("{}/konsol/ny-kris", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("behörighet"));
}

/// Each role's main flow in Debian's chromium (playwright-core, `tests/browser`),
/// with axe-core on every page and the declaration also at 320 CSS px;
/// `KRISBUD_SCREENSHOTS` names a folder for the preview and board screenshots
/// the README shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_works_in_chromium_with_no_axe_violations() {
    let app = TestApp::spawn().await;
    submit_a_second_water_version(&app).await;
    let shots = tempfile::tempdir().unwrap();
    let shots_dir = std::env::var("KRISBUD_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| shots.path().to_owned());
    let users: serde_json::Map<String, serde_json::Value> = [
        Role::DutyOfficer,
        Role::Operator,
        Role::TemplateEditor,
        Role::TemplateApprover,
        Role::Auditor,
        Role::Admin,
    ]
    .into_iter()
    .map(|role| {
        let (name, secret) = credentials(&app, role);
        (role.as_str().to_owned(), serde_json::json!([name, secret]))
    })
    .collect();
    let config = shots.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "base": app.api,
            "users": users,
            "variables": water_variables(),
            "shots": shots_dir,
        })
        .to_string(),
    )
    .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/console.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&config)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("the browser run ends within 5 minutes")
        .expect("node runs (tests/browser: npm ci)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser run failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("console ok"), "{stdout}");
    eprintln!("{stdout}");
    assert!(shots_dir.join("console-board.png").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_takes_an_operator_confirmation_and_the_lifecycle_to_closed() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&common::water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;
    let board = format!("/konsol/kris/{id}");

    // The operator confirms the SMS with a note; the board names them.
    let (operator, operator_csrf) = signed_in(&app, Role::Operator).await;
    let list = |client: reqwest::Client| {
        let url = format!("{}/konsol/att-bekrafta", app.api);
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let waiting = list(operator.clone()).await;
    assert!(
        waiting.contains(">SMS: Vattnet är avstängt i Farsta<"),
        "{waiting}"
    );
    assert!(
        waiting.contains(">E-post: Vattnet är avstängt i Farsta<"),
        "{waiting}"
    );
    let html = board_page(&app, &operator, &id).await;
    assert!(html.contains("Bekräfta att SMS är ute"), "{html}");
    // The exact text to publish, per language, with a copy button.
    assert!(html.contains("Att publicera: Webbanner, Svenska"), "{html}");
    assert!(html.contains("Att publicera: SMS, Engelska"), "{html}");
    assert!(
        html.contains("Beräknat klart i kväll kl. 20. Hämta vatten vid Farsta centrum."),
        "{html}"
    );
    assert!(html.contains("data-copy=\"text-sms-0\""), "{html}");
    let (status, html) = post_form(
        &app,
        &operator,
        &format!("{board}/bekrafta"),
        &[
            ("_csrf", &operator_csrf),
            ("channel", "sms"),
            ("note", "Kontrollerat hos operatören"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let (operator_name, _) = credentials(&app, Role::Operator);
    assert!(html.contains(&format!("{operator_name}, ")), "{html}");
    assert!(!html.contains("Bekräfta att SMS är ute"), "{html}");
    // Confirming again (a double click, a colleague) adds nothing.
    let (status, _) = post_form(
        &app,
        &operator,
        &format!("{board}/bekrafta"),
        &[("_csrf", &operator_csrf), ("channel", "sms")],
    )
    .await;
    assert_eq!(status, 200);
    let sms = &app.status(&id).await.channels[&krisbud_proto::Channel::Sms];
    assert_eq!(sms.confirmations.len(), 1, "{sms:?}");
    let waiting = list(operator.clone()).await;
    assert!(!waiting.contains(">SMS: "), "{waiting}");
    assert!(waiting.contains(">E-post: "), "{waiting}");
    // A duty officer sees no confirmation form, and cannot confirm.
    let (tib, csrf) = signed_in(&app, Role::DutyOfficer).await;
    let (status, _) = post_form(
        &app,
        &tib,
        &format!("{board}/bekrafta"),
        &[("_csrf", &csrf), ("channel", "email")],
    )
    .await;
    assert_eq!(status, 403);

    // The all-clear: the page says what will happen, then it happens.
    let html = board_page(&app, &tib, &id).await;
    assert!(html.contains("steg/faran-over"), "{html}");
    let step = tib
        .get(format!("{}{board}/steg/faran-over", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(step.contains("faran är över"), "{step}");
    // The all-clear itself, in every language, before it is sent.
    assert!(
        step.contains("Vattenläckan i Farsta är lagad och vattnet är tillbaka i kranen"),
        "{step}"
    );
    assert!(step.contains("The danger is over."), "{step}");
    assert!(step.contains("SMS, Lättläst svenska"), "{step}");
    // A stale revision is refused, not overwritten.
    let (status, html) = post_form(
        &app,
        &tib,
        &format!("{board}/steg/faran-over"),
        &[("_csrf", &csrf), ("expected_revision", "7")],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("har ändrats"), "{html}");
    let (status, html) = post_form(
        &app,
        &tib,
        &format!("{board}/steg/faran-over"),
        &[("_csrf", &csrf), ("expected_revision", "1")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<strong>Faran över.</strong>"), "{html}");
    assert!(html.contains("steg/avsluta"), "{html}");
    assert!(!html.contains("steg/faran-over"), "{html}");

    // Close: the board says so, and the banner is down, as /v1/banners shows.
    let (status, html) = post_form(
        &app,
        &tib,
        &format!("{board}/steg/avsluta"),
        &[("_csrf", &csrf), ("expected_revision", "2")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<strong>Avslutad.</strong>"), "{html}");
    assert!(html.contains("Nedtagen"), "{html}");
    assert!(!html.contains("Nästa steg"), "{html}");
    wait_until_async("the banner taken down", WAIT, || async {
        app.banners().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_needs_a_reason_and_shows_it_on_the_board() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&common::water_declaration()).await;
    let board = format!("/konsol/kris/{id}");
    let (tib, csrf) = signed_in(&app, Role::DutyOfficer).await;
    let (status, html) = post_form(
        &app,
        &tib,
        &format!("{board}/steg/aterkalla"),
        &[
            ("_csrf", &csrf),
            ("expected_revision", "1"),
            ("reason", "  "),
        ],
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("href=\"#reason\""), "{html}");
    let (status, html) = post_form(
        &app,
        &tib,
        &format!("{board}/steg/aterkalla"),
        &[
            ("_csrf", &csrf),
            ("expected_revision", "1"),
            ("reason", "Fel stadsdel angavs"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<strong>Återkallad.</strong>"), "{html}");
    assert!(html.contains("Skäl: Fel stadsdel angavs"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_reviews_a_side_by_side_diff_and_approves_in_the_console() {
    let app = TestApp::spawn().await;
    let api = |path: &str| format!("{}/api/v1{path}", app.api);
    submit_a_second_water_version(&app).await;
    let (approver, csrf) = signed_in(&app, Role::TemplateApprover).await;
    let queue = approver
        .get(format!("{}/konsol/godkann", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(queue.contains("/konsol/godkann/vattenlacka/2"), "{queue}");
    let review = approver
        .get(format!("{}/konsol/godkann/vattenlacka/2", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(review.contains("languages.sv.sms"), "{review}");
    assert!(review.contains("Hämta dricksvatten"), "{review}");
    assert!(review.contains("class=\"removed\""), "{review}");
    assert!(review.contains("Godkänn version 2"), "{review}");

    // Rejecting needs a reason.
    let (status, html) = post_form(
        &app,
        &approver,
        "/konsol/godkann/vattenlacka/2",
        &[("_csrf", &csrf), ("action", "reject"), ("reason", "")],
    )
    .await;
    assert_eq!(status, 422, "{html}");
    let (status, html) = post_form(
        &app,
        &approver,
        "/konsol/godkann/vattenlacka/2",
        &[("_csrf", &csrf), ("action", "approve")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Ingen mallversion väntar"), "{html}");
    let approved: serde_json::Value = app
        .http
        .get(api("/templates/vattenlacka/versions/2"))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(approved["state"], "approved", "{approved}");
    let (approver_name, _) = credentials(&app, Role::TemplateApprover);
    assert_eq!(approved["approved_by"], approver_name.as_str());

    // Someone without the role is told so.
    let (tib, _) = signed_in(&app, Role::DutyOfficer).await;
    let refused = tib
        .get(format!("{}/konsol/godkann", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_filters_verifies_exports_and_looks_up_in_the_console() {
    let app = TestApp::spawn().await;
    // Enough records for more than one page of 50.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = app.declare_ok(&common::water_declaration()).await;
        app.wait_delivered(&id, WAIT).await;
        ids.push(id);
    }
    let id = ids[0].clone();
    let (auditor, csrf) = signed_in(&app, Role::Auditor).await;
    let get = |path: String| {
        let auditor = auditor.clone();
        let base = app.api.clone();
        async move {
            let response = auditor.get(format!("{base}{path}")).send().await.unwrap();
            let status = response.status().as_u16();
            let media = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, media, response.text().await.unwrap())
        }
    };
    // The declaration reaches the log (the recorder may be a moment behind).
    let log = wait_until_async("the declaration in the log", WAIT, || async {
        let (_, _, html) = get("/konsol/revision?kind=CrisisDeclared".to_owned()).await;
        html.contains(&format!(">{id}<")).then_some(html)
    })
    .await;
    assert!(log.contains("CrisisDeclared"), "{log}");
    assert!(!log.contains("TemplateDrafted"), "the filter holds");
    // The whole log pages with a cursor.
    let (_, _, first) = get("/konsol/revision".to_owned()).await;
    assert!(
        first.contains("Nästa sida"),
        "more than one page of records"
    );
    let next = first
        .split("href=\"/konsol/revision?")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    let (status, _, second) = get(format!("/konsol/revision?{next}")).await;
    assert_eq!(status, 200);
    assert!(
        second.contains("<td>51</td>"),
        "the second page starts at 51: {next}\n{second}"
    );

    let (status, html) = post_form(
        &app,
        &auditor,
        "/konsol/revision/verifiera",
        &[("_csrf", &csrf), ("trust_key", "")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("poster kontrollerade"), "{html}");
    assert!(!html.contains("BRUTEN"), "{html}");
    assert!(html.contains("Ingen betrodd nyckel angavs"), "{html}");

    let (status, media, bundle) = get("/konsol/revision/export".to_owned()).await;
    assert_eq!(status, 200);
    assert!(media.starts_with("application/x-ndjson"), "{media}");
    assert!(bundle.lines().count() > 10);
    let (status, media, csv) = get("/konsol/revision/logg.csv".to_owned()).await;
    assert_eq!(status, 200);
    assert!(media.starts_with("text/csv"), "{media}");
    assert!(csv.contains(&id));
    let (status, _, report) = get(format!("/konsol/revision/rapport/{id}")).await;
    assert_eq!(status, 200);
    assert!(report.contains(&id), "{report}");

    // Was this person notified? Their number in the body, the answer on the page.
    let (status, html) = post_form(
        &app,
        &auditor,
        "/konsol/revision/sok-mottagare",
        &[("_csrf", &csrf), ("address", "070-174 06 05")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("{id}: SMS")), "{html}");
    assert!(!html.contains("174 06 05"), "the number is not echoed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_an_audience_and_uploads_members_with_refused_rows_named() {
    let app = TestApp::spawn().await;
    let (admin, csrf) = signed_in(&app, Role::Admin).await;
    let page = admin
        .get(format!("{}/konsol/admin", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("farsta-boende"), "{page}");
    assert!(page.contains("tjänsteman i beredskap"), "roles are listed");

    // A bad id is named and what was typed stays.
    let (status, html) = post_form(
        &app,
        &admin,
        "/konsol/admin/mottagare",
        &[
            ("_csrf", &csrf),
            ("id", "Fel Id!"),
            ("name", "Hässelby hemtjänst"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("value=\"Hässelby hemtjänst\""), "{html}");
    let (status, html) = post_form(
        &app,
        &admin,
        "/konsol/admin/mottagare",
        &[
            ("_csrf", &csrf),
            ("id", "hasselby-hemtjanst"),
            ("name", "Hässelby hemtjänst"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("hasselby-hemtjanst"), "{html}");

    let csv = "phone,email,language,name\n\
               070-174 06 50,,sv,Eva\n\
               not-a-phone,,sv,Bo\n\
               ,sara@hasselby.example,en,Sara\n";
    let form = reqwest::multipart::Form::new()
        .text("_csrf", csrf.clone())
        .part(
            "file",
            reqwest::multipart::Part::bytes(csv.as_bytes().to_vec())
                .file_name("medlemmar.csv")
                .mime_str("text/csv")
                .unwrap(),
        );
    let report = admin
        .post(format!(
            "{}/konsol/admin/mottagare/hasselby-hemtjanst/medlemmar",
            app.api
        ))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    let html = report.text().await.unwrap();
    assert!(html.contains("3 rader lästes"), "{html}");
    assert!(html.contains("2 personer finns nu i gruppen"), "{html}");
    assert!(
        html.contains("<td>3</td><td>phone</td>"),
        "line 3, phone: {html}"
    );
    assert!(!html.contains("not-a-phone"), "the value is not repeated");

    // Without the form token nothing is read.
    let forged = admin
        .post(format!(
            "{}/konsol/admin/mottagare/hasselby-hemtjanst/medlemmar",
            app.api
        ))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"phone\n0701740651\n".to_vec()).file_name("x.csv"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_cut_off_by_the_end_of_the_session_keeps_what_was_typed() {
    let app = TestApp::spawn().await;
    let (client, csrf) = signed_in(&app, Role::DutyOfficer).await;
    let form_html = client
        .get(format!("{}/konsol/ny-kris/vattenlacka", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = idempotency(&form_html);
    // The session ends (here by signing out in another tab) while the form is open.
    let (status, _) = post_form(&app, &client, "/konsol/logga-ut", &[("_csrf", &csrf)]).await;
    assert_eq!(status, 200);
    let cut_off = client
        .post(format!("{}/konsol/ny-kris/vattenlacka", app.api))
        .form(&water_form(&csrf, &key, "preview"))
        .send()
        .await
        .unwrap();
    assert_eq!(cut_off.status(), 401);
    let html = cut_off.text().await.unwrap();
    assert!(
        html.contains("Det du skrev i formuläret finns kvar"),
        "{html}"
    );
    let mut fields = hidden_fields(&html);
    assert!(
        fields
            .iter()
            .any(|(k, v)| k == "keep:var-omrade" && v == "Farsta"),
        "{fields:?}"
    );
    let (name, secret) = credentials(&app, Role::DutyOfficer);
    fields.push(("user".into(), name));
    fields.push(("password".into(), secret));
    let back = client
        .post(format!("{}/konsol/logga-in", app.api))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
    let html = back.text().await.unwrap();
    assert!(
        html.contains("id=\"var-omrade\" name=\"var-omrade\" value=\"Farsta\""),
        "{html}"
    );
    assert!(
        html.contains(&format!("name=\"idempotency\" value=\"{key}\"")),
        "{html}"
    );
    assert!(html.contains("value=\"farsta-boende\" checked"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_officer_updates_a_crisis_after_previewing_the_new_texts() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&common::water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;
    let (tib, csrf) = signed_in(&app, Role::DutyOfficer).await;
    let path = format!("/konsol/kris/{id}/uppdatera");
    let form = tib
        .get(format!("{}{path}", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        form.contains("name=\"var-omrade\" value=\"Farsta\""),
        "the values in force: {form}"
    );

    let mut fields: Vec<(String, String)> = vec![
        ("_csrf".into(), csrf.clone()),
        ("expected_revision".into(), "1".into()),
    ];
    for (name, value) in water_variables().as_object().unwrap() {
        fields.push((format!("var-{name}"), value.as_str().unwrap().to_owned()));
    }
    let send = |fields: Vec<(String, String)>| {
        let tib = tib.clone();
        let url = format!("{}{path}", app.api);
        async move {
            let r = tib.post(url).form(&fields).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Nothing changed: nothing to send.
    let mut same = fields.clone();
    same.push(("action".into(), "preview".into()));
    let (status, html) = send(same).await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("Ändra minst ett värde"), "{html}");

    let changed: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| {
            if k == "var-beraknat_klart" {
                (k.clone(), "i morgon kl. 08".to_owned())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let mut preview = changed.clone();
    preview.push(("action".into(), "preview".into()));
    let (status, html) = send(preview).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Beräknat klart i morgon kl. 08"), "{html}");
    assert!(html.contains("Skicka uppdateringen"), "{html}");

    let mut go = changed.clone();
    go.push(("action".into(), "send".into()));
    let (status, html) = send(go.clone()).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Uppdatering av"),
        "the board lists the update: {html}"
    );
    let crisis = app.status(&id).await;
    assert_eq!(crisis.revision, 2);
    assert_eq!(crisis.variables["beraknat_klart"], "i morgon kl. 08");
    // The same form again is stale now: refused, not applied twice.
    let (status, html) = send(go).await;
    assert_eq!(status, 422, "{html}");
    assert_eq!(app.status(&id).await.revision, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_drafts_previews_and_submits_a_version_in_the_console() {
    let app = TestApp::spawn().await;
    let (editor, csrf) = signed_in(&app, Role::TemplateEditor).await;
    let list = editor
        .get(format!("{}/konsol/mallar", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("/konsol/mallar/vattenlacka/ny"), "{list}");
    let form = editor
        .get(format!("{}/konsol/mallar/vattenlacka/ny", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // One field per text per language, lättläst and the closings included.
    for field in [
        "name=\"languages.sv.sms\"",
        "name=\"languages.en.banner_body\"",
        "name=\"languages.sv-x-lattlast.sms\"",
        "name=\"languages.sv.all_clear.sms\"",
        "name=\"languages.en.cancel.intranet_body\"",
    ] {
        assert!(form.contains(field), "{field}");
    }
    let new_sms = "Stockholms stad: Vattnet är avstängt i {{ omrade }}. Klart {{ beraknat_klart }}. \
                   Vatten finns vid {{ vattenpunkt }}. Mer info: stockholm.se/vatten";
    let (status, html) = post_form(
        &app,
        &editor,
        "/konsol/mallar/vattenlacka/ny",
        &[("_csrf", &csrf), ("languages.sv.sms", new_sms)],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Version 2 av vattenlacka"), "{html}");
    assert!(html.contains("Utkast"), "{html}");
    assert!(
        html.contains("Vatten finns vid"),
        "the new text, rendered: {html}"
    );
    assert!(html.contains("delar"), "segment counts: {html}");
    let (status, html) = post_form(
        &app,
        &editor,
        "/konsol/mallar/vattenlacka/2",
        &[("_csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Väntar på godkännande"), "{html}");
    // The draft changed the Swedish SMS and nothing else.
    let diff: serde_json::Value = app
        .http
        .get(format!(
            "{}/api/v1/templates/vattenlacka/versions/2/diff",
            app.api
        ))
        .bearer_auth(app.token(Role::TemplateApprover))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fields: Vec<&str> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["languages.sv.sms"], "{diff}");
}

/// A board page names its live stream with the status it shows; the stream then
/// sends nothing until that status changes, and then the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_board_opened_from_its_page_stays_quiet_until_something_changes() {
    use futures::StreamExt as _;
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&common::water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;
    let (operator, csrf) = signed_in(&app, Role::Operator).await;
    let page = board_page(&app, &operator, &id).await;
    let path = page
        .split("sse-connect=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&#38;", "&");
    assert!(path.contains("?seen="), "{path}");
    let mut stream = operator
        .get(format!("{}{path}", app.api))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    // The change: a confirmation. The first event the stream sends shows it,
    // so nothing (the unchanged board) was sent before it.
    let (status, _) = post_form(
        &app,
        &operator,
        &format!("/konsol/kris/{id}/bekrafta"),
        &[("_csrf", &csrf), ("channel", "sms")],
    )
    .await;
    assert_eq!(status, 200);
    let (name, _) = credentials(&app, Role::Operator);
    let mut event = String::new();
    while !event.contains("\n\n") {
        let chunk = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("an event after the change")
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&chunk).into_owned();
        if text.starts_with(':') {
            continue; // keep-alive
        }
        event.push_str(&text);
    }
    assert!(event.starts_with("event: board"), "{event}");
    assert!(
        event.contains(&format!("{name}, ")),
        "the first event is the change: {event}"
    );
}
