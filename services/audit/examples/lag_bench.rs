//! Benchmark of audit lag: a real nats-server, one audit service, and a burst of
//! N events (default 100,000 `DeliveryReported`, as a large fan-out appends them)
//! published as fast as JetStream takes them. Prints how long the burst took (the
//! baseline: the event rate the bus itself sustains here), how far the chain lags
//! behind at the end of the burst, and how long the recorder needs to catch up.
//!
//! ```text
//! cargo run --release -p krisbud-audit --example lag_bench -- --events 100000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use krisbud_kit::Common;
use krisbud_proto::event::{DeliveryReported, DeliveryState, RecipientOutcome};
use krisbud_proto::{Actor, Channel, Envelope, Event, spec};
use krisbud_tests::{NatsServer, TestService};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

fn outcome(i: u64) -> Envelope {
    Envelope::with_id(
        format!("lag.r1.sms.sv.{i}.outcome"),
        Actor::service("channel-sms"),
        Event::DeliveryReported(DeliveryReported {
            crisis_id: "lag".into(),
            revision: 1,
            channel: Channel::Sms,
            job_id: format!("lag.r1.sms.sv.{i}"),
            provider: "46elks".into(),
            outcomes: vec![RecipientOutcome {
                recipient: format!("rcp:{i:032x}"),
                state: DeliveryState::Delivered,
                provider_ref: None,
                reason: None,
                possible_duplicate: false,
            }],
            retries: 0,
        }),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = arg("--events", 100_000);
    let nats = Arc::new(NatsServer::start());
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("audit.key");
    krisbud_audit::signing::create_key_file(&key)?;
    let config = krisbud_audit::Config {
        signing_key_file: Some(key),
        ..Default::default()
    };
    let audit = TestService::start_on(nats.clone(), move |rt, shutdown| {
        krisbud_audit::start(config, rt, shutdown)
    })
    .await;
    let rt = krisbud_tests::service::runtime(&nats, &Common::default()).await;
    let js = rt.bus.js.clone();
    let mut audit_stream = js.get_stream(spec::AUDIT.name).await?;
    let before = audit_stream.info().await?.state.last_sequence;

    // The burst: every event published, up to 512 awaiting their acks at once.
    let started = Instant::now();
    let mut acks = Vec::with_capacity(512);
    for i in 0..events {
        let envelope = outcome(i);
        let ack = js
            .publish(envelope.subject(), serde_json::to_vec(&envelope)?.into())
            .await?;
        acks.push(ack);
        if acks.len() == 512 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    let burst = started.elapsed();
    let recorded_at_end = audit_stream.info().await?.state.last_sequence - before;
    let lag_records = events - recorded_at_end.min(events);

    // Catching up: poll until the chain holds a record of every event.
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let recorded = audit_stream.info().await?.state.last_sequence - before;
        if recorded >= events {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the recorder did not catch up within an hour"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = started.elapsed();
    let catch_up = caught_up - burst;
    audit.stop().await;

    println!(
        "burst:     {events} events appended in {burst:.2?} ({:.0} events/s): the bus's own rate, the baseline",
        events as f64 / burst.as_secs_f64()
    );
    println!(
        "lag:       at the end of the burst {recorded_at_end} were recorded, {lag_records} behind; \
         the last event was recorded {catch_up:.2?} after the burst ended"
    );
    println!(
        "recording: {:.0} records/s over the whole run",
        events as f64 / caught_up.as_secs_f64()
    );
    Ok(())
}
