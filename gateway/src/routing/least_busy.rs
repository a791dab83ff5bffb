//! Route to the healthy worker with the most headroom for the model: free
//! slots minus requests already queued for them, so a queue spreads over
//! workers instead of piling onto one.

use super::{Pick, RoutingPolicy};
use crate::workers::Snapshot;

/// Most headroom first; ties go to the first worker by id.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastBusy;

impl RoutingPolicy for LeastBusy {
    fn pick(&self, snapshot: &Snapshot, model: &str) -> Option<Pick> {
        snapshot
            .workers
            .iter()
            .filter(|w| w.healthy && w.client.is_some())
            .filter_map(|w| w.model(model).map(|route| (w, route)))
            .max_by_key(|(w, route)| (route.headroom(), std::cmp::Reverse(w.id.clone())))
            .map(|(w, route)| Pick {
                worker: w.clone(),
                route: route.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herd_proto::v1 as pb;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::workers::{ModelRoute, WorkerView};

    fn worker(id: &str, healthy: bool, free: usize) -> Arc<WorkerView> {
        Arc::new(WorkerView {
            id: id.into(),
            endpoint: String::new(),
            client: Some(herd_proto::v1::worker_client::WorkerClient::new(
                tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            )),
            healthy,
            status: None,
            models: vec![Arc::new(ModelRoute {
                status: pb::ModelStatus {
                    name: "m".into(),
                    slots_total: 4,
                    loaded: true,
                    ..Default::default()
                },
                slots: Arc::new(Semaphore::new(free)),
                waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            })],
        })
    }

    #[tokio::test]
    async fn picks_the_healthy_worker_with_most_free_slots() {
        let snapshot = Snapshot {
            workers: vec![
                worker("a", true, 1),
                worker("b", true, 3),
                worker("c", false, 4),
            ],
        };
        assert_eq!(LeastBusy.pick(&snapshot, "m").unwrap().worker.id, "b");
        assert!(LeastBusy.pick(&snapshot, "other").is_none());
    }

    #[tokio::test]
    async fn a_queue_spreads_over_workers() {
        let (a, b) = (worker("a", true, 0), worker("b", true, 0));
        a.models[0]
            .waiting
            .store(3, std::sync::atomic::Ordering::Release);
        let snapshot = Snapshot {
            workers: vec![a, b],
        };
        assert_eq!(LeastBusy.pick(&snapshot, "m").unwrap().worker.id, "b");
    }

    #[tokio::test]
    async fn ties_go_to_the_lowest_id() {
        let snapshot = Snapshot {
            workers: vec![worker("b", true, 2), worker("a", true, 2)],
        };
        assert_eq!(LeastBusy.pick(&snapshot, "m").unwrap().worker.id, "a");
    }
}
