//! Docker Model Runner's read-only admin routes, for the whole pool:
//! `GET /engines/ps` (loaded models: where, how busy, queued, until when
//! kept), `GET /engines/df` (disk used by stored models, per worker) and
//! `GET /engines/status`. Docker's field names come first; Herd adds the
//! pool's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_proto::v1 as pb;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};

use super::respond;
use crate::auth::Principal;
use crate::dispatch::Dispatcher;
use crate::scheduler::KeepAlive;

/// Longest wait for one worker's store listing.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /engines/ps`: one entry per replica (with API keys, of the models
/// the key may use).
pub async fn running(
    session: &mut ServerSession,
    dispatcher: &Dispatcher,
    key: Option<&Principal>,
) -> bool {
    let now = SystemTime::now();
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let registry = dispatcher.default_registry();
    let mut entries = Vec::new();
    for model in dispatcher.scheduler().report() {
        if key.is_some_and(|k| !k.may_use(&model.name, registry)) {
            continue;
        }
        for replica in &model.placements {
            let last_used = now.checked_sub(replica.idle_for).unwrap_or(now);
            let (keep_alive, expires_at) = match replica.keep_alive {
                KeepAlive::Forever => (Value::from(-1), Value::Null),
                KeepAlive::For(d) => (
                    Value::from(d.as_secs()),
                    if replica.busy > 0 || model.queued > 0 {
                        Value::Null
                    } else {
                        Value::from(unix(last_used + d))
                    },
                ),
            };
            entries.push(json!({
                "backend_name": "llama.cpp",
                "model_name": replica.name,
                "mode": "completion",
                "last_used": unix(last_used),
                "in_use": replica.busy > 0,
                "worker": &*replica.worker,
                "slots_total": replica.slots,
                "slots_busy": replica.busy,
                "queued": model.queued,
                "keep_alive_secs": keep_alive,
                "expires_at": expires_at,
            }));
        }
        if let Some(worker) = &model.loading {
            entries.push(json!({
                "backend_name": "llama.cpp",
                "model_name": model.name,
                "mode": "completion",
                "worker": &**worker,
                "loading": true,
                "queued": model.queued,
            }));
        }
    }
    respond::json(
        session,
        StatusCode::OK,
        serde_json::to_vec(&entries).unwrap_or_default(),
    )
    .await
}

/// `GET /engines/df`: bytes of stored models per worker (a blob two models
/// share counts once per model).
pub async fn disk_usage(session: &mut ServerSession, dispatcher: &Dispatcher) -> bool {
    let snapshot = dispatcher.roster().snapshot();
    let calls = snapshot
        .workers
        .iter()
        .filter(|w| w.healthy)
        .filter_map(|w| {
            let mut client = w.client.clone()?;
            let id = w.id.clone();
            Some(async move {
                let listed = tokio::time::timeout(
                    LIST_TIMEOUT,
                    client.list_models(pb::ListModelsRequest {}),
                )
                .await;
                (id, listed)
            })
        });
    let mut total = 0u64;
    let mut workers = Vec::new();
    for (id, listed) in futures::future::join_all(calls).await {
        match listed {
            Ok(Ok(response)) => {
                let models = response.into_inner().models;
                let bytes: u64 = models.iter().map(|m| m.size_bytes).sum();
                total += bytes;
                workers.push(json!({"worker": &*id, "models": models.len(), "bytes": bytes}));
            }
            Ok(Err(status)) => {
                workers.push(json!({"worker": &*id, "error": status.message()}));
            }
            Err(_) => workers.push(json!({"worker": &*id, "error": "timed out"})),
        }
    }
    let body = json!({
        "models_disk_usage": total,
        "default_backend_disk_usage": 0,
        "workers": workers,
    });
    respond::json(
        session,
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
    .await
}

/// `GET /engines/status`: whether any worker runs.
pub async fn status(session: &mut ServerSession, dispatcher: &Dispatcher) -> bool {
    let snapshot = dispatcher.roster().snapshot();
    let healthy = snapshot.workers.iter().filter(|w| w.healthy).count();
    let state = if healthy > 0 {
        "running"
    } else {
        "not running"
    };
    let body = json!({
        "status": state,
        "backends": {"llama.cpp": state},
        "workers": {"healthy": healthy, "total": snapshot.workers.len()},
    });
    respond::json(
        session,
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
    .await
}
