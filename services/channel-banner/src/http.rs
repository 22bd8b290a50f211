//! The public HTTP side: `GET /v1/banners` (JSON with ETag and a short public
//! cache) and `GET /v1/banners/stream` (SSE), open to any origin because other
//! sites embed the banner. Both serve the banner text HTML-escaped (see the crate
//! docs).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use futures::Stream;
use krisbud_kit::CancellationToken;
use serde::Deserialize;
use tower_http::cors::{Any, CorsLayer};

use std::collections::BTreeMap;

use krisbud_proto::AlertStatus;
use krisbud_proto::publish::PublicBanner;

use crate::live::{self, Banners};

/// How long browsers and proxies may keep the list: short, so an all-clear shows
/// within seconds, yet long enough that a city's traffic mostly hits caches.
const CACHE_CONTROL: &str = "public, max-age=5";

/// The SSE event name carrying the full list.
const EVENT_NAME: &str = "banners";

#[derive(Clone)]
struct AppState {
    banners: Banners,
    shutdown: CancellationToken,
}

/// `?lang=sv`: only banners in that language. `?site=exercise`: the exercise
/// site's banners (exercises and tests) instead of the public ones; an exercise
/// never shows on the public site.
#[derive(Debug, Default, Deserialize)]
struct Filter {
    lang: Option<String>,
    #[serde(default)]
    site: Site,
}

/// Which site a banner list is for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Site {
    /// The city's public site: actual crises only.
    #[default]
    Public,
    /// The exercise site: exercises and tests only.
    Exercise,
}

impl Site {
    fn shows(self, status: AlertStatus) -> bool {
        (status == AlertStatus::Actual) == (self == Site::Public)
    }

    /// The banners of `snapshot` this site shows.
    fn select(self, snapshot: &live::Snapshot) -> BTreeMap<String, PublicBanner> {
        snapshot
            .iter()
            .filter(|(_, b)| self.shows(b.status))
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect()
    }
}

/// The public routes; SSE streams end when `shutdown` is cancelled so a graceful
/// shutdown is not held up by open connections.
pub fn router(banners: Banners, shutdown: CancellationToken) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([header::IF_NONE_MATCH, header::CACHE_CONTROL])
        .expose_headers([header::ETAG]);
    Router::new()
        .route("/v1/banners", get(list))
        .route("/v1/banners/stream", get(stream))
        .layer(cors)
        .with_state(AppState { banners, shutdown })
}

async fn list(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Response {
    let snapshot = filter.site.select(&state.banners.current());
    let rendered = live::render(&snapshot, Utc::now(), filter.lang.as_deref());
    #[allow(clippy::expect_used, reason = "an etag is quoted hex")]
    let etag = HeaderValue::from_str(&rendered.etag).expect("a hex etag is a valid header");
    let common = [
        (header::ETAG, etag),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
    ];
    if matches_etag(&headers, &rendered.etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        rendered.body,
    )
        .into_response()
}

/// Whether `If-None-Match` names `etag` (or `*`). Weak comparison, as RFC 9110
/// prescribes for `If-None-Match`: a `W/` prefix does not matter.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

async fn stream(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = state.banners.subscribe();
    let shutdown = state.shutdown;
    let events = async_stream::stream! {
        let mut last_sent: Option<String> = None;
        loop {
            let snapshot = filter.site.select(&rx.borrow_and_update().clone());
            let now = Utc::now();
            let rendered = live::render(&snapshot, now, filter.lang.as_deref());
            if last_sent.as_deref() != Some(rendered.etag.as_str()) {
                let data = String::from_utf8_lossy(&rendered.body).into_owned();
                yield Ok(Event::default().event(EVENT_NAME).id(rendered.etag.clone()).data(data));
                last_sent = Some(rendered.etag);
            }
            // A banner that expires changes the list without any write to the
            // bucket, so wake up then as well.
            let until_expiry = rendered
                .next_expiry
                .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(10));
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
                () = sleep_or_forever(until_expiry) => {}
            }
        }
    };
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
