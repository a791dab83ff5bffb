//! One decode loop per loaded model: the thread that owns the llama.cpp
//! context and runs every active slot's next step in one `llama_batch`
//! (continuous batching). New prompts are prefilled in chunks alongside the
//! ongoing decodes, and a finished or cancelled slot is freed at once.
//!
//! Prompt cache: a slot's KV cells stay after its generation ends, and a
//! new request whose prompt shares a prefix with them computes only the
//! rest. Before a slot's cells are cut for another prompt they are saved in
//! the host-memory prompt cache ([`super::prompt_cache`]), and restored from
//! there when a later prompt shares more with them than with its slot. With
//! that cache on, a new request takes the lowest free slot (busy slots kept
//! together, see [`lowest_free`]) and its prompt's cells are brought there.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::LlamaStateSeqFlags;
use llama_cpp_2::SeqState;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::prompt_cache::{PromptCache, common_prefix};
use crate::engine::counters::Counters;
use crate::engine::slots::SlotPermit;
use crate::engine::text::{Step, TextAssembler};
use crate::engine::tools;
use crate::engine::{FinishReason, Finished, GenerationEvent, Sampling};
use crate::error::EngineError;

/// Tokens per `llama_batch` (prompt chunks plus one token per decoding slot).
pub const BATCH_SIZE: u32 = 512;

/// An admitted generation on its way to the decode loop.
#[derive(Debug)]
pub struct Job {
    pub prompt: Vec<LlamaToken>,
    pub sampling: Sampling,
    /// GBNF grammar constraining the output.
    pub grammar: Option<String>,
    /// Tool calling: hold the text back and read it as calls (or an answer
    /// of this kind) at the end.
    pub tool_mode: Option<tools::Answer>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub events: UnboundedSender<GenerationEvent>,
    pub cancel: CancellationToken,
    pub permit: SlotPermit,
    pub accepted_at: Instant,
}

/// Settings of the decode loop.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub slots: u32,
    pub context_per_slot: u32,
    pub threads: i32,
    /// llama.cpp's flash-attention policy (-1 auto, 0 off, 1 on).
    pub flash_attention: i32,
    /// Bytes of slot states the host-memory prompt cache keeps (0: off).
    pub prompt_cache_bytes: u64,
}

/// What the decode loop holds, as it last counted, for the worker's status
/// and metrics.
#[derive(Debug, Default)]
pub struct Occupancy {
    /// KV cells of the slots (running generations and prompts kept).
    pub kv_cells: AtomicU64,
    /// Bytes of the host-memory prompt cache.
    pub prompt_cache_bytes: AtomicU64,
}

/// One llama.cpp sequence: what its KV cells hold, and the generation using
/// it, if any.
#[derive(Default)]
struct Slot {
    /// Tokens whose KV cells this sequence holds, in position order.
    kv: Vec<LlamaToken>,
    active: Option<Active>,
}

/// A generation in progress in one slot.
struct Active {
    job: Job,
    sampler: LlamaSampler,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Prompt tokens reused from the slot's cache.
    cached: u32,
    /// The last sampled token, to be decoded in the next step.
    pending: Option<LlamaToken>,
    /// Index of this slot's logits in the current batch.
    logits_at: Option<i32>,
    /// Tokens this slot put into the current batch.
    queued: Vec<LlamaToken>,
    generated: u32,
    tokens_since_delta: u32,
    text: TextAssembler,
    /// Text held back in tool mode.
    collected: String,
    /// Ends a tool-mode reply that repeats a call.
    repeats: tools::RepeatGuard,
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
    occupancy: &Occupancy,
    ready: impl FnOnce(Result<(), EngineError>),
) {
    let n_ctx = settings.context_per_slot.saturating_mul(settings.slots);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(BATCH_SIZE)
        .with_n_seq_max(settings.slots)
        // One KV stream per slot: attention then runs over each sequence's
        // own cells, so a request's numerics (and its greedy output) do not
        // depend on what else is in the batch. A unified cache changed
        // greedy outputs of concurrent requests (measured: 5 of 8 differed).
        .with_kv_unified(false)
        .with_n_threads(settings.threads)
        .with_n_threads_batch(settings.threads)
        .with_flash_attention_policy(settings.flash_attention);
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
    let mut slots: Vec<Slot> = (0..settings.slots).map(|_| Slot::default()).collect();
    let mut cache = PromptCache::new(settings.prompt_cache_bytes);

    loop {
        if !take_jobs(jobs, &mut slots, &mut cache, &mut ctx, model, counters) {
            return;
        }
        drop_cancelled(&mut slots, counters);
        record(&slots, &cache, occupancy);
        if slots.iter().all(|s| s.active.is_none()) {
            continue;
        }
        fill_batch(&mut batch, &mut slots);
        if batch.n_tokens() == 0 {
            continue;
        }
        if let Err(e) = ctx.decode(&mut batch) {
            let err = EngineError::Internal(format!("decode failed: {e}"));
            for slot in 0..slots.len() {
                fail(&mut slots, slot, &mut ctx, err.clone(), counters);
            }
            continue;
        }
        sample_and_emit(model, &mut slots, &mut ctx, settings, counters);
        record(&slots, &cache, occupancy);
    }
}

