//! channel-banner against a real nats-server, read over real HTTP: jobs become
//! banners in `GET /v1/banners` and on the SSE stream, outcomes are recorded, and
//! revisions and text are handled as the public contract says.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use krisbud_proto::event::{DeliveryReported, DeliveryState};
use krisbud_proto::job::{ChannelMessage, DispatchJob};
use krisbud_proto::model::Severity;
use krisbud_proto::publish::PublicBanner;
use krisbud_proto::template::{BannerLevel, BannerMessage};
use krisbud_proto::{Channel, Envelope, spec};
use krisbud_tests::service::dispatch_job;
use krisbud_tests::{NatsServer, TestService, wait_until_async};

const WAIT: Duration = Duration::from_secs(15);

/// One running channel-banner on its own nats-server.
struct App {
    service: TestService,
    base: String,
    http: reqwest::Client,
}

async fn spawn_app() -> App {
    spawn_on(Arc::new(NatsServer::start())).await
}

/// Another instance on the same nats-server, as a second replica would be.
async fn spawn_on(nats: Arc<NatsServer>) -> App {
    let config = krisbud_channel_banner::Config {
        listen: "127.0.0.1:0".into(),
        ..krisbud_channel_banner::Config::default()
    };
    let service = TestService::start_on(nats, |rt, shutdown| {
        krisbud_channel_banner::start(config, rt, shutdown)
    })
    .await;
    let base = format!("http://{}", service.addr().expect("a bound listener"));
    App {
        service,
        base,
        http: reqwest::Client::new(),
    }
}

impl App {
    async fn dispatch(&self, job: &DispatchJob) {
        self.service
            .rt
            .bus
            .dispatch(job)
            .await
            .expect("dispatch the job");
    }

    async fn banners(&self) -> Vec<PublicBanner> {
        self.http
            .get(format!("{}/v1/banners", self.base))
            .send()
            .await
            .expect("GET /v1/banners")
            .error_for_status()
            .expect("2xx")
            .json()
            .await
            .expect("a JSON list")
    }

    /// Polls `GET /v1/banners` until `check` holds for the list.
    async fn wait_for_banners(
        &self,
        what: &str,
        check: impl Fn(&[PublicBanner]) -> bool,
    ) -> Vec<PublicBanner> {
        wait_until_async(what, WAIT, || async {
            let list = self.banners().await;
            check(&list).then_some(list)
        })
        .await
    }

    /// The `DeliveryReported` of `job`, once appended.
    async fn outcome_of(&self, job: &DispatchJob) -> (Envelope, DeliveryReported) {
        let reported = self.service.outcome_of(job, WAIT).await;
        (reported.envelope, reported.event)
    }

    async fn stop(self) {
        self.service.stop().await;
    }
}

fn job(crisis: &str, revision: u32, language: &str, headline: &str) -> DispatchJob {
    let message = ChannelMessage::Banner(BannerMessage {
        headline: headline.into(),
        body: "Kranvattnet är avstängt i Kungsholmen.".into(),
        link_text: "Läs mer".into(),
        link_url: "https://start.stockholm/kris".into(),
        level: BannerLevel::Warning,
    });
    dispatch_job(Channel::Banner, crisis, revision, language, message)
}

