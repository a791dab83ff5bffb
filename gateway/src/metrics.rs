//! Every metric the gateway exports, declared here and nowhere else, for
//! Prometheus on `GET /metrics` (OpenMetrics text, `prometheus-client`).
//!
//! Names are `herd_gateway_<what>_<unit>`. Label values are bounded: a
//! model label is a name from the pool's index (the name a worker serves
//! the model by), or [`UNKNOWN_MODEL`] — never what a client typed; routes,
//! statuses, causes and reasons are fixed strings. The pipeline's steps
//! record into it: the HTTP app (request, status, end-to-end latency), the
//! stream back (time to first token, inter-token latency, tokens), the
//! dispatcher (queue wait, requeues, refusals) and the scheduler's order
//! runner (loads, unloads). Queue depth, running requests and workers by
//! state are read from the scheduler and the roster when scraped.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::context::Priority;
use crate::scheduler::ModelReport;
use crate::workers::Snapshot;

/// The model label of a request whose model is not in the pool.
pub const UNKNOWN_MODEL: &str = "unknown";

/// The `Content-Type` of the exposition: Prometheus' text format, which
/// every scraper and `promtool` read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// End-to-end request latency and model loads: milliseconds to minutes.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// Time to first token and queue wait: sub-millisecond to minutes.
const WAIT_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Inter-token latency: a token every millisecond to every few seconds.
const TOKEN_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Writes more metrics (another component's) after the gateway's: how
/// `herd serve` exports its in-process worker on the same `/metrics`.
pub type ExtraMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub model: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteModel {
    pub route: &'static str,
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub model: String,
    pub priority: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub status: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub model: String,
    pub result: &'static str,
}

/// Why a request was put back in its queue or run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// The worker had no free slot after all.
    Busy,
    /// The model was no longer loaded there.
    ReplicaGone,
    /// The worker could not be reached; retried on another.
    WorkerGone,
    /// The worker went away mid-generation; run again elsewhere.
    WorkerGoneMidGeneration,
}

impl Requeue {
    fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::ReplicaGone => "replica_gone",
            Self::WorkerGone => "worker_gone",
            Self::WorkerGoneMidGeneration => "worker_gone_mid_generation",
        }
    }
}

/// Where a client left before its answer was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    Queued,
    Generating,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteModel>,
    ttft: HistogramFamily<ModelLabel>,
    itl: HistogramFamily<ModelLabel>,
    queue_wait: HistogramFamily<ModelLabel>,
    queue_depth: Family<QueueLabels, Gauge>,
    running: Family<ModelLabel, Gauge>,
    in_flight: Gauge,
    prompt_tokens: Family<ModelLabel, Counter>,
    completion_tokens: Family<ModelLabel, Counter>,
    cached_tokens: Family<ModelLabel, Counter>,
    requeues: Family<CauseLabel, Counter>,
    workers: Family<StateLabel, Gauge>,
    disconnects: Family<StageLabel, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    loads: Family<LoadLabels, Counter>,
    load_duration: HistogramFamily<ModelLabel>,
    unloads: Family<ModelLabel, Counter>,
    /// Scrapes refresh the gauges read from the scheduler one at a time.
    scrape: Mutex<Extras>,
    /// Off (`metrics = false`): nothing is recorded.
    on: bool,
}

