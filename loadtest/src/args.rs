//! Command-line options and their validation into a [`Plan`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which workload to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Single-turn chats from a fixed prompt set, first `--model` only.
    Chat,
    /// `--agents` agents in multi-turn conversations sharing long system prompts.
    Agents,
    /// Single-turn chats spread round-robin over every `--model`.
    MixedModels,
}

/// Options of one load-test run.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "Load generator for OpenAI-compatible endpoints and Herd workers"
)]
pub struct Args {
    /// `http://host:port` (OpenAI API) or `grpc://host:port` (a worker's
    /// Generate); `grpc://h:p1,h:p2,…` is a set of workers, each request
    /// going to the one its first message hashes to (where prefix affinity
    /// would place it), to compare a gateway with its workers reached directly.
    #[arg(long, default_value = "http://127.0.0.1:12434")]
    pub target: String,
    /// A second target, run alternately with the first; ratios are printed.
    #[arg(long)]
    pub compare: Option<String>,
    #[arg(long, value_enum, default_value = "chat")]
    pub scenario: ScenarioKind,
    /// Model name(s) to request (repeatable).
    #[arg(long = "model", default_value = "ai/smollm2")]
    pub models: Vec<String>,
    /// Closed loop: concurrent clients; a list sweeps (`1,4,16`).
    #[arg(long, value_delimiter = ',', default_value = "4")]
    pub concurrency: Vec<u32>,
    /// Open loop: Poisson arrivals in requests/s; a list sweeps. Overrides --concurrency.
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// Seconds per load level (per target).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Requests per load level (per target); the level ends at whichever bound comes first.
    #[arg(long)]
    pub requests: Option<u64>,
    /// `max_tokens` of every request.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: u32,
    /// Stream responses (SSE / gRPC deltas) and measure TTFT and inter-token latency.
    #[arg(long)]
    pub stream: bool,
    /// Agents in the `agents` scenario.
    #[arg(long, default_value_t = 8)]
    pub agents: u32,
    /// Turns per agent conversation before it starts over.
    #[arg(long, default_value_t = 4)]
    pub turns: u32,
    /// Length of the agents' shared system prompts, in characters.
    #[arg(long, default_value_t = 4000)]
    pub system_prompt_chars: usize,
    /// Distinct system prompts the agents use (agent k has prompt k mod N):
    /// 2 (the default) models two roles shared by many agents; as many as
    /// `--agents` gives every agent its own.
    #[arg(long, default_value_t = 2)]
    pub system_prompts: u32,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Open loop: requests allowed in flight; arrivals beyond it count as `overload` errors.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Alternations of target and --compare per level (default 1, or 4 with --compare).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of latency vs load here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// An API key sent as `Authorization: Bearer …` to HTTP targets.
    #[arg(long, env = "HERD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A PEM CA certificate that https:// targets' certificates must chain
    /// to (instead of the system's roots).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// A bad option, naming it.
#[derive(Debug, thiserror::Error)]
#[error("invalid `--{option}`: {reason}")]
pub struct ArgsError {
    pub option: &'static str,
    pub reason: String,
}

/// What a target URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An OpenAI-compatible base URL (without `/v1`).
    Http(String),
    /// Workers' gRPC endpoints, as `http://host:port` (one or more).
    Grpc(Vec<String>),
}

impl Target {
    pub fn parse(option: &'static str, url: &str) -> Result<Self, ArgsError> {
        let url = url.trim_end_matches('/');
        if let Some(rest) = url.strip_prefix("grpc://") {
            let addresses: Vec<&str> = rest.split(',').map(str::trim).collect();
            if addresses.iter().any(|a| a.is_empty()) {
                return Err(ArgsError {
                    option,
                    reason: format!("`{url}` has an empty worker address"),
                });
            }
            let endpoints = addresses.iter().map(|a| format!("http://{a}")).collect();
            return Ok(Self::Grpc(endpoints));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Self::Http(url.trim_end_matches("/v1").to_owned()));
        }
        Err(ArgsError {
            option,
            reason: format!("`{url}` is not http://, https:// or grpc://"),
        })
    }
}

/// One load level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Load {
    /// `concurrency` clients, each sending its next request when the last ends.
    Closed { concurrency: u32 },
    /// Poisson arrivals at `rate` requests/s.
    Open { rate: f64 },
}

impl Load {
    /// The x value of a chart.
    pub fn value(&self) -> f64 {
        match *self {
            Self::Closed { concurrency } => f64::from(concurrency),
            Self::Open { rate } => rate,
        }
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed { concurrency } => write!(f, "c={concurrency}"),
            Self::Open { rate } => write!(f, "r={rate}/s"),
        }
    }
}

