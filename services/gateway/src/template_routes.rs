//! The template routes of `/api/v1`: list, show, draft, the lifecycle steps,
//! preview and diff. The gateway checks the role for a quick answer; the
//! coordinator checks roles and four eyes again before anything is appended.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use krisbud_proto::api::{PreviewBody, ReasonBody};
use krisbud_proto::command::{
    ChangeTemplateState, DiffTemplate, DraftResult, DraftTemplate, GetTemplate, GetTemplateVersion,
    ListTemplates, PreviewTemplate, TemplateAction,
};
use krisbud_proto::template::{
    TemplateDiff, TemplatePreview, TemplateRecord, TemplateSummary, TemplateVersion, VersionInfo,
};
use krisbud_proto::{Problem, subject};

use crate::auth::{AnyUser, Caller, TemplateApprovers, TemplateEditors, TemplateRetirers};
use crate::body::{JsonBody, OptionalJsonBody};
use crate::problem::ApiError;
use crate::state::AppState;

/// `GET /api/v1/templates[?all=true]`
pub async fn list(
    State(app): State<AppState>,
    caller: Caller<AnyUser>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<TemplateSummary>>, ApiError> {
    let params = query_params(query.as_deref(), &["all"])?;
    let all = match params.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid_param(
                "all",
                format!("all must be true or false, not `{other}`"),
            ));
        }
    };
    let templates = app
        .command(
            subject::cmd::LIST_TEMPLATES,
            caller.actor(),
            None,
            ListTemplates { all },
        )
        .await?;
    Ok(Json(templates))
}

/// `POST /api/v1/templates`: the first version of a new template.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller<TemplateEditors>,
    JsonBody(draft): JsonBody<TemplateVersion>,
) -> Result<Response, ApiError> {
    if draft.id.is_empty() {
        return Err(Problem::invalid(
            "id",
            "a new template needs an id (a slug such as vattenlacka)",
        )
        .into());
    }
    draft_version(app, caller, draft, true).await
}

/// `POST /api/v1/templates/{id}/versions`: a new version of a template.
pub async fn new_version(
    State(app): State<AppState>,
    caller: Caller<TemplateEditors>,
    Path(id): Path<String>,
    JsonBody(mut draft): JsonBody<TemplateVersion>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    if draft.id.is_empty() {
        draft.id = id.clone();
    } else if draft.id != id {
        return Err(Problem::invalid(
            "id",
            format!(
                "the body is a version of `{}` but the path names `{id}`",
                draft.id
            ),
        )
        .into());
    }
    draft_version(app, caller, draft, false).await
}

/// 201 with `Location` for a new version; 200 when a live version already had the
/// same wording (so a retried draft does not make a second version).
async fn draft_version(
    app: AppState,
    caller: Caller<TemplateEditors>,
    draft: TemplateVersion,
    new_template: bool,
) -> Result<Response, ApiError> {
    let result: DraftResult = app
        .command(
            subject::cmd::DRAFT_TEMPLATE,
            caller.actor(),
            None,
            DraftTemplate {
                draft,
                new_template,
            },
        )
        .await?;
    let location = format!(
        "/api/v1/templates/{}/versions/{}",
        result.template.id, result.template.version
    );
    let location = HeaderValue::from_str(&location).map_err(|_| {
        ApiError::from(Problem::new(
            502,
            "bad gateway",
            "the coordinator answered with a template id that cannot be part of a URL",
        ))
    })?;
    let status = if result.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, [(header::LOCATION, location)], Json(result)).into_response())
}

/// `GET /api/v1/templates/{id}`
pub async fn show(
    State(app): State<AppState>,
    caller: Caller<AnyUser>,
    Path(id): Path<String>,
) -> Result<Json<TemplateRecord>, ApiError> {
    check_id(&id)?;
    let record = app
        .command(
            subject::cmd::GET_TEMPLATE,
            caller.actor(),
            None,
            GetTemplate { template: id },
        )
        .await?;
    Ok(Json(record))
}

