//! How much memory a model takes once loaded, estimated from its GGUF header
//! before it is loaded, so the gateway can place models within a worker's
//! budget (`--memory-limit`).
//!
//! ```text
//! memory = weights                                  tensor bytes of the GGUF
//!        + kv_per_token × context × (slots + 1)     generation slots + the embedding context
//!        + 4 B × 512 × context × n_head             attention scores of one 512-token batch
//!        + 32 MiB                                   graph, output buffers, scratch
//!        + prompt_cache                             host-memory prompt cache (its bound)
//! kv_per_token = n_layer × n_head_kv × (key_length + value_length) × 2 B   (f16 cache)
//! prompt_cache = as configured, else min(kv_per_token × context × slots, 1 GiB)
//! ```
//!
//! The prompt cache's default is as large as the slots' own KV cache (it
//! keeps as many saved prompts again as the slots hold), up to 1 GiB: a
//! bound never filled still counts, and must not make a large model
//! unplaceable where it fitted without the cache. It lives in host
//! memory even when the model is offloaded to a GPU; it is counted in the
//! one budget all the same (an overestimate there, never an under).
//!
//! Checked against the measured RSS of SmolLM2-135M (docs/scheduler.md):
//! the estimate stays above what a worker holds after loading, generating
//! on every slot and embedding.

use std::collections::BTreeMap;

/// Bytes of one KV cache element (llama.cpp's default f16 cache).
const KV_ELEMENT_BYTES: u64 = 2;
/// Tokens of one prompt batch (the runner's chunk).
const BATCH_TOKENS: u64 = 512;
/// The most the prompt cache takes by default.
const DEFAULT_PROMPT_CACHE_MAX: u64 = 1 << 30;
/// Graph, output buffers and thread scratch, whatever the model.
const FIXED_OVERHEAD: u64 = 32 << 20;

/// The shape numbers the KV cache and compute buffers depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub key_length: u64,
    pub value_length: u64,
}

impl ModelShape {
    /// Reads `<architecture>.block_count`, `.embedding_length`,
    /// `.attention.head_count[_kv]` and `.attention.{key,value}_length`
    /// (defaults as llama.cpp's); `None` when the essentials are missing.
    pub fn from_metadata(metadata: &BTreeMap<String, String>, architecture: &str) -> Option<Self> {
        let get = |key: &str| {
            metadata
                .get(&format!("{architecture}.{key}"))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
        };
        let n_layer = get("block_count")?;
        let n_embd = get("embedding_length")?;
        let n_head = get("attention.head_count")?;
        let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = n_embd / n_head;
        Some(Self {
            n_layer,
            n_head,
            n_head_kv,
            key_length: get("attention.key_length").unwrap_or(head_dim),
            value_length: get("attention.value_length").unwrap_or(head_dim),
        })
    }

    /// KV cache bytes per token of context.
    pub fn kv_bytes_per_token(&self) -> u64 {
        self.n_layer
            .saturating_mul(self.n_head_kv)
            .saturating_mul(self.key_length + self.value_length)
            .saturating_mul(KV_ELEMENT_BYTES)
    }
}

/// The shape and size of a model as loaded: what its memory depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Tensor bytes.
    pub weights: u64,
    /// `None` for an architecture whose metadata is not understood.
    pub shape: Option<ModelShape>,
    pub slots: u32,
    /// Context per slot.
    pub context: u32,
    /// The configured prompt cache bound; `None`: the default.
    pub prompt_cache: Option<u64>,
}

/// The host-memory prompt cache's bound: as configured, else as large as
/// the slots' KV cache (without a shape: as the weights), at most 1 GiB.
pub fn prompt_cache(model: &Footprint) -> u64 {
    model.prompt_cache.unwrap_or_else(|| {
        let kv = match model.shape {
            Some(shape) => shape
                .kv_bytes_per_token()
                .saturating_mul(u64::from(model.context))
                .saturating_mul(u64::from(model.slots)),
            None => model.weights,
        };
        kv.min(DEFAULT_PROMPT_CACHE_MAX)
    })
}

/// The estimated memory of a model. Without a shape (an architecture whose
/// metadata is not understood) the KV cache is taken as large as the
/// weights, a deliberately generous guess.
pub fn estimate(model: &Footprint) -> u64 {
    let Footprint {
        weights,
        shape,
        slots,
        context,
        ..
    } = *model;
    let context = u64::from(context);
    let contexts = u64::from(slots) + 1;
    let (kv, scores) = match shape {
        Some(shape) => (
            shape
                .kv_bytes_per_token()
                .saturating_mul(context)
                .saturating_mul(contexts),
            4u64.saturating_mul(BATCH_TOKENS)
                .saturating_mul(context)
                .saturating_mul(shape.n_head),
        ),
        None => (weights, 0),
    };
    weights
        .saturating_add(kv)
        .saturating_add(scores)
        .saturating_add(FIXED_OVERHEAD)
        .saturating_add(prompt_cache(model))
}

