//! A revision counter the engine bumps whenever what `Status` shows changes
//! (a slot taken or freed, a model loaded or unloaded), so `WatchStatus`
//! pushes instead of gateways polling.

use std::sync::Arc;

use tokio::sync::watch;

/// Cheap to clone; every clone bumps the same counter.
#[derive(Debug, Clone)]
pub struct Changes(Arc<watch::Sender<u64>>);

impl Default for Changes {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl Changes {
    /// Records a change and wakes every watcher (callable from any thread).
    pub fn bump(&self) {
        self.0.send_modify(|revision| *revision += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    pub fn revision(&self) -> u64 {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_bumps_from_any_clone() {
        let changes = Changes::default();
        let mut rx = changes.subscribe();
        let other = changes.clone();
        std::thread::spawn(move || other.bump()).join().unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 1);
        assert_eq!(changes.revision(), 1);
    }
}
