//! Driving one target at one load level for one phase: closed loop (N
//! clients, each sending when its last request ends) or open loop (Poisson
//! arrivals). Every phase ends by itself: at the deadline or the request
//! bound, then waits at most one request timeout for stragglers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::task::JoinSet;

use crate::args::Load;
use crate::client::{Client, Outcome};
use crate::scenarios::Scenario;
use crate::stats::Recorder;

/// The recorder the request tasks of one phase share.
#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<Recorder>>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, outcome: &Outcome) {
        self.lock().record(outcome);
    }

    fn record_error(&self, label: &str) {
        self.lock().record_error(label);
    }

    fn take(&self) -> Recorder {
        std::mem::take(&mut *self.lock())
    }
}

/// One phase's bounds and parts.
#[derive(Debug, Clone)]
pub struct Phase {
    pub client: Arc<Client>,
    pub scenario: Arc<Scenario>,
    pub load: Load,
    pub duration: Duration,
    pub requests: Option<u64>,
    pub timeout: Duration,
    pub max_in_flight: usize,
    /// Numbers requests across phases, so scenarios keep rotating.
    pub counter: Arc<AtomicU64>,
    pub progress: ProgressBar,
}

/// Runs the phase; returns its samples, wall time included.
pub async fn run(phase: Phase) -> Recorder {
    let started = Instant::now();
    let deadline = started + phase.duration;
    let recorder = Shared::default();
    let mut tasks = JoinSet::new();
    let issued = Arc::new(AtomicU64::new(0));
    match phase.load {
        Load::Closed { concurrency } => {
            for _ in 0..concurrency {
                tasks.spawn(closed_client(
                    phase.clone(),
                    deadline,
                    issued.clone(),
                    recorder.clone(),
                ));
            }
        }
        Load::Open { rate } => open_arrivals(&phase, rate, deadline, &recorder, &mut tasks).await,
    }
    // Stragglers get one request timeout (plus a margin) after the deadline.
    let hard_stop =
        tokio::time::Instant::from_std(deadline + phase.timeout + Duration::from_secs(1));
    while let Ok(Some(_)) = tokio::time::timeout_at(hard_stop, tasks.join_next()).await {}
    let abandoned = tasks.len();
    tasks.abort_all();
    let mut rec = recorder.take();
    for _ in 0..abandoned {
        rec.record_error("abandoned");
    }
    rec.add_elapsed(started.elapsed());
    rec
}

fn within_bounds(phase: &Phase, deadline: Instant, issued: &AtomicU64) -> bool {
    if Instant::now() >= deadline {
        return false;
    }
    let n = issued.fetch_add(1, Ordering::Relaxed);
    phase.requests.is_none_or(|max| n < max)
}

async fn closed_client(phase: Phase, deadline: Instant, issued: Arc<AtomicU64>, recorder: Shared) {
    while within_bounds(&phase, deadline, &issued) {
        let n = phase.counter.fetch_add(1, Ordering::Relaxed);
        let job = phase.scenario.next(n).await;
        let outcome = phase.client.send(&job.request).await;
        recorder.record(&outcome);
        job.complete(&outcome);
        phase.progress.inc(1);
    }
}

/// A small deterministic generator for arrival gaps (splitmix64).
#[derive(Debug)]
struct Arrivals(u64);

impl Arrivals {
    /// An exponentially distributed gap with mean 1/rate.
    fn gap(&mut self, rate: f64) -> Duration {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in (0, 1]: never ln(0).
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        Duration::from_secs_f64(-u.ln() / rate)
    }
}

async fn open_arrivals(
    phase: &Phase,
    rate: f64,
    deadline: Instant,
    recorder: &Shared,
    tasks: &mut JoinSet<()>,
) {
    let issued = AtomicU64::new(0);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut arrivals = Arrivals(0x5EED ^ rate.to_bits());
    let mut next = Instant::now();
    loop {
        next += arrivals.gap(rate);
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        if !within_bounds(phase, deadline, &issued) {
            break;
        }
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
        if in_flight.load(Ordering::Relaxed) >= phase.max_in_flight {
            recorder.record_error("overload");
            phase.progress.inc(1);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let n = phase.counter.fetch_add(1, Ordering::Relaxed);
        let (client, scenario, recorder) = (
            phase.client.clone(),
            phase.scenario.clone(),
            recorder.clone(),
        );
        let (in_flight, progress) = (in_flight.clone(), phase.progress.clone());
        tasks.spawn(async move {
            let job = scenario.next(n).await;
            let outcome = client.send(&job.request).await;
            recorder.record(&outcome);
            job.complete(&outcome);
            in_flight.fetch_sub(1, Ordering::Relaxed);
            progress.inc(1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_average_one_over_rate() {
        let mut a = Arrivals(1);
        let n = 100_000;
        let total: f64 = (0..n).map(|_| a.gap(200.0).as_secs_f64()).sum();
        let mean = total / f64::from(n);
        assert!((mean - 0.005).abs() < 0.0002, "mean gap {mean}");
    }
}
