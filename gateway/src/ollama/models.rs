//! Ollama's model objects (`/api/tags`, `/api/ps`, `/api/show`) from the
//! workers' `ModelStatus`.

use herd_proto::v1 as pb;
use serde_json::{Value, json};

/// The Ollama version Herd's `/api/version` reports: the API it follows.
pub const OLLAMA_VERSION: &str = "0.9.0";

/// `details` of a model.
fn details(m: &pb::ModelStatus) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": m.architecture,
        "families": [m.architecture],
        "parameter_size": parameter_size(m.parameters),
        "quantization_level": m.quantization,
    })
}

/// `135M`, `1.7B`.
fn parameter_size(parameters: u64) -> String {
    match parameters {
        0 => String::new(),
        p if p >= 1_000_000_000 => format!("{:.1}B", p as f64 / 1e9),
        p => format!("{}M", p / 1_000_000),
    }
}

fn digest(m: &pb::ModelStatus) -> &str {
    m.id.strip_prefix("sha256:").unwrap_or(&m.id)
}

/// One `/api/tags` entry per name the model is served under.
pub fn tags(m: &pb::ModelStatus) -> Vec<Value> {
    let modified =
        herd_store::artifact::format_rfc3339(if m.loaded_at > 0 { m.loaded_at } else { 0 });
    std::iter::once(&m.name)
        .chain(&m.aliases)
        .map(|name| {
            json!({
                "name": name,
                "model": name,
                "modified_at": modified,
                "size": m.size_bytes,
                "digest": digest(m),
                "details": details(m),
            })
        })
        .collect()
}

/// One `/api/ps` entry; `expires_at` is RFC 3339 (far future when kept
/// forever or busy).
pub fn running(m: &pb::ModelStatus, expires_at: Option<i64>) -> Value {
    json!({
        "name": m.name,
        "model": m.name,
        "size": m.memory_bytes.max(m.size_bytes),
        "digest": digest(m),
        "details": details(m),
        "expires_at": herd_store::artifact::format_rfc3339(expires_at.unwrap_or(253_402_300_799)),
        "size_vram": 0,
        "context_length": m.context_size,
    })
}

/// `/api/show`.
pub fn show(m: &pb::ModelStatus) -> Value {
    let arch = &m.architecture;
    json!({
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details(m),
        "model_info": {
            "general.architecture": arch,
            "general.parameter_count": m.parameters,
            format!("{arch}.context_length"): m.context_size,
        },
        "capabilities": ["completion", "tools", "embedding"],
        "modified_at": herd_store::artifact::format_rfc3339(m.loaded_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let m = pb::ModelStatus {
            name: "ai/smollm2".into(),
            aliases: vec!["ai/smollm2:latest".into()],
            architecture: "llama".into(),
            parameters: 134_515_008,
            quantization: "Q4_1".into(),
            id: "sha256:abc".into(),
            context_size: 8192,
            ..Default::default()
        };
        let t = tags(&m);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1]["name"], "ai/smollm2:latest");
        assert_eq!(t[0]["digest"], "abc");
        assert_eq!(t[0]["details"]["parameter_size"], "134M");
        assert_eq!(show(&m)["model_info"]["llama.context_length"], 8192);
        assert_eq!(running(&m, None)["context_length"], 8192);
    }
}