#[tokio::test]
async fn a_dispatched_job_is_served_with_etag_cache_and_cors_and_its_outcome_recorded() {
    let app = spawn_app().await;
    let job = job("vattenlacka-1", 1, "sv", "Vattenläcka på Kungsholmen");
    app.dispatch(&job).await;

    let list = app
        .wait_for_banners("the banner in GET /v1/banners", |l| !l.is_empty())
        .await;
    assert_eq!(list.len(), 1);
    let banner = &list[0];
    assert_eq!(banner.crisis_id, "vattenlacka-1");
    assert_eq!(banner.revision, 1);
    assert_eq!(banner.language, "sv");
    assert_eq!(banner.headline, "Vattenläcka på Kungsholmen");
    assert_eq!(banner.severity, Severity::Severe);
    assert_eq!(banner.level, BannerLevel::Warning);

    let response = app
        .http
        .get(format!("{}/v1/banners", app.base))
        .header("Origin", "https://www.stockholm.se")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["cache-control"], "public, max-age=5");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["content-type"], "application/json");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong etag: {etag}"
    );

    let revalidated = app
        .http
        .get(format!("{}/v1/banners", app.base))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert!(revalidated.bytes().await.unwrap().is_empty());

    let stale = app
        .http
        .get(format!("{}/v1/banners", app.base))
        .header("If-None-Match", "\"somethingelse\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    let (envelope, reported) = app.outcome_of(&job).await;
    assert_eq!(envelope.causation_id.as_deref(), Some(job.job_id.as_str()));
    assert_eq!(envelope.actor.user, "service:channel-banner");
    assert_eq!(reported.provider, "banner");
    assert_eq!(reported.revision, 1);
    assert_eq!(reported.outcomes.len(), 1);
    assert_eq!(reported.outcomes[0].recipient, "banner");
    assert_eq!(reported.outcomes[0].state, DeliveryState::Delivered);

    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn the_stream_sends_the_list_on_connect_and_after_each_change() {
    let app = spawn_app().await;
    app.dispatch(&job("brand-1", 1, "sv", "Brand i Hjorthagen"))
        .await;
    app.wait_for_banners("the first banner", |l| l.len() == 1)
        .await;

    let response = app
        .http
        .get(format!("{}/v1/banners/stream", app.base))
        .send()
        .await
        .expect("GET /v1/banners/stream");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut sse = SseReader::new(response);

    let first = sse.next_list().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].crisis_id, "brand-1");

    app.dispatch(&job("storm-1", 1, "sv", "Storm över Stockholm"))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let updated = loop {
        let list = sse.next_list().await;
        if list.len() == 2 {
            break list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the second banner on the stream"
        );
    };
    let mut ids: Vec<&str> = updated.iter().map(|b| b.crisis_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["brand-1", "storm-1"]);
    app.stop().await;
}

#[tokio::test]
async fn an_older_revision_never_replaces_a_newer_one() {
    let app = spawn_app().await;
    let newer = job("ras-1", 2, "sv", "Ras vid Slussen: uppdatering");
    app.dispatch(&newer).await;
    app.wait_for_banners("revision 2", |l| l.iter().any(|b| b.revision == 2))
        .await;

    let older = job("ras-1", 1, "sv", "Ras vid Slussen");
    app.dispatch(&older).await;
    let (_, reported) = app.outcome_of(&older).await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Delivered);
    assert_eq!(
        reported.outcomes[0].reason.as_deref(),
        Some("superseded by revision 2")
    );
    let list = app.banners().await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].revision, 2);
    assert_eq!(list[0].headline, "Ras vid Slussen: uppdatering");

    let newest = job("ras-1", 3, "sv", "Ras vid Slussen: faran över");
    app.dispatch(&newest).await;
    let list = app
        .wait_for_banners("revision 3", |l| l.iter().any(|b| b.revision == 3))
        .await;
    assert_eq!(list.len(), 1, "one banner per crisis and language");
    app.stop().await;
}

