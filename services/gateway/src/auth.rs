//! Authentication and roles: `Authorization: Bearer <token>` is hashed and looked up
//! among the configured users; each route names the roles it admits as a type, so
//! the check runs before the body is read.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use krisbud_proto::{Actor, Role};

use crate::config::{User, hash_token};
use crate::problem::ApiError;
use crate::state::AppState;

/// A set of roles a route admits; empty means any authenticated user.
pub trait Allowed: Send + Sync + 'static {
    /// The roles, any one of which suffices.
    const ROLES: &'static [Role];
}

/// Any authenticated user.
pub struct AnyUser;
impl Allowed for AnyUser {
    const ROLES: &'static [Role] = &[];
}

/// Duty officers (TiB): declare crises.
pub struct DutyOfficers;
impl Allowed for DutyOfficers {
    const ROLES: &'static [Role] = &[Role::DutyOfficer];
}

/// Channel operators: confirm that a channel's message is out.
pub struct Operators;
impl Allowed for Operators {
    const ROLES: &'static [Role] = &[Role::Operator];
}

/// Those who follow crises: duty officers, operators, auditors and admins.
pub struct CrisisReaders;
impl Allowed for CrisisReaders {
    const ROLES: &'static [Role] = &[
        Role::DutyOfficer,
        Role::Operator,
        Role::Auditor,
        Role::Admin,
    ];
}

/// Template editors: draft and submit template versions.
pub struct TemplateEditors;
impl Allowed for TemplateEditors {
    const ROLES: &'static [Role] = &[Role::TemplateEditor];
}

/// Template approvers: approve or reject submitted versions (never their own).
pub struct TemplateApprovers;
impl Allowed for TemplateApprovers {
    const ROLES: &'static [Role] = &[Role::TemplateApprover];
}

/// Those who may retire an approved template version.
pub struct TemplateRetirers;
impl Allowed for TemplateRetirers {
    const ROLES: &'static [Role] = &[Role::TemplateApprover, Role::Admin];
}

/// Admins: manage audiences.
pub struct AudienceAdmins;
impl Allowed for AudienceAdmins {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Those who pick or manage audiences: duty officers and admins.
pub struct AudienceReaders;
impl Allowed for AudienceReaders {
    const ROLES: &'static [Role] = &[Role::DutyOfficer, Role::Admin];
}

/// Auditors: read, export and verify the audit log, look up recipients. An admin
/// does so only when also an auditor.
pub struct Auditors;
impl Allowed for Auditors {
    const ROLES: &'static [Role] = &[Role::Auditor];
}

/// The authenticated caller of a route admitting the roles `A`.
pub struct Caller<A: Allowed> {
    /// Who is calling.
    pub user: User,
    roles: PhantomData<A>,
}

impl<A: Allowed> Caller<A> {
    /// The actor commands carry: the user's name and every role they hold.
    pub fn actor(&self) -> Actor {
        Actor {
            user: self.user.name.clone(),
            roles: self.user.roles.clone(),
            channels: self.user.channels.clone(),
        }
    }
}

impl<A: Allowed> FromRequestParts<AppState> for Caller<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = authenticate(parts, state)?;
        if !A::ROLES.is_empty() && !A::ROLES.iter().any(|r| user.roles.contains(r)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the role {}", role_list(A::ROLES)),
            ));
        }
        Ok(Caller {
            user,
            roles: PhantomData,
        })
    }
}

/// The roles as people read them: `auditor or admin`.
pub fn role_list(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    match names.split_last() {
        None => "of any user".to_owned(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn authenticate(parts: &Parts, state: &AppState) -> Result<User, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "send an Authorization: Bearer <token> header",
            None,
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(unauthorized(
            "the Authorization header must be Bearer <token>",
            Some("invalid_request"),
        ));
    };
    // Looking up by hash means the comparison never touches the token itself, so
    // its timing reveals nothing useful about valid tokens.
    match state.users.get(&hash_token(token)) {
        Some(user) => Ok(user.clone()),
        None => Err(unauthorized(
            "the token is not valid",
            Some("invalid_token"),
        )),
    }
}

/// 401 with the RFC 6750 challenge.
fn unauthorized(detail: &str, error: Option<&str>) -> ApiError {
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"krisbud\", error=\"{error}\""),
        None => "Bearer realm=\"krisbud\"".to_owned(),
    };
    let mut api_error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    api_error.challenge = HeaderValue::from_str(&challenge).ok();
    api_error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_lists_read_well() {
        assert_eq!(role_list(DutyOfficers::ROLES), "duty_officer");
        assert_eq!(role_list(Auditors::ROLES), "auditor");
        assert_eq!(
            role_list(TemplateRetirers::ROLES),
            "template_approver or admin"
        );
        assert_eq!(
            role_list(CrisisReaders::ROLES),
            "duty_officer, operator, auditor or admin"
        );
    }
}
