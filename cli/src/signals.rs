//! Turning SIGINT (Ctrl-C) and SIGTERM into one shutdown signal.

use tokio::sync::watch;

/// Sets `stop` to true on the first SIGINT or SIGTERM.
pub fn stop_on_signal(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
}
