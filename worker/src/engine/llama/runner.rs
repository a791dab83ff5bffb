//! One decode loop per loaded model: the thread that owns the llama.cpp
//! context and runs every active slot's next step in one `llama_batch`
//! (continuous batching). New prompts are prefilled in chunks alongside the
//! ongoing decodes, and a finished or cancelled slot is freed at once.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::Counters;
use crate::engine::text::{Step, TextAssembler};
use crate::engine::{FinishReason, Finished, GenerationEvent, Sampling};
use crate::error::EngineError;

/// Tokens per `llama_batch` (prompt chunks plus one token per decoding slot).
pub const BATCH_SIZE: u32 = 512;

/// An admitted generation on its way to the decode loop.
#[derive(Debug)]
pub struct Job {
    pub prompt: Vec<LlamaToken>,
    pub sampling: Sampling,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub events: UnboundedSender<GenerationEvent>,
    pub cancel: CancellationToken,
    pub permit: SlotPermit,
    pub accepted_at: Instant,
}

/// A claim on one of a model's slots; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotPermit {
    busy: Arc<AtomicU32>,
}

impl SlotPermit {
    /// Claims a slot if fewer than `slots` are busy.
    pub fn try_claim(busy: &Arc<AtomicU32>, slots: u32) -> Option<Self> {
        busy.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < slots).then_some(n + 1)
        })
        .ok()
        .map(|_| Self { busy: busy.clone() })
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Settings of the decode loop.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub slots: u32,
    pub context_per_slot: u32,
    pub threads: i32,
}

/// A generation in progress in one slot (one llama.cpp sequence).
struct Active {
    job: Job,
    sampler: LlamaSampler,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Next position in this sequence.
    n_past: u32,
    /// The last sampled token, to be decoded in the next step.
    pending: Option<LlamaToken>,
    /// Index of this slot's logits in the current batch.
    logits_at: Option<i32>,
    /// Tokens this slot put into the current batch.
    queued: u32,
    generated: u32,
    tokens_since_delta: u32,
    text: TextAssembler,
    first_token_at: Option<Instant>,
}

/// Creates the context, reports it through `ready`, then runs the decode loop
/// until every sender of `jobs` is gone.
pub fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    settings: &RunnerSettings,
    jobs: &Receiver<Job>,
    counters: &Counters,
    ready: impl FnOnce(Result<(), EngineError>),
) {
    let n_ctx = settings.context_per_slot.saturating_mul(settings.slots);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(BATCH_SIZE)
        .with_n_seq_max(settings.slots)
        .with_kv_unified(true)
        .with_n_threads(settings.threads)
        .with_n_threads_batch(settings.threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            ready(Err(EngineError::Internal(format!(
                "cannot create a context: {e}"
            ))));
            return;
        }
    };
    ready(Ok(()));
    let mut batch = LlamaBatch::new(
        BATCH_SIZE as usize,
        i32::try_from(settings.slots).unwrap_or(1),
    );
    let mut slots: Vec<Option<Active>> = (0..settings.slots).map(|_| None).collect();

    loop {
        if !take_jobs(jobs, &mut slots, &mut ctx, model.n_vocab()) {
            return;
        }
        drop_cancelled(&mut slots, &mut ctx, counters);
        if slots.iter().all(Option::is_none) {
            continue;
        }
        fill_batch(&mut batch, &mut slots);
        if batch.n_tokens() == 0 {
            continue;
        }
        if let Err(e) = ctx.decode(&mut batch) {
            let err = EngineError::Internal(format!("decode failed: {e}"));
            for slot in 0..slots.len() {
                if slots[slot].is_some() {
                    fail(&mut slots, slot, &mut ctx, err.clone(), counters);
                }
            }
            continue;
        }
        sample_and_emit(model, &mut slots, &mut ctx, settings, counters);
    }
}

/// Moves newly admitted jobs into free slots. Blocks while nothing is active.
/// Returns false once the engine is gone and every slot is idle.
fn take_jobs(
    jobs: &Receiver<Job>,
    slots: &mut [Option<Active>],
    ctx: &mut LlamaContext<'_>,
    n_vocab: i32,
) -> bool {
    loop {
        let idle = slots.iter().all(Option::is_none);
        let job = if idle {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return false,
            }
        } else {
            match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return true,
            }
        };
        // Admission (`SlotPermit`) guarantees a free slot.
        let Some(free) = slots.iter().position(Option::is_none) else {
            let _ = job
                .events
                .send(GenerationEvent::Failed(EngineError::Internal(
                    "no free slot for an admitted job".into(),
                )));
            continue;
        };
        clear_sequence(ctx, free);
        let text = TextAssembler::new(job.stop.clone());
        let sampler = super::sampler::build(&job.sampling, n_vocab);
        slots[free] = Some(Active {
            job,
            sampler,
            prefilled: 0,
            n_past: 0,
            pending: None,
            logits_at: None,
            queued: 0,
            generated: 0,
            tokens_since_delta: 0,
            text,
            first_token_at: None,
        });
    }
}

/// Ends generations whose caller went away.
fn drop_cancelled(slots: &mut [Option<Active>], ctx: &mut LlamaContext<'_>, counters: &Counters) {
    for slot in 0..slots.len() {
        let gone = slots[slot]
            .as_ref()
            .is_some_and(|a| a.job.cancel.is_cancelled() || a.job.events.is_closed());
        if gone {
            finish(
                slots,
                slot,
                ctx,
                FinishReason::Cancelled,
                String::new(),
                counters,
            );
        }
    }
}

