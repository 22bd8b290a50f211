//! The public banner channel of krisbud: consumes banner dispatch jobs, keeps the
//! active banners in the `KRISBUD_BANNERS` bucket, and serves them without login as
//! JSON (`GET /v1/banners`) and as a live SSE stream (`GET /v1/banners/stream`).
//!
//! Every instance serves from an in-memory copy of the bucket that a KV watch keeps
//! current, so a banner stored by any instance reaches the readers of every instance,
//! and reading the banner costs NATS nothing however many web pages embed it.
//!
//! The banner is an HTML context: the pages that show it insert its text into their
//! HTML. So `headline`, `body` and `link_text` are served HTML-escaped (`&`, `<`,
//! `>`, `"` and `'` as character references), in the JSON and on the stream alike:
//! a page inserts them as they are and a value such as `<script>` shows as the
//! characters it is. Nothing else changes (å, ä, ö and the ÖVNING marker stay as
//! written), and the bucket keeps the text unescaped. `link_url` is a URL and is
//! served as it is, for the page to set as a link's `href`.

// A service never panics on what it is handed: no unchecked indexing, no unwrap
// or expect outside tests (an expect that cannot fail says why, where it is).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

mod http;
mod job;
mod live;
mod store;

use std::time::Duration;

use anyhow::Context as _;
use krisbud_kit::consumer::{self, ConsumerSpec};
use krisbud_kit::shutdown::GRACE;
use krisbud_kit::{CancellationToken, Runtime, Started};
use krisbud_proto::spec;
use serde::Deserialize;

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-banner";
/// Durable consumer name shared by every channel-banner instance.
pub const DURABLE: &str = SERVICE;
/// Durable consumer of the crisis events, for closes.
pub const CLOSE_DURABLE: &str = "channel-banner-close";

/// How long start-up waits for the first complete copy of the bucket.
const INITIAL_LOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// The `[banner]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the public listener (`/v1/banners`, `/v1/banners/stream`,
    /// `/healthz`, `/readyz`); port 0 picks a free port.
    pub listen: String,
    /// Seconds the all-clear banner is shown after the all-clear was issued before
    /// it is cleared. Default 3600.
    pub all_clear_display_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8081".into(),
            all_clear_display_secs: 3600,
        }
    }
}

/// Starts the banner channel: the live copy of the bucket, the job consumer and
/// the public listener. Returns once the bucket is loaded, the consumer exists and
/// the listener is bound; `Started::addr` is the listener's address.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let ready = rt.health.component(SERVICE);
    // Everything started here stops with `stop`; should start-up fail half-way,
    // the guard stops what already runs.
    let stop = shutdown.child_token();
    let stop_on_error = stop.clone().drop_guard();
    let kv = rt
        .bus
        .js
        .get_key_value(spec::BANNERS.name)
        .await
        .with_context(|| format!("bucket {} is missing", spec::BANNERS.name))?;

    let (banners, loaded) = live::Banners::watch(kv.clone(), stop.clone());
    let watcher = loaded.task;
    tokio::time::timeout(INITIAL_LOAD_TIMEOUT, loaded.ready)
        .await
        .context("the banner bucket did not load in time")?
        .context("the banner watch stopped before the bucket was loaded")?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "banner listener");

    let consumer_spec = ConsumerSpec::provisioned(DURABLE)?;
    let handler = job::Handler::new(
        rt.bus.clone(),
        kv.clone(),
        Duration::from_secs(config.all_clear_display_secs),
    );
    // The durable consumer exists once `spawn` returns, so jobs published after
    // `start` returns are surely consumed.
    let consuming = consumer::spawn(&rt.bus.js, consumer_spec, stop.clone(), move |delivery| {
        let handler = handler.clone();
        async move { handler.handle(delivery).await }
    })
    .await?;
    // A closed crisis's banners come down whatever revision they show.
    let closing = consumer::spawn(
        &rt.bus.js,
        ConsumerSpec::provisioned(CLOSE_DURABLE)?,
        stop.clone(),
        move |delivery| {
            let kv = kv.clone();
            async move { job::on_crisis_event(&kv, delivery).await }
        },
    )
    .await?;
    let serving = {
        let app = http::router(banners, stop.clone()).merge(rt.health.router());
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };
    ready.set(true);
    let stop = stop_on_error.disarm();

    let task = tokio::spawn(async move {
        stop.cancelled().await;
        ready.set(false);
        let aborts = [
            closing.abort_handle(),
            consuming.abort_handle(),
            serving.abort_handle(),
            watcher.abort_handle(),
        ];
        let drained = tokio::time::timeout(GRACE, async {
            let _ = closing.await;
            let consumed = consuming.await;
            let served = serving.await;
            let _ = watcher.await;
            (consumed, served)
        })
        .await;
        match drained {
            Ok((consumed, served)) => {
                consumed.context("the banner consumer panicked")??;
                served
                    .context("the banner listener panicked")?
                    .context("the banner listener failed")?;
                Ok(())
            }
            Err(_) => {
                tracing::warn!(grace = ?GRACE, "banner channel did not stop within the grace period; aborting");
                aborts.iter().for_each(tokio::task::AbortHandle::abort);
                Ok(())
            }
        }
    });
    Ok(Started {
        addr: Some(addr),
        task,
    })
}
