//! `herd-worker`: one worker daemon (also `herd worker`); see
//! [`herd_worker::cli`].

use clap::Parser;
use herd_worker::cli::{WorkerArgs, run};
use herd_worker::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "herd-worker",
    version,
    about = "Herd worker: runs GGUF models with llama.cpp behind a gRPC service"
)]
struct Main {
    #[command(flatten)]
    args: WorkerArgs,
    /// Log lines as `text` (for people) or `json` (one object per line).
    #[arg(long, value_enum, default_value = "text", env = "HERD_LOG_FORMAT")]
    log_format: LogFormat,
}

fn main() {
    let main = Main::parse();
    let runtime = tokio::runtime::Runtime::new();
    {
        // Inside the runtime: the trace exporter's channel lives on it.
        let _entered = runtime.as_ref().ok().map(tokio::runtime::Runtime::enter);
        logging::init(main.log_format, "info,llama-cpp-2=warn");
    }
    let result = runtime.map_err(anyhow::Error::from).and_then(|runtime| {
        let result = runtime.block_on(run(main.args));
        logging::shutdown();
        result
    });
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
