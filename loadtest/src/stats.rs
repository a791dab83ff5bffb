//! Exact statistics of one load level: percentiles over every sample (no
//! binning), rates over the measured wall time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::Outcome;

/// Distribution of one measure, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The nearest-rank percentile of sorted `values`: the smallest value with at
/// least `p`% of the values at or below it. `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summarises `values` (sorted in place); `None` when empty.
pub fn summarize(values: &mut [f64]) -> Option<Summary> {
    values.sort_by(f64::total_cmp);
    Some(Summary {
        count: values.len(),
        mean: values.iter().sum::<f64>() / values.len().max(1) as f64,
        p50: percentile(values, 50.0)?,
        p90: percentile(values, 90.0)?,
        p99: percentile(values, 99.0)?,
        max: *values.last()?,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Raw samples of one level.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    ttft_ms: Vec<f64>,
    itl_ms: Vec<f64>,
    e2e_ms: Vec<f64>,
    ok: u64,
    output_tokens: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl Recorder {
    pub fn record(&mut self, outcome: &Outcome) {
        match &outcome.result {
            Ok(()) => {
                self.ok += 1;
                self.output_tokens += u64::from(outcome.output_tokens);
                self.e2e_ms.push(ms(outcome.e2e));
                if let Some(t) = outcome.ttft {
                    self.ttft_ms.push(ms(t));
                }
                self.itl_ms.extend(outcome.itl.iter().copied().map(ms));
            }
            Err(e) => *self.errors.entry(e.label()).or_default() += 1,
        }
    }

    /// Counts a request that was never sent, e.g. dropped for overload.
    pub fn record_error(&mut self, label: &str) {
        *self.errors.entry(label.to_owned()).or_default() += 1;
    }

    /// Adds measured wall time (phases of one level add up).
    pub fn add_elapsed(&mut self, elapsed: Duration) {
        self.elapsed += elapsed;
    }

    pub fn merge(&mut self, other: Self) {
        self.ttft_ms.extend(other.ttft_ms);
        self.itl_ms.extend(other.itl_ms);
        self.e2e_ms.extend(other.e2e_ms);
        self.ok += other.ok;
        self.output_tokens += other.output_tokens;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.elapsed += other.elapsed;
    }

    pub fn finish(mut self) -> LevelStats {
        let errors: u64 = self.errors.values().sum();
        let secs = self.elapsed.as_secs_f64();
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        LevelStats {
            requests: self.ok + errors,
            ok: self.ok,
            failed: errors,
            errors: self.errors,
            elapsed_s: secs,
            request_rate: per_s(self.ok + errors),
            ok_rate: per_s(self.ok),
            output_tokens: self.output_tokens,
            output_tokens_per_s: per_s(self.output_tokens),
            ttft_ms: summarize(&mut self.ttft_ms),
            itl_ms: summarize(&mut self.itl_ms),
            e2e_ms: summarize(&mut self.e2e_ms),
        }
    }
}

/// Results of one level against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelStats {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failed requests by cause (`http_503`, `grpc_resource_exhausted`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// Completed requests (ok or not) per second.
    pub request_rate: f64,
    pub ok_rate: f64,
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
    /// Time to first token (streaming only).
    pub ttft_ms: Option<Summary>,
    /// Gaps between consecutive tokens (streaming only).
    pub itl_ms: Option<Summary>,
    /// Request sent → last byte.
    pub e2e_ms: Option<Summary>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::RequestError;

    #[test]
    fn nearest_rank_percentiles_of_1_to_100() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
    }

    #[test]
    fn percentiles_of_small_and_empty_sets() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        // 4 values: p50 is the 2nd, p90 and p99 the 4th.
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.0));
        assert_eq!(percentile(&v, 90.0), Some(4.0));
    }

    #[test]
    fn summarize_sorts_and_averages() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 9.0, 8.0, 7.0, 6.0];
        let s = summarize(&mut v).unwrap();
        assert_eq!(s.count, 10);
        assert_eq!(s.mean, 5.5);
        assert_eq!(s.p50, 5.0);
        assert_eq!(s.p90, 9.0);
        assert_eq!(s.p99, 10.0);
        assert_eq!(s.max, 10.0);
        assert!(summarize(&mut []).is_none());
    }

    #[test]
    fn rates_and_errors_by_cause() {
        let mut rec = Recorder::default();
        for i in 0..8u64 {
            rec.record(&Outcome {
                result: Ok(()),
                ttft: Some(Duration::from_millis(10)),
                itl: vec![Duration::from_millis(2); 3],
                e2e: Duration::from_millis(10 + i),
                output_tokens: 4,
                text: String::new(),
            });
        }
        rec.record(&Outcome::failed(RequestError::Http(503), Duration::ZERO));
        rec.record(&Outcome::failed(RequestError::Timeout, Duration::ZERO));
        rec.add_elapsed(Duration::from_secs(2));
        let s = rec.finish();
        assert_eq!((s.requests, s.ok, s.failed), (10, 8, 2));
        assert_eq!(s.request_rate, 5.0);
        assert_eq!(s.ok_rate, 4.0);
        assert_eq!(s.output_tokens_per_s, 16.0);
        assert_eq!(s.errors["http_503"], 1);
        assert_eq!(s.errors["timeout"], 1);
        assert_eq!(s.itl_ms.unwrap().count, 24);
        assert_eq!(s.e2e_ms.unwrap().max, 17.0);
    }
}
