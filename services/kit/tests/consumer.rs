//! The one consumer loop against a real nats-server: one test per ack rule of
//! DESIGN.md. Ack after the effect is durable, Nak with delay on a transient
//! failure, Term a message that can never succeed (a poison message blocks
//! nothing), and Progress while long work runs.
//!
//! The stream is a work queue, as KRISBUD_DISPATCH is: an acknowledged or
//! terminated message is removed from it, so "never delivered again" is the
//! server's own state, not an absence observed for a while.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer;
use futures::StreamExt as _;
use krisbud_kit::bus::{Bus, Expect};
use krisbud_kit::consumer::{Ack, ConsumerSpec, Delivery};
use krisbud_kit::{CancellationToken, nats};
use krisbud_proto::spec::{Retention, StreamSpec};
use krisbud_tests::{NatsServer, wait_until_async};

/// A work queue of its own, so the tests depend on no krisbud stream.
const WORK: StreamSpec = StreamSpec {
    name: "KIT_TEST_WORK",
    subjects: &["kittest.work.>"],
    retention: Retention::WorkQueue,
    deny_delete: false,
    deny_purge: false,
    duplicate_window: Duration::from_secs(60),
    description: "consumer loop tests",
};

const DURABLE: &str = "kit-test";
const WAIT: Duration = Duration::from_secs(10);

/// One call of the handler: the payload, its delivery count, and when it began.
#[derive(Debug, Clone)]
struct Seen {
    payload: String,
    delivered: i64,
    at: Instant,
}

/// The handler's calls, in order.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Seen>>>);

impl Calls {
    fn record(&self, d: &Delivery) {
        self.0.lock().unwrap().push(Seen {
            payload: String::from_utf8_lossy(&d.payload).into_owned(),
            delivered: d.delivered,
            at: Instant::now(),
        });
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    fn of(&self, payload: &str) -> Vec<Seen> {
        self.all()
            .into_iter()
            .filter(|s| s.payload == payload)
            .collect()
    }
}

/// A nats-server with the work queue provisioned by kit, and a running consumer
/// loop with `spec` and `handler`.
struct Fixture {
    _nats: NatsServer,
    bus: Bus,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Fixture {
    async fn start<F, Fut>(spec: ConsumerSpec, handler: F) -> Fixture
    where
        F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Ack> + Send + 'static,
    {
        krisbud_tests::init_test_log();
        let server = NatsServer::start();
        let shutdown = CancellationToken::new();
        let client = nats::connect(&server.url(), "kit-test", None, &shutdown)
            .await
            .expect("connect to nats");
        let bus = Bus::new(client);
        nats::provision(&bus.js, &[&WORK], &[])
            .await
            .expect("provision the work queue");
        let task = krisbud_kit::consumer::spawn(&bus.js, spec, shutdown.clone(), handler)
            .await
            .expect("the consumer starts");
        Fixture {
            _nats: server,
            bus,
            shutdown,
            task: Some(task),
        }
    }

    async fn publish(&self, payload: &str) -> u64 {
        self.bus
            .publish(
                format!("kittest.work.{payload}"),
                payload,
                HeaderMap::new(),
                payload.as_bytes().to_vec(),
                Expect::Any,
            )
            .await
            .expect("the work queue stores the message")
    }

    /// Messages still in the work queue: neither acknowledged nor terminated.
    async fn stored(&self) -> u64 {
        let stream = self.bus.js.get_stream(WORK.name).await.unwrap();
        stream.get_info().await.unwrap().state.messages
    }

    async fn wait_stored(&self, messages: u64, what: &str) {
        wait_until_async(what, WAIT, || async {
            (self.stored().await == messages).then_some(())
        })
        .await;
    }

    async fn consumer_info(&self) -> consumer::Info {
        let stream = self.bus.js.get_stream(WORK.name).await.unwrap();
        stream.consumer_info(DURABLE).await.unwrap()
    }

    /// Stops the loop as a shutdown does and checks that it ends cleanly.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the consumer stops")
            .expect("the consumer task does not panic")
            .expect("the consumer stops cleanly");
    }
}

fn spec(ack_wait: Duration) -> ConsumerSpec {
    ConsumerSpec {
        ack_wait,
        concurrency: 4,
        ..ConsumerSpec::new(WORK.name, DURABLE, "kittest.work.>")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_acks_and_the_message_is_not_delivered_again() {
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |d: Delivery| {
            calls.record(&d);
            async { Ack::Done }
        }
    };
    let app = Fixture::start(spec(Duration::from_secs(1)), handler).await;
    let seq = app.publish("ok").await;

    app.wait_stored(0, "the acknowledged message to leave the work queue")
        .await;
    let info = app.consumer_info().await;
    assert_eq!(
        info.ack_floor.stream_sequence, seq,
        "acknowledged: {info:?}"
    );
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    let seen = calls.all();
    assert_eq!(seen.len(), 1, "handled once: {seen:?}");
    assert_eq!(seen[0].delivered, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_naks_with_delay_then_the_redelivery_succeeds() {
    const DELAY: Duration = Duration::from_millis(500);
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |d: Delivery| {
            calls.record(&d);
            let first = d.delivered == 1;
            async move { if first { Ack::Retry(DELAY) } else { Ack::Done } }
        }
    };
    // An ack wait far longer than the test may take: a redelivery within WAIT can
    // only come from the Nak, not from the ack wait running out.
    let app = Fixture::start(spec(Duration::from_secs(60)), handler).await;
    app.publish("flaky").await;

    app.wait_stored(0, "the retried message to succeed and leave the work queue")
        .await;
    let seen = calls.all();
    assert_eq!(
        seen.iter().map(|s| s.delivered).collect::<Vec<_>>(),
        [1, 2],
        "failed once, then succeeded: {seen:?}"
    );
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= DELAY,
        "redelivered after {gap:?}, before the Nak's delay"
    );
    assert!(gap < Duration::from_secs(60), "redelivered by the Nak");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_terms_and_a_poison_message_blocks_nothing() {
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |d: Delivery| {
            calls.record(&d);
            let poison = d.subject.ends_with(".poison");
            async move {
                if poison {
                    Ack::Reject("can never succeed".into())
                } else {
                    Ack::Done
                }
            }
        }
    };
    // One message at a time, as a strictly ordered consumer runs, and an ack wait
    // longer than the test: the message after the poison one is handled only
    // because the poison one was terminated.
    let spec = ConsumerSpec {
        max_ack_pending: 1,
        ..spec(Duration::from_secs(60))
    };
    let app = Fixture::start(spec, handler).await;
    let mut terminated = app
        .bus
        .client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{}.{DURABLE}",
            WORK.name
        ))
        .await
        .unwrap();
    app.bus.client.flush().await.unwrap();
    let poison_seq = app.publish("poison").await;
    app.publish("good").await;

