//! RFC 9457 problem details: how every error of the API looks on the wire.
//!
//! Handlers and extractors fail with [`ApiError`], which wraps the
//! [`krisbud_proto::Problem`] services already reply with. The edge middleware
//! (`edge.rs`) renders the final body, adding the request path as `instance`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use krisbud_proto::Problem;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

pub use krisbud_proto::api::{ProblemDetails, TYPE_PREFIX};

/// The wire form of `problem`, optionally naming the request path.
pub fn details(problem: &Problem, instance: Option<&str>) -> ProblemDetails {
    ProblemDetails {
        kind: format!("{TYPE_PREFIX}{}", slug(&problem.title, problem.status)),
        title: problem.title.clone(),
        status: problem.status,
        detail: problem.detail.clone(),
        field: problem.field.clone(),
        instance: instance.map(str::to_owned),
    }
}

/// The slug of a problem type: its title in lower-case words joined by dashes
/// (`invalid field` → `invalid-field`), since proto defines the title as the fixed
/// summary of the type. A title without ASCII words falls back to the status's reason.
pub fn slug(title: &str, status: u16) -> String {
    let words: Vec<String> = title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if words.is_empty() {
        return match StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
        {
            Some(reason) => slug(reason, 0),
            None => "problem".to_owned(),
        };
    }
    words.join("-")
}

/// An error of the API: a problem, plus the bearer challenge for 401s.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What went wrong.
    pub problem: Problem,
    /// `WWW-Authenticate` value, sent with 401.
    pub challenge: Option<HeaderValue>,
}

impl ApiError {
    /// An error with the given status, title and detail.
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> ApiError {
        Problem::new(status.as_u16(), title, detail).into()
    }

    /// 400: the request is malformed.
    pub fn bad_request(title: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, title, detail)
    }

    /// The status to answer with; a problem with an impossible status becomes 502,
    /// since only a misbehaving service can produce one.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.problem.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY)
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> ApiError {
        ApiError {
            problem,
            challenge: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = render(self.status(), &self.problem, None);
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        // The edge middleware re-renders the body with the request path; the problem
        // travels in the extensions so it need not parse the body back.
        response.extensions_mut().insert(self.problem);
        response
    }
}

/// A problem+json response.
pub fn render(status: StatusCode, problem: &Problem, instance: Option<&str>) -> Response {
    let mut details = details(problem, instance);
    details.status = status.as_u16();
    #[allow(
        clippy::expect_used,
        reason = "problem details are strings and numbers"
    )]
    let body = serde_json::to_vec(&details).expect("a problem serializes");
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_come_from_titles() {
        assert_eq!(slug("invalid field", 422), "invalid-field");
        assert_eq!(slug("Service Unavailable", 503), "service-unavailable");
        assert_eq!(slug("payload too large", 413), "payload-too-large");
        assert_eq!(slug("åäö", 404), "not-found");
        assert_eq!(slug("", 500), "internal-server-error");
        assert_eq!(slug("", 999), "problem");
    }

    #[test]
    fn the_body_has_the_rfc_9457_members() {
        let problem = Problem::invalid("variables.district", "must be a string");
        let value = serde_json::to_value(details(&problem, Some("/api/v1/crises"))).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "type": "https://krisbud.se/problems/invalid-field",
                "title": "invalid field",
                "status": 422,
                "detail": "must be a string",
                "field": "variables.district",
                "instance": "/api/v1/crises",
            })
        );
    }

    #[test]
    fn an_impossible_status_becomes_bad_gateway() {
        let error = ApiError::from(Problem::new(200, "odd", "a service replied oddly"));
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    }
}
