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
    metrics: Arc<crate::metrics::WorkerMetrics>,
) -> Result<TransferStream, Status> {
    let reference = catalog
        .store()
        .parse_ref(&request.reference)
        .map_err(CatalogError::from)?;
    Ok(transfer(
        catalog,
        engine,
        move |catalog, progress| async move {
            let pulled = match catalog
                .registry()
                .pull(catalog.store(), &reference, progress)
                .await
            {
                Ok(pulled) => pulled,
                Err(e) => {
                    metrics.pulled(None);
                    return Err(e);
                }
            };
            metrics.pulled(Some(pulled.transferred));
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
            Ok(model) => {
                // The store changed: status watchers see the model.
                engine.changes().bump();
                Ok(done(&catalog, engine.as_ref(), &model))
            }
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
    let removal = blocking(catalog, {
        let engine = engine.clone();
        move |c| c.remove(engine.as_ref(), &request.reference, request.force)
    })
    .await?;
    tracing::info!(untagged = ?removal.untagged, deleted = ?removal.deleted, "model removed");
    engine.changes().bump();
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
    engine.changes().bump();
    Ok(to_wire(catalog, engine, &model))
}