    let advisory = tokio::time::timeout(WAIT, terminated.next())
        .await
        .expect("the server reports the message terminated")
        .expect("the advisory subscription is open");
    let advisory: serde_json::Value = serde_json::from_slice(&advisory.payload).unwrap();
    assert_eq!(advisory["stream_seq"], poison_seq, "{advisory}");
    app.wait_stored(0, "both messages to leave the work queue")
        .await;
    assert_eq!(calls.of("poison").len(), 1, "terminated, never redelivered");
    assert_eq!(
        calls.of("good").len(),
        1,
        "handled after the poison message"
    );
    let info = app.consumer_info().await;
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_work_sends_progress_and_is_not_redelivered_past_the_ack_wait() {
    const ACK_WAIT: Duration = Duration::from_secs(1);
    const WORK_TIME: Duration = Duration::from_millis(3_500);
    let calls = Calls::default();
    let finished = Arc::new(Mutex::new(None::<Instant>));
    let handler = {
        let (calls, finished) = (calls.clone(), finished.clone());
        move |d: Delivery| {
            calls.record(&d);
            let finished = finished.clone();
            async move {
                // The long work itself, three and a half ack waits.
                tokio::time::sleep(WORK_TIME).await;
                *finished.lock().unwrap() = Some(Instant::now());
                Ack::Done
            }
        }
    };
    // Free slots to spare: a redelivery while the work runs would be handled at
    // once and show up as a second call.
    let app = Fixture::start(spec(ACK_WAIT), handler).await;
    app.publish("long").await;

    app.wait_stored(0, "the long work to finish and be acknowledged")
        .await;
    let seen = calls.all();
    assert_eq!(
        seen.len(),
        1,
        "delivered once despite the ack wait: {seen:?}"
    );
    assert_eq!(seen[0].delivered, 1);
    let took = finished.lock().unwrap().expect("the work finished") - seen[0].at;
    assert!(
        took >= 3 * ACK_WAIT,
        "the work outlasted the ack wait ({took:?})"
    );
    let info = app.consumer_info().await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    app.stop().await;
}
