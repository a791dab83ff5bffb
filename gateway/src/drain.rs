//! Graceful drain. On SIGINT/SIGTERM the gateway stops accepting connections
//! at once and lets every request it has already read finish at full speed.
//! If some are still running when the grace period is over, they are *cut*:
//! a stream ends with an error event and `[DONE]`, a request that has not
//! answered yet gets a 503 — never a silently closed socket. The report says
//! how many were cut, so a binary can say so in its exit status.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long cut requests get to write their last words before the gateway
/// stops waiting for them.
const CUT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests being served, and the signal that ends them when the grace
/// period is over.
#[derive(Debug, Default)]
pub struct Drain {
    count: AtomicUsize,
    idle: Notify,
    cut: CancellationToken,
    /// The drain began: endless responses (`/logs?follow=true`) end now.
    stopping: CancellationToken,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Requests still running when the grace period ran out.
    pub cut: usize,
}

impl DrainReport {
    /// Whether every request finished on its own.
    pub fn complete(&self) -> bool {
        self.cut == 0
    }
}

impl Drain {
    /// Counts a request as in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when requests in flight must end now (the grace period is
    /// over); pending until then.
    pub async fn cut(&self) {
        self.cut.cancelled().await;
    }

    /// Resolves when the drain begins; pending until then. Responses that
    /// never end on their own (following the logs) stop here.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// Waits up to `grace` for the requests in flight, then cuts those left
    /// and gives them a moment to write their ending.
    pub async fn finish(&self, grace: Duration) -> DrainReport {
        self.stopping.cancel();
        if tokio::time::timeout(grace, self.wait_idle()).await.is_ok() {
            return DrainReport { cut: 0 };
        }
        let cut = self.count();
        tracing::warn!(
            in_flight = cut,
            grace_secs = grace.as_secs_f64(),
            "shutdown grace period over; ending the requests still in flight"
        );
        self.cut.cancel();
        if tokio::time::timeout(CUT_WRITE_TIMEOUT, self.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.count(),
                "requests did not end after the cut; closing their connections"
            );
        }
        DrainReport { cut }
    }
}

/// One request in flight (see [`Drain::enter`]).
#[derive(Debug)]
pub struct InFlightGuard(Arc<Drain>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finishing_with_nothing_in_flight_cuts_nothing() {
        let drain = Arc::new(Drain::default());
        let report = drain.finish(Duration::from_secs(5)).await;
        assert!(report.complete());
    }

    #[tokio::test]
    async fn a_request_that_ends_within_the_grace_period_is_not_cut() {
        let drain = Arc::new(Drain::default());
        let guard = drain.enter();
        let request = {
            let drain = drain.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = drain.cut() => panic!("cut within the grace period"),
                    () = tokio::task::yield_now() => drop(guard),
                }
            })
        };
        let report = drain.finish(Duration::from_secs(30)).await;
        request.await.unwrap();
        assert_eq!(report, DrainReport { cut: 0 });
    }

    #[tokio::test]
    async fn requests_past_the_grace_period_are_cut_and_counted() {
        let drain = Arc::new(Drain::default());
        let requests: Vec<_> = (0..3)
            .map(|_| {
                let guard = drain.enter();
                let drain = drain.clone();
                tokio::spawn(async move {
                    // A request that would run forever, but ends when cut.
                    drain.cut().await;
                    drop(guard);
                })
            })
            .collect();
        let report = drain.finish(Duration::from_millis(50)).await;
        assert_eq!(report.cut, 3);
        for request in requests {
            request.await.unwrap();
        }
        assert_eq!(drain.count(), 0);
    }
}