/// `GET /api/v1/templates/{id}/versions/{version}`
pub async fn show_version(
    State(app): State<AppState>,
    caller: Caller<AnyUser>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<TemplateVersion>, ApiError> {
    let version = check_version(&id, &version)?;
    let template = app
        .command(
            subject::cmd::GET_TEMPLATE_VERSION,
            caller.actor(),
            None,
            GetTemplateVersion {
                template: id,
                version,
            },
        )
        .await?;
    Ok(Json(template))
}

async fn step(
    app: AppState,
    actor: krisbud_proto::Actor,
    (id, version): (String, String),
    action: TemplateAction,
    reason: Option<String>,
) -> Result<Json<VersionInfo>, ApiError> {
    let version = check_version(&id, &version)?;
    let info = app
        .command(
            subject::cmd::CHANGE_TEMPLATE_STATE,
            actor,
            None,
            ChangeTemplateState {
                template: id,
                version,
                action,
                reason,
            },
        )
        .await?;
    Ok(Json(info))
}

/// `POST /api/v1/templates/{id}/versions/{version}/submit`
pub async fn submit(
    State(app): State<AppState>,
    caller: Caller<TemplateEditors>,
    Path(path): Path<(String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    step(app, caller.actor(), path, TemplateAction::Submit, None).await
}

/// `POST /api/v1/templates/{id}/versions/{version}/approve`
pub async fn approve(
    State(app): State<AppState>,
    caller: Caller<TemplateApprovers>,
    Path(path): Path<(String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    step(app, caller.actor(), path, TemplateAction::Approve, None).await
}

/// `POST /api/v1/templates/{id}/versions/{version}/reject`
pub async fn reject(
    State(app): State<AppState>,
    caller: Caller<TemplateApprovers>,
    Path(path): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<ReasonBody>,
) -> Result<Json<VersionInfo>, ApiError> {
    let reason = body.and_then(|b| b.reason);
    step(app, caller.actor(), path, TemplateAction::Reject, reason).await
}

/// `POST /api/v1/templates/{id}/versions/{version}/retire`
pub async fn retire(
    State(app): State<AppState>,
    caller: Caller<TemplateRetirers>,
    Path(path): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<ReasonBody>,
) -> Result<Json<VersionInfo>, ApiError> {
    let reason = body.and_then(|b| b.reason);
    step(app, caller.actor(), path, TemplateAction::Retire, reason).await
}

/// `POST /api/v1/templates/{id}/versions/{version}/preview`
pub async fn preview(
    State(app): State<AppState>,
    caller: Caller<AnyUser>,
    Path((id, version)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<PreviewBody>,
) -> Result<Json<TemplatePreview>, ApiError> {
    let version = check_version(&id, &version)?;
    let body = body.unwrap_or_default();
    let preview = app
        .command(
            subject::cmd::PREVIEW_TEMPLATE,
            caller.actor(),
            None,
            PreviewTemplate {
                template: id,
                version,
                variables: body.variables,
                status: body.status,
            },
        )
        .await?;
    Ok(Json(preview))
}

/// `GET /api/v1/templates/{id}/versions/{version}/diff[?against=N]`
pub async fn diff(
    State(app): State<AppState>,
    caller: Caller<AnyUser>,
    Path((id, version)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<TemplateDiff>, ApiError> {
    let version = check_version(&id, &version)?;
    let params = query_params(query.as_deref(), &["against"])?;
    let against = match params.get("against") {
        None => None,
        Some(v) => Some(v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            invalid_param(
                "against",
                format!("against must be a version number, not `{v}`"),
            )
        })?),
    };
    let diff = app
        .command(
            subject::cmd::DIFF_TEMPLATE,
            caller.actor(),
            None,
            DiffTemplate {
                template: id,
                version,
                against,
            },
        )
        .await?;
    Ok(Json(diff))
}

/// Template ids are subject tokens; anything else cannot name a template.
fn check_id(id: &str) -> Result<(), ApiError> {
    if subject::is_token(id) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("there is no template with the id {id:?}")).into())
    }
}

fn check_version(id: &str, version: &str) -> Result<u32, ApiError> {
    check_id(id)?;
    version
        .parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            Problem::not_found(format!(
                "template `{id}` has no version {version:?}; versions are numbered 1, 2, 3 ..."
            ))
            .into()
        })
}

/// Reads the query string, refusing parameters other than `known` and repeats.
fn query_params(raw: Option<&str>, known: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| {
            ApiError::bad_request(
                "invalid query",
                format!("cannot read the query string: {e}"),
            )
        })?;
    let mut out = BTreeMap::new();
    for (key, value) in pairs {
        if !known.contains(&key.as_str()) {
            return Err(invalid_param(
                &key,
                format!(
                    "unknown query parameter {key}; this route takes {}",
                    known.join(", ")
                ),
            ));
        }
        if out.insert(key.clone(), value.trim().to_owned()).is_some() {
            return Err(invalid_param(
                &key,
                format!("{key} is given more than once"),
            ));
        }
    }
    Ok(out)
}

fn invalid_param(name: &str, detail: String) -> ApiError {
    let mut error = ApiError::bad_request("invalid query", detail);
    error.problem.field = Some(name.to_owned());
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_positive_numbers() {
        assert_eq!(check_version("vattenlacka", "2").unwrap(), 2);
        for bad in ["0", "-1", "två", ""] {
            assert_eq!(
                check_version("vattenlacka", bad)
                    .unwrap_err()
                    .problem
                    .status,
                404,
                "{bad}"
            );
        }
        assert_eq!(
            check_version("vatten läcka", "1")
                .unwrap_err()
                .problem
                .status,
            404
        );
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = query_params(Some("all=true&state=x"), &["all"]).unwrap_err();
        assert_eq!(e.problem.field.as_deref(), Some("state"));
        let e = query_params(Some("all=true&all=false"), &["all"]).unwrap_err();
        assert_eq!(e.problem.field.as_deref(), Some("all"));
        assert_eq!(
            query_params(Some("all=true"), &["all"]).unwrap()["all"],
            "true"
        );
    }
}
