//! The worker's side of a request's trace: a `generate` span continuing
//! the W3C `traceparent` the gateway sent in gRPC metadata, with `prefill`
//! (admission to the first text) and `decode` (first text to the end) as
//! its children. Exported when the process exports traces (see
//! `herd_gateway::traces`, and `crate::logging` for a standalone worker).

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span of one generation, child of the caller's span if it sent one.
pub fn generate_span(metadata: &tonic::metadata::MetadataMap, model: &str) -> tracing::Span {
    continued(tracing::info_span!("generate", model = %model), metadata)
}

/// The span of a model load the gateway ordered (`LoadModel`): a child of
/// the gateway's `load` span, itself in the trace of the request that
/// waited for the model.
pub fn load_span(metadata: &tonic::metadata::MetadataMap, model: &str) -> tracing::Span {
    continued(
        tracing::info_span!(
            "load_model",
            model = %model,
            pull_ms = tracing::field::Empty,
            load_ms = tracing::field::Empty,
        ),
        metadata,
    )
}

/// `span`, made a child of the caller's span if it sent a `traceparent`.
fn continued(span: tracing::Span, metadata: &tonic::metadata::MetadataMap) -> tracing::Span {
    if metadata.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
        let _ = span.set_parent(cx);
    }
    span
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
