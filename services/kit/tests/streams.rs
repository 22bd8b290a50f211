//! Streams as kit creates them from proto's specs, against a real nats-server:
//! a dispatch job published twice is stored once (its id is the `Nats-Msg-Id`
//! and KRISBUD_DISPATCH has a duplicate window), and the audit chain's stream
//! refuses deleting a message and purging.

use std::time::Duration;

use async_nats::HeaderMap;
use krisbud_kit::bus::{Bus, Expect};
use krisbud_kit::{CancellationToken, nats};
use krisbud_proto::job::ChannelMessage;
use krisbud_proto::spec::{self, StreamSpec};
use krisbud_proto::template::IntranetMessage;
use krisbud_proto::{Channel, subject};
use krisbud_tests::NatsServer;
use krisbud_tests::service::dispatch_job;

/// A nats-server with `streams` provisioned by kit, and a bus on it.
async fn bus_with(streams: &[&StreamSpec]) -> (NatsServer, Bus) {
    krisbud_tests::init_test_log();
    let server = NatsServer::start();
    let client = nats::connect(&server.url(), "kit-test", None, &CancellationToken::new())
        .await
        .expect("connect to nats");
    let bus = Bus::new(client);
    nats::provision(&bus.js, streams, &[])
        .await
        .expect("provision the streams");
    // Provisioning is idempotent: every service does it at start-up.
    nats::provision(&bus.js, streams, &[])
        .await
        .expect("provision the streams again");
    (server, bus)
}

async fn messages(bus: &Bus, stream: &str) -> u64 {
    let stream = bus.js.get_stream(stream).await.unwrap();
    stream.get_info().await.unwrap().state.messages
}

fn intranet_job(crisis: &str) -> krisbud_proto::job::DispatchJob {
    let message = ChannelMessage::Intranet(IntranetMessage {
        title: "Vattenläcka i Farsta".into(),
        body: "Koka vattnet före användning.".into(),
    });
    dispatch_job(Channel::Intranet, crisis, 1, "sv", message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_job_published_twice_is_stored_once() {
    let (_nats, bus) = bus_with(&[&spec::DISPATCH]).await;
    let info = bus.js.get_stream(spec::DISPATCH.name).await.unwrap();
    let window = info.cached_info().config.duplicate_window;
    assert_eq!(window, spec::DISPATCH.duplicate_window);
    assert!(
        window >= Duration::from_secs(60),
        "a duplicate window: {window:?}"
    );

    let job = intranet_job("vattenlacka-farsta");
    let first = bus.dispatch(&job).await.expect("stored");
    // Planning the same job again, as a coordinator retrying after a crash does.
    let again = bus.dispatch(&job.clone()).await.expect("acknowledged");
    assert_eq!(
        again, first,
        "the duplicate is answered with the stored sequence"
    );
    assert_eq!(messages(&bus, spec::DISPATCH.name).await, 1);

    // The stored copy is the first, under the job id as Nats-Msg-Id.
    let stream = bus.js.get_stream(spec::DISPATCH.name).await.unwrap();
    let stored = stream.get_raw_message(first).await.unwrap();
    assert_eq!(
        stored
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned()),
        Some(job.job_id.clone())
    );

    // Another job (another batch) is a different id and is stored.
    let next = krisbud_proto::job::DispatchJob {
        job_id: format!("{}.r1.intranet.sv.1", job.crisis_id),
        ..job.clone()
    };
    let second = bus.dispatch(&next).await.expect("stored");
    assert_ne!(second, first);
    assert_eq!(messages(&bus, spec::DISPATCH.name).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_stream_refuses_delete_and_purge() {
    let (_nats, bus) = bus_with(&[&spec::AUDIT]).await;
    let mut stream = bus.js.get_stream(spec::AUDIT.name).await.unwrap();
    let config = &stream.info().await.unwrap().config;
    assert!(config.deny_delete, "{config:?}");
    assert!(config.deny_purge, "{config:?}");

    let seq = bus
        .publish(
            subject::AUDIT_LOG.to_owned(),
            "record-1",
            HeaderMap::new(),
            br#"{"seq":1}"#.to_vec(),
            Expect::LastSequence(0),
        )
        .await
        .expect("the audit stream stores a record");

    let deleted = stream.delete_message(seq).await;
    assert!(deleted.is_err(), "delete refused: {deleted:?}");
    let purged = stream.purge().await;
    assert!(purged.is_err(), "purge refused: {purged:?}");

    assert_eq!(messages(&bus, spec::AUDIT.name).await, 1);
    let kept = stream
        .get_raw_message(seq)
        .await
        .expect("the record is kept");
    assert_eq!(kept.payload.as_ref(), br#"{"seq":1}"#);
}
