//! Console helpers: a browser-like client signed in as a demo user, the form
//! tokens of a page, and the forms the console tests post.

use krisbud_proto::Role;

use super::{TestApp, water_variables};

/// A browser-like client: keeps cookies, follows redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// The value of the first hidden `_csrf` field of `html`.
pub fn csrf(html: &str) -> String {
    let marker = "name=\"_csrf\" value=\"";
    let start = html.find(marker).expect("the page has a CSRF field") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The hidden `idempotency` field of `html`.
pub fn idempotency(html: &str) -> String {
    let marker = "name=\"idempotency\" value=\"";
    let start = html.find(marker).expect("the form has a key") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The demo user holding `role`, and their secret.
pub fn credentials(app: &TestApp, role: Role) -> (String, String) {
    let (name, _) = app
        .tokens
        .roles
        .iter()
        .find(|(_, roles)| roles.contains(&role))
        .unwrap();
    (name.clone(), app.tokens.tokens[name].clone())
}

/// Signs in as the demo user holding `role`; returns the client and the CSRF token.
pub async fn signed_in(app: &TestApp, role: Role) -> (reqwest::Client, String) {
    let client = browser();
    let page = client
        .get(format!("{}/konsol", app.api))
        .send()
        .await
        .unwrap();
    assert!(
        page.url().path().ends_with("/konsol/logga-in"),
        "{}",
        page.url()
    );
    let html = page.text().await.unwrap();
    let (name, secret) = credentials(app, role);
    let home = client
        .post(format!("{}/konsol/logga-in", app.api))
        .form(&[("_csrf", csrf(&html)), ("user", name), ("password", secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    assert_eq!(home.url().path(), "/konsol");
    let html = home.text().await.unwrap();
    (client, csrf(&html))
}

/// The declaration form's fields for the water outage in Farsta.
pub fn water_form(csrf: &str, key: &str, action: &str) -> Vec<(String, String)> {
    let mut form = vec![
        ("_csrf".to_owned(), csrf.to_owned()),
        ("idempotency".to_owned(), key.to_owned()),
        ("audience".to_owned(), "farsta-boende".to_owned()),
        ("status".to_owned(), "actual".to_owned()),
        ("action".to_owned(), action.to_owned()),
    ];
    for channel in ["sms", "email", "banner", "intranet"] {
        form.push(("channel".to_owned(), channel.to_owned()));
    }
    for (name, value) in water_variables().as_object().unwrap() {
        form.push((format!("var-{name}"), value.as_str().unwrap().to_owned()));
    }
    form
}

/// The editor drafts version 2 of vattenlacka with a new Swedish SMS ("Hämta
/// dricksvatten"), and submits it.
pub async fn submit_a_second_water_version(app: &TestApp) {
    let api = |path: &str| format!("{}/api/v1{path}", app.api);
    let mut wording: serde_json::Value = app
        .http
        .get(api("/templates/vattenlacka/versions/1"))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old_sms = wording["languages"]["sv"]["sms"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_sms = old_sms.replace("Hämta vatten", "Hämta dricksvatten");
    assert_ne!(old_sms, new_sms, "the demo text names where to fetch water");
    wording["languages"]["sv"]["sms"] = new_sms.clone().into();
    let drafted = app
        .http
        .post(api("/templates/vattenlacka/versions"))
        .bearer_auth(app.token(Role::TemplateEditor))
        .json(&wording)
        .send()
        .await
        .unwrap();
    assert_eq!(drafted.status(), 201);
    let submitted = app
        .http
        .post(api("/templates/vattenlacka/versions/2/submit"))
        .bearer_auth(app.token(Role::TemplateEditor))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 200);
}

/// Posts `form` to `path` of the console with `client`; returns status and page.
pub async fn post_form(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let response = client
        .post(format!("{}{path}", app.api))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The board page of crisis `id` as `client` sees it.
pub async fn board_page(app: &TestApp, client: &reqwest::Client, id: &str) -> String {
    client
        .get(format!("{}/konsol/kris/{id}", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The hidden fields of `html` as (name, value), in order.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .filter_map(|rest| {
            let (name, rest) = rest.split_once('"')?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}
