//! Live status: `GET /api/v1/crises/{id}/events` streams the crisis's status as
//! server-sent events, from the status as it is to every later change.

mod common;

use std::time::Duration;

use common::{TestApp, water_declaration};
use futures::StreamExt;
use krisbud_proto::Role;
use krisbud_proto::status::CrisisStatus;

/// Reads `status` events off an SSE body until `done` holds for one.
async fn read_until(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    seen: &mut Vec<CrisisStatus>,
    done: impl Fn(&CrisisStatus) -> bool,
) -> CrisisStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut event = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if event.as_deref() == Some("status") {
                let status: CrisisStatus = serde_json::from_str(&data).unwrap();
                seen.push(status.clone());
                if done(&status) {
                    return status;
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("no matching status event; seen {seen:#?}"))
            .expect("the stream stays open")
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_streams_from_declaration_to_confirmation() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&water_declaration()).await;
    let response = app
        .http
        .get(format!("{}/api/v1/crises/{id}/events", app.api))
        .bearer_auth(app.token(Role::Operator))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut seen = Vec::new();

    // The first event is the status as it is; then the counts move until every
    // channel is out.
    let first = read_until(&mut body, &mut buffer, &mut seen, |_| true).await;
    assert_eq!(first.crisis_id, id);
    let out = read_until(&mut body, &mut buffer, &mut seen, |s| {
        s.channels.values().all(|c| c.planned && c.pending == 0)
    })
    .await;
    assert_eq!(out.channels.len(), 4);

    // An operator's confirmation arrives as an event, with who confirmed.
    let confirmed = app
        .confirm(
            Some(&app.token(Role::Operator)),
            &id,
            "banner",
            "syns på stockholm.se",
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let after = read_until(&mut body, &mut buffer, &mut seen, |s| {
        !s.channels[&krisbud_proto::Channel::Banner]
            .confirmations
            .is_empty()
    })
    .await;
    assert_eq!(
        after.channels[&krisbud_proto::Channel::Banner].confirmations[0].by,
        "operator.ali"
    );
    // No event repeats the one before it.
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1]);
    }

    // The same rules as GET /crises/{id}: a token is needed, the crisis must exist.
    let anonymous = app
        .http
        .get(format!("{}/api/v1/crises/{id}/events", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let unknown = app
        .http
        .get(format!("{}/api/v1/crises/20261126-ffffff/events", app.api))
        .bearer_auth(app.token(Role::Operator))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// One user holds at most 20 live streams (API and console together); the 21st
/// gets 429 naming the limit, and a closed stream frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_twenty_live_streams() {
    let app = TestApp::spawn().await;
    let id = app.declare_ok(&water_declaration()).await;
    let open = || {
        app.http
            .get(format!("{}/api/v1/crises/{id}/events", app.api))
            .bearer_auth(app.token(Role::Operator))
            .send()
    };
    let mut streams = Vec::new();
    for n in 0..20 {
        let response = open().await.unwrap();
        assert_eq!(response.status(), 200, "stream {n}");
        streams.push(response);
    }
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body = refused.text().await.unwrap();
    assert!(body.contains("already follows 20 live streams"), "{body}");
    // Another user is not held back by this one.
    let other = app
        .http
        .get(format!("{}/api/v1/crises/{id}/events", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    drop(streams.pop());
    krisbud_tests::wait_until_async(
        "a closed stream's slot",
        Duration::from_secs(20),
        || async {
            let response = open().await.ok()?;
            (response.status() == 200).then_some(response)
        },
    )
    .await;
}