/// Publishes how many KV cells the slots hold (running generations and
/// the prompts kept for reuse) and the prompt cache's size.
fn record(slots: &[Slot], cache: &PromptCache<SeqState>, occupancy: &Occupancy) {
    let cells: usize = slots.iter().map(|s| s.kv.len()).sum();
    occupancy.kv_cells.store(cells as u64, Ordering::Relaxed);
    occupancy
        .prompt_cache_bytes
        .store(cache.bytes(), Ordering::Relaxed);
}

/// Moves newly admitted jobs into free slots. Blocks while nothing is active.
/// Returns false once the engine is gone and every slot is idle.
fn take_jobs(
    jobs: &Receiver<Job>,
    slots: &mut [Slot],
    cache: &mut PromptCache<SeqState>,
    ctx: &mut LlamaContext<'_>,
    model: &LlamaModel,
    counters: &Counters,
) -> bool {
    loop {
        let idle = slots.iter().all(|s| s.active.is_none());
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
        let sampler = match super::sampler::build(&job.sampling, model, job.grammar.as_deref()) {
            Ok(sampler) => sampler,
            Err(err) => {
                // Started, so counted as failed (an unusable grammar).
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.send(GenerationEvent::Failed(err));
                continue;
            }
        };
        // Admission (`SlotPermit`) guarantees a free slot.
        let chosen = if cache.is_on() {
            lowest_free(slots)
        } else {
            best_slot(slots, &job.prompt)
        };
        let Some(free) = chosen else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let _ = job
                .events
                .send(GenerationEvent::Failed(EngineError::Internal(
                    "no free slot for an admitted job".into(),
                )));
            continue;
        };
        lend(ctx, cache, slots, free, &job.prompt);
        swap_through_cache(ctx, cache, free, &mut slots[free].kv, &job.prompt);
        let reused = reuse_prefix(ctx, free, &mut slots[free].kv, &job.prompt);
        let text = TextAssembler::new(job.stop.clone());
        slots[free].active = Some(Active {
            job,
            sampler,
            prefilled: reused,
            cached: u32::try_from(reused).unwrap_or(0),
            pending: None,
            logits_at: None,
            queued: Vec::new(),
            generated: 0,
            tokens_since_delta: 0,
            text,
            collected: String::new(),
            repeats: tools::RepeatGuard::default(),
            first_token_at: None,
        });
    }
}

/// The free slot with the lowest index: the slot a new request takes when
/// the host-memory cache can bring its prompt's cells to any slot. Keeping
/// the busy slots together matters: with one KV stream per slot, llama.cpp
/// puts only sequences with consecutive ids into one micro-batch, so 4
/// generations in slots 0, 3, 5 and 7 cost 4 graph computations per step
/// where slots 0–3 cost one.
fn lowest_free(slots: &[Slot]) -> Option<usize> {
    slots.iter().position(|s| s.active.is_none())
}

/// The free slot for `prompt` without the host-memory cache: the one whose
/// cache shares the longest prefix with it (among equals, the least cached)
/// if reusing that cache is worth what it destroys: the prompt is all in
/// it, or the shared part is at least twice what would be cut away (the
/// rest of another conversation).
/// Otherwise an unused slot, so the caches of other prompts live on: cutting
/// a cache down to a shared head (a chat template's opening) saves the head
/// once and costs the whole cache of the prompt that made it — two prompts
/// taking turns on 8 slots then never hit the cache (measured: 50 ms to
/// the first token instead of 6). With no unused slot, the longest match.
fn best_slot(slots: &[Slot], prompt: &[LlamaToken]) -> Option<usize> {
    let free = || slots.iter().enumerate().filter(|(_, s)| s.active.is_none());
    let (best, shared) = free()
        .map(|(i, s)| (i, common_prefix(&s.kv, prompt)))
        .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(slots[i].kv.len())))?;
    let cut = slots[best].kv.len() - shared;
    let worth = shared > 0 && (shared + 1 >= prompt.len() || shared >= 2 * cut);
    if worth {
        return Some(best);
    }
    free()
        .find(|(_, s)| s.kv.is_empty())
        .map_or(Some(best), |(i, _)| Some(i))
}

