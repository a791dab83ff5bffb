//! A GGUF model loaded with llama.cpp, and what it takes to turn a request
//! into prompt tokens.

use std::path::Path;
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaPoolingType;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

use super::template::{CHATML_TEMPLATE, ChatTemplate};
use crate::config::ModelConfig;
use crate::engine::{EmbedInput, Input};
use crate::error::EngineError;
use crate::gpu::GpuPlan;
use herd_proto::error::ErrorCode;

/// Weights plus the tokenizer-side knowledge needed to build prompts.
#[derive(Debug)]
pub struct LoadedModel {
    pub weights: Arc<LlamaModel>,
    template: ChatTemplate,
    pub architecture: String,
    pub quantization: String,
    pub parameters: u64,
    pub size_bytes: u64,
    pub n_ctx_train: u32,
    /// How token vectors are pooled into one embedding.
    pub pooling: LlamaPoolingType,
    /// The longest token's text: a text of `n` bytes has at least
    /// `n / max_token_bytes` tokens.
    pub max_token_bytes: usize,
}

impl LoadedModel {
    pub fn load(
        backend: &LlamaBackend,
        config: &ModelConfig,
        gpu: &GpuPlan,
    ) -> Result<Self, EngineError> {
        let path: &Path = config.path.as_ref();
        if !path.is_file() {
            return Err(EngineError::Internal(format!(
                "model file {} does not exist",
                path.display()
            )));
        }
        let gpu_layers = if gpu.offload { config.gpu_layers } else { 0 };
        let mut params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        if !gpu.devices.is_empty() {
            params = params
                .with_devices(&gpu.devices)
                .map_err(|e| EngineError::Internal(format!("cannot select GPUs: {e}")))?;
        }
        let weights = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| EngineError::Internal(format!("cannot load {}: {e}", path.display())))?;
        let vocab = weights.vocab();
        // Models without a BOS/EOS token report -1; llama.cpp throws on it.
        let token_text = |t: LlamaToken| {
            if t.0 < 0 {
                return String::new();
            }
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        let bos = token_text(vocab.bos());
        let eos = token_text(vocab.eos());
        let source = match &config.chat_template {
            Some(file) => std::fs::read_to_string(file).map_err(|e| {
                EngineError::Internal(format!(
                    "cannot read the chat template {}: {e}",
                    file.display()
                ))
            })?,
            None => weights
                .chat_template(None)
                .ok()
                .and_then(|t| t.to_string().ok())
                .unwrap_or_else(|| CHATML_TEMPLATE.to_owned()),
        };
        // The template comes with the artifact: one that misbehaves (loops,
        // recursion, a huge output) keeps the model from loading.
        let template =
            ChatTemplate::new(&source, bos, eos).map_err(|e| EngineError::LoadFailed {
                model: config.name.clone(),
                reason: e.to_string(),
            })?;
        let max_token_bytes = (0..vocab.n_tokens())
            .map(|t| vocab.token_to_piece(LlamaToken::new(t), true, None).len())
            .max()
            .unwrap_or(1)
            .max(1);
        let meta = |key: &str| weights.meta_val_str(key).unwrap_or_default();
        let architecture = meta("general.architecture");
        let quantization = quantization_name(&meta("general.file_type"));
        let parameters = weights.n_params();
        let size_bytes = weights.size();
        let n_ctx_train = weights.n_ctx_train();
        let pooling = pooling_type(&meta(&format!("{architecture}.pooling_type")));
        Ok(Self {
            weights: Arc::new(weights),
            template,
            architecture,
            quantization,
            parameters,
            size_bytes,
            n_ctx_train,
            pooling,
            max_token_bytes,
        })
    }

    /// Refuses a text of `bytes` bytes that cannot fit `context` tokens,
    /// before any time is spent rendering or tokenizing it.
    pub fn check_size(&self, bytes: usize, context: u32) -> Result<(), EngineError> {
        let at_least = bytes / self.max_token_bytes;
        if at_least > context as usize {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens: u32::try_from(at_least).unwrap_or(u32::MAX),
                context_size: context,
            });
        }
        Ok(())
    }

    /// Tokens of one embedding input: text is tokenized, ids are checked
    /// against the vocabulary.
    pub fn embedding_tokens(&self, input: &EmbedInput) -> Result<Vec<LlamaToken>, EngineError> {
        let vocab = self.weights.vocab();
        let tokens = match input {
            EmbedInput::Text(text) => vocab.tokenize(text.as_bytes(), true, false),
            EmbedInput::Tokens(ids) => {
                let n_vocab = u32::try_from(vocab.n_tokens()).unwrap_or(0);
                if let Some(bad) = ids.iter().find(|id| **id >= n_vocab) {
                    return Err(EngineError::param(
                        "input",
                        format!(
                            "token id {bad} is outside the model's vocabulary (size {n_vocab}); \
                             token ids are read as this model's own, not OpenAI's"
                        ),
                    )
                    .with_code(ErrorCode::InvalidToken));
                }
                ids.iter()
                    .map(|id| LlamaToken::new(i32::try_from(*id).unwrap_or(i32::MAX)))
                    .collect()
            }
        };
        if tokens.is_empty() {
            return Err(EngineError::param("input", "an input has no tokens"));
        }
        Ok(tokens)
    }

    /// Renders (for chats) and tokenizes the request's input.
    pub fn prompt_tokens(&self, input: &Input) -> Result<Vec<LlamaToken>, EngineError> {
        let vocab = self.weights.vocab();
        let param = match input {
            Input::Chat(_) => "messages",
            Input::Prompt(_) => "prompt",
        };
        let (text, add_bos) = match input {
            Input::Chat(messages) => {
                let text = self.template.render(messages)?;
                // Templates that write the BOS text themselves must not get a
                // second one from the tokenizer.
                let bos = if vocab.bos().0 < 0 {
                    Vec::new()
                } else {
                    vocab.token_to_piece(vocab.bos(), true, None)
                };
                let add_bos = bos.is_empty() || !text.as_bytes().starts_with(&bos);
                (text, add_bos)
            }
            Input::Prompt(text) => (text.clone(), true),
        };
        let tokens = vocab.tokenize(text.as_bytes(), add_bos, true);
        if tokens.is_empty() {
            return Err(EngineError::param(param, "the prompt is empty"));
        }
        Ok(tokens)
    }
}

/// The GGUF's `<arch>.pooling_type`; models without one (generative models)
/// are mean-pooled.
fn pooling_type(value: &str) -> LlamaPoolingType {
    match value.trim() {
        "2" => LlamaPoolingType::Cls,
        "3" => LlamaPoolingType::Last,
        _ => LlamaPoolingType::Mean,
    }
}

/// llama.cpp's `general.file_type` number as the usual quantization name.
fn quantization_name(file_type: &str) -> String {
    let name = match file_type.trim() {
        "0" => "F32",
        "1" => "F16",
        "2" => "Q4_0",
        "3" => "Q4_1",
        "7" => "Q8_0",
        "8" => "Q5_0",
        "9" => "Q5_1",
        "10" => "Q2_K",
        "11" => "Q3_K_S",
        "12" => "Q3_K_M",
        "13" => "Q3_K_L",
        "14" => "Q4_K_S",
        "15" => "Q4_K_M",
        "16" => "Q5_K_S",
        "17" => "Q5_K_M",
        "18" => "Q6_K",
        "32" => "BF16",
        "" => "unknown",
        other => return format!("file_type {other}"),
    };
    name.to_owned()
}
