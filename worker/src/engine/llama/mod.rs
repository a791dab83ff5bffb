//! The llama.cpp engine: one [`LoadedModel`] and one decode-loop thread
//! ([`runner`]) per configured model.

mod embed;
mod grammar;
mod model;
mod prompt_cache;
mod runner;
mod sampler;
mod template;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Sender, channel, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use self::model::LoadedModel;
use self::runner::{Job, RunnerSettings};
use crate::config::{ModelConfig, WorkerConfig};
use crate::engine::changes::Changes;
use crate::engine::counters::Counters;
use crate::engine::slots::SlotPermit;
use crate::engine::tools;
use crate::engine::{
    Constraint, EmbedInput, Embeddings, Engine, EngineStatus, GenerationEvent, GenerationRequest,
    Input, ModelInfo, ToolUse,
};
use crate::error::EngineError;
use crate::footprint::Footprint;
use crate::gpu::GpuPlan;

/// llama.cpp's process-wide backend; it can be initialised once only.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Internal(format!("llama.cpp backend: {e}")))
}

/// A model with its decode loop.
#[derive(Debug)]
struct ModelRunner {
    config: ModelConfig,
    model: Arc<LoadedModel>,
    settings: RunnerSettings,
    jobs: Sender<Job>,
    busy: Arc<AtomicU32>,
    /// KV cells and prompt cache bytes, as the decode loop last counted.
    occupancy: Arc<runner::Occupancy>,
    /// False once the decode loop has stopped (shutdown or a panic).
    alive: Arc<AtomicBool>,
    loaded_at_unix: i64,
    /// Estimated memory as loaded.
    memory_bytes: u64,
    /// The embedding thread, started on the first `embed`.
    embedder: Mutex<Option<Sender<embed::EmbedJob>>>,
}

impl ModelRunner {
    /// Hands `job` to the embedding thread, starting it if it is not
    /// running (first use, or it exited while idle).
    fn embed_job(&self, job: embed::EmbedJob) -> Result<(), EngineError> {
        let mut guard = self
            .embedder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let job = match guard.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let tx = embed::start(
            backend()?,
            self.model.clone(),
            self.settings.context_per_slot,
            self.settings.threads,
            &self.config.name,
        )?;
        tx.send(job).map_err(|_| EngineError::ShuttingDown)?;
        *guard = Some(tx);
        Ok(())
    }
}

/// A model file with the slots, context and prompt cache it is loaded with.
type FootprintKey = (std::path::PathBuf, u32, Option<u32>, Option<u64>);

/// Runs GGUF models with llama.cpp.
#[derive(Debug)]
pub struct LlamaEngine {
    /// Loaded models by name. Request paths clone an `Arc` out under the
    /// read lock and never hold it across an await.
    models: RwLock<HashMap<String, Arc<ModelRunner>>>,
    /// Serialises loads, so one model is never loaded twice at once.
    loading: tokio::sync::Mutex<()>,
    threads: u32,
    /// How models use GPUs, decided at start.
    gpu: GpuPlan,
    counters: Arc<Counters>,
    changes: Changes,
    /// Footprints by (file, slots, context, prompt cache): the GGUF header
    /// is read once per file, not per status or load.
    footprints: Mutex<HashMap<FootprintKey, Footprint>>,
}

impl LlamaEngine {
    /// Loads every model of `config` and starts its decode loop.
    pub fn load(config: &WorkerConfig) -> Result<Self, EngineError> {
        let backend = backend()?;
        let gpus = crate::gpu::devices();
        let gpu = crate::gpu::plan(&config.gpu, &gpus)?;
        if gpu.offload {
            for g in &gpus {
                tracing::info!(
                    index = g.index,
                    name = %g.name,
                    description = %g.description,
                    memory_total_bytes = g.memory_total_bytes,
                    memory_free_bytes = g.memory_free_bytes,
                    "GPU available"
                );
            }
        } else {
            tracing::info!(mode = ?config.gpu.mode, gpus = gpus.len(), "running models on the CPU");
        }
        let engine = Self {
            models: RwLock::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            threads: config.threads(),
            gpu,
            counters: Arc::new(Counters::default()),
            changes: Changes::default(),
            footprints: Mutex::default(),
        };
        for model_config in &config.models {
            let runner = start_model(
                backend,
                model_config,
                engine.threads,
                &engine.gpu,
                &engine.counters,
                &engine.footprint(model_config),
            )?;
            engine.insert(runner);
        }
        Ok(engine)
    }

