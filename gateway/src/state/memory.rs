//! The embedded, in-process state store.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{StateError, StateStore, WorkerRecord};

/// Keeps membership in memory; for `herd serve` and tests.
#[derive(Debug)]
pub struct MemoryStateStore {
    workers: Mutex<BTreeMap<String, WorkerRecord>>,
    version: watch::Sender<u64>,
}

impl Default for MemoryStateStore {
    fn default() -> Self {
        Self {
            workers: Mutex::new(BTreeMap::new()),
            version: watch::channel(0).0,
        }
    }
}

impl MemoryStateStore {
    fn with_workers<T>(&self, f: impl FnOnce(&mut BTreeMap<String, WorkerRecord>) -> T) -> T {
        let mut guard = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn register_worker(&self, record: WorkerRecord) -> Result<(), StateError> {
        if record.id.is_empty() || record.endpoint.is_empty() {
            return Err(StateError::Invalid("id and endpoint are required".into()));
        }
        self.with_workers(|w| w.insert(record.id.clone(), record));
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn deregister_worker(&self, id: &str) -> Result<(), StateError> {
        if self.with_workers(|w| w.remove(id)).is_some() {
            self.version.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StateError> {
        Ok(self.with_workers(|w| w.values().cloned().collect()))
    }

    fn membership_changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> WorkerRecord {
        WorkerRecord {
            id: id.into(),
            endpoint: format!("http://127.0.0.1:1/{id}"),
        }
    }

    #[tokio::test]
    async fn register_list_deregister() {
        let store = MemoryStateStore::default();
        let mut changes = store.membership_changes();
        store.register_worker(rec("b")).await.unwrap();
        store.register_worker(rec("a")).await.unwrap();
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let ids: Vec<_> = store
            .workers()
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        store.deregister_worker("a").await.unwrap();
        store.deregister_worker("missing").await.unwrap();
        assert_eq!(store.workers().await.unwrap(), vec![rec("b")]);
        assert!(changes.has_changed().unwrap());
    }

    #[tokio::test]
    async fn invalid_records_are_refused() {
        let store = MemoryStateStore::default();
        assert!(store.register_worker(rec("")).await.is_err());
    }
}
