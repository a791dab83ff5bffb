//! Which worker serves a request. A policy sees the immutable snapshot and
//! the model asked for; later policies (model and prefix affinity,
//! memory-aware placement) are new files here behind the same trait.

mod least_busy;

use std::fmt::Debug;
use std::sync::Arc;

pub use least_busy::LeastBusy;

use crate::workers::{ModelRoute, Snapshot, WorkerView};

/// A chosen worker and model.
#[derive(Debug, Clone)]
pub struct Pick {
    pub worker: Arc<WorkerView>,
    pub route: Arc<ModelRoute>,
}

/// Chooses among the healthy workers that serve a model.
pub trait RoutingPolicy: Send + Sync + Debug + 'static {
    fn pick(&self, snapshot: &Snapshot, model: &str) -> Option<Pick>;
}
