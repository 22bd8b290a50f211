//! Logs and traces: `tracing` with an OpenTelemetry layer, and W3C trace context
//! carried in NATS headers so one trace spans gateway → coordinator → channel →
//! provider → audit.
//!
//! Spans always get real trace ids, so `traceparent` flows even when nothing is
//! exported; OTLP export is switched on only by `telemetry.otlp_endpoint`.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, global};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps the tracer provider alive; flushes spans when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.force_flush();
    }
}

/// Sets up logging and tracing for `service` from its configuration.
pub fn init(service: &str, config: &TelemetryConfig) -> Telemetry {
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    if let Some(endpoint) = otlp_traces_url(config) {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.as_str())
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("krisbud: cannot export traces to {endpoint}: {e}"),
        }
    }
    init_with(service, config, builder.build())
}

/// Where spans are exported: the OTLP/HTTP traces URL under
/// `telemetry.otlp_endpoint` (`KRISBUD_TELEMETRY__OTLP_ENDPOINT`), or `None` when
/// it is not set, and then no exporter is built.
pub fn otlp_traces_url(config: &TelemetryConfig) -> Option<String> {
    let endpoint = config.otlp_endpoint.as_deref()?.trim();
    let endpoint = endpoint.trim_end_matches('/');
    (!endpoint.is_empty()).then(|| format!("{endpoint}/v1/traces"))
}

/// Sets up logging and tracing with a given tracer provider (tests pass one with an
/// in-memory exporter).
pub fn init_with(
    service: &str,
    config: &TelemetryConfig,
    provider: SdkTracerProvider,
) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer(service.to_owned());
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("krisbud: bad log filter {:?} ({e}); using info", config.log);
        EnvFilter::new("info")
    });
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match config.log_format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    Telemetry { provider }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        ["traceparent", "tracestate"]
            .into_iter()
            .filter(|k| self.0.get(*k).is_some())
            .collect()
    }
}

/// Writes the current span's trace context into NATS headers.
pub fn inject(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// Reads a trace context from NATS headers.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(h) => global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h))),
        None => Context::new(),
    }
}

/// Makes `span` a child of the trace carried in `headers`, if any.
pub fn follow(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let _ = span.set_parent(extract(headers));
}

/// The current span's trace id as hex, for log lines and tests.
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error
mod tests {
    use super::*;
    use crate::Common;

    fn traces_url() -> Option<String> {
        let common: Common = crate::config::load(None).expect("the configuration loads");
        otlp_traces_url(&common.telemetry)
    }

    #[test]
    fn otlp_export_only_when_the_endpoint_is_set() {
        assert_eq!(
            otlp_traces_url(&Common::default().telemetry),
            None,
            "nothing exported by default"
        );
        figment::Jail::expect_with(|jail| {
            // Not `clear_env`: it would take PATH from tests running alongside.
            jail.set_env("KRISBUD_TELEMETRY__OTLP_ENDPOINT", "");
            assert_eq!(traces_url(), None, "an empty value leaves it unset");

            jail.set_env("KRISBUD_TELEMETRY__OTLP_ENDPOINT", "http://collector:4318/");
            assert_eq!(
                traces_url().as_deref(),
                Some("http://collector:4318/v1/traces")
            );
            Ok(())
        });
    }

    #[test]
    fn a_blank_endpoint_exports_nothing() {
        let config = TelemetryConfig {
            otlp_endpoint: Some(" / ".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(otlp_traces_url(&config), None);
    }
}