    fn runner(&self, name: &str) -> Result<Arc<ModelRunner>, EngineError> {
        self.models
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotLoaded(name.to_owned()))
    }

    /// The footprint of a model of `config`, read from its GGUF header once.
    fn footprint(&self, config: &ModelConfig) -> Footprint {
        let key = (
            config.path.clone(),
            config.parallel,
            config.context_size,
            config.prompt_cache.map(|size| size.0),
        );
        *self
            .footprints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| crate::footprint::of_file(config))
    }

    fn insert(&self, runner: ModelRunner) {
        self.models
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(runner.config.name.clone(), Arc::new(runner));
        self.changes.bump();
    }
}

/// Says why a model cannot be loaded, before llama.cpp tries: a file that
/// is not a GGUF, or more memory than the host has available (not checked
/// for GPU offload: the gateway's budget covers that).
fn check_loadable(
    config: &ModelConfig,
    memory_bytes: u64,
    offload: bool,
) -> Result<(), EngineError> {
    let failed = |reason: String| EngineError::LoadFailed {
        model: config.name.clone(),
        reason,
    };
    match herd_store::gguf::GgufSummary::read(&config.path) {
        Ok(_) => {}
        Err(herd_store::StoreError::InvalidGguf { reason, .. }) => {
            return Err(failed(format!("it is not a valid GGUF file: {reason}")));
        }
        Err(e) => {
            tracing::warn!(model = %config.name, error = %e, "cannot read the model file");
            return Err(failed(
                "its file cannot be read; the worker's log has details".into(),
            ));
        }
    }
    let available = crate::memory::host().available_bytes;
    if !offload && available > 0 && memory_bytes > available {
        return Err(failed(format!(
            "it needs about {} MiB of memory and the host has {} MiB available",
            memory_bytes >> 20,
            available >> 20
        )));
    }
    Ok(())
}

