//! Operators confirm only the channels they are assigned: the coordinator refuses
//! the others whichever door the confirmation comes through, and the console
//! shows an operator only their own channels to confirm.

mod common;

use common::console::{browser, csrf};
use common::{TestApp, water_declaration};
use krisbud_proto::Role;

const BANNER_TOKEN: &str = "banner-operator-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_confirms_only_the_channels_assigned_to_them() {
    let app = TestApp::spawn_with(&format!(
        r#"
[[gateway.users]]
name = "operator.banner"
roles = ["operator"]
channels = ["banner"]
token_sha256 = "{}"
"#,
        krisbud_gateway::token_sha256(BANNER_TOKEN)
    ))
    .await;
    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, std::time::Duration::from_secs(30))
        .await;

    // Through the API: SMS is not theirs, whoever checks it.
    let refused = app.confirm(Some(BANNER_TOKEN), &id, "sms", "").await;
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("operator.banner confirms banner and not sms"),
        "{body}"
    );
    let confirmed = app.confirm(Some(BANNER_TOKEN), &id, "banner", "syns").await;
    assert_eq!(confirmed.status(), 200);
    let status = app.status(&id).await;
    assert!(
        status.channels[&krisbud_proto::Channel::Sms]
            .confirmations
            .is_empty()
    );
    // An operator assigned no channels (the demo's) confirms any.
    let any = app
        .confirm(Some(&app.token(Role::Operator)), &id, "sms", "")
        .await;
    assert_eq!(any.status(), 200);

    // In the console: only their channels wait for them, and the board offers
    // only those; a forged form for another channel is refused all the same.
    let id2 = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id2, std::time::Duration::from_secs(30))
        .await;
    let client = browser();
    let page = client
        .get(format!("{}/konsol/logga-in", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let home = client
        .post(format!("{}/konsol/logga-in", app.api))
        .form(&[
            ("_csrf", csrf(&page)),
            ("user", "operator.banner".to_owned()),
            ("password", BANNER_TOKEN.to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(home.url().path(), "/konsol");
    let list = client
        .get(format!("{}/konsol/att-bekrafta", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains(&id2), "{list}");
    assert!(!list.contains("SMS"), "{list}");
    let board = client
        .get(format!("{}/konsol/kris/{id2}", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        board.contains("name=\"channel\" value=\"banner\""),
        "{board}"
    );
    assert!(!board.contains("name=\"channel\" value=\"sms\""), "{board}");
    let forged = client
        .post(format!("{}/konsol/kris/{id2}/bekrafta", app.api))
        .form(&[
            ("_csrf", csrf(&board)),
            ("channel", "sms".to_owned()),
            ("note", String::new()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let status = app.status(&id2).await;
    assert!(
        status.channels[&krisbud_proto::Channel::Sms]
            .confirmations
            .is_empty()
    );
}
