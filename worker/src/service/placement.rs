//! `LoadModel` and `UnloadModel`: the gateway places models; the worker
//! loads what it is told (a configured model, a stored one, or one it
//! pulls first) and reports how long it took.

use std::time::{Duration, Instant};

use herd_proto::v1 as pb;
use tonic::Status;

use super::WorkerService;
use crate::error::{CatalogError, EngineError};

pub async fn load(
    service: &WorkerService,
    request: pb::LoadModelRequest,
) -> Result<pb::LoadModelResponse, Status> {
    let started = Instant::now();
    let result = load_model(service, request).await;
    let metrics = &service.metrics;
    match &result {
        Ok(response) => metrics.loaded(
            response.model.as_ref().map(|m| m.name.as_str()),
            Duration::from_millis(response.load_ms),
        ),
        Err(_) => metrics.loaded(None, started.elapsed()),
    }
    result
}

async fn load_model(
    service: &WorkerService,
    request: pb::LoadModelRequest,
) -> Result<pb::LoadModelResponse, Status> {
    if request.model.trim().is_empty() {
        return Err(EngineError::param("model", "`model` is required").into());
    }
    let started = Instant::now();
    let engine = service.engine.as_ref();
    let mut pull_ms = 0;
    let name = if let Some(config) = service.configured.iter().find(|c| c.name == request.model) {
        engine.load(config.clone()).await?;
        config.name.clone()
    } else if let Some(catalog) = &service.catalog {
        let loaded = match catalog.load(engine, &request.model, request.pull).await {
            Ok(loaded) => loaded,
            Err(e) => {
                if request.pull && matches!(e, CatalogError::Store(_)) {
                    service.metrics.pulled(None);
                }
                return Err(e.into());
            }
        };
        if loaded.pulled {
            pull_ms = started.elapsed().as_millis() as u64;
            service.metrics.pulled(Some(loaded.pulled_bytes));
        }
        loaded.name
    } else {
        return Err(CatalogError::from(EngineError::ModelNotFound(request.model)).into());
    };
    let load_ms = (started.elapsed().as_millis() as u64).saturating_sub(pull_ms);
    tracing::info!(model = %name, pull_ms, load_ms, "model loaded on request");
    let status = super::status::snapshot(service).await;
    let model = status
        .models
        .iter()
        .find(|m| m.name == name && m.loaded)
        .cloned()
        .ok_or_else(|| EngineError::NotLoaded(name.clone()))?;
    Ok(pb::LoadModelResponse {
        model: Some(model),
        pull_ms,
        load_ms,
        revision: status.revision,
    })
}

pub async fn unload(
    service: &WorkerService,
    request: pb::UnloadModelRequest,
) -> Result<pb::UnloadModelResponse, Status> {
    let engine = service.engine.as_ref();
    let unloaded = match &service.catalog {
        Some(catalog) => catalog.unload(engine, &request.model).await,
        None => engine.unload(&request.model),
    };
    if unloaded {
        service.metrics.unloaded(&request.model);
        tracing::info!(model = %request.model, "model unloaded on request");
    }
    Ok(pb::UnloadModelResponse {
        unloaded,
        revision: engine.changes().revision(),
    })
}
