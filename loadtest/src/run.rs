//! One whole run: every level, every target, alternating rounds.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::{Args, ArgsError};
use crate::client::{Client, ClientError};
use crate::load::{self, Phase};
use crate::report::{Comparison, LevelReport, Report, TargetReport};
use crate::scenarios::Scenario;
use crate::stats::Recorder;

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn progress(args: &Args, message: String) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {pos} requests ({per_sec}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar.set_message(message);
    bar
}

/// Runs the load test `args` describe and returns its report.
pub async fn run(args: &Args) -> Result<Report, RunError> {
    let plan = args.plan()?;
    let options = crate::client::http::HttpOptions {
        api_key: args.api_key.clone(),
        ca_cert: args.ca_cert.clone(),
    };
    let clients = plan
        .targets
        .iter()
        .map(|(_, t)| Client::new(t, plan.timeout, &options).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let scenarios: Vec<Arc<Scenario>> = clients
        .iter()
        .map(|_| Arc::new(Scenario::new(args)))
        .collect();
    let counters: Vec<Arc<AtomicU64>> = clients.iter().map(|_| Arc::default()).collect();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut per_target: Vec<Vec<LevelReport>> = clients.iter().map(|_| Vec::new()).collect();
    let rounds = plan.rounds;
    for &level in &plan.levels {
        let mut recorders: Vec<Recorder> = clients.iter().map(|_| Recorder::default()).collect();
        for round in 0..rounds {
            for (i, client) in clients.iter().enumerate() {
                let bar = progress(
                    args,
                    format!("{} {level} round {}/{rounds}", plan.targets[i].0, round + 1),
                );
                let phase = Phase {
                    client: client.clone(),
                    scenario: scenarios[i].clone(),
                    load: level,
                    duration: plan.duration / rounds,
                    requests: plan.requests.map(|r| r.div_ceil(u64::from(rounds))),
                    timeout: plan.timeout,
                    max_in_flight: args.max_in_flight,
                    counter: counters[i].clone(),
                    progress: bar.clone(),
                };
                recorders[i].merge(load::run(phase).await);
                bar.finish_and_clear();
            }
        }
        for (i, rec) in recorders.into_iter().enumerate() {
            per_target[i].push(LevelReport {
                load: level,
                stats: rec.finish(),
            });
        }
    }
    let comparison = match per_target.as_slice() {
        [a, b] => a
            .iter()
            .zip(b)
            .map(|(x, y)| Comparison::between(x.load, &x.stats, &y.stats))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Report {
        tool: "herd-loadtest".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix,
        scenario: args.scenario,
        stream: args.stream,
        max_tokens: args.max_tokens,
        rounds,
        targets: plan
            .targets
            .iter()
            .zip(per_target)
            .map(|((url, _), levels)| TargetReport {
                target: url.clone(),
                levels,
            })
            .collect(),
        comparison,
    })
}