/// The extra sources of a scrape.
#[derive(Default)]
struct Extras(Vec<ExtraMetrics>);

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extras({})", self.0.len())
    }
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}
fn wait() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}
fn token() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "herd_gateway_requests",
            "HTTP requests answered, by route, model and status (status \"none\": the client left before an answer)",
            requests.clone(),
        );
        let request_duration = HistogramFamily::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "herd_gateway_request_duration_seconds",
            "End-to-end request latency, from the request head to the last byte",
            request_duration.clone(),
        );
        let ttft = HistogramFamily::new_with_constructor(wait as fn() -> Histogram);
        registry.register(
            "herd_gateway_time_to_first_token_seconds",
            "Time from the request to its first generated token",
            ttft.clone(),
        );
        let itl = HistogramFamily::new_with_constructor(token as fn() -> Histogram);
        registry.register(
            "herd_gateway_inter_token_latency_seconds",
            "Time between two streamed deltas of a generation",
            itl.clone(),
        );
        let queue_wait = HistogramFamily::new_with_constructor(wait as fn() -> Histogram);
        registry.register(
            "herd_gateway_queue_wait_seconds",
            "Time a request waited in its model's queue for a slot",
            queue_wait.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "herd_gateway_queue_depth",
            "Requests waiting for a slot, by model and the priority they asked for",
            queue_depth.clone(),
        );
        let running = Family::default();
        registry.register(
            "herd_gateway_running",
            "Requests running on workers, by model",
            running.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "herd_gateway_in_flight",
            "HTTP requests being served (queued, running or streaming)",
            in_flight.clone(),
        );
        let prompt_tokens = Family::default();
        registry.register(
            "herd_gateway_prompt_tokens",
            "Prompt tokens of finished generations",
            prompt_tokens.clone(),
        );
        let completion_tokens = Family::default();
        registry.register(
            "herd_gateway_completion_tokens",
            "Generated tokens of finished generations",
            completion_tokens.clone(),
        );
        let cached_tokens = Family::default();
        registry.register(
            "herd_gateway_cached_prompt_tokens",
            "Prompt tokens served from a worker's prompt cache",
            cached_tokens.clone(),
        );
        let requeues = Family::default();
        registry.register(
            "herd_gateway_requeues",
            "Requests put back in their queue or run again elsewhere, by cause",
            requeues.clone(),
        );
        let workers = Family::default();
        registry.register(
            "herd_gateway_workers",
            "Workers in the pool by state (healthy, draining, down)",
            workers.clone(),
        );
        let disconnects = Family::default();
        registry.register(
            "herd_gateway_client_disconnects",
            "Clients that left before their answer was complete, by stage",
            disconnects.clone(),
        );
        let refusals = Family::default();
        registry.register(
            "herd_gateway_refusals",
            "Requests turned away by the scheduler (429 and 503), by status and reason",
            refusals.clone(),
        );
        let loads = Family::default();
        registry.register(
            "herd_gateway_model_loads",
            "Model loads ordered by this gateway, by model and result",
            loads.clone(),
        );
        let load_duration = HistogramFamily::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "herd_gateway_model_load_duration_seconds",
            "Time a worker took to load a model (pull included)",
            load_duration.clone(),
        );
        let unloads = Family::default();
        registry.register(
            "herd_gateway_model_unloads",
            "Model unloads ordered by this gateway (idle past keep-alive, evicted, or asked for)",
            unloads.clone(),
        );
        // Known label values start at zero, so rates work from the start.
        for cause in [
            Requeue::Busy,
            Requeue::ReplicaGone,
            Requeue::WorkerGone,
            Requeue::WorkerGoneMidGeneration,
        ] {
            let _ = requeues.get_or_create(&CauseLabel {
                cause: cause.as_str(),
            });
        }
        for stage in ["queued", "generating"] {
            let _ = disconnects.get_or_create(&StageLabel { stage });
        }
        for (status, reason) in [
            ("429", "queue_full"),
            ("503", "queue_timeout"),
            ("503", "no_capacity"),
            ("503", "shutting_down"),
        ] {
            let _ = refusals.get_or_create(&RefusalLabels { status, reason });
        }
        Self {
            registry,
            requests,
            request_duration,
            ttft,
            itl,
            queue_wait,
            queue_depth,
            running,
            in_flight,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            requeues,
            workers,
            disconnects,
            refusals,
            loads,
            load_duration,
            unloads,
            scrape: Mutex::new(Extras::default()),
            on: true,
        }
    }

    /// Metrics that record nothing (`metrics = false`).
    pub fn off() -> Self {
        Self {
            on: false,
            ..Self::new()
        }
    }

    /// Whether metrics are recorded (and `/metrics` served).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Adds `extra` to every scrape, after the gateway's own metrics.
    pub fn add_extra(&self, extra: ExtraMetrics) {
        self.scrape.lock().0.push(extra);
    }

    /// The account step: one answered request.
    pub fn request_done(
        &self,
        route: &'static str,
        model: &str,
        status: Option<u16>,
        took: Duration,
    ) {
        if !self.on {
            return;
        }
        let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                model: model.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteModel {
                route,
                model: model.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn queue_waited(&self, model: &str, waited: Duration) {
        if !self.on {
            return;
        }
        self.queue_wait
            .get_or_create(&model_label(model))
            .observe(waited.as_secs_f64());
    }

    /// The histograms a streaming generation records into, looked up once.
    pub fn generation(&self, model: &str) -> GenerationMetrics {
        if !self.on {
            return GenerationMetrics(None);
        }
        let label = model_label(model);
        GenerationMetrics(Some((
            self.ttft.get_or_create_owned(&label),
            self.itl.get_or_create_owned(&label),
        )))
    }

    pub fn tokens(&self, model: &str, prompt: u32, completion: u32, cached: u32) {
        if !self.on {
            return;
        }
        let label = model_label(model);
        self.prompt_tokens
            .get_or_create(&label)
            .inc_by(u64::from(prompt));
        self.completion_tokens
            .get_or_create(&label)
            .inc_by(u64::from(completion));
        self.cached_tokens
            .get_or_create(&label)
            .inc_by(u64::from(cached));
    }

    pub fn requeued(&self, cause: Requeue) {
        if !self.on {
            return;
        }
        self.requeues
            .get_or_create(&CauseLabel {
                cause: cause.as_str(),
            })
            .inc();
    }

    pub fn client_left(&self, stage: Departure) {
        if !self.on {
            return;
        }
        let stage = match stage {
            Departure::Queued => "queued",
            Departure::Generating => "generating",
        };
        self.disconnects.get_or_create(&StageLabel { stage }).inc();
    }

    /// A 429 or 503 from admission; `reason` is the error's fixed code.
    pub fn refused(&self, status: u16, reason: &'static str) {
        if !self.on {
            return;
        }
        let status = match status {
            429 => "429",
            503 => "503",
            _ => return,
        };
        self.refusals
            .get_or_create(&RefusalLabels { status, reason })
            .inc();
    }

    pub fn load_done(&self, model: &str, took: Option<Duration>) {
        if !self.on {
            return;
        }
        let label = model_label(model);
        let result = if took.is_some() { "ok" } else { "failed" };
        self.loads
            .get_or_create(&LoadLabels {
                model: label.model.clone(),
                result,
            })
            .inc();
        if let Some(took) = took {
            self.load_duration
                .get_or_create(&label)
                .observe(took.as_secs_f64());
        }
    }

    pub fn unloaded(&self, model: &str) {
        if !self.on {
            return;
        }
        self.unloads.get_or_create(&model_label(model)).inc();
    }

    /// The exposition: the gauges read now from the scheduler's `report`,
    /// the roster's `snapshot` and the requests `in_flight`, then every
    /// metric, then the extra sources.
    pub fn render(&self, report: &[ModelReport], snapshot: &Snapshot, in_flight: usize) -> String {
        let extras = self.scrape.lock();
        self.queue_depth.clear();
        self.running.clear();
        for model in report {
            for (priority, queued) in [Priority::Low, Priority::Normal, Priority::High]
                .into_iter()
                .zip(model.queued_by_priority)
            {
                self.queue_depth
                    .get_or_create(&QueueLabels {
                        model: model.name.clone(),
                        priority: priority.as_str(),
                    })
                    .set(i64::try_from(queued).unwrap_or(i64::MAX));
            }
            self.running
                .get_or_create(&model_label(&model.name))
                .set(i64::from(model.running));
        }
        let (mut healthy, mut draining, mut down) = (0, 0, 0);
        for worker in &snapshot.workers {
            if worker.draining {
                draining += 1;
            } else if worker.healthy {
                healthy += 1;
            } else {
                down += 1;
            }
        }
        for (state, count) in [("healthy", healthy), ("draining", draining), ("down", down)] {
            self.workers.get_or_create(&StateLabel { state }).set(count);
        }
        self.in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::warn!(error = %e, "cannot encode the gateway's metrics");
        }
        for extra in &extras.0 {
            extra(&mut out);
        }
        to_text_format(&out)
    }
}

