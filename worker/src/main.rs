//! `herd-worker`: one worker daemon (also `herd worker`); see
//! [`herd_worker::cli`].

use clap::Parser;
use herd_worker::cli::{WorkerArgs, run};

fn main() {
    herd_worker::wait_policy::passive_or_reexec();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,llama-cpp-2=warn".into()),
        )
        .init();
    let args = WorkerArgs::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(args)));
    let status = match result {
        Ok(status) => status,
        Err(error) => {
            eprintln!("Error: {error:?}");
            1
        }
    };
    // Not `std::process::exit`: llama.cpp's static destructors must not run
    // while a decode thread may still be finishing a generation.
    herd_signals::exit_now(status)
}
