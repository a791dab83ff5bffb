//! The store RPCs: pull, push, list, get, delete, tag.

use std::sync::Arc;

use herd_proto::v1 as pb;
use herd_store::{Progress, ProgressFn, StoredModel};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::catalog::Catalog;
use crate::engine::Engine;
use crate::error::CatalogError;

/// Progress events waiting for a slow client before the transfer waits.
const EVENT_BUFFER: usize = 64;

pub type TransferStream = ReceiverStream<Result<pb::TransferEvent, Status>>;

/// The wire form of a stored model.
pub fn to_wire(catalog: &Catalog, engine: &dyn Engine, model: &StoredModel) -> pb::StoredModel {
    pb::StoredModel {
        id: model.id.clone(),
        tags: model
            .tags
            .iter()
            .map(|t| catalog.store().familiar(t))
            .collect(),
        created: model.config.created_unix(),
        config_json: serde_json::to_string(&model.config.config).unwrap_or_default(),
        loaded: !catalog.loaded_names(engine, model).is_empty(),
        size_bytes: model.manifest.total_size(),
    }
}

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    catalog: &Arc<Catalog>,
    f: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    let catalog = catalog.clone();
    tokio::task::spawn_blocking(move || f(&catalog))
        .await
        .map_err(|e| {
            CatalogError::Store(herd_store::StoreError::Io {
                context: "store task failed".into(),
                source: std::io::Error::other(e),
            })
        })?
}

fn progress_sender(tx: mpsc::Sender<Result<pb::TransferEvent, Status>>) -> ProgressFn {
    Arc::new(move |p: Progress| {
        // Progress is advisory: drop an update rather than stall the transfer.
        let _ = tx.try_send(Ok(pb::TransferEvent {
            event: Some(pb::transfer_event::Event::Progress(pb::TransferProgress {
                digest: p.digest,
                size: p.size,
                current: p.current,
                total: p.total,
            })),
        }));
    })
}

pub fn pull(
    catalog: Arc<Catalog>,
    engine: Arc<dyn Engine>,
    request: pb::PullModelRequest,
) -> Result<TransferStream, Status> {
    let reference = catalog
        .store()
        .parse_ref(&request.reference)
        .map_err(CatalogError::from)?;
    Ok(transfer(
        catalog,
        engine,
        move |catalog, progress| async move {
            let pulled = catalog
                .registry()
                .pull(catalog.store(), &reference, progress)
                .await?;
            tracing::info!(
                reference = %reference,
                id = %pulled.model.id,
                transferred = pulled.transferred,
                cached = pulled.cached,
                "model pulled"
            );
            Ok(pulled.model)
        },
    ))
}

pub async fn push(
    catalog: Arc<Catalog>,
    engine: Arc<dyn Engine>,
    request: pb::PushModelRequest,
) -> Result<TransferStream, Status> {
    let target = catalog
        .store()
        .parse_ref(&request.reference)
        .map_err(CatalogError::from)?;
    let text = request.reference.clone();
    let model = blocking(&catalog, move |c| Ok(c.store().resolve(&text)?)).await?;
    Ok(transfer(
        catalog,
        engine,
        move |catalog, progress| async move {
            catalog
                .registry()
                .push(catalog.store(), &model, &target, progress)
                .await?;
            tracing::info!(target = %target, id = %model.id, "model pushed");
            Ok(model)
        },
    ))
}

/// Runs a transfer in its own task: progress events, then the model (or
/// the error) as the stream's last item. A client that goes away does not
/// stop it: the model lands in the store either way.
fn transfer<F, Fut>(catalog: Arc<Catalog>, engine: Arc<dyn Engine>, run: F) -> TransferStream
where
    F: FnOnce(Arc<Catalog>, ProgressFn) -> Fut + Send + 'static,
    Fut: Future<Output = Result<StoredModel, herd_store::StoreError>> + Send,
{
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        let progress = progress_sender(tx.clone());
        let event = match run(catalog.clone(), progress).await {
            Ok(model) => Ok(done(&catalog, engine.as_ref(), &model)),
            Err(e) => Err(Status::from(CatalogError::from(e))),
        };
        let _ = tx.send(event).await;
    });
    ReceiverStream::new(rx)
}

