//! `herd-cluster-bench`: cluster-mode measurements for docs/benchmarks.md
//! (`loadtest/scripts/bench-cluster` runs it against real processes).
//!
//! `propagation`: how long a worker's join and its death take to reach
//! every gateway's view. Each round starts a mock worker process (not
//! registered by itself), registers it in etcd under a lease the way a
//! worker does, and times each gateway's `/readyz` until it counts the
//! worker healthy (the watch delivered the record, the gateway connected and
//! got the worker's first status). Then it kills the worker with SIGKILL and
//! stops renewing its lease (as the dead process would), and times each
//! gateway until it counts the worker down (its status stream broke) and
//! until the worker is gone from its view (the lease expired). `/readyz` is
//! polled every millisecond: the times are good to about 1 ms.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use herd_state::{EtcdStore, Keys, Session, SessionStatus, StateStore, WorkerRecord, encode};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(about = "Cluster-mode measurements: join/death propagation to gateways")]
enum Cli {
    /// Time a worker's join and death to every gateway's view.
    Propagation(PropagationArgs),
}

#[derive(Debug, clap::Args)]
struct PropagationArgs {
    /// etcd endpoint the gateways follow.
    #[arg(long)]
    etcd: String,
    /// Key prefix the gateways use.
    #[arg(long, default_value = herd_state::DEFAULT_PREFIX)]
    prefix: String,
    /// A gateway's base URL (repeatable).
    #[arg(long = "gateway", required = true)]
    gateways: Vec<String>,
    /// The herd-worker binary (run with `--engine mock`).
    #[arg(long)]
    worker_bin: String,
    /// Joins and deaths to time.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Lease TTL of the registrations, in seconds (a worker's default: 10).
    #[arg(long, default_value_t = 10)]
    ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Propagation(args) => propagation(args).await,
    }
}

/// `/readyz`'s worker counts: (healthy, total).
async fn counts(http: &reqwest::Client, gateway: &str) -> anyhow::Result<(u64, u64)> {
    let body: Value = http
        .get(format!("{gateway}/readyz"))
        .send()
        .await?
        .json()
        .await?;
    let workers = &body["workers"];
    Ok((
        workers["healthy"].as_u64().unwrap_or(0),
        workers["total"].as_u64().unwrap_or(0),
    ))
}

/// Time from `since` until `gateway`'s counts satisfy `done` (polled every
/// millisecond, at most 60 s).
async fn until(
    http: &reqwest::Client,
    gateway: &str,
    since: Instant,
    done: impl Fn((u64, u64)) -> bool,
) -> anyhow::Result<Duration> {
    loop {
        if done(counts(http, gateway).await?) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(60) {
            bail!("{gateway} did not get there within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Times of every gateway from `since`.
async fn all_gateways(
    http: &reqwest::Client,
    gateways: &[String],
    since: Instant,
    done: impl Fn((u64, u64)) -> bool + Copy,
) -> anyhow::Result<Vec<Duration>> {
    futures::future::try_join_all(gateways.iter().map(|g| until(http, g, since, done))).await
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn propagation(args: PropagationArgs) -> anyhow::Result<()> {
    let store: Arc<dyn StateStore> =
        Arc::new(EtcdStore::connect(std::slice::from_ref(&args.etcd)).await?);
    let keys = Keys::new(&args.prefix);
    let http = reqwest::Client::new();
    let gateways: Vec<String> = args
        .gateways
        .iter()
        .map(|g| g.trim_end_matches('/').to_owned())
        .collect();
    let (healthy, total) = counts(&http, &gateways[0]).await?;
    let ttl = Duration::from_secs(args.ttl);
    let (mut joins, mut downs, mut gones) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let id = format!("bench-{round}");
        let mut worker = Worker(
            Command::new(&args.worker_bin)
                .args(["--engine", "mock", "--worker-id", &id, "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", args.worker_bin))?,
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the worker never listened on {port}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let session = Session::start(store.clone(), ttl);
        session
            .status()
            .wait_for(|s| matches!(s, SessionStatus::Live(_)))
            .await?;
        let record = WorkerRecord {
            id: id.clone(),
            endpoint: format!("http://127.0.0.1:{port}"),
            ..WorkerRecord::default()
        };
        // Join: the registration is written now.
        let joined = Instant::now();
        session.put(&keys.worker(&id), encode(&record)).await?;
        let times = all_gateways(&http, &gateways, joined, |(h, _)| h == healthy + 1).await?;
        joins.push(times);
        // Renewals run a while, as they would.
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Death: SIGKILL, and nobody renews the lease any more.
        let died = Instant::now();
        worker.0.kill()?;
        drop(session);
        let down = all_gateways(&http, &gateways, died, |(h, _)| h == healthy);
        let gone = all_gateways(&http, &gateways, died, |(_, t)| t == total);
        let (down, gone) = tokio::try_join!(down, gone)?;
        downs.push(down);
        gones.push(gone);
        eprintln!(
            "round {round}: join {:?}, down {:?}, gone {:?}",
            joins.last().map(|t| slowest(t)),
            downs.last().map(|t| slowest(t)),
            gones.last().map(|t| slowest(t)),
        );
    }
    println!(
        "{} rounds, {} gateways, lease TTL {} s; milliseconds (nearest rank)",
        args.rounds,
        gateways.len(),
        args.ttl
    );
    println!("{:<44} {:>9} {:>9} {:>9}", "from → to", "p50", "p99", "max");
    for (name, rounds) in [
        ("join → a gateway counts it healthy", &joins),
        ("death → a gateway counts it down", &downs),
        ("death → gone from a gateway's view", &gones),
    ] {
        let each: Vec<Duration> = rounds.iter().flatten().copied().collect();
        let all: Vec<Duration> = rounds.iter().map(|t| slowest(t)).collect();
        row(&format!("{name} (each)"), each);
        row(&format!("{name} (all {})", gateways.len()), all);
    }
    Ok(())
}

fn slowest(times: &[Duration]) -> Duration {
    times.iter().max().copied().unwrap_or_default()
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    if samples.is_empty() {
        return;
    }
    println!(
        "{name:<44} {:>9.1} {:>9.1} {:>9.1}",
        rank(0.50),
        rank(0.99),
        rank(1.0)
    );
}
