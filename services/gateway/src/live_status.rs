//! `GET /api/v1/crises/{id}/events`: a crisis's status as server-sent events.
//!
//! The first event is the status as it is; then one `status` event per change of
//! the crisis read model, which the coordinator keeps in the `KRISBUD_CRISES`
//! bucket. The gateway watches that key (read-only), so a change reaches every
//! open stream at once without polling. The caller's role and the crisis are
//! checked first through the coordinator, like `GET /crises/{id}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use krisbud_proto::command::GetCrisis;
use krisbud_proto::status::{CrisisProjection, CrisisStatus};
use krisbud_proto::{Actor, Problem, spec, subject};

use crate::auth::{Caller, CrisisReaders};
use crate::problem::ApiError;
use crate::state::AppState;

/// The SSE event name.
pub const EVENT_NAME: &str = "status";

/// `GET /api/v1/crises/{id}/events`
pub async fn events(
    State(app): State<AppState>,
    caller: Caller<CrisisReaders>,
    Path(crisis_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let statuses = watch(&app, caller.actor(), crisis_id).await?;
    let events = statuses.map(|status| {
        #[allow(clippy::expect_used, reason = "a status is strings and numbers")]
        let data = serde_json::to_string(&status).expect("status serializes");
        Ok(Event::default().event(EVENT_NAME).data(data))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The live streams each user holds open (the API's event streams and the
/// console's boards together), so that one person or one leaked token cannot
/// hold thousands of connections and watches.
#[derive(Clone)]
pub struct StreamSlots {
    most: usize,
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

/// One open stream of a user; its slot frees when the stream ends.
pub struct StreamSlot {
    slots: StreamSlots,
    user: String,
}

impl StreamSlots {
    /// At most `most` streams per user.
    pub fn new(most: usize) -> StreamSlots {
        StreamSlots {
            most,
            open: Arc::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more stream of `user`, or 429 when they hold the most.
    pub fn take(&self, user: &str) -> Result<StreamSlot, ApiError> {
        let mut open = self.open();
        let held = open.entry(user.to_owned()).or_default();
        if *held >= self.most {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too many streams",
                format!(
                    "{user} already follows {} live streams, the most one user may; close one",
                    self.most
                ),
            ));
        }
        *held += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        if let Some(held) = open.get_mut(&self.user) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// The status of crisis `crisis_id` as `actor` may see it, then once per change
/// until shutdown: the API's event stream and the console's live board. The
/// caller's right to see the crisis is checked per stream (through the
/// coordinator); the changes come from one shared watch per crisis
/// ([`Watches`]), however many streams follow it.
pub(crate) async fn watch(
    app: &AppState,
    actor: Actor,
    crisis_id: String,
) -> Result<impl Stream<Item = CrisisStatus> + Send + use<>, ApiError> {
    if !subject::is_token(&crisis_id) {
        return Err(ApiError::from(Problem::not_found(format!(
            "there is no crisis `{crisis_id}`"
        ))));
    }
    // Held by the stream below: the user's slot frees when the stream ends.
    let slot = app.streams.take(&actor.user)?;
    // Follow first, then read: a change between the two is not missed.
    let mut changes = app.watches.follow(app, &crisis_id).await?;
    let first: CrisisStatus = app
        .command(
            subject::cmd::GET_CRISIS,
            actor,
            None,
            GetCrisis {
                crisis_id: crisis_id.clone(),
            },
        )
        .await?;
    let shutdown = app.shutdown.clone();
    Ok(async_stream::stream! {
        let _slot = slot;
        let mut last = first.clone();
        yield first;
        loop {
            let latest = changes.borrow_and_update().clone();
            if let Some(status) = latest
                && status != last
            {
                last = status.clone();
                yield status;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
        }
    })
}

/// The newest status of a crisis, shared by every stream that follows it.
type Latest = tokio::sync::watch::Receiver<Option<CrisisStatus>>;

/// One watch of the KRISBUD_CRISES bucket per followed crisis, shared by all
/// its streams, and ended when the last of them is gone: a thousand open boards
/// of one crisis cost one NATS watch, not a thousand.
#[derive(Clone, Default)]
pub struct Watches {
    by_crisis: Arc<Mutex<HashMap<String, Latest>>>,
}

/// How often a watch with nobody following it looks whether it can end.
const IDLE_CHECK: Duration = Duration::from_secs(5);

impl Watches {
    /// The shared newest status of `crisis_id`, starting a watch if none runs.
    async fn follow(&self, app: &AppState, crisis_id: &str) -> Result<Latest, ApiError> {
        if let Some(latest) = self.lock().get(crisis_id)
            && latest.has_changed().is_ok()
        {
            return Ok(latest.clone());
        }
        let store = async_nats::jetstream::new(app.nats.clone())
            .get_key_value(spec::CRISES.name)
            .await
            .map_err(|e| unavailable(&e))?;
        // With its history: the current value first, so nothing before the
        // watch began is missed.
        let mut entries = store
            .watch_with_history(crisis_id)
            .await
            .map_err(|e| unavailable(&e))?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        {
            let mut by_crisis = self.lock();
            if let Some(latest) = by_crisis.get(crisis_id)
                && latest.has_changed().is_ok()
            {
                // Another request started one meanwhile: use it.
                return Ok(latest.clone());
            }
            by_crisis.insert(crisis_id.to_owned(), rx.clone());
        }
        let (watches, id, shutdown) = (self.clone(), crisis_id.to_owned(), app.shutdown.clone());
        let mine = rx.clone();
        tokio::spawn(async move {
            let mut idle = tokio::time::interval(IDLE_CHECK);
            idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = idle.tick() => {
                        // The map and this task hold one receiver each.
                        if tx.receiver_count() <= 2 {
                            break;
                        }
                    }
                    entry = entries.next() => {
                        let Some(Ok(entry)) = entry else { break };
                        if entry.operation != kv::Operation::Put {
                            continue;
                        }
                        if let Ok(projection) = serde_json::from_slice::<CrisisProjection>(&entry.value) {
                            tx.send_replace(Some(projection.status));
                        }
                    }
                }
            }
            let mut by_crisis = watches.lock();
            if by_crisis.get(&id).is_some_and(|r| r.same_channel(&mine)) {
                by_crisis.remove(&id);
            }
        });
        Ok(rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Latest>> {
        self.by_crisis
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "cannot watch the crisis status");
    ApiError::from(Problem::unavailable(
        "the crisis status cannot be followed right now; try again",
    ))
}
