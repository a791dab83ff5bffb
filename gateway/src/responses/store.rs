//! Stored responses (`store: true`, the default): what `previous_response_id`,
//! `GET`/`DELETE /v1/responses/{id}` and `input_items` read. Kept in this
//! gateway's memory, bounded in count, bytes and age; the oldest go first.
//! Not shared between gateways and lost on restart (see docs/api.md).

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
    bytes: usize,
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
        }
    }

    /// Keeps `stored` under `id`, dropping the oldest past the bounds. A
    /// response larger than the whole budget is not kept.
    pub fn put(&self, id: String, stored: Stored) {
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

    /// The response `id`, if kept and not expired.
    pub fn get(&self, id: &str) -> Option<Stored> {
        let mut inner = self.inner.lock().ok()?;
        self.evict(&mut inner);
        inner
            .by_id
            .get(id)
            .filter(|s| s.at.elapsed() <= self.max_age)
            .cloned()
    }

    /// Forgets `id`; whether it was kept.
    pub fn delete(&self, id: &str) -> bool {
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
            store.put(id.into(), stored(1));
        }
        assert!(store.get("a").is_none(), "the oldest goes first");
        assert!(store.get("b").is_some() && store.get("c").is_some());
        assert!(store.delete("b") && !store.delete("b"));

        let store = ResponseStore::new(100, 1000, Duration::from_secs(60));
        store.put("big".into(), stored(600));
        store.put("big2".into(), stored(600));
        assert!(store.get("big").is_none() && store.get("big2").is_some());
        store.put("huge".into(), stored(5000));
        assert!(
            store.get("huge").is_none(),
            "larger than the budget: not kept"
        );

        let store = ResponseStore::new(100, 1 << 20, Duration::ZERO);
        store.put("a".into(), stored(1));
        std::thread::sleep(Duration::from_millis(2));
        assert!(store.get("a").is_none(), "expired");
    }
}