/// The footprint of a model of the worker's config (a GGUF file): its
/// header's tensor bytes (all shards of a split model) and shape, at the
/// configured slots, context and prompt cache. An unreadable file counts its
/// size as the weights and has no shape, so its estimate counts the size
/// twice (the load will fail anyway, with a better error).
pub fn of_file(config: &crate::config::ModelConfig) -> Footprint {
    let context = |trained: Option<u64>| {
        config
            .context_size
            .unwrap_or_else(|| crate::config::default_context_size(trained))
    };
    let prompt_cache = config.prompt_cache.map(|size| size.0);
    match herd_store::gguf::GgufSummary::read(&config.path) {
        Ok(summary) => Footprint {
            weights: split_weights(&config.path, &summary).unwrap_or(summary.tensor_bytes),
            shape: ModelShape::from_metadata(&summary.metadata, &summary.architecture),
            slots: config.parallel,
            context: context(summary.context_length),
            prompt_cache,
        },
        Err(_) => Footprint {
            weights: std::fs::metadata(&config.path).map_or(0, |m| m.len()),
            shape: None,
            slots: config.parallel,
            context: context(None),
            prompt_cache,
        },
    }
}

/// Bytes of every shard of a split GGUF (`name-00001-of-00003.gguf`), by
/// file size; `None` for a single file.
fn split_weights(path: &std::path::Path, summary: &herd_store::gguf::GgufSummary) -> Option<u64> {
    let count: usize = summary.metadata.get("split.count")?.parse().ok()?;
    let name = path.file_name()?.to_str()?;
    let first = format!("-00001-of-{count:05}.gguf");
    let stem = name.strip_suffix(&first)?;
    (1..=count)
        .map(|i| {
            let shard = path.with_file_name(format!("{stem}-{i:05}-of-{count:05}.gguf"));
            std::fs::metadata(shard).ok().map(|m| m.len())
        })
        .sum()
}

/// Parses a size: plain bytes (`1073741824`) or a number with a unit
/// (`2GiB`, `512MiB`, `1.5GB`, `800M`, `64k`; binary units for `K/M/G/T`
/// with or without `iB`, decimal for `kB/MB/GB/TB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 2GiB, 512MiB, 1073741824)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> BTreeMap<String, String> {
        [
            ("llama.block_count", "30"),
            ("llama.embedding_length", "576"),
            ("llama.attention.head_count", "9"),
            ("llama.attention.head_count_kv", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn smollm2_kv_matches_llama_cpp() {
        let shape = ModelShape::from_metadata(&smollm2(), "llama").unwrap();
        // llama.cpp logs "CPU KV buffer size = 360.00 MiB" for 4 × 4096 tokens.
        assert_eq!(shape.kv_bytes_per_token() * 4 * 4096, 360 << 20);
        let model = Footprint {
            weights: 92 << 20,
            shape: Some(shape),
            slots: 4,
            context: 4096,
            prompt_cache: Some(0),
        };
        let need = estimate(&model);
        // Measured: 558 MiB of RSS for the model after generating on all
        // slots and embedding (short inputs); the estimate must not be below.
        assert!(need > 558 << 20, "{}", need >> 20);
        assert!(need < 700 << 20, "{}", need >> 20);
        // By default the prompt cache may hold as much as the slots.
        let default = Footprint {
            prompt_cache: None,
            ..model
        };
        assert_eq!(prompt_cache(&default), 360 << 20);
        assert_eq!(estimate(&default), need + (360 << 20));
        // Up to 1 GiB: 8 slots of 8192 tokens would be 1.4 GiB.
        let long = Footprint {
            slots: 8,
            context: 8192,
            ..default
        };
        assert_eq!(prompt_cache(&long), 1 << 30);
    }

    #[test]
    fn unknown_shapes_are_guessed_generously() {
        assert!(ModelShape::from_metadata(&BTreeMap::new(), "llama").is_none());
        let model = Footprint {
            weights: 100,
            shape: None,
            slots: 4,
            context: 4096,
            prompt_cache: None,
        };
        assert!(estimate(&model) >= 300, "weights, KV and prompt cache");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size(" 64 k "), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("1e30GB").is_err());
    }
}
