//! `Status` and `WatchStatus`: what the worker has loaded and could load
//! (its configured models and its store), slots, memory and counters —
//! built on request, and pushed to watchers after every change.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use herd_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::WorkerService;
use crate::catalog::Catalog;
use crate::engine::ModelInfo;
use crate::memory;

/// Pushed even without a change, so watchers see memory move and know the
/// worker is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// At most one push per watcher this often: under load, slot changes
/// come thousands of times a second; they are coalesced, never lost. A
/// gateway counts its own requests itself; pushes tell it what others use
/// and when a slot it was refused frees, which can wait this long.
const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// A pushed status stays good for other watchers of the same revision this
/// long (memory figures move without a revision).
const SHARED_FOR: Duration = Duration::from_millis(100);

/// The status last built for a push: every watcher of one change (one per
/// gateway) gets the same build instead of its own — with three gateways
/// and 1k req/s over 100 mock workers, per-watcher builds took most of the
/// workers' CPU.
#[derive(Debug, Default)]
pub struct Pushed(Mutex<Option<(Instant, Arc<pb::StatusResponse>)>>);

/// The status for a push: the shared one if it is of the current revision
/// and fresh, else a new build.
async fn for_push(service: &WorkerService) -> pb::StatusResponse {
    let revision = service.engine.changes().revision();
    let shared = service
        .pushed
        .0
        .lock()
        .ok()
        .and_then(|last| last.clone())
        .filter(|(built, status)| status.revision == revision && built.elapsed() < SHARED_FOR);
    if let Some((_, status)) = shared {
        return (*status).clone();
    }
    let status = snapshot(service).await;
    if let Ok(mut last) = service.pushed.0.lock() {
        *last = Some((Instant::now(), Arc::new(status.clone())));
    }
    status
}

pub type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::StatusResponse, Status>> + Send>>;

/// The worker's status now. Reads the store's listing only when it changed.
pub async fn snapshot(service: &WorkerService) -> pb::StatusResponse {
    let service = service.clone();
    match tokio::task::spawn_blocking(move || build(&service)).await {
        Ok(status) => status,
        Err(e) => {
            tracing::warn!(error = %e, "status task failed");
            pb::StatusResponse::default()
        }
    }
}

