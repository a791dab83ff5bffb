//! Stored responses in the state store (etcd in a cluster, its in-memory
//! store inside `herd serve`): one key per response,
//! `{prefix}responses/{id}`, bound to a lease of the maximum age (a new
//! lease each hour, so a response lives between 23 and 24 hours). Every
//! gateway reads and deletes them; each bounds what it wrote itself
//! (count and bytes, see [`ResponseStore`](super::ResponseStore)). A
//! response whose record is over 1 MiB (etcd's request limit is 1.5 MiB)
//! is not stored; a state store that does not answer loses the write (the
//! client already has its answer), which is logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_proto::v1 as pb;
use herd_state::{CALL_TIMEOUT, LeaseId, StateStore};
use serde_json::{Value, json};

use super::store::Stored;

/// The largest record written.
const MAX_RECORD_BYTES: usize = 1 << 20;
/// How long one lease takes new responses.
const LEASE_ROTATION: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Shared {
    store: Arc<dyn StateStore>,
    prefix: String,
    ttl: Duration,
    lease: tokio::sync::Mutex<Option<(LeaseId, Instant)>>,
}

impl Shared {
    pub fn new(store: Arc<dyn StateStore>, prefix: &str, ttl: Duration) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self {
            store,
            prefix: format!("{prefix}responses/"),
            ttl,
            lease: tokio::sync::Mutex::new(None),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    async fn lease(&self) -> Option<LeaseId> {
        let mut lease = self.lease.lock().await;
        if let Some((id, granted)) = *lease
            && granted.elapsed() < LEASE_ROTATION
        {
            return Some(id);
        }
        let ttl = self.ttl.max(LEASE_ROTATION);
        match tokio::time::timeout(CALL_TIMEOUT, self.store.grant(ttl)).await {
            Ok(Ok(id)) => {
                *lease = Some((id, Instant::now()));
                Some(id)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no lease for stored responses");
                None
            }
            Err(_) => {
                tracing::warn!("no lease for stored responses: the state store timed out");
                None
            }
        }
    }

    pub async fn put(&self, id: &str, stored: &Stored) {
        let record = encode(stored);
        if record.len() > MAX_RECORD_BYTES {
            tracing::warn!(
                response = id,
                bytes = record.len(),
                "response too large to store"
            );
            return;
        }
        let Some(lease) = self.lease().await else {
            return;
        };
        let key = self.key(id);
        match tokio::time::timeout(CALL_TIMEOUT, self.store.put(&key, record, Some(lease))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(response = id, error = %e, "could not store the response"),
            Err(_) => tracing::warn!(response = id, "could not store the response: timed out"),
        }
    }

    pub async fn get(&self, id: &str) -> Option<Stored> {
        let key = self.key(id);
        let listing = match tokio::time::timeout(CALL_TIMEOUT, self.store.list(&key)).await {
            Ok(Ok(listing)) => listing,
            Ok(Err(e)) => {
                tracing::warn!(response = id, error = %e, "could not read the stored response");
                return None;
            }
            Err(_) => return None,
        };
        let item = listing.items.into_iter().find(|kv| kv.key == key)?;
        decode(&item.value)
    }

    /// Deletes `id`; whether it was stored.
    pub async fn delete(&self, id: &str) -> bool {
        let existed = self.get(id).await.is_some();
        let key = self.key(id);
        if let Ok(Err(e)) = tokio::time::timeout(CALL_TIMEOUT, self.store.delete(&key)).await {
            tracing::warn!(response = id, error = %e, "could not delete the stored response");
        }
        existed
    }
}

fn encode(stored: &Stored) -> Vec<u8> {
    let conversation: Vec<Value> = stored
        .conversation
        .iter()
        .map(|m| {
            json!({
                "role": m.role,
                "content": m.content,
                "name": m.name,
                "tool_call_id": m.tool_call_id,
                "tool_calls": m.tool_calls.iter().map(|c| json!({
                    "id": c.id, "name": c.name, "arguments": c.arguments_json,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "response": stored.response,
        "input_items": stored.input_items,
        "conversation": conversation,
    }))
    .unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Option<Stored> {
    let record: Value = serde_json::from_slice(bytes).ok()?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let conversation = record
        .get("conversation")?
        .as_array()?
        .iter()
        .map(|m| pb::ChatMessage {
            role: text(m, "role").unwrap_or_default(),
            content: text(m, "content").unwrap_or_default(),
            name: text(m, "name"),
            tool_call_id: text(m, "tool_call_id"),
            tool_calls: m
                .get("tool_calls")
                .and_then(Value::as_array)
                .map(|calls| {
                    calls
                        .iter()
                        .map(|c| pb::ToolCall {
                            id: text(c, "id").unwrap_or_default(),
                            name: text(c, "name").unwrap_or_default(),
                            arguments_json: text(c, "arguments").unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    Some(Stored::new(
        record.get("response")?.clone(),
        record.get("input_items")?.as_array()?.clone(),
        conversation,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_through_a_state_store() {
        let store: Arc<dyn StateStore> = Arc::new(herd_state::MemoryStore::new());
        let shared = Shared::new(store, "/herd", Duration::from_secs(60));
        let stored = Stored::new(
            json!({"id": "resp_1"}),
            vec![json!({"id": "msg_1"})],
            vec![pb::ChatMessage {
                role: "assistant".into(),
                tool_calls: vec![pb::ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments_json: "{}".into(),
                }],
                ..Default::default()
            }],
        );
        shared.put("resp_1", &stored).await;
        let back = shared.get("resp_1").await.unwrap();
        assert_eq!(back.response, stored.response);
        assert_eq!(back.input_items, stored.input_items);
        assert_eq!(back.conversation, stored.conversation);
        assert!(shared.get("resp_").await.is_none(), "exact keys only");
        assert!(shared.delete("resp_1").await);
        assert!(shared.get("resp_1").await.is_none());
        assert!(!shared.delete("resp_1").await);
    }
}
