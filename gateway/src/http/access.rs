//! The account step of a request: what the pipeline learned about it
//! (model, tenant, worker, tokens, queue wait, first token), written as one
//! access-log line with key-value fields and recorded in the metrics when
//! the request ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::{GatewayMetrics, GenerationMetrics};

/// The log target of access lines (`RUST_LOG=herd::access=off` hides them).
pub const TARGET: &str = "herd::access";

/// One request, as it went.
#[derive(Debug)]
pub struct Access {
    pub started: Instant,
    /// The route's name ([`super::routes::Route::name`]).
    pub route: &'static str,
    /// The model label: a name from the pool's index, or `unknown`.
    pub model: Option<String>,
    pub tenant: Option<String>,
    pub worker: Option<Arc<str>>,
    pub queue: Option<Duration>,
    pub first_token: Option<Duration>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
    /// The generation's histograms, once its model is known.
    pub generation: Option<GenerationMetrics>,
    last_token: Option<Instant>,
}

impl Access {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            route: "unknown",
            model: None,
            tenant: None,
            worker: None,
            queue: None,
            first_token: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            generation: None,
            last_token: None,
        }
    }

    /// A generation's model is known: its histograms are looked up once.
    pub fn generating(&mut self, metrics: &GatewayMetrics, model: String) {
        self.generation = Some(metrics.generation(&model));
        self.model = Some(model);
    }

    /// Text arrived from the worker: time to first token, then the gaps
    /// between deltas.
    pub fn token(&mut self) {
        let now = Instant::now();
        match self.last_token {
            None => {
                let ttft = now - self.started;
                self.first_token = Some(ttft);
                if let Some(generation) = &self.generation {
                    generation.first_token(ttft);
                }
            }
            Some(last) => {
                if let Some(generation) = &self.generation {
                    generation.next_token(now - last);
                }
            }
        }
        self.last_token = Some(now);
    }

    /// The generation finished with these counts.
    pub fn finished(
        &mut self,
        metrics: &GatewayMetrics,
        prompt: u32,
        completion: u32,
        cached: u32,
    ) {
        self.prompt_tokens = prompt;
        self.completion_tokens = completion;
        self.cached_tokens = cached;
        if let Some(model) = &self.model {
            metrics.tokens(model, prompt, completion, cached);
        }
    }

    /// Records the request in `metrics` and writes its access line.
    pub fn done(self, metrics: &GatewayMetrics, method: &str, status: Option<u16>) {
        let took = self.started.elapsed();
        let model = self.model.as_deref().unwrap_or("");
        metrics.request_done(self.route, model, status, took);
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        // Scrapes and probes are routine: at debug, the rest at info.
        let routine = matches!(self.route, "metrics" | "healthz" | "readyz" | "logs");
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: TARGET,
                    $level,
                    method,
                    route = self.route,
                    model,
                    tenant = self.tenant.as_deref(),
                    worker = self.worker.as_deref(),
                    status,
                    prompt_tokens = self.prompt_tokens,
                    completion_tokens = self.completion_tokens,
                    cached_tokens = self.cached_tokens,
                    queue_ms = ms(self.queue),
                    ttft_ms = ms(self.first_token),
                    total_ms = took.as_secs_f64() * 1000.0,
                    "request"
                )
            };
        }
        if routine {
            line!(tracing::Level::DEBUG);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

impl Default for Access {
    fn default() -> Self {
        Self::new()
    }
}
