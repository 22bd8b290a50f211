//! The bus goes away and comes back: while nats-server is down the system says it
//! is not ready (503 on /readyz, naming the connections), and once it is back the
//! work goes on without anyone restarting a service.

mod common;

use std::time::Duration;

use common::{TestApp, water_declaration};
use krisbud_tests::wait_until_async;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}/readyz", app.api))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_503_while_the_bus_is_down_and_work_resumes_after() {
    let mut app = TestApp::spawn().await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nats:coordinator"], true, "{body}");

    app.nats.stop();
    let body = wait_until_async("readyz to say 503", WAIT, || async {
        let (status, body) = readyz(&app).await;
        (status == 503).then_some(body)
    })
    .await;
    let down = body
        .as_object()
        .unwrap()
        .iter()
        .any(|(name, ready)| name.starts_with("nats:") && *ready == false);
    assert!(down, "a connection is named as down: {body}");

    app.nats.restart();
    wait_until_async("readyz to say 200 again", WAIT, || async {
        (readyz(&app).await.0 == 200).then_some(())
    })
    .await;
    let id = app.declare_ok(&water_declaration()).await;
    app.wait_delivered(&id, WAIT).await;
}
