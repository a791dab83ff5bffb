//! The baseline for Herd's engine benchmark: llama.cpp driven directly
//! through the same binding and build, no server, the way llama.cpp's own
//! `llama-batched-bench` measures — `npl` sequences each prefill an
//! `npp`-token prompt, then decode `ntg` tokens together, one token per
//! sequence per `llama_decode`, greedy sampling.
//!
//! `cargo run --release -p herd-worker --example llama_baseline -- MODEL THREADS NPP NTG NPL[,NPL…]`
//! prints one JSON line per NPL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() == 6,
        "usage: llama_baseline MODEL THREADS NPP NTG NPL[,NPL...]"
    );
    let threads: i32 = args[2].parse().unwrap();
    let npp: usize = args[3].parse().unwrap();
    let ntg: usize = args[4].parse().unwrap();
    let npls: Vec<usize> = args[5].split(',').map(|n| n.parse().unwrap()).collect();

    let mut backend = LlamaBackend::init().unwrap();
    backend.void_logs();
    let model =
        LlamaModel::load_from_file(&backend, &args[1], &LlamaModelParams::default()).unwrap();
    let text = "The history of lighthouses is long and full of stories. ".repeat(npp);
    let mut prompt = model.vocab().tokenize(text.as_bytes(), true, false);
    prompt.truncate(npp);

    for npl in npls {
        let per_seq = (npp + ntg + 1) as u32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(per_seq * npl as u32))
            .with_n_batch(512)
            .with_n_seq_max(npl as u32)
            .with_kv_unified(false)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = model.new_context(&backend, params).unwrap();
        let mut samplers: Vec<LlamaSampler> = (0..npl).map(|_| LlamaSampler::greedy()).collect();
        let mut batch = LlamaBatch::new(512.max(npl), npl as i32);

        // Prefill every sequence's prompt (chunks of at most 512 tokens).
        let started = Instant::now();
        let mut logits_at = vec![0i32; npl];
        let mut queue: Vec<(usize, usize)> = (0..npl)
            .flat_map(|s| (0..npp).map(move |p| (s, p)))
            .collect();
        while !queue.is_empty() {
            batch.clear();
            let take = queue.len().min(512);
            for (i, (seq, p)) in queue.drain(..take).enumerate() {
                let last = p + 1 == npp;
                batch.add(prompt[p], p as i32, &[seq as i32], last).unwrap();
                if last {
                    logits_at[seq] = i as i32;
                }
            }
            ctx.decode(&mut batch).unwrap();
        }
        let t_pp = started.elapsed().as_secs_f64();

        // Decode ntg tokens per sequence, all sequences in each batch.
        let started = Instant::now();
        for step in 0..ntg {
            let tokens: Vec<_> = (0..npl)
                .map(|s| samplers[s].sample(&ctx, logits_at[s]))
                .collect();
            batch.clear();
            for (s, token) in tokens.into_iter().enumerate() {
                batch
                    .add(token, (npp + step) as i32, &[s as i32], true)
                    .unwrap();
                logits_at[s] = s as i32;
            }
            ctx.decode(&mut batch).unwrap();
        }
        let t_tg = started.elapsed().as_secs_f64();
        let generated = (npl * ntg) as f64;
        println!(
            "{{\"npl\":{npl},\"npp\":{npp},\"ntg\":{ntg},\"threads\":{threads},\"t_pp_s\":{t_pp:.3},\"t_tg_s\":{t_tg:.3},\"s_pp\":{:.1},\"s_tg\":{:.1},\"s_total\":{:.1}}}",
            (npl * npp) as f64 / t_pp,
            generated / t_tg,
            (npl * (npp + ntg)) as f64 / (t_pp + t_tg),
        );
    }
}