#[tokio::test]
async fn a_cancellation_or_a_close_takes_the_banner_down_for_good() {
    use krisbud_kit::bus::Expect;
    use krisbud_proto::event::CrisisClosed;
    use krisbud_proto::job::MsgType;
    use krisbud_proto::{Actor, Event};

    let app = spawn_app().await;
    let shown =
        |crisis: &'static str| move |l: &[PublicBanner]| l.iter().any(|b| b.crisis_id == crisis);
    let gone =
        |crisis: &'static str| move |l: &[PublicBanner]| l.iter().all(|b| b.crisis_id != crisis);

    // A cancellation (revision 2) takes revision 1 down; a late copy of revision 1
    // does not bring it back.
    app.dispatch(&job("fel-1", 1, "sv", "Vattnet är avstängt"))
        .await;
    app.wait_for_banners("revision 1", shown("fel-1")).await;
    let mut cancel = job("fel-1", 2, "sv", "RÄTTELSE: Vattnet är avstängt");
    cancel.msg_type = MsgType::Cancel;
    app.dispatch(&cancel).await;
    let (_, reported) = app.outcome_of(&cancel).await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Delivered);
    app.wait_for_banners("the cancelled banner gone", gone("fel-1"))
        .await;
    let mut late = job("fel-1", 1, "sv", "Vattnet är avstängt");
    late.job_id = "fel-1.r1.banner.sv.late".into();
    app.dispatch(&late).await;
    let (_, reported) = app.outcome_of(&late).await;
    assert_eq!(
        reported.outcomes[0].reason.as_deref(),
        Some("superseded by revision 2")
    );
    assert!(gone("fel-1")(&app.banners().await));

    // A close takes down whatever revision is shown.
    app.dispatch(&job("ras-2", 3, "sv", "FARAN ÖVER: Ras vid Slussen"))
        .await;
    app.dispatch(&job("ras-2", 3, "en", "ALL CLEAR: Landslide at Slussen"))
        .await;
    app.wait_for_banners("both languages", |l| {
        l.iter().filter(|b| b.crisis_id == "ras-2").count() == 2
    })
    .await;
    let closed = Envelope::new(
        Actor::service("test"),
        Event::CrisisClosed(CrisisClosed {
            crisis_id: "ras-2".into(),
            revision: 3,
            languages: vec!["en".into(), "sv".into(), "sv-x-lattlast".into()],
        }),
    );
    app.service
        .rt
        .bus
        .append(&closed, Expect::Any)
        .await
        .unwrap();
    app.wait_for_banners("the closed crisis's banners gone", gone("ras-2"))
        .await;
    // A banner job still on its way when the crisis was closed stays down.
    let late = job(
        "ras-2",
        3,
        "sv-x-lattlast",
        "FARAN ÄR ÖVER: Ras vid Slussen",
    );
    app.dispatch(&late).await;
    let (_, reported) = app.outcome_of(&late).await;
    assert_eq!(
        reported.outcomes[0].reason.as_deref(),
        Some("superseded by revision 3")
    );
    assert!(gone("ras-2")(&app.banners().await));
    app.stop().await;
}