fn start_model(
    backend: &'static LlamaBackend,
    config: &ModelConfig,
    threads: u32,
    gpu: &GpuPlan,
    counters: &Arc<Counters>,
    footprint: &Footprint,
) -> Result<ModelRunner, EngineError> {
    let started = Instant::now();
    let model = Arc::new(LoadedModel::load(backend, config, gpu)?);
    let context_per_slot = config
        .context_size
        .unwrap_or_else(|| crate::config::default_context_size(Some(model.n_ctx_train.into())));
    let settings = RunnerSettings {
        slots: config.parallel,
        context_per_slot,
        threads: i32::try_from(threads).unwrap_or(1),
        flash_attention: gpu.flash_attention.llama_value(),
        prompt_cache_bytes: crate::footprint::prompt_cache(footprint),
    };
    let (jobs, job_rx) = channel::<Job>();
    let (ready_tx, ready_rx) = sync_channel(1);
    let thread_model = model.clone();
    let thread_settings = settings.clone();
    let thread_counters = counters.clone();
    let alive = Arc::new(AtomicBool::new(true));
    let thread_alive = alive.clone();
    let occupancy = Arc::new(runner::Occupancy::default());
    let thread_occupancy = occupancy.clone();
    let name = config.name.clone();
    std::thread::Builder::new()
        .name(format!("decode:{}", config.name))
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| {
                runner::run(
                    backend,
                    &thread_model.weights,
                    &thread_settings,
                    &job_rx,
                    &thread_counters,
                    &thread_occupancy,
                    |result| {
                        let _ = ready_tx.send(result);
                    },
                );
            });
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!(model = %name, "decode loop panicked; the model is out of service");
            }
            // However the loop ended, this model no longer serves.
            thread_alive.store(false, Ordering::Release);
        })
        .map_err(|e| EngineError::Internal(format!("cannot start the decode thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| EngineError::Internal("the decode thread died while starting".into()))??;
    tracing::info!(
        model = %config.name,
        path = %config.path.display(),
        slots = settings.slots,
        context_per_slot = settings.context_per_slot,
        prompt_cache_mib = settings.prompt_cache_bytes >> 20,
        threads = settings.threads,
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(ModelRunner {
        config: config.clone(),
        model,
        settings,
        jobs,
        busy: Arc::new(AtomicU32::new(0)),
        occupancy,
        alive,
        loaded_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        memory_bytes: crate::footprint::estimate(footprint),
        embedder: Mutex::new(None),
    })
}

#[async_trait]
impl Engine for LlamaEngine {
    async fn generate(
        &self,
        request: GenerationRequest,
        events: UnboundedSender<GenerationEvent>,
        cancel: CancellationToken,
    ) -> Result<(), EngineError> {
        let accepted_at = Instant::now();
        let runner = self.runner(&request.model)?;
        if !runner.alive.load(Ordering::Acquire) {
            return Err(EngineError::Internal(format!(
                "the decode loop of `{}` has stopped",
                request.model
            )));
        }
        let permit = SlotPermit::try_claim(&runner.busy, runner.settings.slots, &self.changes)
            .ok_or_else(|| EngineError::Busy {
                model: request.model.clone(),
                slots: runner.settings.slots,
            })?;
        let model = runner.model.clone();
        let tool_mode = request
            .tools
            .as_ref()
            .map(|_| tools::Answer::for_constraint(request.constraint.as_ref()));
        let (input, constraint) = prepare_input(
            &model,
            &runner.settings,
            request.input,
            request.tools,
            request.constraint,
        )?;
        let weights = model.weights.clone();
        let context_size = runner.settings.context_per_slot;
        let prompt = tokio::task::spawn_blocking(move || tokenize(&model, &input, context_size));
        let grammar = match constraint {
            Some(source) => Some(grammar::prepare(weights, source).await?),
            None => None,
        };
        let prompt = prompt
            .await
            .map_err(|e| EngineError::Internal(format!("tokenizer task failed: {e}")))??;
        runner
            .jobs
            .send(Job {
                prompt,
                sampling: request.sampling,
                grammar,
                tool_mode,
                max_tokens: request.max_tokens,
                stop: request.stop,
                events,
                cancel,
                permit,
                accepted_at,
            })
            .map_err(|_| EngineError::ShuttingDown)?;
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn count_tokens(&self, request: GenerationRequest) -> Result<u32, EngineError> {
        let runner = self.runner(&request.model)?;
        let model = runner.model.clone();
        let (input, _) = prepare_input(
            &model,
            &runner.settings,
            request.input,
            request.tools,
            request.constraint,
        )?;
        let context_size = runner.settings.context_per_slot;
        let prompt = tokio::task::spawn_blocking(move || tokenize(&model, &input, context_size))
            .await
            .map_err(|e| EngineError::Internal(format!("tokenizer task failed: {e}")))??;
        Ok(u32::try_from(prompt.len()).unwrap_or(u32::MAX))
    }

    async fn embed(&self, model: &str, inputs: Vec<EmbedInput>) -> Result<Embeddings, EngineError> {
        let runner = self.runner(model)?;
        let weights = runner.model.clone();
        let context_size = runner.settings.context_per_slot;
        for input in &inputs {
            if let EmbedInput::Text(text) = input {
                weights.check_size(text.len(), context_size)?;
            }
        }
        let tokens = tokio::task::spawn_blocking(move || {
            inputs
                .iter()
                .map(|input| {
                    let tokens = weights.embedding_tokens(input)?;
                    let n = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
                    if n > context_size {
                        return Err(EngineError::ContextLengthExceeded {
                            prompt_tokens: n,
                            context_size,
                        });
                    }
                    Ok(tokens)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| EngineError::Internal(format!("tokenizer task failed: {e}")))??;
        let prompt_tokens = tokens
            .iter()
            .map(|t| u32::try_from(t.len()).unwrap_or(u32::MAX))
            .fold(0u32, u32::saturating_add);
        let (reply, result) = tokio::sync::oneshot::channel();
        runner.embed_job(embed::EmbedJob {
            inputs: tokens,
            reply,
        })?;
        let vectors = result.await.map_err(|_| EngineError::ShuttingDown)??;
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }

    async fn load(&self, config: ModelConfig) -> Result<(), EngineError> {
        let _one_at_a_time = self.loading.lock().await;
        if self.runner(&config.name).is_ok() {
            return Ok(());
        }
        let backend = backend()?;
        let footprint = self.footprint(&config);
        check_loadable(
            &config,
            crate::footprint::estimate(&footprint),
            self.gpu.offload,
        )?;
        let (threads, counters, gpu) = (self.threads, self.counters.clone(), self.gpu.clone());
        let name = config.name.clone();
        let runner = tokio::task::spawn_blocking(move || {
            start_model(backend, &config, threads, &gpu, &counters, &footprint)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("load task failed: {e}")))?
        .map_err(|e| match e {
            EngineError::Internal(reason) => {
                tracing::warn!(model = %name, %reason, "load failed");
                EngineError::LoadFailed {
                    model: name.clone(),
                    reason: "llama.cpp could not load it (an architecture this build does \
                             not support, or damaged weights); the worker's log has details"
                        .into(),
                }
            }
            other => other,
        })?;
        self.insert(runner);
        Ok(())
    }

    fn serves(&self, name: &str) -> bool {
        self.runner(name).is_ok()
    }

    fn unload(&self, name: &str) -> bool {
        // Dropping the runner closes its job queue: the decode loop finishes
        // the generations it has, then exits and frees the weights.
        let removed = self
            .models
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        if removed.is_some() {
            tracing::info!(model = %name, "model unloaded");
            self.changes.bump();
        }
        removed.is_some()
    }

    fn estimate(&self, config: &ModelConfig) -> u64 {
        crate::footprint::estimate(&self.footprint(config))
    }

    fn changes(&self) -> &Changes {
        &self.changes
    }

    fn status(&self) -> EngineStatus {
        let mut models: Vec<ModelInfo> = self
            .models
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|r| ModelInfo {
                name: r.config.name.clone(),
                path: r.config.path.display().to_string(),
                size_bytes: r.model.size_bytes,
                context_size: r.settings.context_per_slot,
                slots_total: r.settings.slots,
                slots_busy: r.busy.load(Ordering::Acquire),
                kv_cells_used: r.occupancy.kv_cells.load(Ordering::Relaxed),
                prompt_cache_bytes: r.occupancy.prompt_cache_bytes.load(Ordering::Relaxed),
                loaded: r.alive.load(Ordering::Acquire),
                architecture: r.model.architecture.clone(),
                parameters: r.model.parameters,
                quantization: r.model.quantization.clone(),
                loaded_at_unix: r.loaded_at_unix,
                memory_bytes: r.memory_bytes,
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        EngineStatus {
            engine: "llama.cpp".into(),
            models,
            counters: self.counters.snapshot(),
            gpu_offload: self.gpu.offload,
        }
    }
}

/// The input as the model will see it (tool definitions folded into the
/// chat) and what constrains the answer. Huge prompts are refused here,
/// before they are rendered or tokenized.
fn prepare_input(
    model: &LoadedModel,
    settings: &RunnerSettings,
    input: Input,
    tools: Option<ToolUse>,
    constraint: Option<Constraint>,
) -> Result<(Input, Option<grammar::Source>), EngineError> {
    let bytes = match &input {
        Input::Chat(messages) => messages.iter().map(|m| m.content.len()).sum(),
        Input::Prompt(text) => text.len(),
    };
    model.check_size(bytes, settings.context_per_slot)?;
    Ok(match (tools, input) {
        (Some(use_), Input::Chat(messages)) => {
            let prepared = tools::prepare(&messages, &use_, constraint.as_ref());
            (
                Input::Chat(prepared),
                Some(grammar::Source::Tools(use_, constraint)),
            )
        }
        (_, input) => (input, constraint.map(grammar::Source::Response)),
    })
}

/// Renders and tokenizes `input`; a prompt that leaves no room in a slot's
/// `context_size` is refused.
fn tokenize(
    model: &LoadedModel,
    input: &Input,
    context_size: u32,
) -> Result<Vec<LlamaToken>, EngineError> {
    let prompt = model.prompt_tokens(input)?;
    let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
    if prompt_tokens >= context_size {
        return Err(EngineError::ContextLengthExceeded {
            prompt_tokens,
            context_size,
        });
    }
    Ok(prompt)
}
