//! Embeddings: one thread per model, started on first use, owning a context
//! made for pooled embeddings. Each input is decoded as its own sequence and
//! its pooled vector L2-normalised. A job whose caller went away stops at
//! the next input; the thread (and its context's memory) goes away after
//! [`IDLE_EXIT`] without work, and is started again on the next job.

use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, Sender, channel};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use crate::error::EngineError;

/// How long the embedding thread waits for work before it exits.
pub const IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A batch of tokenized inputs and where to send their vectors.
#[derive(Debug)]
pub struct EmbedJob {
    pub inputs: Vec<Vec<LlamaToken>>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

/// Starts the embedding thread for `model`; it ends when the sender is dropped.
pub fn start(
    backend: &'static LlamaBackend,
    model: std::sync::Arc<super::model::LoadedModel>,
    context_size: u32,
    threads: i32,
    name: &str,
) -> Result<Sender<EmbedJob>, EngineError> {
    let (tx, rx) = channel::<EmbedJob>();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("embed:{name}"))
        .spawn(move || {
            let pooling = model.pooling;
            run(
                backend,
                &model.weights,
                pooling,
                context_size,
                threads,
                &rx,
                |r| {
                    let _ = ready_tx.send(r);
                },
            );
        })
        .map_err(|e| EngineError::Internal(format!("cannot start the embedding thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| EngineError::Internal("the embedding thread died while starting".into()))??;
    Ok(tx)
}

fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    pooling: LlamaPoolingType,
    context_size: u32,
    threads: i32,
    jobs: &Receiver<EmbedJob>,
    ready: impl FnOnce(Result<(), EngineError>),
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context_size))
        .with_n_batch(context_size)
        .with_n_ubatch(context_size)
        .with_n_seq_max(1)
        .with_embeddings(true)
        .with_pooling_type(pooling)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            ready(Err(EngineError::Internal(format!(
                "cannot create an embedding context: {e}"
            ))));
            return;
        }
    };
    ready(Ok(()));
    let mut batch = LlamaBatch::new(context_size as usize, 1);
    while let Ok(job) = jobs.recv_timeout(IDLE_EXIT) {
        let mut vectors = Vec::with_capacity(job.inputs.len());
        let mut failed = None;
        for tokens in &job.inputs {
            if job.reply.is_closed() {
                // The caller left: the rest is not worth computing.
                tracing::debug!("embedding job abandoned by its caller");
                break;
            }
            match embed_one(&mut ctx, &mut batch, tokens) {
                Ok(v) => vectors.push(v),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let _ = job.reply.send(failed.map_or(Ok(vectors), Err));
    }
}

fn embed_one(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    tokens: &[LlamaToken],
) -> Result<Vec<f32>, EngineError> {
    let _ = ctx.clear_kv_cache_seq(Some(0), None, None);
    batch.clear();
    batch
        .add_sequence(tokens, 0, true)
        .map_err(|e| EngineError::Internal(format!("embedding batch: {e}")))?;
    ctx.decode(batch)
        .map_err(|e| EngineError::Internal(format!("embedding decode failed: {e}")))?;
    let vector = ctx
        .embeddings_seq_ith(0)
        .map_err(|_| EngineError::Internal("the model produced no pooled embedding".into()))?;
    Ok(normalize(vector))
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_vectors_have_unit_length() {
        let v = normalize(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
