//! API keys in the cluster's etcd (`keys_from_etcd`): one record per key
//! under `{prefix}apikeys/{name}` — the same [`KeyRecord`] a keys file
//! holds (a digest, never the key), as JSON, bound to no lease — written
//! by `herd keys create|revoke --etcd`. Every gateway lists them, then
//! watches the prefix from the listing's revision on, and puts the whole
//! set in force after each change. Until the first listing nothing passes
//! (fail closed); when etcd is unreachable the keys in force stay and the
//! gateway lists again with backoff. A record that does not parse or
//! validate is logged and left out; the others stay in force.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use herd_state::{EventKind, StateError, StateStore};

use super::{Enabled, KeyRecord, KeysFile};

/// Backoff between failed listings or broken watches: first, longest.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The fields of a [`KeyRecord`]: others (from a newer Herd) are ignored,
/// as every reader of the store does.
const FIELDS: [&str; 9] = [
    "name",
    "role",
    "sha256",
    "hint",
    "models",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "created_at",
];

/// The record `value` of `key`, if it parses and validates.
pub fn decode(key: &str, value: &[u8]) -> Option<KeyRecord> {
    let known = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(value).map(
        |mut object| {
            object.retain(|field, _| FIELDS.contains(&field.as_str()));
            serde_json::Value::Object(object)
        },
    );
    let record: KeyRecord = match known.and_then(serde_json::from_value) {
        Ok(record) => record,
        Err(error) => {
            tracing::warn!(key, %error, "an API key record in etcd does not parse; left out");
            return None;
        }
    };
    let alone = KeysFile { keys: vec![record] };
    if let Err(error) = alone.validate() {
        tracing::warn!(key, %error, "an API key record in etcd is invalid; left out");
        return None;
    }
    alone.keys.into_iter().next()
}

/// A record as stored.
pub fn encode(record: &KeyRecord) -> Vec<u8> {
    herd_state::encode(record)
}

/// Lists and watches `prefix` for ever, putting the keys in force.
pub(super) async fn follow(enabled: Arc<Enabled>, store: Arc<dyn StateStore>, prefix: String) {
    let mut backoff = RETRY_FIRST;
    loop {
        match follow_once(&enabled, store.as_ref(), &prefix, &mut backoff).await {
            Ok(()) => tracing::info!("the API key watch ended; listing again"),
            Err(error) => {
                tracing::warn!(%error, "cannot follow the API keys in etcd; the keys in force stay");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One listing and the watch after it, until the watch breaks.
async fn follow_once(
    enabled: &Enabled,
    store: &dyn StateStore,
    prefix: &str,
    backoff: &mut Duration,
) -> Result<(), StateError> {
    let listing = store.list(prefix).await?;
    let mut records: BTreeMap<String, KeyRecord> = listing
        .items
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), decode(&kv.key, &kv.value)?)))
        .collect();
    put_in_force(enabled, &records);
    let mut events = store.watch(prefix, listing.revision + 1).await?;
    *backoff = RETRY_FIRST;
    while let Some(batch) = events.next().await {
        for event in batch? {
            match event.kind {
                EventKind::Put => match decode(&event.key, &event.value) {
                    Some(record) => records.insert(event.key, record),
                    None => records.remove(&event.key),
                },
                EventKind::Delete => records.remove(&event.key),
            };
        }
        put_in_force(enabled, &records);
    }
    Ok(())
}

/// Puts `records` in force as one set. Two records with one digest (made
/// by hand) cannot both be kept: the first by key stays.
fn put_in_force(enabled: &Enabled, records: &BTreeMap<String, KeyRecord>) {
    let mut file = KeysFile::default();
    let mut digests = std::collections::HashSet::new();
    for (key, record) in records {
        if digests.insert(record.sha256.to_ascii_lowercase()) {
            file.keys.push(record.clone());
        } else {
            tracing::warn!(
                key,
                "an API key record in etcd repeats another's key; left out"
            );
        }
    }
    enabled.put_in_force(&file);
}
