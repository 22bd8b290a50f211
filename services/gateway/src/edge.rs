//! The edge of every request: one tracing span (child of an incoming `traceparent`)
//! that the handler runs in, so command requests carry the trace on to NATS; and
//! the one place errors are logged and rendered as problem+json.

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use krisbud_proto::Problem;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::problem::{self, PROBLEM_JSON};

/// Runs the request inside its span, then makes sure an error leaves as problem+json.
pub async fn edge(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let span = tracing::info_span!(
        "http request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HttpHeaders(req.headers()))
    });
    let _ = span.set_parent(parent);
    let behind_tls = req
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));

    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    let response = if status.is_client_error() || status.is_server_error() {
        span.in_scope(|| finish_error(response, &path))
    } else {
        response
    };
    secure_headers(response, behind_tls)
}

/// The security headers of every answer: no content sniffing; a page of its own
/// says what it may load (the console's CSP), anything else may load nothing and
/// be framed nowhere; behind TLS, browsers are told to stay on HTTPS.
fn secure_headers(mut response: Response, behind_tls: bool) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    if behind_tls {
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static("max-age=31536000"));
    }
    response
}

/// Logs an error response once and renders it as problem+json with `instance`.
fn finish_error(response: Response, path: &str) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let problem = match parts.extensions.remove::<Problem>() {
        Some(problem) => problem,
        // Axum answered by itself (405, an undecodable path): keep the status, give
        // it a problem body like every other error.
        None if is_problem_json(&parts.headers) => return Response::from_parts(parts, body),
        // A console page that says what went wrong in its own words.
        None if is_html(&parts.headers) => {
            tracing::info!(status = status.as_u16(), "console page refused");
            return Response::from_parts(parts, body);
        }
        None => framework_problem(status, &parts.headers),
    };
    let problem = if status.is_server_error() {
        // The detail stays in the log; a 500 never shows internals to the client.
        tracing::error!(status = status.as_u16(), title = %problem.title, detail = %problem.detail, "request failed");
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            Problem::new(
                500,
                "internal error",
                "something went wrong on our side; the error is logged",
            )
        } else {
            problem
        }
    } else {
        // Details of client errors can quote the request (a phone number in the wrong
        // field), so only the title and field are logged.
        tracing::info!(status = status.as_u16(), title = %problem.title, field = problem.field.as_deref(), "request refused");
        problem
    };
    let rendered = problem::render(status, &problem, Some(path));
    let (rendered_parts, rendered_body) = rendered.into_parts();
    for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        parts.headers.remove(&name);
        if let Some(value) = rendered_parts.headers.get(&name) {
            parts.headers.insert(name, value.clone());
        }
    }
    Response::from_parts(parts, Body::new(rendered_body))
}

fn is_problem_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

/// A problem for an error response the framework made without one.
fn framework_problem(status: StatusCode, headers: &HeaderMap) -> Problem {
    let title = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            match headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) {
                Some(allow) => format!("this path does not take that method; it takes {allow}"),
                None => "this path does not take that method".to_owned(),
            }
        }
        StatusCode::NOT_FOUND => "there is no such resource".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than this server accepts".to_owned()
        }
        StatusCode::BAD_REQUEST => "the request is malformed".to_owned(),
        _ => format!("the request failed ({})", status.as_u16()),
    };
    Problem::new(status.as_u16(), &title, detail)
}

/// Reads W3C trace context from HTTP headers.
struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The answer to a path no route matches.
pub async fn not_found(req: Request) -> crate::problem::ApiError {
    crate::problem::ApiError::from(Problem::not_found(format!(
        "there is no resource at {}; the API is described at /api/v1/openapi.json",
        req.uri().path()
    )))
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}
