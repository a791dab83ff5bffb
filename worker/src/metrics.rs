//! Every metric the worker exports, declared here and nowhere else
//! (`prometheus-client`). Served by `--metrics-listen` on a standalone
//! worker, and on the gateway's `/metrics` in `herd serve`.
//!
//! Names are `herd_worker_<what>_<unit>`. Every series carries `worker`
//! (the worker's id: one scrape target may hold several, as `herd serve`'s
//! does). The model label is the name a model is loaded under (only models
//! the worker has loaded, so the set is bounded). Recorded at the service's steps: a generation's end (prefill,
//! cached and decoded tokens), `LoadModel` (load and pull), `UnloadModel`;
//! slots, loaded models, their memory and the generation counters are read
//! from the engine when scraped.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::Engine;

/// Model loads: tenths of a second to minutes (a pull can take long).
const LOAD_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn load_histogram() -> Histogram {
    Histogram::new(LOAD_BUCKETS)
}

/// The worker's metrics.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    prefill_tokens: Family<ModelLabel, Counter>,
    cached_tokens: Family<ModelLabel, Counter>,
    decode_tokens: Family<ModelLabel, Counter>,
    loads: Family<ResultLabel, Counter>,
    load_duration: HistogramFamily<ModelLabel>,
    unloads: Family<ModelLabel, Counter>,
    pulls: Family<ResultLabel, Counter>,
    pulled_bytes: Counter,
}

impl WorkerMetrics {
    /// Metrics of the worker `worker_id` over `engine` (read when
    /// scraped).
    pub fn new(engine: Arc<dyn Engine>, worker_id: &str) -> Self {
        let mut registry = Registry::with_labels(std::iter::once((
            Cow::Borrowed("worker"),
            Cow::Owned(worker_id.to_owned()),
        )));
        let prefill_tokens = Family::default();
        registry.register(
            "herd_worker_prefill_tokens",
            "Prompt tokens decoded (prefill), by model; cached ones are not",
            prefill_tokens.clone(),
        );
        let cached_tokens = Family::default();
        registry.register(
            "herd_worker_cached_prompt_tokens",
            "Prompt tokens reused from a slot's prompt cache, by model",
            cached_tokens.clone(),
        );
        let decode_tokens = Family::default();
        registry.register(
            "herd_worker_decode_tokens",
            "Tokens generated (decode), by model",
            decode_tokens.clone(),
        );
        let loads = Family::default();
        registry.register(
            "herd_worker_model_loads",
            "LoadModel calls by result",
            loads.clone(),
        );
        let load_duration =
            HistogramFamily::new_with_constructor(load_histogram as fn() -> Histogram);
        registry.register(
            "herd_worker_model_load_duration_seconds",
            "Time to load a model into memory (pull excluded), by model",
            load_duration.clone(),
        );
        let unloads = Family::default();
        registry.register(
            "herd_worker_model_unloads",
            "Models unloaded (evicted, idle or asked for), by model",
            unloads.clone(),
        );
        let pulls = Family::default();
        registry.register(
            "herd_worker_pulls",
            "Model pulls from a registry, by result",
            pulls.clone(),
        );
        let pulled_bytes = Counter::default();
        registry.register(
            "herd_worker_pulled_bytes",
            "Bytes downloaded by model pulls",
            pulled_bytes.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { engine }));
        // Known label values start at zero, so rates work from the start.
        for result in ["ok", "failed"] {
            let _ = loads.get_or_create(&ResultLabel { result });
            let _ = pulls.get_or_create(&ResultLabel { result });
        }
        Self {
            registry,
            prefill_tokens,
            cached_tokens,
            decode_tokens,
            loads,
            load_duration,
            unloads,
            pulls,
            pulled_bytes,
        }
    }

    /// A generation on `model` ended with these counts.
    pub fn generated(&self, model: &str, prompt: u32, cached: u32, completion: u32) {
        let label = ModelLabel {
            model: model.to_owned(),
        };
        self.prefill_tokens
            .get_or_create(&label)
            .inc_by(u64::from(prompt.saturating_sub(cached)));
        self.cached_tokens
            .get_or_create(&label)
            .inc_by(u64::from(cached));
        self.decode_tokens
            .get_or_create(&label)
            .inc_by(u64::from(completion));
    }

    /// A `LoadModel` ended: loaded `model` in `took`, or failed (`None`).
    pub fn loaded(&self, model: Option<&str>, took: Duration) {
        let result = if model.is_some() { "ok" } else { "failed" };
        self.loads.get_or_create(&ResultLabel { result }).inc();
        if let Some(model) = model {
            self.load_duration
                .get_or_create(&ModelLabel {
                    model: model.to_owned(),
                })
                .observe(took.as_secs_f64());
        }
    }

    pub fn unloaded(&self, model: &str) {
        self.unloads
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .inc();
    }

    /// A pull ended: `bytes` downloaded, or it failed (`None`).
    pub fn pulled(&self, bytes: Option<u64>) {
        let result = if bytes.is_some() { "ok" } else { "failed" };
        self.pulls.get_or_create(&ResultLabel { result }).inc();
        self.pulled_bytes.inc_by(bytes.unwrap_or(0));
    }

    /// Appends the exposition (OpenMetrics text, without `# EOF`).
    pub fn encode(&self, out: &mut String) {
        if let Err(e) = prometheus_client::encoding::text::encode_registry(out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the worker's metrics");
        }
    }

    /// The whole exposition (OpenMetrics text).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.encode(&mut out);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// What the engine knows now: slots, loaded models and their memory,
/// generations so far.
struct EngineCollector {
    engine: Arc<dyn Engine>,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.engine.status();
        let loaded: Vec<_> = status.models.iter().filter(|m| m.loaded).collect();
        let gauge = |value: u64| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));

        let count = gauge(loaded.len() as u64);
        count.encode(encoder.encode_descriptor(
            "herd_worker_models_loaded",
            "Models loaded now",
            None,
            count.metric_type(),
        )?)?;
        type PerModel = fn(&crate::engine::ModelInfo) -> u64;
        let per_model: [(&str, &str, PerModel); 5] = [
            (
                "herd_worker_slots",
                "Generation slots of each loaded model",
                |m| u64::from(m.slots_total),
            ),
            (
                "herd_worker_slots_busy",
                "Slots generating now, by model",
                |m| u64::from(m.slots_busy),
            ),
            (
                "herd_worker_kv_cells_used",
                "KV cache cells the slots hold (running generations and prompts kept for reuse), by model",
                |m| m.kv_cells_used,
            ),
            (
                "herd_worker_prompt_cache_bytes",
                "Bytes of saved prompt states the host-memory prompt cache holds, by model",
                |m| m.prompt_cache_bytes,
            ),
            (
                "herd_worker_model_memory_bytes",
                "Estimated memory each loaded model takes",
                |m| m.memory_bytes,
            ),
        ];
        for (name, help, value) in per_model {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for model in &loaded {
                let label = ModelLabel {
                    model: model.name.clone(),
                };
                gauge(value(model)).encode(family.encode_family(&label)?)?;
            }
        }
        let counters = &status.counters;
        let mut family = encoder.encode_descriptor(
            "herd_worker_generations",
            "Generations by how they ended (started counts all admitted)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, value) in [
            ("started", counters.started),
            ("completed", counters.completed),
            ("cancelled", counters.cancelled),
            ("failed", counters.failed),
        ] {
            ConstCounter::new(value).encode(family.encode_family(&OutcomeLabel { outcome })?)?;
        }
        Ok(())
    }
}
