//! Stored responses (`store: true`, the default): what `previous_response_id`,
//! `GET`/`DELETE /v1/responses/{id}` and `input_items` read. Bounded in
//! count, bytes and age; the oldest go first. Kept in the state store when
//! the gateway has one (etcd in a cluster: every gateway sees them, and a
//! restart keeps them; its in-memory store inside `herd serve`), else in
//! this process's memory. See [`shared`](super::shared).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herd_proto::v1 as pb;
use serde_json::Value;

/// Most responses kept.
pub const MAX_RESPONSES: usize = 1024;
/// Most bytes kept (responses and their conversations, as JSON).
pub const MAX_BYTES: usize = 64 << 20;
/// How long a response is kept.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The response object as answered.
    pub response: Value,
    /// Its input items (with ids), as `input_items` lists them.
    pub input_items: Vec<Value>,
    /// The whole conversation up to and including its output (without
    /// instructions), for a follow-up naming it as `previous_response_id`.
    pub conversation: Vec<pb::ChatMessage>,
    pub(super) bytes: usize,
    at: Instant,
}

impl Stored {
    pub fn new(
        response: Value,
        input_items: Vec<Value>,
        conversation: Vec<pb::ChatMessage>,
    ) -> Self {
        let bytes = response.to_string().len()
            + input_items
                .iter()
                .map(|i| i.to_string().len())
                .sum::<usize>()
            + conversation
                .iter()
                .map(|m| {
                    m.content.len()
                        + m.tool_calls
                            .iter()
                            .map(|c| c.arguments_json.len() + c.name.len() + c.id.len())
                            .sum::<usize>()
                        + 32
                })
                .sum::<usize>();
        Self {
            response,
            input_items,
            conversation,
            bytes,
            at: Instant::now(),
        }
    }
}

/// The bounded store.
#[derive(Debug)]
pub struct ResponseStore {
    inner: Mutex<Inner>,
    max_responses: usize,
    max_bytes: usize,
    max_age: Duration,
    /// The state store the responses live in, when there is one.
    shared: Option<super::shared::Shared>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Stored>,
    /// Ids oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl Default for ResponseStore {
    fn default() -> Self {
        Self::new(MAX_RESPONSES, MAX_BYTES, MAX_AGE)
    }
}

impl ResponseStore {
    pub fn new(max_responses: usize, max_bytes: usize, max_age: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            max_responses,
            max_bytes,
            max_age,
            shared: None,
        }
    }

    /// Keeps the responses in `store` under `{prefix}responses/`.
    #[must_use]
    pub fn in_state_store(
        mut self,
        store: std::sync::Arc<dyn herd_state::StateStore>,
        prefix: &str,
    ) -> Self {
        self.shared = Some(super::shared::Shared::new(store, prefix, self.max_age));
        self
    }

    /// Keeps `stored` under `id` (see [`Self::put_local`]); in the state
    /// store when there is one.
    pub async fn put(&self, id: String, stored: Stored) {
        match &self.shared {
            Some(shared) => {
                // Only the ids and sizes are kept here, to bound what this
                // gateway has written.
                let evicted = self.index(&id, &stored);
                shared.put(&id, &stored).await;
                for old in evicted {
                    shared.delete(&old).await;
                }
            }
            None => self.put_local(id, stored),
        }
    }

    /// The response `id`, if kept and not expired.
    pub async fn get(&self, id: &str) -> Option<Stored> {
        match &self.shared {
            Some(shared) => shared.get(id).await,
            None => self.get_local(id),
        }
    }

    /// Forgets `id`; whether it was kept.
    pub async fn delete(&self, id: &str) -> bool {
        match &self.shared {
            Some(shared) => {
                if let Ok(mut inner) = self.inner.lock()
                    && let Some(gone) = inner.by_id.remove(id)
                {
                    inner.bytes -= gone.bytes;
                    inner.order.retain(|i| i != id);
                }
                shared.delete(id).await
            }
            None => self.delete_local(id),
        }
    }

    /// Records that `id` was written to the state store (its size only);
    /// returns the ids past the bounds, to delete there.
    fn index(&self, id: &str, stored: &Stored) -> Vec<String> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        let marker = Stored {
            response: serde_json::Value::Null,
            input_items: Vec::new(),
            conversation: Vec::new(),
            bytes: stored.bytes,
            at: stored.at,
        };
        inner.bytes += marker.bytes;
        inner.by_id.insert(id.to_owned(), marker);
        inner.order.push_back(id.to_owned());
        let mut evicted = Vec::new();
        while inner.order.len() > self.max_responses || inner.bytes > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.by_id.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
            evicted.push(oldest);
        }
        evicted
    }

    /// Keeps `stored` under `id` in memory, dropping the oldest past the
    /// bounds. A response larger than the whole budget is not kept.
    fn put_local(&self, id: String, stored: Stored) {
        if stored.bytes > self.max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.bytes += stored.bytes;
        if let Some(old) = inner.by_id.insert(id.clone(), stored) {
            inner.bytes -= old.bytes;
            inner.order.retain(|i| *i != id);
        }
        inner.order.push_back(id);
        self.evict(&mut inner);
    }

    fn evict(&self, inner: &mut Inner) {
        while let Some(oldest) = inner.order.front().cloned() {
            let expired = inner
                .by_id
                .get(&oldest)
                .is_none_or(|s| s.at.elapsed() > self.max_age);
            if !(expired || inner.order.len() > self.max_responses || inner.bytes > self.max_bytes)
            {
                break;
            }
            inner.order.pop_front();
            if let Some(gone) = inner.by_id.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }

    fn get_local(&self, id: &str) -> Option<Stored> {
        let mut inner = self.inner.lock().ok()?;
        self.evict(&mut inner);
        inner
            .by_id
            .get(id)
            .filter(|s| s.at.elapsed() <= self.max_age)
            .cloned()
    }

    fn delete_local(&self, id: &str) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        match inner.by_id.remove(id) {
            Some(gone) => {
                inner.bytes -= gone.bytes;
                inner.order.retain(|i| i != id);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(n: usize) -> Stored {
        Stored::new(json!({"x": "y".repeat(n)}), Vec::new(), Vec::new())
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let store = ResponseStore::new(2, 1 << 20, Duration::from_secs(60));
        for id in ["a", "b", "c"] {
            store.put_local(id.into(), stored(1));
        }
        assert!(store.get_local("a").is_none(), "the oldest goes first");
        assert!(store.get_local("b").is_some() && store.get_local("c").is_some());
        assert!(store.delete_local("b") && !store.delete_local("b"));

        let store = ResponseStore::new(100, 1000, Duration::from_secs(60));
        store.put_local("big".into(), stored(600));
        store.put_local("big2".into(), stored(600));
        assert!(store.get_local("big").is_none() && store.get_local("big2").is_some());
        store.put_local("huge".into(), stored(5000));
        assert!(
            store.get_local("huge").is_none(),
            "larger than the budget: not kept"
        );

        let store = ResponseStore::new(100, 1 << 20, Duration::ZERO);
        store.put_local("a".into(), stored(1));
        std::thread::sleep(Duration::from_millis(2));
        assert!(store.get_local("a").is_none(), "expired");
    }
}
