//! Shutdown on SIGINT (Ctrl-C) or SIGTERM, the same way in every Herd
//! process: the first signal starts a graceful drain, a second one exits at
//! once (a drain can wait on a model load or a slow client).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Exit status after a second signal (128 + SIGINT, as shells report it).
pub const FORCED_EXIT_STATUS: i32 = 130;

/// Exit status after a drain that had to cut requests still running when
/// its grace period ran out (`EX_TEMPFAIL`: they may be retried). A drain
/// that let every request finish exits with 0.
pub const DRAIN_CUT_EXIT_STATUS: i32 = 75;

/// Resolves on the first SIGINT or SIGTERM; from then on, another one ends
/// the process with [`FORCED_EXIT_STATUS`].
pub async fn shutdown() {
    // Both listeners live from before the first signal to the end, so a
    // second signal that comes quickly is not missed.
    let mut signals = Signals::new();
    signals.next().await;
    tracing::info!("shutting down; a second Ctrl-C or SIGTERM exits at once");
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: exiting without draining");
        exit_now(FORCED_EXIT_STATUS);
    });
}

/// Ends the process at once with `status`, after flushing stdout and
/// stderr, without running exit handlers: `std::process::exit` runs
/// llama.cpp's static destructors while its decode threads still use them,
/// and the process dies of SIGSEGV instead (seen in the tests).
pub fn exit_now(status: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` has no preconditions; it ends the process without
    // touching any state of this one.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(status)
    }
}

/// SIGINT and SIGTERM as one stream; a signal whose handler could not be
/// installed never arrives.
struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Signals {
    fn new() -> Self {
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        async fn recv(signal: &mut Option<Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => {}
            () = recv(&mut self.terminate) => {}
        }
    }
}