/// Validated options.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<(String, Target)>,
    pub levels: Vec<Load>,
    pub duration: Duration,
    pub requests: Option<u64>,
    pub rounds: u32,
    pub timeout: Duration,
}

/// A target as the report names it: a list of gRPC workers by its first
/// and its length, any other URL as given.
fn label(url: &str) -> String {
    match url.split_once(',') {
        Some((first, _)) if url.starts_with("grpc://") => {
            format!("{first},… ({} workers)", url.split(',').count())
        }
        _ => url.to_owned(),
    }
}

impl Args {
    /// Checks every option; the error names the first bad one.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let bad = |option, reason: &str| ArgsError {
            option,
            reason: reason.to_owned(),
        };
        let mut targets = vec![(label(&self.target), Target::parse("target", &self.target)?)];
        if let Some(url) = &self.compare {
            targets.push((label(url), Target::parse("compare", url)?));
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 3600.0) {
            return Err(bad("duration", "must be in (0, 3600] seconds"));
        }
        if self.requests == Some(0) {
            return Err(bad("requests", "must be at least 1"));
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 3600.0) {
            return Err(bad("timeout", "must be in (0, 3600] seconds"));
        }
        if self.models.is_empty() || self.models.iter().any(|m| m.is_empty()) {
            return Err(bad("model", "needs at least one non-empty name"));
        }
        if self.max_tokens == 0 {
            return Err(bad("max-tokens", "must be at least 1"));
        }
        if self.agents == 0 || self.turns == 0 {
            return Err(bad("agents", "agents and turns must be at least 1"));
        }
        if self.system_prompts == 0 {
            return Err(bad("system-prompts", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(bad("max-in-flight", "must be at least 1"));
        }
        let levels: Vec<Load> = if self.rate.is_empty() {
            if self.concurrency.iter().any(|&c| c == 0 || c > 100_000) {
                return Err(bad("concurrency", "each must be in 1..=100000"));
            }
            self.concurrency
                .iter()
                .map(|&concurrency| Load::Closed { concurrency })
                .collect()
        } else {
            if self
                .rate
                .iter()
                .any(|r| !(r.is_finite() && *r > 0.0 && *r <= 1e6))
            {
                return Err(bad("rate", "each must be in (0, 1e6] requests/s"));
            }
            self.rate.iter().map(|&rate| Load::Open { rate }).collect()
        };
        if levels.is_empty() {
            return Err(bad("concurrency", "needs at least one level"));
        }
        let rounds = self
            .rounds
            .unwrap_or(if self.compare.is_some() { 4 } else { 1 });
        if rounds == 0 || rounds > 1000 {
            return Err(bad("rounds", "must be in 1..=1000"));
        }
        Ok(Plan {
            targets,
            levels,
            duration: Duration::from_secs_f64(self.duration),
            requests: self.requests,
            rounds,
            timeout: Duration::from_secs_f64(self.timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn targets_parse_by_scheme() {
        assert_eq!(
            Target::parse("target", "http://h:1/v1/").unwrap(),
            Target::Http("http://h:1".into())
        );
        assert_eq!(
            Target::parse("target", "grpc://h:2").unwrap(),
            Target::Grpc(vec!["http://h:2".into()])
        );
        assert_eq!(
            Target::parse("target", "grpc://h:2,h:3").unwrap(),
            Target::Grpc(vec!["http://h:2".into(), "http://h:3".into()])
        );
        let err = Target::parse("target", "grpc://h:2,").unwrap_err();
        assert!(
            err.reason.contains("empty worker address"),
            "{}",
            err.reason
        );
        assert_eq!(
            Target::parse("target", "https://h:4").unwrap(),
            Target::Http("https://h:4".into())
        );
        let err = Target::parse("target", "h:3").unwrap_err();
        assert!(err.reason.contains("is not http://"), "{}", err.reason);
    }

    #[test]
    fn a_rate_list_makes_open_loop_levels() {
        let args = Args::parse_from(["x", "--rate", "10,100", "--compare", "grpc://h:1"]);
        let plan = args.plan().unwrap();
        assert_eq!(
            plan.levels,
            vec![Load::Open { rate: 10.0 }, Load::Open { rate: 100.0 }]
        );
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.rounds, 4);
        let args = Args::parse_from(["x", "--target", "grpc://h:1,h:2,h:3"]);
        assert_eq!(
            args.plan().unwrap().targets[0].0,
            "grpc://h:1,… (3 workers)"
        );
    }

    #[test]
    fn bad_options_are_named() {
        let err = Args::parse_from(["x", "--concurrency", "0"])
            .plan()
            .unwrap_err();
        assert_eq!(err.option, "concurrency");
        let err = Args::parse_from(["x", "--duration=-1"]).plan().unwrap_err();
        assert_eq!(err.option, "duration");
    }
}