/// The status now, then after every change (coalesced: changes during one
/// push make one more push), and at least every [`HEARTBEAT`].
pub fn watch(service: &WorkerService) -> StatusStream {
    let (tx, rx) = mpsc::channel(1);
    let service = service.clone();
    tokio::spawn(async move {
        let mut changes = service.engine.changes().subscribe();
        loop {
            changes.mark_unchanged();
            if tx.send(Ok(for_push(&service).await)).await.is_err() {
                return; // The watcher went away.
            }
            tokio::time::sleep(MIN_INTERVAL).await;
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(HEARTBEAT) => {}
                () = tx.closed() => return,
                // The worker drained: the stream ends so the server can stop.
                () = service.drain.over() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn build(service: &WorkerService) -> pb::StatusResponse {
    let engine = service.engine.as_ref();
    // Read first: a status never claims a revision newer than what it shows.
    let revision = engine.changes().revision();
    let status = engine.status();
    let host = memory::host();
    let models_bytes = status
        .models
        .iter()
        .filter(|m| m.loaded)
        .map(|m| m.size_bytes)
        .sum();
    let mut models: Vec<pb::ModelStatus> = status.models.iter().map(loaded).collect();
    for config in service.configured.iter() {
        if !engine.serves(&config.name) {
            models.push(pb::ModelStatus {
                name: config.name.clone(),
                path: config.path.display().to_string(),
                context_size: config.context_size.unwrap_or(0),
                slots_total: config.parallel,
                on_demand: true,
                memory_bytes: engine.estimate(config),
                ..Default::default()
            });
        }
    }
    if let Some(catalog) = &service.catalog {
        add_stored(catalog, &mut models);
    }
    let capacity = &service.capacity;
    pb::StatusResponse {
        worker_id: service.worker_id.clone(),
        slots_total: status.models.iter().map(|m| m.slots_total).sum(),
        slots_busy: status.models.iter().map(|m| m.slots_busy).sum(),
        models,
        memory: Some(pb::MemoryStatus {
            process_rss_bytes: memory::process_rss_bytes(),
            host_total_bytes: host.total_bytes,
            host_available_bytes: host.available_bytes,
            models_bytes,
        }),
        generations_started_total: status.counters.started,
        generations_completed_total: status.counters.completed,
        generations_cancelled_total: status.counters.cancelled,
        generations_failed_total: status.counters.failed,
        tokens_generated_total: status.counters.tokens_generated,
        engine: status.engine,
        gpus: crate::gpu::devices()
            .into_iter()
            .map(|g| pb::GpuStatus {
                index: u32::try_from(g.index).unwrap_or(u32::MAX),
                name: g.name,
                description: g.description,
                backend: g.backend,
                memory_total_bytes: g.memory_total_bytes,
                memory_free_bytes: g.memory_free_bytes,
            })
            .collect(),
        gpu_offload: status.gpu_offload,
        memory_limit_bytes: capacity.memory_limit_bytes,
        max_loaded_models: capacity.max_loaded_models,
        revision,
        draining: service.drain.is_draining(),
    }
}

fn loaded(m: &ModelInfo) -> pb::ModelStatus {
    pb::ModelStatus {
        name: m.name.clone(),
        path: m.path.clone(),
        size_bytes: m.size_bytes,
        context_size: m.context_size,
        slots_total: m.slots_total,
        slots_busy: m.slots_busy,
        loaded: m.loaded,
        architecture: m.architecture.clone(),
        parameters: m.parameters,
        quantization: m.quantization.clone(),
        loaded_at: m.loaded_at_unix,
        on_demand: false,
        aliases: Vec::new(),
        id: String::new(),
        memory_bytes: m.memory_bytes,
    }
}

/// Adds what the store knows to the statuses: a loaded model's other tags
/// become its aliases, and a stored model that is not loaded is listed
/// once, under its first tag (the others as aliases), as `on_demand`, with
/// what it would take to load.
fn add_stored(catalog: &Arc<Catalog>, statuses: &mut Vec<pb::ModelStatus>) {
    let models = match catalog.stored_models() {
        Ok(models) => models,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the model store");
            return;
        }
    };
    let known = statuses.len();
    let stored_ids = catalog.loaded_ids();
    for model in models.iter() {
        let path = catalog
            .store()
            .gguf_path(model)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let names: Vec<String> = model
            .tags
            .iter()
            .map(|tag| catalog.store().familiar(tag))
            .collect();
        let mut listed = false;
        // A stored model the catalog loaded: by model ID (two models may
        // share a GGUF blob); one from the worker's config: by the weights'
        // path and the name being one of the model's tags.
        let is_this_model = |status: &pb::ModelStatus| match stored_ids.get(&status.name) {
            Some(id) => *id == model.id,
            None => !path.is_empty() && status.path == path && names.contains(&status.name),
        };
        for status in statuses[..known].iter_mut().filter(|s| is_this_model(s)) {
            status.aliases = names
                .iter()
                .filter(|n| **n != status.name)
                .cloned()
                .collect();
            status.id.clone_from(&model.id);
            listed = true;
        }
        let Some((name, aliases)) = names.split_first().filter(|_| !listed) else {
            continue;
        };
        statuses.push(pb::ModelStatus {
            name: name.clone(),
            aliases: aliases.to_vec(),
            id: model.id.clone(),
            path,
            size_bytes: model.manifest.total_size(),
            context_size: catalog.context_size(model),
            slots_total: catalog.defaults().parallel,
            on_demand: true,
            architecture: model.config.config.architecture.clone(),
            quantization: model.config.config.quantization.clone(),
            memory_bytes: catalog.estimate(model),
            ..Default::default()
        });
    }
}