/// One token per decoding slot first, then prompt chunks with what is left.
fn fill_batch(batch: &mut LlamaBatch, slots: &mut [Option<Active>]) {
    batch.clear();
    let mut next_index = 0i32;
    for (seq, active) in slots.iter_mut().enumerate() {
        let Some(active) = active else { continue };
        active.logits_at = None;
        active.queued = 0;
        if let Some(token) = active.pending
            && batch
                .add(token, pos(active.n_past), &[seq_id(seq)], true)
                .is_ok()
        {
            active.logits_at = Some(next_index);
            active.queued = 1;
            next_index += 1;
        }
    }
    for (seq, active) in slots.iter_mut().enumerate() {
        let Some(active) = active else { continue };
        let remaining = active.job.prompt.len() - active.prefilled;
        if remaining == 0 {
            continue;
        }
        let room = (BATCH_SIZE as usize).saturating_sub(next_index as usize);
        let chunk = remaining.min(room);
        for i in 0..chunk {
            let at = active.prefilled + i;
            let last = at + 1 == active.job.prompt.len();
            if batch
                .add(
                    active.job.prompt[at],
                    pos(active.n_past + i as u32),
                    &[seq_id(seq)],
                    last,
                )
                .is_err()
            {
                break;
            }
            if last {
                active.logits_at = Some(next_index);
            }
            active.queued += 1;
            next_index += 1;
        }
    }
}

/// After a decode: advance positions, sample where logits were computed,
/// stream text, and end what is done.
fn sample_and_emit(
    model: &LlamaModel,
    slots: &mut [Option<Active>],
    ctx: &mut LlamaContext<'_>,
    settings: &RunnerSettings,
    counters: &Counters,
) {
    let vocab = model.vocab();
    for slot in 0..slots.len() {
        let Some(active) = slots[slot].as_mut() else {
            continue;
        };
        // Account for what this step put into the KV cache.
        active.n_past += active.queued;
        if active.pending.is_some() {
            if active.queued > 0 {
                active.pending = None;
            }
        } else {
            active.prefilled += active.queued as usize;
        }
        let Some(index) = active.logits_at else {
            continue;
        };

        let token = active.sampler.sample(ctx, index);
        active.first_token_at.get_or_insert_with(Instant::now);
        if vocab.is_eog(token) {
            let rest = std::mem::take(&mut active.text).finish();
            finish(slots, slot, ctx, FinishReason::Stop, rest, counters);
            continue;
        }
        active.generated += 1;
        active.tokens_since_delta += 1;
        counters.tokens_generated.fetch_add(1, Ordering::Relaxed);
        let piece = vocab.token_to_piece(token, false, None);
        match active.text.push(&piece) {
            Step::Stopped(text) => {
                finish(slots, slot, ctx, FinishReason::Stop, text, counters);
                continue;
            }
            Step::Emit(text) => {
                if !text.is_empty() {
                    let tokens = std::mem::take(&mut active.tokens_since_delta);
                    let _ = active
                        .job
                        .events
                        .send(GenerationEvent::Delta { text, tokens });
                }
            }
        }
        let at_limit = active
            .job
            .max_tokens
            .is_some_and(|max| active.generated >= max);
        let context_full = active.n_past + 1 >= settings.context_per_slot;
        if at_limit || context_full {
            let rest = std::mem::take(&mut active.text).finish();
            finish(slots, slot, ctx, FinishReason::Length, rest, counters);
        } else {
            active.pending = Some(token);
        }
    }
}

/// Ends the generation in `slot`: frees the slot first (so a caller that sees
/// the final event can immediately send the next request), then sends the
/// remaining text and the summary.
fn finish(
    slots: &mut [Option<Active>],
    slot: usize,
    ctx: &mut LlamaContext<'_>,
    reason: FinishReason,
    text: String,
    counters: &Counters,
) {
    let Some(active) = slots[slot].take() else {
        return;
    };
    clear_sequence(ctx, slot);
    let Job {
        prompt,
        events,
        permit,
        accepted_at,
        ..
    } = active.job;
    drop(permit);
    let now = Instant::now();
    if !text.is_empty() {
        let _ = events.send(GenerationEvent::Delta {
            text,
            tokens: active.tokens_since_delta,
        });
    }
    let counter = match reason {
        FinishReason::Cancelled => &counters.cancelled,
        FinishReason::Stop | FinishReason::Length => &counters.completed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let _ = events.send(GenerationEvent::Finished(Finished {
        reason,
        prompt_tokens: u32::try_from(prompt.len()).unwrap_or(u32::MAX),
        completion_tokens: active.generated,
        cached_prompt_tokens: 0,
        time_to_first_token: active.first_token_at.unwrap_or(now) - accepted_at,
        total_time: now - accepted_at,
    }));
}

/// Ends the generation in `slot` with an error.
fn fail(
    slots: &mut [Option<Active>],
    slot: usize,
    ctx: &mut LlamaContext<'_>,
    err: EngineError,
    counters: &Counters,
) {
    if let Some(active) = slots[slot].take() {
        clear_sequence(ctx, slot);
        let Job { events, permit, .. } = active.job;
        drop(permit);
        counters.failed.fetch_add(1, Ordering::Relaxed);
        let _ = events.send(GenerationEvent::Failed(err));
    }
}

fn clear_sequence(ctx: &mut LlamaContext<'_>, slot: usize) {
    let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
}

fn seq_id(slot: usize) -> i32 {
    i32::try_from(slot).unwrap_or(i32::MAX)
}

fn pos(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}
