//! JSON request bodies with errors that name what is wrong: 415 for another media
//! type, 413 over the size limit, 400 for malformed JSON with its position, and 422
//! naming the field path for JSON of the wrong shape.

use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use krisbud_proto::Problem;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::problem::ApiError;

/// A JSON body that must be present.
pub struct JsonBody<T>(pub T);

/// A JSON body that may be left out entirely (an empty body reads as `None`).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type(req.headers()));
        }
        let bytes = read(req, state).await?;
        if is_blank(&bytes) {
            return Err(ApiError::bad_request(
                "malformed json",
                "the request needs a JSON body",
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let bytes = read(req, state).await?;
        if is_blank(&bytes) {
            return Ok(OptionalJsonBody(None));
        }
        if !is_json(&headers) {
            return Err(unsupported_media_type(&headers));
        }
        parse(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// Reads the whole body within the router's `DefaultBodyLimit`.
async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload too large",
                    "the request body is larger than this server accepts",
                )
            }
            other => ApiError::bad_request(
                "unreadable body",
                format!("cannot read the request body: {}", other.body_text()),
            ),
        })
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// `application/json` or any `application/*+json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn unsupported_media_type(headers: &HeaderMap) -> ApiError {
    let detail = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(sent) => format!("the body must be application/json, not {sent}"),
        None => "the body must be application/json; send a Content-Type header".to_owned(),
    };
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported media type",
        detail,
    )
}

/// Parses `bytes` as `T`, telling malformed JSON (400, with its position) from JSON
/// of the wrong shape (422, naming the field path).
///
/// A number written with a zero fraction (`3.0`) counts as the integer it is, as
/// JSON Schema's `integer` says, so a body valid by the published schema is read.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| shape_error(".", &e))?;
    integral_numbers(&mut value);
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        shape_error(&path, e.inner())
    })
}

/// Rewrites every number with a zero fraction within the 64-bit range as an
/// integer.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if !(n.is_u64() || n.is_i64()) => {
            if let Some(f) = n.as_f64().filter(|f| f.is_finite() && f.fract() == 0.0) {
                // Exact: a whole f64 below 2^64 (or at or above -2^63) converts
                // without rounding.
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *value = Value::from(f as u64);
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(members) => members.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

fn shape_error(path: &str, error: &serde_json::Error) -> ApiError {
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
            "malformed json",
            format!("the body is not valid JSON: {error}"),
        ),
        Category::Data => {
            let message = without_position(error);
            let field = field_path(path, &message);
            // Unknown and missing field messages name the field themselves.
            let names_field =
                message.starts_with("unknown field `") || message.starts_with("missing field `");
            let detail = match &field {
                Some(field) if !names_field => format!("{field}: {message}"),
                _ => message,
            };
            match field {
                Some(field) => Problem::invalid(field, detail).into(),
                None => Problem::new(422, "invalid body", detail).into(),
            }
        }
    }
}

/// The path of the field a data error is about. serde_path_to_error puts an unknown
/// field's name in the path, but reports a missing field at the enclosing object,
/// so its name is taken from the message.
fn field_path(path: &str, message: &str) -> Option<String> {
    let parent = (path != ".").then_some(path);
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (parent, missing) {
        (Some(parent), Some(name)) => Some(format!("{parent}.{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        (Some(parent), None) => Some(parent.to_owned()),
        (None, None) => None,
    }
}

/// serde_json's message without the ` at line L column C` it appends.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use krisbud_proto::command::DeclareCrisis;

    use super::*;

    fn problem_of(json: &str) -> Problem {
        parse::<DeclareCrisis>(json.as_bytes())
            .err()
            .unwrap()
            .problem
    }

    #[test]
    fn a_wrong_type_names_the_field_path() {
        let p = problem_of(r#"{"template":"vatten","variables":{"district":5}}"#);
        assert_eq!(p.status, 422);
        assert_eq!(p.field.as_deref(), Some("variables.district"));
        assert_eq!(
            p.detail,
            "variables.district: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let p = problem_of(r#"{"template":"vatten","sender":"x"}"#);
        assert_eq!(p.status, 422);
        assert_eq!(p.field.as_deref(), Some("sender"));
        assert!(
            p.detail.starts_with("unknown field `sender`"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let p = problem_of(r#"{"variables":{}}"#);
        assert_eq!(p.field.as_deref(), Some("template"));
    }

    #[test]
    fn a_bad_list_item_names_its_index() {
        let p = problem_of(r#"{"template":"vatten","channels":["sms","fax"]}"#);
        assert_eq!(p.field.as_deref(), Some("channels[1]"));
    }

    #[test]
    fn malformed_json_names_the_position() {
        let p = problem_of("{\"template\": \n vatten}");
        assert_eq!(p.status, 400);
        assert!(p.detail.contains("line 2 column 2"), "{}", p.detail);
        let p = problem_of(r#"{"template":"vatten"} trailing"#);
        assert_eq!(p.status, 400);
        let p = problem_of(r#"{"template":"#);
        assert_eq!(p.status, 400);
    }

    #[test]
    fn a_number_with_a_zero_fraction_is_the_integer_it_is() {
        let body: krisbud_proto::command::ExpectRevision =
            parse(br#"{"expected_revision": 127.0}"#).unwrap();
        assert_eq!(body.expected_revision, 127);
        for (json, field) in [
            (&br#"{"expected_revision": 1.5}"#[..], "expected_revision"),
            (
                &br#"{"expected_revision": 4294967296}"#[..],
                "expected_revision",
            ),
            (&br#"{"expected_revision": -1.0}"#[..], "expected_revision"),
            (&br#"{"expected_revision": 1e300}"#[..], "expected_revision"),
        ] {
            let problem = parse::<krisbud_proto::command::ExpectRevision>(json)
                .unwrap_err()
                .problem;
            assert_eq!(problem.status, 422, "{}", String::from_utf8_lossy(json));
            assert_eq!(problem.field.as_deref(), Some(field));
        }
    }

    #[test]
    fn a_good_body_parses() {
        let d: DeclareCrisis =
            parse(br#"{"template":"vatten","variables":{"district":"Kista"}}"#).unwrap();
        assert_eq!(
            d.variables,
            BTreeMap::from([("district".to_owned(), "Kista".to_owned())])
        );
    }

    #[test]
    fn json_media_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&headers));
    }
}
