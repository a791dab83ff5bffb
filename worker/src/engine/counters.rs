//! Generation counters an engine keeps while running, shared with its
//! decode loops; read as an [`EngineCounters`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{EngineCounters, FinishReason};

#[derive(Debug, Default)]
pub struct Counters {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub tokens_generated: AtomicU64,
}

impl Counters {
    /// Counts a generation that ended for `reason`.
    pub fn finished(&self, reason: FinishReason) {
        let counter = match reason {
            FinishReason::Cancelled => &self.cancelled,
            FinishReason::Stop | FinishReason::Length | FinishReason::ToolCalls => &self.completed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> EngineCounters {
        EngineCounters {
            started: self.started.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            tokens_generated: self.tokens_generated.load(Ordering::Relaxed),
        }
    }
}
