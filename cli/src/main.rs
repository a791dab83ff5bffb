//! `herd`: run Herd locally (`herd serve`), run the parts of a cluster
//! (`herd gateway`, `herd worker`: the same as `herd-gateway` and
//! `herd-worker`), package models (`herd package`) — later also the other
//! `docker model` verbs against a gateway.

mod package;
mod progress;
mod serve;
mod signals;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "Herd: one OpenAI-compatible URL in front of your GPU machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    Worker(herd_worker::cli::WorkerArgs),
    /// Package a GGUF file as a Docker model artifact in the local store.
    Package(package::PackageArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,llama-cpp-2=warn,pingora_core=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herd")
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let result = match cli.command {
                Command::Serve(args) => runtime.block_on(serve::run(args)).map(|drained| {
                    if drained.complete() {
                        0
                    } else {
                        herd_signals::DRAIN_CUT_EXIT_STATUS
                    }
                }),
                Command::Gateway(args) => runtime.block_on(herd_gateway::cli::run(args)),
                Command::Worker(args) => runtime.block_on(herd_worker::cli::run(args)),
                Command::Package(args) => runtime.block_on(package::run(args)).map(|()| 0),
            };
            // Do not wait on blocking work still running (a model load that
            // began just before the shutdown): the process is ending.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        });
    let status = match result {
        Ok(status) => status,
        Err(error) => {
            eprintln!("Error: {error:?}");
            1
        }
    };
    // Not `std::process::exit`: a generation the drain gave up on may still
    // be running in llama.cpp while its static destructors would run.
    herd_signals::exit_now(status)
}
