//! The read-only routes: `/v1/models`, `/v1/models/{id}`, `/herd/v1/status`,
//! `/readyz`.

use std::time::Duration;

use herd_proto::v1 as pb;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};

use super::respond;
use crate::auth::Principal;
use crate::dispatch::Dispatcher;
use crate::error::ApiError;
use crate::openai::response::{ModelObject, model_list};
use crate::workers::Roster;

/// `/readyz`: 200 `ready` when the state store answers and a worker is
/// healthy; 200 `degraded` when the state store is unreachable but the last
/// view still has a healthy worker (requests are served; membership changes
/// wait for the store); 503 `not_ready` with no healthy worker.
pub async fn ready(session: &mut ServerSession, roster: &Roster) -> bool {
    let readiness = roster.readiness();
    let (code, status) = match readiness {
        r if r.healthy == 0 => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        r if !r.store_connected => (StatusCode::OK, "degraded"),
        _ => (StatusCode::OK, "ready"),
    };
    let body = json!({
        "status": status,
        "state_store": if readiness.store_connected { "connected" } else { "unreachable" },
        "workers": { "healthy": readiness.healthy, "total": readiness.total },
    });
    respond::json(session, code, body.to_string().into_bytes()).await
}

/// The models the pool serves; with API keys, those the key may use.
pub async fn models(
    session: &mut ServerSession,
    roster: &Roster,
    key: Option<&Principal>,
    default_registry: &str,
) -> bool {
    let list = roster
        .snapshot()
        .models()
        .iter()
        .filter(|(name, _)| key.is_none_or(|k| k.may_use(name, default_registry)))
        .map(|(id, created)| ModelObject::new(id.clone(), *created))
        .collect();
    respond::json(session, StatusCode::OK, model_list(list)).await
}

pub async fn model(
    session: &mut ServerSession,
    roster: &Roster,
    default_registry: &str,
    id: &str,
    key: Option<&Principal>,
) -> bool {
    if key.is_some_and(|k| !k.may_use(id, default_registry)) {
        return respond::error(session, &ApiError::ModelNotFound(id.to_owned())).await;
    }
    let snapshot = roster.snapshot();
    let name = snapshot
        .resolve(id, default_registry)
        .map_or_else(|| id.to_owned(), |(name, _)| name);
    let found = snapshot.models().iter().find(|(n, _)| *n == name);
    match found {
        Some((id, created)) => {
            let body =
                serde_json::to_vec(&ModelObject::new(id.clone(), *created)).unwrap_or_default();
            respond::json(session, StatusCode::OK, body).await
        }
        None => respond::error(session, &ApiError::ModelNotFound(id.to_owned())).await,
    }
}

/// Every worker's status, asked now (not the cached snapshot), and the
/// scheduler's view of every model: queued, running, replicas, loads,
/// evictions.
pub async fn status(session: &mut ServerSession, dispatcher: &Dispatcher) -> bool {
    let snapshot = dispatcher.roster().snapshot();
    let calls = snapshot.workers.iter().map(|worker| async move {
        let live = match worker.client.clone() {
            Some(mut client) => {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    client.status(pb::StatusRequest {}),
                )
                .await
                {
                    Ok(Ok(response)) => Ok(response.into_inner()),
                    Ok(Err(status)) => Err(status.message().to_owned()),
                    Err(_) => Err("timed out".to_owned()),
                }
            }
            None => Err("invalid endpoint".to_owned()),
        };
        match live {
            Ok(status) => json!({
                "id": &*worker.id,
                "endpoint": worker.endpoint,
                "healthy": worker.healthy,
                "draining": worker.draining || status.draining,
                "status": status_json(&status),
            }),
            Err(error) => json!({
                "id": &*worker.id,
                "endpoint": worker.endpoint,
                "healthy": false,
                "draining": worker.draining,
                "error": error,
            }),
        }
    });
    let workers: Vec<Value> = futures::future::join_all(calls).await;
    let models: Vec<Value> = dispatcher
        .scheduler()
        .report()
        .into_iter()
        .map(|m| {
            json!({
                "model": m.name,
                "key": m.model.as_str(),
                "queued": m.queued,
                "running": m.running,
                "replicas": m.replicas.iter().map(|w| &**w).collect::<Vec<_>>(),
                "loading": m.loading.as_deref(),
                "served": m.stats.served,
                "loads": m.stats.loads,
                "load_failures": m.stats.load_failures,
                "evictions": m.stats.evictions,
                "unloads": m.stats.unloads,
                "rejected": m.stats.rejected,
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({
        "workers": workers,
        "scheduler": {
            "policy": dispatcher.scheduler().policy_name(),
            "models": models,
        },
    }))
    .unwrap_or_default();
    respond::json(session, StatusCode::OK, body).await
}

fn status_json(s: &pb::StatusResponse) -> Value {
    let memory = s.memory.unwrap_or_default();
    json!({
        "worker_id": s.worker_id,
        "engine": s.engine,
        "slots_total": s.slots_total,
        "slots_busy": s.slots_busy,
        "generations": {
            "started": s.generations_started_total,
            "completed": s.generations_completed_total,
            "cancelled": s.generations_cancelled_total,
            "failed": s.generations_failed_total,
        },
        "tokens_generated": s.tokens_generated_total,
        "gpu_offload": s.gpu_offload,
        "memory_limit_bytes": s.memory_limit_bytes,
        "max_loaded_models": s.max_loaded_models,
        "gpus": s.gpus.iter().map(|g| json!({
            "index": g.index,
            "name": g.name,
            "description": g.description,
            "backend": g.backend,
            "memory_total_bytes": g.memory_total_bytes,
            "memory_free_bytes": g.memory_free_bytes,
        })).collect::<Vec<_>>(),
        "memory": {
            "process_rss_bytes": memory.process_rss_bytes,
            "host_total_bytes": memory.host_total_bytes,
            "host_available_bytes": memory.host_available_bytes,
            "models_bytes": memory.models_bytes,
        },
        "models": s.models.iter().map(|m| json!({
            "name": m.name,
            "aliases": m.aliases,
            "path": m.path,
            "size_bytes": m.size_bytes,
            "context_size": m.context_size,
            "slots_total": m.slots_total,
            "slots_busy": m.slots_busy,
            "loaded": m.loaded,
            "on_demand": m.on_demand,
            "architecture": m.architecture,
            "parameters": m.parameters,
            "quantization": m.quantization,
            "loaded_at": m.loaded_at,
            "memory_bytes": m.memory_bytes,
        })).collect::<Vec<_>>(),
    })
}
