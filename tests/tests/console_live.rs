//! The console's live board under a fan-out: repainted at most twice a second
//! however fast the status changes, over server-sent events.

mod common;

use std::time::Duration;

use common::console::signed_in;
use common::{TestApp, water_variables};
use krisbud_proto::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_board_repaints_at_most_twice_a_second_during_a_fan_out() {
    use futures::StreamExt as _;
    const PEOPLE: usize = 3_000;
    let elks = krisbud_tests::ElksSimulator::start("elks-user", "elks-secret").await;
    // Slow enough that the fan-out takes a few seconds and changes the status
    // many times a second.
    elks.set_delay(Duration::from_millis(5));
    let app = TestApp::spawn_with(&format!(
        r#"
[sms]
provider = "46elks"
elks_base_url = "{}"
elks_username = "elks-user"
elks_password = "elks-secret"
parallel_requests = 8
"#,
        elks.base_url()
    ))
    .await;
    assert_eq!(
        app.create_audience("many", "Många i Farsta").await.status(),
        201
    );
    let mut csv = String::from("phone\n");
    for i in 0..PEOPLE {
        csv.push_str(&format!("+4670{i:07}\n"));
    }
    let (status, report) = app.import_csv("many", Role::Admin, csv).await;
    assert_eq!(status, 200, "{report}");
    let id = app
        .declare_ok(&serde_json::json!({
            "template": "vattenlacka",
            "variables": water_variables(),
            "audiences": ["many"],
            "channels": ["sms"]
        }))
        .await;
    let (client, _) = signed_in(&app, Role::DutyOfficer).await;
    let watchers = || async {
        let js = async_nats::jetstream::new(app.nats_as("provision").await);
        let mut stream = js.get_stream("KV_KRISBUD_CRISES").await.unwrap();
        stream.info().await.unwrap().state.consumer_count
    };
    let before = watchers().await;
    let response = client
        .get(format!("{}/konsol/kris/{id}/live", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // More boards of the same crisis share the one watch of the bucket.
    let mut others = Vec::new();
    for _ in 0..3 {
        let other = client
            .get(format!("{}/konsol/kris/{id}/live", app.api))
            .send()
            .await
            .unwrap();
        let mut body = other.bytes_stream();
        assert!(body.next().await.is_some(), "a first repaint");
        others.push(body);
    }
    assert_eq!(watchers().await, before + 1, "one watch for four boards");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut arrivals = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut done = false;
    while !done {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the board reaches done within 60 s")
            .expect("the stream stays open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if event.starts_with(':') {
                continue; // keep-alive
            }
            assert!(event.starts_with("event: board\n"), "{event}");
            // When the server sent it (the event's id, ms since the epoch).
            let sent: i64 = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|id| id.trim().parse().ok())
                .expect("a repaint names when it was sent");
            arrivals.push(sent);
            done = event.contains("1 av 1 kanaler klara");
            assert!(
                event.contains("board-summary"),
                "the live region comes along"
            );
        }
    }
    assert!(arrivals.len() >= 2, "{} repaints", arrivals.len());
    // No two repaints sent closer than the 500 ms pace (the server's clock, so
    // a slow network cannot bunch them up here).
    let closest = arrivals
        .windows(2)
        .map(|w| Duration::from_millis((w[1] - w[0]).max(0) as u64))
        .min()
        .unwrap_or(Duration::from_secs(1));
    assert!(
        closest >= Duration::from_millis(490),
        "two repaints {closest:?} apart over {} repaints",
        arrivals.len()
    );
    eprintln!("{} repaints, the closest {closest:?} apart", arrivals.len());
}