/// The histograms of one streaming generation (time to first token,
/// inter-token latency); none when metrics are off.
#[derive(Debug, Clone)]
pub struct GenerationMetrics(Option<(Histogram, Histogram)>);

impl GenerationMetrics {
    pub fn first_token(&self, after: Duration) {
        if let Some((ttft, _)) = &self.0 {
            ttft.observe(after.as_secs_f64());
        }
    }

    pub fn next_token(&self, gap: Duration) {
        if let Some((_, itl)) = &self.0 {
            itl.observe(gap.as_secs_f64());
        }
    }
}

fn model_label(model: &str) -> ModelLabel {
    ModelLabel {
        model: model.to_owned(),
    }
}

/// OpenMetrics (what `prometheus-client` writes) as Prometheus' text
/// format 0.0.4: a counter family is named with its `_total` suffix there,
/// and there are no `# UNIT` or `# EOF` lines.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            if let Some(pending) = help.replace(line) {
                out.push_str(pending);
                out.push('\n');
            }
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            if let Some(pending) = help.take() {
                let text = pending
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.strip_prefix(name))
                    .unwrap_or_default();
                out.push_str(&format!("# HELP {name}_total{text}\n"));
            }
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            continue;
        }
        if let Some(pending) = help.take() {
            out.push_str(pending);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(pending) = help {
        out.push_str(pending);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_their_total_suffix_in_text_format() {
        let text = to_text_format(
            "# HELP a_things Things.\n# TYPE a_things counter\na_things_total 3\n\
             # HELP b Bees.\n# TYPE b gauge\n# UNIT b bytes\nb 1\n# EOF\n",
        );
        assert_eq!(
            text,
            "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total 3\n\
             # HELP b Bees.\n# TYPE b gauge\nb 1\n"
        );
    }

    #[test]
    fn a_scrape_of_a_fresh_gateway_names_every_family() {
        let metrics = GatewayMetrics::new();
        metrics.request_done("chat_completions", "m", Some(200), Duration::from_millis(5));
        metrics.refused(429, "queue_full");
        let text = metrics.render(&[], &Snapshot::default(), 0);
        assert!(text.contains("herd_gateway_requests_total{route=\"chat_completions\",model=\"m\",status=\"200\"} 1"), "{text}");
        assert!(
            text.contains("herd_gateway_refusals_total{status=\"429\",reason=\"queue_full\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herd_gateway_workers{state=\"healthy\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn metrics_off_record_nothing() {
        let metrics = GatewayMetrics::off();
        assert!(!metrics.is_on());
        metrics.request_done("chat_completions", "m", Some(200), Duration::from_millis(5));
        metrics.tokens("m", 3, 4, 0);
        metrics.queue_waited("m", Duration::from_millis(1));
        metrics
            .generation("m")
            .first_token(Duration::from_millis(1));
        metrics.refused(429, "queue_full");
        metrics.load_done("m", Some(Duration::from_secs(1)));
        let text = metrics.render(&[], &Snapshot::default(), 0);
        for family in [
            "herd_gateway_requests_total{",
            "herd_gateway_prompt_tokens_total{",
            "herd_gateway_queue_wait_seconds_count{",
            "herd_gateway_time_to_first_token_seconds_count{",
            "herd_gateway_refusals_total{status=\"429\",reason=\"queue_full\"} 1",
            "herd_gateway_model_loads_total{",
        ] {
            assert!(!text.contains(family), "{family} recorded: {text}");
        }
    }
}