#[tokio::test]
async fn the_all_clear_is_cleared_its_display_time_after_it_was_issued() {
    use krisbud_proto::job::MsgType;
    use krisbud_proto::model::ResponseType;

    let app = spawn_app().await;
    // Issued 3595 s ago with the default 3600 s on display: shown for 5 s more.
    // The time is in the stored banner, so no timer of this instance matters.
    let issued = Utc::now() - TimeDelta::seconds(3595);
    let mut all_clear = job("klar-1", 3, "sv", "FARAN ÖVER: Ras vid Slussen");
    all_clear.cap.response_type = ResponseType::AllClear;
    all_clear.msg_type = MsgType::Update;
    all_clear.issued_at = Some(issued);
    app.dispatch(&all_clear).await;
    let list = app
        .wait_for_banners("the all-clear", |l| {
            l.iter().any(|b| b.crisis_id == "klar-1")
        })
        .await;
    assert_eq!(list[0].expires_at, Some(issued + TimeDelta::seconds(3600)));
    app.wait_for_banners("the all-clear cleared", |l| {
        l.iter().all(|b| b.crisis_id != "klar-1")
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn text_is_served_html_escaped_in_the_json_and_on_the_stream() {
    let app = spawn_app().await;
    let headline = "ÖVNING: <script>alert('x')</script> & <b>fet</b> på Åsögatan";
    let escaped = "ÖVNING: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;fet&lt;/b&gt; på Åsögatan";
    let mut hostile = job("xss-1", 1, "sv", headline);
    if let ChannelMessage::Banner(m) = &mut hostile.message {
        m.body = "<img src=x onerror=alert(1)> Kranvattnet är avstängt.".into();
        m.link_text = "<script>Läs mer</script>".into();
    }
    app.dispatch(&hostile).await;
    app.wait_for_banners("the banner", |l| !l.is_empty()).await;

    let body = app
        .http
        .get(format!("{}/v1/banners", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Pages insert the text into their HTML, so it comes HTML-escaped; the
    // Swedish letters and the exercise marker are left as they are.
    assert!(
        body.contains(&format!(r#""headline":"{escaped}""#)),
        "{body}"
    );
    assert!(!body.to_lowercase().contains("<script"), "{body}");
    assert!(!body.contains('<') && !body.contains('>'), "{body}");
    let list: Vec<PublicBanner> = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0].headline, escaped);
    assert_eq!(
        list[0].body,
        "&lt;img src=x onerror=alert(1)&gt; Kranvattnet är avstängt."
    );
    assert_eq!(list[0].link_text, "&lt;script&gt;Läs mer&lt;/script&gt;");
    assert_eq!(list[0].link_url, "https://start.stockholm/kris");

    // The stream serves the very same list.
    let response = app
        .http
        .get(format!("{}/v1/banners/stream", app.base))
        .send()
        .await
        .expect("GET /v1/banners/stream");
    let streamed = SseReader::new(response).next_list().await;
    assert_eq!(streamed, list);
    app.stop().await;
}

#[tokio::test]
async fn expired_banners_and_other_languages_are_left_out() {
    let app = spawn_app().await;
    let mut expired = job("gammal-1", 1, "sv", "Gammal");
    expired.expires_at = Some(Utc::now() - TimeDelta::minutes(1));
    app.dispatch(&expired).await;
    app.outcome_of(&expired).await;
    app.dispatch(&job("ny-1", 1, "sv", "Ny")).await;
    app.dispatch(&job("ny-1", 1, "en", "New")).await;

    let list = app
        .wait_for_banners("both languages of ny-1", |l| l.len() == 2)
        .await;
    assert!(list.iter().all(|b| b.crisis_id == "ny-1"), "{list:?}");

    let english: Vec<PublicBanner> = app
        .http
        .get(format!("{}/v1/banners?lang=en", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(english.len(), 1);
    assert_eq!(english[0].headline, "New");
    app.stop().await;
}

#[tokio::test]
async fn a_job_without_a_banner_message_is_recorded_as_failed() {
    let app = spawn_app().await;
    let mut wrong = job("fel-1", 1, "sv", "x");
    wrong.message = ChannelMessage::Sms(krisbud_proto::template::SmsMessage {
        text: "x".into(),
        encoding: "gsm7".into(),
        segments: 1,
    });
    app.dispatch(&wrong).await;
    let (_, reported) = app.outcome_of(&wrong).await;
    assert_eq!(reported.outcomes[0].state, DeliveryState::Failed);
    assert!(reported.outcomes[0].reason.is_some());

    // The poison job is gone from the work queue, and the channel still works.
    let good = job("ok-1", 1, "sv", "Fungerar");
    app.dispatch(&good).await;
    app.wait_for_banners("the next banner", |l| l.len() == 1)
        .await;
    let dispatch = app
        .service
        .rt
        .bus
        .js
        .get_stream(spec::DISPATCH.name)
        .await
        .unwrap();
    let pending = wait_until_async("an empty banner work queue", WAIT, || {
        let mut dispatch = dispatch.clone();
        async move {
            let info = dispatch.info().await.ok()?;
            (info.state.messages == 0).then_some(info.state.messages)
        }
    })
    .await;
    assert_eq!(pending, 0);
    app.stop().await;
}

#[tokio::test]
async fn every_instance_serves_what_any_instance_stored() {
    let first = spawn_app().await;
    let second = spawn_on(first.service.nats.clone()).await;
    let stream = second
        .http
        .get(format!("{}/v1/banners/stream", second.base))
        .send()
        .await
        .expect("GET /v1/banners/stream");
    let mut sse = SseReader::new(stream);
    assert!(sse.next_list().await.is_empty());

    let jobs: Vec<DispatchJob> = (1..=4)
        .map(|i| job(&format!("kris-{i}"), 1, "sv", &format!("Kris {i}")))
        .collect();
    for job in &jobs {
        first.dispatch(job).await;
    }
    // Both consume from one durable consumer, so each stored some of the jobs;
    // both serve all of them.
    for app in [&first, &second] {
        app.wait_for_banners("all four banners", |l| l.len() == 4)
            .await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while sse.next_list().await.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for all four banners on the second instance's stream"
        );
    }
    let etag = |app: &App| {
        let request = app.http.get(format!("{}/v1/banners", app.base)).send();
        async move {
            request.await.unwrap().headers()["etag"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        etag(&first).await,
        etag(&second).await,
        "the same list gives the same etag everywhere"
    );
    first.stop().await;
    second.stop().await;
}

/// Reads `text/event-stream` from a streaming response, one event at a time.
struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next `banners` event's list (keep-alive comments are skipped).
    async fn next_list(&mut self) -> Vec<PublicBanner> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let bytes: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(bytes).expect("utf-8 events");
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if name.as_deref() == Some("banners") {
                    return serde_json::from_str(&data).expect("the data is the JSON list");
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an SSE event within the deadline")
                .expect("the stream stays readable")
                .expect("the stream stays open");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}
