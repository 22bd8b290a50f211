//! Console sign-in through a real OpenID Connect provider (oidc-provider-mock,
//! from PyPI, started on a free port with nonces required): the authorization
//! code flow with PKCE, `state` and `nonce`, roles from the `groups` claim, deny
//! by default, a `state` good for one try in the browser that began it, group
//! removal taking effect at the next sign-in, and signing out at the provider.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestApp;
use reqwest::header::LOCATION;
use serde_json::json;

/// oidc-provider-mock on its own port, stopped when dropped.
struct Provider {
    child: Child,
    url: String,
}

impl Provider {
    async fn start() -> Provider {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "oidc_provider_mock", "--port", &port.to_string()])
            .args(["--host", "127.0.0.1", "--require-nonce", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("oidc-provider-mock runs (pip install oidc-provider-mock)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        krisbud_tests::wait_until_async(
            "the provider answers discovery",
            Duration::from_secs(30),
            || async {
                http.get(format!("{url}/.well-known/openid-configuration"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            },
        )
        .await;
        Provider { child, url }
    }

    /// Gives the provider's user `sub` these groups.
    async fn set_groups(&self, sub: &str, groups: &[&str]) {
        let answer = reqwest::Client::new()
            .put(format!("{}/users/{sub}", self.url))
            .json(&json!({ "preferred_username": sub, "groups": groups }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 204, "{}", answer.text().await.unwrap());
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The console sessions the audit chain holds, as `(change, actor, payload)`,
/// once `at_least` are recorded.
async fn sessions(app: &TestApp, at_least: usize) -> Vec<(String, String, serde_json::Value)> {
    let http = reqwest::Client::new();
    krisbud_tests::wait_until_async(
        "the console sessions in the audit chain",
        Duration::from_secs(20),
        || async {
            let page: serde_json::Value = http
                .get(format!("{}/api/v1/audit", app.api))
                .query(&[("kind", "ConsoleSession")])
                .bearer_auth(app.token(krisbud_proto::Role::Auditor))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let found: Vec<(String, String, serde_json::Value)> = page["records"]
                .as_array()?
                .iter()
                .map(|r| {
                    let envelope = &r["event"];
                    let payload = envelope["payload"].clone();
                    (
                        payload["change"].as_str().unwrap_or_default().to_owned(),
                        envelope["actor"]["user"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        payload,
                    )
                })
                .collect();
            (found.len() >= at_least).then_some(found)
        },
    )
    .await
}

/// A browser that keeps cookies and lets the test follow each redirect.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("a redirect, got {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn system(provider: &Provider) -> TestApp {
    TestApp::spawn_with(&format!(
        r#"
[gateway.oidc]
issuer_url = "{issuer}"
client_id = "krisbud-konsol"
client_secret = "konsolens-hemlighet"
redirect_url = "http://127.0.0.1:1/konsol/oidc/tillbaka"
roles_claim = "groups"
[gateway.oidc.roles]
krisbud-tib = ["duty_officer"]
krisbud-revision = ["auditor"]
krisbud-operator = ["operator"]
[gateway.oidc.channels]
krisbud-sms = ["sms"]
"#,
        issuer = provider.url
    ))
    .await
}

/// Begins a sign-in in `browser` and signs `sub` in at the provider: the
/// callback path and query the provider sends the browser back with.
async fn at_the_provider(app: &TestApp, browser: &reqwest::Client, sub: &str) -> String {
    let begin = browser
        .get(format!("{}/konsol/logga-in/oidc", app.api))
        .send()
        .await
        .unwrap();
    let authorize = location(&begin);
    let query: Vec<(String, String)> = reqwest::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("response_type").as_deref(), Some("code"));
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("code_challenge").is_some_and(|c| c.len() >= 43));
    assert!(param("state").is_some_and(|s| s.len() >= 16));
    assert!(param("nonce").is_some_and(|n| n.len() >= 16));
    assert!(param("scope").is_some_and(|s| s.split(' ').any(|w| w == "openid")));
    // The person signs in at the provider's own form.
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(&authorize)
        .form(&[("sub", sub)])
        .send()
        .await
        .unwrap();
    let back = reqwest::Url::parse(&location(&answer)).unwrap();
    assert_eq!(back.path(), "/konsol/oidc/tillbaka");
    format!("{}?{}", back.path(), back.query().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_officer_signs_in_through_the_city_s_identity_provider() {
    let provider = Provider::start().await;
    let mut app = system(&provider).await;
    provider
        .set_groups("maria.tib", &["krisbud-tib", "alla-anstallda"])
        .await;

    // The sign-in page offers the city's sign-in.
    let page = reqwest::get(format!("{}/konsol/logga-in", app.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Logga in med stadens inloggning"), "{page}");

    let maria = browser();
    let callback = at_the_provider(&app, &maria, "maria.tib").await;
    let signed_in = maria
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&signed_in), "/konsol");
    let home = maria
        .get(format!("{}/konsol", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(html.contains("maria.tib"), "{html}");
    // The role the group gives: the duty officer may begin a declaration, and
    // has no auditor's pages.
    let new_crisis = maria
        .get(format!("{}/konsol/ny-kris", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(new_crisis.status(), 200);
    let audit = maria
        .get(format!("{}/konsol/revision", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 403);

    // The same callback again (a replayed state) signs nobody in.
    let replay = browser()
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert!(
        replay
            .text()
            .await
            .unwrap()
            .contains("Inloggningen gick ut")
    );

    // Signing out of the console signs out at the provider too.
    let csrf = {
        let marker = "name=\"_csrf\" value=\"";
        let start = html.find(marker).unwrap() + marker.len();
        html[start..].split('"').next().unwrap().to_owned()
    };
    let out = maria
        .post(format!("{}/konsol/logga-ut", app.api))
        .form(&[("_csrf", csrf)])
        .send()
        .await
        .unwrap();
    let end_session = location(&out);
    assert!(
        end_session.starts_with(&format!("{}/oauth2/end_session?", provider.url)),
        "{end_session}"
    );
    assert!(end_session.contains("id_token_hint="), "{end_session}");
    let after = maria
        .get(format!("{}/konsol", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&after), "/konsol/logga-in");

    // The chain holds the sign-in with the provider's subject and the roles,
    // the replay's refusal, and the sign-out; no token or code anywhere.
    let recorded = sessions(&app, 3).await;
    let changes: Vec<(&str, &str)> = recorded
        .iter()
        .map(|(c, u, _)| (c.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("signed_in", "maria.tib"),
            ("sign_in_refused", "-"),
            ("signed_out", "maria.tib")
        ],
        "{recorded:#?}"
    );
    let signed_in = &recorded[0].2;
    assert_eq!(signed_in["method"], "oidc");
    assert_eq!(signed_in["idp_subject"], "maria.tib");
    assert_eq!(signed_in["roles"], json!(["duty_officer"]));
    let text = serde_json::to_string(&recorded).unwrap();
    assert!(!text.contains("code=") && !text.contains("eyJ"), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mapped_group_no_role_and_a_callback_belongs_to_its_browser() {
    let provider = Provider::start().await;
    let mut app = system(&provider).await;

    // Signed in at the provider, but no group maps to a role: deny by default.
    provider
        .set_groups("kalle.praktikant", &["alla-anstallda"])
        .await;
    let browser_a = browser();
    let callback = at_the_provider(&app, &browser_a, "kalle.praktikant").await;
    let refused = browser_a
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Du har ingen roll i krisbud")
    );
    let home = browser_a
        .get(format!("{}/konsol", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&home), "/konsol/logga-in");

    // A code the provider never issued fails the exchange: nobody is signed in.
    let browser_f = browser();
    let callback = at_the_provider(&app, &browser_f, "kalle.praktikant").await;
    let forged = callback
        .split('&')
        .map(|p| {
            if p.starts_with("code=") || p.contains("?code=") {
                let (head, _) = p.split_once("code=").unwrap();
                format!("{head}code=forged-code")
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    assert!(forged.contains("code=forged-code"), "{forged}");
    let refused = browser_f
        .get(format!("{}{forged}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Inloggningen misslyckades")
    );

    // A callback opened in another browser than the one that began it (login
    // CSRF) is refused, and spends the state.
    provider
        .set_groups("revisor.karin", &["krisbud-revision"])
        .await;
    let callback = at_the_provider(&app, &browser(), "revisor.karin").await;
    let elsewhere = browser()
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 400);

    // The auditor signs in; once the group is removed at the provider, the next
    // sign-in has no role.
    let browser_b = browser();
    let callback = at_the_provider(&app, &browser_b, "revisor.karin").await;
    let ok = browser_b
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&ok), "/konsol");
    let audit = browser_b
        .get(format!("{}/konsol/revision", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 200);
    provider.set_groups("revisor.karin", &[]).await;
    let browser_c = browser();
    let callback = at_the_provider(&app, &browser_c, "revisor.karin").await;
    let removed = browser_c
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 403);

    // An operator's channels come from their groups: one in the SMS group is
    // offered only the SMS to confirm; one in no channel group is no operator.
    let id = app.declare_ok(&common::water_declaration()).await;
    app.wait_delivered(&id, Duration::from_secs(30)).await;
    provider
        .set_groups("ali.sms", &["krisbud-operator", "krisbud-sms"])
        .await;
    let ali = browser();
    let callback = at_the_provider(&app, &ali, "ali.sms").await;
    let signed_in = ali
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&signed_in), "/konsol");
    let board = ali
        .get(format!("{}/konsol/kris/{id}", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(board.contains("name=\"channel\" value=\"sms\""), "{board}");
    assert!(
        !board.contains("name=\"channel\" value=\"banner\""),
        "{board}"
    );
    provider.set_groups("olle.op", &["krisbud-operator"]).await;
    let olle = browser();
    let callback = at_the_provider(&app, &olle, "olle.op").await;
    let refused = olle
        .get(format!("{}{callback}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // Each refusal is in the chain, the role-less ones with name and subject.
    let recorded = sessions(&app, 7).await;
    let no_role: Vec<&serde_json::Value> = recorded
        .iter()
        .filter(|(c, _, p)| {
            c == "sign_in_refused" && p["reason"] == "no group of the person maps to a role"
        })
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(no_role.len(), 3, "{recorded:#?}");
    assert!(no_role.iter().any(|p| p["idp_subject"] == "revisor.karin"));
    app.stop().await;
}

/// The whole sign-in in Debian's chromium, with the gateway on a port known
/// beforehand so the provider sends the browser back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_through_the_provider_s_own_pages() {
    let provider = Provider::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut app = TestApp::spawn_listening(
        &format!("127.0.0.1:{port}"),
        &format!(
            r#"
[gateway.oidc]
issuer_url = "{issuer}"
client_id = "krisbud-konsol"
client_secret = "konsolens-hemlighet"
redirect_url = "http://127.0.0.1:{port}/konsol/oidc/tillbaka"
[gateway.oidc.roles]
krisbud-tib = ["duty_officer"]
"#,
            issuer = provider.url
        ),
    )
    .await;
    provider.set_groups("maria.tib", &["krisbud-tib"]).await;
    provider
        .set_groups("kalle.praktikant", &["alla-anstallda"])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oidc.json");
    std::fs::write(
        &config,
        json!({ "base": app.api, "duty": "maria.tib", "nobody": "kalle.praktikant" }).to_string(),
    )
    .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/oidc.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&config)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the browser run ends within 2 minutes")
        .expect("node runs (tests/browser: npm ci)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser run failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("oidc ok"), "{stdout}");
    app.stop().await;
}
