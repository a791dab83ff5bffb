//! The run's report: JSON for machines, a table for people, and the ratios
//! between two targets measured in the same run.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::args::{Load, ScenarioKind};
use crate::stats::{LevelStats, Summary};

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub started_unix: u64,
    pub scenario: ScenarioKind,
    pub stream: bool,
    pub max_tokens: u32,
    pub rounds: u32,
    pub targets: Vec<TargetReport>,
    /// With `--compare`: second target against the first, per level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparison: Vec<Comparison>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    pub target: String,
    pub levels: Vec<LevelReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelReport {
    pub load: Load,
    #[serde(flatten)]
    pub stats: LevelStats,
}

/// `compare` against `target` at one level: ratios (compare / target) and
/// differences (compare − target, ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub load: Load,
    pub e2e_p50_ratio: Option<f64>,
    pub e2e_p99_ratio: Option<f64>,
    pub e2e_p50_delta_ms: Option<f64>,
    pub e2e_p99_delta_ms: Option<f64>,
    pub ttft_p50_delta_ms: Option<f64>,
    pub ttft_p99_delta_ms: Option<f64>,
    pub ok_rate_ratio: Option<f64>,
    pub output_tokens_per_s_ratio: Option<f64>,
}

impl Report {
    /// Targets that answered no request at all (every one failed).
    pub fn silent_targets(&self) -> Vec<&str> {
        self.targets
            .iter()
            .filter(|t| {
                t.levels.iter().all(|l| l.stats.ok == 0)
                    && t.levels.iter().any(|l| l.stats.failed > 0)
            })
            .map(|t| t.target.as_str())
            .collect()
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0).then(|| b / a)
}

fn pick(s: &Option<Summary>, f: fn(&Summary) -> f64) -> Option<f64> {
    s.as_ref().map(f)
}

impl Comparison {
    pub fn between(load: Load, a: &LevelStats, b: &LevelStats) -> Self {
        let both = |x: Option<f64>, y: Option<f64>| x.zip(y);
        let e2e = |f| both(pick(&a.e2e_ms, f), pick(&b.e2e_ms, f));
        let ttft = |f| both(pick(&a.ttft_ms, f), pick(&b.ttft_ms, f));
        Self {
            load,
            e2e_p50_ratio: e2e(|s| s.p50).and_then(|(x, y)| ratio(x, y)),
            e2e_p99_ratio: e2e(|s| s.p99).and_then(|(x, y)| ratio(x, y)),
            e2e_p50_delta_ms: e2e(|s| s.p50).map(|(x, y)| y - x),
            e2e_p99_delta_ms: e2e(|s| s.p99).map(|(x, y)| y - x),
            ttft_p50_delta_ms: ttft(|s| s.p50).map(|(x, y)| y - x),
            ttft_p99_delta_ms: ttft(|s| s.p99).map(|(x, y)| y - x),
            ok_rate_ratio: ratio(a.ok_rate, b.ok_rate),
            output_tokens_per_s_ratio: ratio(a.output_tokens_per_s, b.output_tokens_per_s),
        }
    }
}

fn q(s: &Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:.2}/{:.2}/{:.2}/{:.2}", s.p50, s.p90, s.p99, s.max),
        None => "-".into(),
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}{unit}"))
}

impl Report {
    /// A human-readable table (latencies in ms, as p50/p90/p99/max).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {:?}, stream {}, max_tokens {}, rounds {}",
            self.scenario, self.stream, self.max_tokens, self.rounds
        );
        for t in &self.targets {
            let _ = writeln!(out, "\ntarget {}", t.target);
            let _ = writeln!(
                out,
                "{:<12} {:>7} {:>6} {:>9} {:>9} {:<28} {:<28} {:<28}",
                "load",
                "ok",
                "err",
                "ok req/s",
                "tok/s",
                "ttft ms p50/p90/p99/max",
                "itl ms p50/p90/p99/max",
                "e2e ms p50/p90/p99/max"
            );
            for l in &t.levels {
                let s = &l.stats;
                let _ = writeln!(
                    out,
                    "{:<12} {:>7} {:>6} {:>9.1} {:>9.1} {:<28} {:<28} {:<28}",
                    l.load.to_string(),
                    s.ok,
                    s.failed,
                    s.ok_rate,
                    s.output_tokens_per_s,
                    q(&s.ttft_ms),
                    q(&s.itl_ms),
                    q(&s.e2e_ms)
                );
                if !s.errors.is_empty() {
                    let errors: Vec<String> =
                        s.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(out, "{:<12} errors: {}", "", errors.join(" "));
                }
            }
        }
        if !self.comparison.is_empty() {
            let _ = writeln!(
                out,
                "\ncompare vs target (ratio = compare/target, Δ = compare−target)"
            );
            for c in &self.comparison {
                let _ = writeln!(
                    out,
                    "{:<12} e2e p50 ×{} Δ{}  p99 ×{} Δ{}  ttft Δp50 {} Δp99 {}  ok req/s ×{}  tok/s ×{}",
                    c.load.to_string(),
                    opt(c.e2e_p50_ratio, ""),
                    opt(c.e2e_p50_delta_ms, "ms"),
                    opt(c.e2e_p99_ratio, ""),
                    opt(c.e2e_p99_delta_ms, "ms"),
                    opt(c.ttft_p50_delta_ms, "ms"),
                    opt(c.ttft_p99_delta_ms, "ms"),
                    opt(c.ok_rate_ratio, ""),
                    opt(c.output_tokens_per_s_ratio, ""),
                );
            }
        }
        out
    }
}