fn done(catalog: &Catalog, engine: &dyn Engine, model: &StoredModel) -> pb::TransferEvent {
    pb::TransferEvent {
        event: Some(pb::transfer_event::Event::Done(to_wire(
            catalog, engine, model,
        ))),
    }
}

pub async fn list(
    catalog: &Arc<Catalog>,
    engine: &dyn Engine,
) -> Result<pb::ListModelsResponse, Status> {
    let models = blocking(catalog, |c| Ok(c.store().list()?)).await?;
    Ok(pb::ListModelsResponse {
        models: models.iter().map(|m| to_wire(catalog, engine, m)).collect(),
    })
}

pub async fn get(
    catalog: &Arc<Catalog>,
    engine: &dyn Engine,
    request: pb::GetModelRequest,
) -> Result<pb::StoredModel, Status> {
    let model = blocking(catalog, move |c| {
        Ok(c.store().resolve(&request.reference)?)
    })
    .await?;
    Ok(to_wire(catalog, engine, &model))
}

pub async fn delete(
    catalog: &Arc<Catalog>,
    engine: Arc<dyn Engine>,
    request: pb::DeleteModelRequest,
) -> Result<pb::DeleteModelResponse, Status> {
    let removal = blocking(catalog, move |c| {
        c.remove(engine.as_ref(), &request.reference, request.force)
    })
    .await?;
    tracing::info!(untagged = ?removal.untagged, deleted = ?removal.deleted, "model removed");
    Ok(pb::DeleteModelResponse {
        untagged: removal
            .untagged
            .iter()
            .map(|t| catalog.store().familiar(t))
            .collect(),
        deleted: removal.deleted.unwrap_or_default(),
    })
}

pub async fn tag(
    catalog: &Arc<Catalog>,
    engine: &dyn Engine,
    request: pb::TagModelRequest,
) -> Result<pb::StoredModel, Status> {
    let model = blocking(catalog, move |c| {
        Ok(c.store().tag(&request.source, &request.target)?)
    })
    .await?;
    Ok(to_wire(catalog, engine, &model))
}

/// Adds what the store knows to the engine's model statuses: a loaded
/// model's other tags become its aliases, and a stored model that is not
/// loaded is listed once, under its first tag (the others as aliases), as
/// `on_demand`, so gateways route requests for it here (the first request
/// loads it).
pub fn add_stored(catalog: &Catalog, statuses: &mut Vec<pb::ModelStatus>) {
    let Ok(models) = catalog.store().list() else {
        return;
    };
    let engine_models = statuses.len();
    let stored_ids = catalog.loaded_ids();
    for model in models {
        let path = catalog
            .store()
            .gguf_path(&model)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let names: Vec<String> = model
            .tags
            .iter()
            .map(|tag| catalog.store().familiar(tag))
            .collect();
        let mut loaded = false;
        // A stored model the catalog knows: by model ID (two models may
        // share a GGUF blob); one from the worker's config: by the weights'
        // path and the name being one of the model's tags.
        let is_this_model = |status: &pb::ModelStatus| match stored_ids.get(&status.name) {
            Some(id) => *id == model.id,
            None => !path.is_empty() && status.path == path && names.contains(&status.name),
        };
        for status in statuses[..engine_models]
            .iter_mut()
            .filter(|s| is_this_model(s))
        {
            status.aliases = names
                .iter()
                .filter(|n| **n != status.name)
                .cloned()
                .collect();
            status.id.clone_from(&model.id);
            loaded = true;
        }
        let Some((name, aliases)) = names.split_first().filter(|_| !loaded) else {
            continue;
        };
        statuses.push(pb::ModelStatus {
            name: name.clone(),
            aliases: aliases.to_vec(),
            id: model.id.clone(),
            path,
            size_bytes: model.manifest.total_size(),
            context_size: catalog.context_size(&model),
            slots_total: catalog.defaults().parallel,
            slots_busy: 0,
            loaded: false,
            on_demand: true,
            architecture: model.config.config.architecture.clone(),
            parameters: 0,
            quantization: model.config.config.quantization.clone(),
            loaded_at: 0,
            memory_bytes: 0,
        });
    }
}
