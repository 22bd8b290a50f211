//! `GET /api/v1/crises/{id}/events`: a crisis's status as server-sent events.
//!
//! The first event is the status as it is; then one `status` event per change of
//! the crisis read model, which the coordinator keeps in the `KRISBUD_CRISES`
//! bucket. The gateway watches that key (read-only), so a change reaches every
//! open stream at once without polling. The caller's role and the crisis are
//! checked first through the coordinator, like `GET /crises/{id}`.

use std::convert::Infallible;
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

/// The status of crisis `crisis_id` as `actor` may see it, then once per change
/// until shutdown: the API's event stream and the console's live board.
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
    // Watch first, then read: a change between the two is not missed.
    let store = async_nats::jetstream::new(app.nats.clone())
        .get_key_value(spec::CRISES.name)
        .await
        .map_err(|e| unavailable(&e))?;
    let mut changes = store.watch(&crisis_id).await.map_err(|e| unavailable(&e))?;
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
        let mut last = first.clone();
        yield first;
        loop {
            let entry = tokio::select! {
                () = shutdown.cancelled() => break,
                entry = changes.next() => entry,
            };
            let Some(Ok(entry)) = entry else { break };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(projection) = serde_json::from_slice::<CrisisProjection>(&entry.value) else {
                continue;
            };
            if projection.status != last {
                last = projection.status.clone();
                yield projection.status;
            }
        }
    })
}

fn unavailable(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "cannot watch the crisis status");
    ApiError::from(Problem::unavailable(
        "the crisis status cannot be followed right now; try again",
    ))
}
