//! `herd`: run Herd locally (`herd serve`), run the parts of a cluster
//! (`herd gateway`, `herd worker`: the same as `herd-gateway` and
//! `herd-worker`), package models (`herd package`), and Docker Model
//! Runner's verbs (`pull`, `run`, `ls`, `ps`, …) against any Herd gateway
//! (`--host`, `HERD_HOST`).

mod bench;
mod client;
mod keys;
mod models;
mod ops;
mod package;
mod progress;
mod run;
mod serve;
mod signals;
mod table;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "Herd: one OpenAI-compatible URL in front of your GPU machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: client::Remote,
    /// Log lines as `text` (for people) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HERD_LOG_FORMAT"
    )]
    log_format: herd_gateway::logs::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway and one worker in this process (the embedded default).
    Serve(serve::ServeArgs),
    /// Run a gateway (as `herd-gateway`): the OpenAI API in front of
    /// workers, from its config or a cluster's etcd.
    Gateway(herd_gateway::cli::GatewayArgs),
    /// Run a worker (as `herd-worker`): models behind gRPC, registered in
    /// a cluster's etcd with --etcd.
    Worker(Box<herd_worker::cli::WorkerArgs>),
    /// Manage the gateway's API keys (a keys file).
    Keys(keys::KeysArgs),
    /// Package a GGUF file as a Docker model artifact in the local store.
    Package(package::PackageArgs),
    /// Pull a model into the pool (a worker's store).
    Pull(models::RefArgs),
    /// Push a stored model to its registry.
    Push(models::RefArgs),
    /// Give a stored model another name.
    Tag(models::TagArgs),
    /// Remove models (or tags).
    Rm(models::RmArgs),
    /// List the stored models.
    #[command(alias = "list")]
    Ls(models::LsArgs),
    /// Show a stored model as JSON.
    Inspect(models::RefArgs),
    /// Chat with a model: one answer, or an interactive chat.
    Run(run::RunArgs),
    /// The loaded models: where, how busy, queued, until when kept.
    Ps(ops::JsonArgs),
    /// Disk used by stored models, per worker.
    Df(ops::JsonArgs),
    /// Unload idle models now.
    Unload(ops::UnloadArgs),
    /// The gateway's recent log lines.
    Logs(ops::LogsArgs),
    /// Whether the pool runs.
    Status(ops::JsonArgs),
    /// This herd's version, and the gateway's state.
    Version,
    /// Measure a model through the gateway: TTFT and tokens/s at 1, 4 and 8
    /// concurrent requests.
    Bench(bench::BenchArgs),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs one of the verbs that talk to a gateway.
async fn remote(command: Command, remote: client::Remote) -> anyhow::Result<i32> {
    let client = client::Client::new(&remote)?;
    match command {
        Command::Pull(a) => models::transfer(&client, models::Transfer::Pull, &a.reference).await,
        Command::Push(a) => models::transfer(&client, models::Transfer::Push, &a.reference).await,
        Command::Tag(a) => models::tag(&client, a).await,
        Command::Rm(a) => models::rm(&client, a).await,
        Command::Ls(a) => models::ls(&client, a).await,
        Command::Inspect(a) => models::inspect(&client, &a.reference).await,
        Command::Run(a) => run::run(&client, a).await,
        Command::Ps(a) => ops::ps(&client, a).await,
        Command::Df(a) => ops::df(&client, a).await,
        Command::Unload(a) => ops::unload(&client, a).await,
        Command::Logs(a) => ops::logs(&client, a).await,
        Command::Status(a) => ops::status(&client, a).await,
        Command::Version => ops::version(&client).await,
        Command::Bench(a) => bench::run(&client, a).await,
        Command::Serve(_)
        | Command::Gateway(_)
        | Command::Worker(_)
        | Command::Package(_)
        | Command::Keys(_)
        | Command::Completion { .. } => Ok(()),
    }
    .map(|()| 0)
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herd")
        .build();
    {
        // Inside the runtime: a trace exporter's channel lives on it.
        let _entered = runtime.as_ref().ok().map(tokio::runtime::Runtime::enter);
        herd_gateway::logs::init(cli.log_format, "info,llama-cpp-2=warn,pingora_core=warn");
    }
    let result = runtime.map_err(anyhow::Error::from).and_then(|runtime| {
        let result = match cli.command {
            Command::Serve(args) => runtime.block_on(serve::run(args)).map(|drained| {
                if drained.complete() {
                    0
                } else {
                    herd_signals::DRAIN_CUT_EXIT_STATUS
                }
            }),
            Command::Gateway(args) => runtime.block_on(herd_gateway::cli::run(args)),
            Command::Worker(args) => runtime.block_on(herd_worker::cli::run(*args)),
            Command::Package(args) => runtime.block_on(package::run(args)).map(|()| 0),
            Command::Keys(args) => runtime.block_on(keys::run(args)).map(|()| 0),
            Command::Completion { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "herd", &mut std::io::stdout());
                Ok(0)
            }
            command => runtime.block_on(remote(command, cli.remote)),
        };
        // Spans still buffered go out while the runtime still runs.
        herd_gateway::traces::shutdown();
        // Do not wait on blocking work still running (a model load that
        // began just before the shutdown): the process is ending.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        result
    });
    let status = match result {
        Ok(status) => status,
        Err(error) => {
            // One line: the error and its causes, no debug dump.
            eprintln!("Error: {error:#}");
            1
        }
    };
    // Not `std::process::exit`: a generation the drain gave up on may still
    // be running in llama.cpp while its static destructors would run.
    herd_signals::exit_now(status)
}