/// When another free slot than `target` shares more of `prompt` than
/// `target` does, copies that slot's state into the host-memory cache (the
/// slot keeps its cells), from where `target` restores it.
fn lend(
    ctx: &LlamaContext<'_>,
    cache: &mut PromptCache<SeqState>,
    slots: &[Slot],
    target: usize,
    prompt: &[LlamaToken],
) {
    if !cache.is_on() {
        return;
    }
    let usable = &prompt[..prompt.len().saturating_sub(1)];
    let own = common_prefix(&slots[target].kv, usable);
    let best = slots
        .iter()
        .enumerate()
        .filter(|(i, s)| *i != target && s.active.is_none())
        .map(|(i, s)| (i, common_prefix(&s.kv, usable)))
        .max_by_key(|&(_, shared)| shared);
    if let Some((lender, shared)) = best
        && shared > own
    {
        save(ctx, cache, lender, &slots[lender].kv);
    }
}

/// Before `slot` takes `prompt`: saves the cells it is about to lose in the
/// host-memory cache, and restores the cached state that shares more with
/// `prompt` than the slot does, if there is one.
fn swap_through_cache(
    ctx: &mut LlamaContext<'_>,
    cache: &mut PromptCache<SeqState>,
    slot: usize,
    kv: &mut Vec<LlamaToken>,
    prompt: &[LlamaToken],
) {
    if !cache.is_on() {
        return;
    }
    // The prompt's last token is always computed (for its logits).
    let usable = &prompt[..prompt.len().saturating_sub(1)];
    let shared = common_prefix(kv, usable);
    let restore = cache.lookup(usable, shared).is_some();
    let keep = if restore { 0 } else { shared };
    if kv.len() > keep {
        save(ctx, cache, slot, kv);
    }
    if !restore {
        return;
    }
    // Looked up again: saving may have evicted the entry found.
    let Some((tokens, state)) = cache.lookup(usable, shared) else {
        return;
    };
    let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
    kv.clear();
    match ctx.state_seq_set(state, seq_id(slot)) {
        Ok(()) => kv.extend_from_slice(tokens),
        Err(e) => {
            tracing::warn!(error = %e, "a cached prompt state could not be restored");
            let tokens = tokens.to_vec();
            let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
            cache.forget(&tokens);
        }
    }
}

/// Copies `slot`'s KV state into the host-memory cache, unless the cache
/// holds it already or it would not fit.
fn save(ctx: &LlamaContext<'_>, cache: &mut PromptCache<SeqState>, slot: usize, kv: &[LlamaToken]) {
    let flags = LlamaStateSeqFlags::empty();
    if !cache.wants(kv, ctx.state_seq_get_size_ext(seq_id(slot), flags)) {
        return;
    }
    match ctx.state_seq_get(seq_id(slot), flags) {
        Ok(state) => cache.save(kv.to_vec(), state),
        Err(e) => tracing::warn!(error = %e, "a slot's prompt state could not be saved"),
    }
}

/// Keeps the slot's KV cells that match the start of `prompt` (all but the
/// prompt's last token at most, which must be evaluated for logits) and drops
/// the rest. Returns how many prompt tokens are already computed.
fn reuse_prefix(
    ctx: &mut LlamaContext<'_>,
    slot: usize,
    kv: &mut Vec<LlamaToken>,
    prompt: &[LlamaToken],
) -> usize {
    let keep = common_prefix(kv, prompt).min(prompt.len().saturating_sub(1));
    let removed = ctx
        .clear_kv_cache_seq(Some(slot as u32), Some(keep as u32), None)
        .unwrap_or(false);
    if removed {
        kv.truncate(keep);
        keep
    } else {
        // The memory cannot drop a suffix (e.g. recurrent models): start over.
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        kv.clear();
        0
    }
}

/// Ends generations whose caller went away.
fn drop_cancelled(slots: &mut [Slot], counters: &Counters) {
    for slot in 0..slots.len() {
        let gone = slots[slot]
            .active
            .as_ref()
            .is_some_and(|a| a.job.cancel.is_cancelled() || a.job.events.is_closed());
        if gone {
            finish(
                slots,
                slot,
                FinishReason::Cancelled,
                String::new(),
                counters,
            );
        }
    }
}

