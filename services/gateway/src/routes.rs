//! The routes of `/api/v1`: each checks the caller's role, turns the HTTP request
//! into a command for the owning service, and its answer into HTTP.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use krisbud_proto::api::ConfirmBody;
use krisbud_proto::command::{
    CancelCrisis, ConfirmChannel, CrisisStep, DeclareCrisis, Declared, ExpectRevision, GetCrisis,
    ListCrises, Revised, UpdateCrisis,
};
use krisbud_proto::status::CrisisStatus;
use krisbud_proto::{Channel, Problem, subject};

use crate::auth::{Caller, CrisisReaders, DutyOfficers, Operators};
use crate::body::{JsonBody, OptionalJsonBody};
use crate::problem::ApiError;
use crate::state::AppState;

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// What an `Idempotency-Key` may hold, as the OpenAPI document states it.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// `POST /api/v1/crises`
pub async fn declare(
    State(app): State<AppState>,
    caller: Caller<DutyOfficers>,
    headers: HeaderMap,
    JsonBody(declaration): JsonBody<DeclareCrisis>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let declared: Declared = app
        .command(subject::cmd::DECLARE, caller.actor(), key, declaration)
        .await?;
    let location = HeaderValue::from_str(&format!("/api/v1/crises/{}", declared.crisis_id))
        .map_err(|_| {
            ApiError::from(Problem::new(
                502,
                "bad gateway",
                "the coordinator answered with a crisis id that cannot be part of a URL",
            ))
        })?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(declared),
    )
        .into_response())
}

/// `GET /api/v1/crises`
pub async fn list_crises(
    State(app): State<AppState>,
    caller: Caller<CrisisReaders>,
) -> Result<Json<Vec<CrisisStatus>>, ApiError> {
    let crises = app
        .command(
            subject::cmd::LIST_CRISES,
            caller.actor(),
            None,
            ListCrises {},
        )
        .await?;
    Ok(Json(crises))
}

/// `GET /api/v1/crises/{id}`
pub async fn get_crisis(
    State(app): State<AppState>,
    caller: Caller<CrisisReaders>,
    Path(crisis_id): Path<String>,
) -> Result<Json<CrisisStatus>, ApiError> {
    check_crisis_id(&crisis_id)?;
    let status = app
        .command(
            subject::cmd::GET_CRISIS,
            caller.actor(),
            None,
            GetCrisis { crisis_id },
        )
        .await?;
    Ok(Json(status))
}

/// `POST /api/v1/crises/{id}/channels/{channel}/confirm`
pub async fn confirm(
    State(app): State<AppState>,
    caller: Caller<Operators>,
    Path((crisis_id, channel)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<ConfirmBody>,
) -> Result<Json<CrisisStatus>, ApiError> {
    check_crisis_id(&crisis_id)?;
    let Some(channel) = Channel::parse(&channel) else {
        let known: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        return Err(Problem::not_found(format!(
            "there is no channel `{channel}`; the channels are {}",
            known.join(", ")
        ))
        .into());
    };
    let confirmation = ConfirmChannel {
        crisis_id,
        channel,
        note: body.and_then(|b| b.note),
    };
    let status = app
        .command(subject::cmd::CONFIRM, caller.actor(), None, confirmation)
        .await?;
    Ok(Json(status))
}

/// Sends one lifecycle step of crisis `crisis_id` to the coordinator.
async fn lifecycle_step<T: serde::Serialize>(
    app: &AppState,
    caller: Caller<DutyOfficers>,
    subject: &str,
    crisis_id: String,
    body: T,
) -> Result<Json<Revised>, ApiError> {
    check_crisis_id(&crisis_id)?;
    let revised = app
        .command(
            subject,
            caller.actor(),
            None,
            CrisisStep { crisis_id, body },
        )
        .await?;
    Ok(Json(revised))
}

/// `POST /api/v1/crises/{id}/update`
pub async fn update(
    State(app): State<AppState>,
    caller: Caller<DutyOfficers>,
    Path(crisis_id): Path<String>,
    JsonBody(body): JsonBody<UpdateCrisis>,
) -> Result<Json<Revised>, ApiError> {
    lifecycle_step(&app, caller, subject::cmd::UPDATE, crisis_id, body).await
}

/// `POST /api/v1/crises/{id}/all-clear`
pub async fn all_clear(
    State(app): State<AppState>,
    caller: Caller<DutyOfficers>,
    Path(crisis_id): Path<String>,
    JsonBody(body): JsonBody<ExpectRevision>,
) -> Result<Json<Revised>, ApiError> {
    lifecycle_step(&app, caller, subject::cmd::ALL_CLEAR, crisis_id, body).await
}

/// `POST /api/v1/crises/{id}/cancel`
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller<DutyOfficers>,
    Path(crisis_id): Path<String>,
    JsonBody(body): JsonBody<CancelCrisis>,
) -> Result<Json<Revised>, ApiError> {
    lifecycle_step(&app, caller, subject::cmd::CANCEL, crisis_id, body).await
}

/// `POST /api/v1/crises/{id}/close`
pub async fn close(
    State(app): State<AppState>,
    caller: Caller<DutyOfficers>,
    Path(crisis_id): Path<String>,
    JsonBody(body): JsonBody<ExpectRevision>,
) -> Result<Json<Revised>, ApiError> {
    lifecycle_step(&app, caller, subject::cmd::CLOSE, crisis_id, body).await
}

/// `GET /api/v1/openapi.json`
pub async fn openapi(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        app.openapi,
    )
        .into_response()
}

/// Crisis ids are subject tokens; anything else cannot name a crisis.
fn check_crisis_id(crisis_id: &str) -> Result<(), ApiError> {
    if subject::is_token(crisis_id) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("there is no crisis with the id {crisis_id:?}")).into())
    }
}

/// The `Idempotency-Key` header, passed on so a retried declaration declares once.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            let mut error = ApiError::bad_request(
                "invalid header",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            );
            error.problem.field = Some("Idempotency-Key".to_owned());
            error
        })?;
    Ok(Some(key.to_owned()))
}
