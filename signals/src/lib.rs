//! Shutdown on SIGINT (Ctrl-C) or SIGTERM, the same way in every Herd
//! process: the first signal starts a graceful drain, a second one exits at
//! once (a drain can wait on a model load or a slow client).

use tokio::signal::unix::{SignalKind, signal};

/// Exit status after a second signal (128 + SIGINT, as shells report it).
pub const FORCED_EXIT_STATUS: i32 = 130;

/// Resolves on the first SIGINT or SIGTERM; from then on, another one ends
/// the process with [`FORCED_EXIT_STATUS`].
pub async fn shutdown() {
    next_signal().await;
    tracing::info!("shutting down; a second Ctrl-C or SIGTERM exits at once");
    tokio::spawn(async {
        next_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(FORCED_EXIT_STATUS);
    });
}

async fn next_signal() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // No SIGTERM handler could be installed: Ctrl-C still works.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