/// One token per decoding slot first, then prompt chunks with what is left.
fn fill_batch(batch: &mut LlamaBatch, slots: &mut [Slot]) {
    batch.clear();
    let mut next_index = 0i32;
    for (seq, slot) in slots.iter_mut().enumerate() {
        let Some(active) = slot.active.as_mut() else {
            continue;
        };
        active.logits_at = None;
        active.queued.clear();
        if let Some(token) = active.pending
            && batch
                .add(token, pos(slot.kv.len()), &[seq_id(seq)], true)
                .is_ok()
        {
            active.logits_at = Some(next_index);
            active.queued.push(token);
            next_index += 1;
        }
    }
    for (seq, slot) in slots.iter_mut().enumerate() {
        let Some(active) = slot.active.as_mut() else {
            continue;
        };
        let prompt = &active.job.prompt;
        let room = (BATCH_SIZE as usize).saturating_sub(next_index as usize);
        let chunk = (prompt.len() - active.prefilled).min(room);
        for at in active.prefilled..active.prefilled + chunk {
            let last = at + 1 == prompt.len();
            let position = pos(slot.kv.len() + active.queued.len());
            if batch
                .add(prompt[at], position, &[seq_id(seq)], last)
                .is_err()
            {
                break;
            }
            if last {
                active.logits_at = Some(next_index);
            }
            active.queued.push(prompt[at]);
            next_index += 1;
        }
    }
}

