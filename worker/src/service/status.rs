//! `Status`: the engine's snapshot plus process and host memory.

use herd_proto::v1 as pb;

use crate::engine::Engine;
use crate::memory;

pub fn snapshot(engine: &dyn Engine, worker_id: &str) -> pb::StatusResponse {
    let status = engine.status();
    let host = memory::host();
    let models_bytes = status
        .models
        .iter()
        .filter(|m| m.loaded)
        .map(|m| m.size_bytes)
        .sum();
    pb::StatusResponse {
        worker_id: worker_id.to_owned(),
        slots_total: status.models.iter().map(|m| m.slots_total).sum(),
        slots_busy: status.models.iter().map(|m| m.slots_busy).sum(),
        models: status
            .models
            .into_iter()
            .map(|m| pb::ModelStatus {
                name: m.name,
                path: m.path,
                size_bytes: m.size_bytes,
                context_size: m.context_size,
                slots_total: m.slots_total,
                slots_busy: m.slots_busy,
                loaded: m.loaded,
                architecture: m.architecture,
                parameters: m.parameters,
                quantization: m.quantization,
                loaded_at: m.loaded_at_unix,
                on_demand: false,
                aliases: Vec::new(),
                id: String::new(),
                memory_bytes: 0,
            })
            .collect(),
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
        ..Default::default()
    }
}
