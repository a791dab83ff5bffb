//! Turning SIGINT (Ctrl-C) and SIGTERM into one shutdown signal.

use tokio::sync::watch;

/// Sets `stop` to true on the first SIGINT or SIGTERM (a second one exits
/// at once: see `herd_signals`).
pub fn stop_on_signal(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        herd_signals::shutdown().await;
        let _ = stop.send(true);
    });
}