/// After a decode: record what entered the KV cache, sample where logits
/// were computed, stream text, and end what is done.
fn sample_and_emit(
    model: &LlamaModel,
    slots: &mut [Slot],
    ctx: &mut LlamaContext<'_>,
    settings: &RunnerSettings,
    counters: &Counters,
) {
    let vocab = model.vocab();
    for slot in 0..slots.len() {
        let Slot { kv, active } = &mut slots[slot];
        let Some(active) = active.as_mut() else {
            continue;
        };
        kv.extend_from_slice(&active.queued);
        if active.pending.is_some() {
            if !active.queued.is_empty() {
                active.pending = None;
            }
        } else {
            active.prefilled += active.queued.len();
        }
        let Some(index) = active.logits_at else {
            continue;
        };

        let token = active.sampler.sample(ctx, index);
        active.first_token_at.get_or_insert_with(Instant::now);
        if vocab.is_eog(token) {
            let rest = std::mem::take(&mut active.text).finish();
            finish(slots, slot, FinishReason::Stop, rest, counters);
            continue;
        }
        active.generated += 1;
        active.tokens_since_delta += 1;
        counters.tokens_generated.fetch_add(1, Ordering::Relaxed);
        let piece = vocab.token_to_piece(token, false, None);
        match active.text.push(&piece) {
            Step::Stopped(text) => {
                finish(slots, slot, FinishReason::Stop, text, counters);
                continue;
            }
            Step::Emit(text) if active.job.tool_mode.is_some() => {
                active.collected.push_str(&text);
                if let Some(done) = active.repeats.push(&active.collected, &text) {
                    // The model started over with a call it made: the
                    // reply is complete without it.
                    active.collected = done;
                    finish(slots, slot, FinishReason::Stop, String::new(), counters);
                    continue;
                }
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
        // The sampled token still needs a cell of its own.
        let context_full = kv.len() >= settings.context_per_slot as usize;
        if at_limit || context_full {
            let rest = std::mem::take(&mut active.text).finish();
            finish(slots, slot, FinishReason::Length, rest, counters);
        } else {
            active.pending = Some(token);
        }
    }
}

/// Ends the generation in `slot`, keeping its KV cells as prompt cache:
/// frees the slot first (so a caller that sees the final event can send the
/// next request at once), then sends the remaining text and the summary.
fn finish(
    slots: &mut [Slot],
    slot: usize,
    reason: FinishReason,
    text: String,
    counters: &Counters,
) {
    let Some(active) = slots[slot].active.take() else {
        return;
    };
    let Job {
        prompt,
        events,
        permit,
        accepted_at,
        tool_mode,
        ..
    } = active.job;
    drop(permit);
    let now = Instant::now();
    let (text, reason, tool_calls) = match tool_mode {
        Some(answer) if reason != FinishReason::Cancelled => {
            let mut full = active.collected;
            full.push_str(&text);
            if reason == FinishReason::Length
                && let Some(calls) = active.repeats.complete_calls(&full)
            {
                // Cut short after whole calls: those are the reply.
                full = calls;
            }
            tracing::debug!(reply = %full, ?reason, "tool-mode reply");
            match tools::interpret(&full, answer, new_call_id) {
                tools::Outcome::Calls(calls) => (String::new(), FinishReason::ToolCalls, calls),
                tools::Outcome::Content(content) => (content, reason, Vec::new()),
                // A call cut short: no content, and the reason says why.
                tools::Outcome::Nothing => (String::new(), reason, Vec::new()),
            }
        }
        _ => (text, reason, Vec::new()),
    };
    if !text.is_empty() {
        let _ = events.send(GenerationEvent::Delta {
            text,
            tokens: active.tokens_since_delta,
        });
    }
    counters.finished(reason);
    let _ = events.send(GenerationEvent::Finished(Finished {
        reason,
        prompt_tokens: u32::try_from(prompt.len()).unwrap_or(u32::MAX),
        completion_tokens: active.generated,
        cached_prompt_tokens: active.cached,
        time_to_first_token: active.first_token_at.unwrap_or(now) - accepted_at,
        total_time: now - accepted_at,
        tool_calls,
    }));
}

/// A fresh tool-call id, `call_` and 24 hex digits.
fn new_call_id() -> String {
    let (a, b) = (crate::random::random_u64(), crate::random::random_u64());
    format!("call_{a:016x}{:08x}", b as u32)
}

/// Ends the generation in `slot` with an error; its KV cells are dropped.
fn fail(
    slots: &mut [Slot],
    slot: usize,
    ctx: &mut LlamaContext<'_>,
    err: EngineError,
    counters: &Counters,
) {
    if let Some(active) = slots[slot].active.take() {
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        slots[slot].kv.clear();
        let Job { events, permit, .. } = active.job;
        drop(permit);
        counters.failed.fetch_add(1, Ordering::Relaxed);
        let _ = events.send(GenerationEvent::Failed(err));
    }
}

fn seq_id(slot: usize) -> i32 {
    i32::try_from(slot).unwrap_or(i32::MAX)
}

fn pos(p: usize) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|i| LlamaToken::new(*i)).collect()
    }

    #[test]
    fn the_slot_with_the_longest_shared_prefix_wins() {
        let slots = vec![
            Slot {
                kv: toks(&[1, 2, 9]),
                active: None,
            },
            Slot {
                kv: toks(&[1, 2, 3, 4]),
                active: None,
            },
            Slot {
                kv: Vec::new(),
                active: None,
            },
        ];
        assert_eq!(best_slot(&slots, &toks(&[1, 2, 3, 5])), Some(1));
        // Nothing shared: the empty slot, keeping both caches.
        assert_eq!(best_slot(&slots, &toks(&[7])), Some(2));
    }

    fn idle(ids: &[i32]) -> Slot {
        Slot {
            kv: toks(ids),
            active: None,
        }
    }

    #[test]
    fn a_cache_is_not_cut_to_a_short_shared_head_while_a_slot_is_unused() {
        // Slot 0: prompt A (template head 1, 2; then 3, 4) and its answer.
        let slots = vec![idle(&[1, 2, 3, 4, 5, 6]), idle(&[])];
        // Prompt B shares only the head: B takes the unused slot, A's cache
        // stays for A's next turn.
        assert_eq!(best_slot(&slots, &toks(&[1, 2, 8, 9])), Some(1));
        // A again: all of it is in slot 0.
        assert_eq!(best_slot(&slots, &toks(&[1, 2, 3, 4])), Some(0));
        // A's next turn extends its cache.
        assert_eq!(best_slot(&slots, &toks(&[1, 2, 3, 4, 5, 6, 7])), Some(0));
    }

    #[test]
    fn a_long_shared_prefix_is_reused_even_at_the_cost_of_a_short_tail() {
        // A long system prompt (1..=10) and another agent's short turn.
        let system: Vec<i32> = (1..=10).collect();
        let other = [system.clone(), vec![20, 21, 22]].concat();
        let mine = [system, vec![30, 31]].concat();
        let slots = vec![idle(&other), idle(&[])];
        assert_eq!(best_slot(&slots, &toks(&mine)), Some(0));
    }

    #[test]
    fn with_no_unused_slot_the_longest_match_is_cut() {
        let slots = vec![idle(&[1, 2, 3, 4, 5, 6]), idle(&[1, 9])];
        assert_eq!(best_slot(&slots, &toks(&[1, 2, 8])), Some(0));
    }
}
