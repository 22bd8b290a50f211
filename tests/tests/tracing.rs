//! One trace from the gateway request through the coordinator to every channel,
//! checked with an in-memory span exporter. Its own test binary, because the
//! tracing subscriber is global.

mod common;

use std::time::Duration;

use common::{TestApp, water_declaration};
use krisbud_kit::TelemetryConfig;
use krisbud_proto::Role;
use krisbud_tests::wait_until;
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn one_trace_spans_gateway_coordinator_and_every_channel() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _telemetry = krisbud_kit::telemetry::init_with(
        "krisbud-test",
        &TelemetryConfig {
            log: "info".into(),
            ..TelemetryConfig::default()
        },
        provider,
    );

    let app = TestApp::spawn().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .http
        .post(format!("{}/api/v1/crises", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&water_declaration())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<serde_json::Value>().await.unwrap()["crisis_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_delivered(&id, Duration::from_secs(10)).await;

    let trace_id = TraceId::from_hex(trace).unwrap();
    let wanted = [
        "coordinator-planner",
        "channel-sms",
        "channel-email",
        "channel-banner",
        "channel-intranet",
    ];
    let whole_trace = |trace_id: TraceId| {
        let spans = exporter.get_finished_spans().unwrap();
        let in_trace: Vec<_> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        let declare = in_trace
            .iter()
            .any(|s| attribute(s, "subject").as_deref() == Some("krisbud.cmd.crisis.declare"));
        let consumers: Vec<String> = in_trace
            .iter()
            .filter_map(|s| attribute(s, "consumer"))
            .collect();
        declare && wanted.iter().all(|w| consumers.iter().any(|c| c == w))
    };
    wait_until(
        "every service's span in the caller's trace",
        Duration::from_secs(10),
        || whole_trace(trace_id).then_some(()),
    );

    // A caller that sends no trace context: the gateway's request span starts
    // the trace, and every service's span joins it.
    let response = app
        .http
        .post(format!("{}/api/v1/crises", app.api))
        .bearer_auth(app.token(Role::DutyOfficer))
        .json(&water_declaration())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<serde_json::Value>().await.unwrap()["crisis_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_delivered(&id, Duration::from_secs(10)).await;
    wait_until(
        "every service's span in the trace the gateway started",
        Duration::from_secs(10),
        || {
            let spans = exporter.get_finished_spans().unwrap();
            let roots: Vec<TraceId> = spans
                .iter()
                .filter(|s| {
                    s.name == "POST /api/v1/crises"
                        && s.parent_span_id == opentelemetry::trace::SpanId::INVALID
                })
                .map(|s| s.span_context.trace_id())
                .collect();
            assert!(
                roots.len() <= 1,
                "one request without a caller's trace: {roots:?}"
            );
            let root = *roots.first()?;
            assert_ne!(root, trace_id);
            whole_trace(root).then_some(())
        },
    );
}
