//! [`Render`] for Ollama's `/api/chat` and `/api/generate`: one JSON object
//! per line (`application/x-ndjson`) while streaming, `"done": false`, then
//! a final `"done": true` object with the reason, counts and durations
//! (nanoseconds); the same final object alone when not streaming.

use bytes::{BufMut, BytesMut};
use herd_proto::v1 as pb;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::render::Render;

/// Which Ollama endpoint: where the text goes in each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OllamaEndpoint {
    /// `message: {role, content, tool_calls?}`.
    Chat,
    /// `response: "…"`.
    Generate,
}

/// Writes Ollama's chat or generate objects.
#[derive(Debug)]
pub struct OllamaRender {
    endpoint: OllamaEndpoint,
    model: String,
}

impl OllamaRender {
    pub fn new(endpoint: OllamaEndpoint, model: String) -> Self {
        Self { endpoint, model }
    }

    fn object(
        &self,
        text: &str,
        calls: &[pb::ToolCall],
        end: Option<&pb::GenerateFinished>,
    ) -> Value {
        let now = herd_store::artifact::format_rfc3339(crate::render::unix_now() as i64);
        let mut obj = json!({"model": self.model, "created_at": now});
        match self.endpoint {
            OllamaEndpoint::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    message["tool_calls"] = calls
                        .iter()
                        .map(|c| {
                            let arguments = serde_json::from_str::<Value>(&c.arguments_json)
                                .unwrap_or_else(|_| json!({}));
                            json!({"function": {"name": c.name, "arguments": arguments}})
                        })
                        .collect();
                }
                obj["message"] = message;
            }
            OllamaEndpoint::Generate => obj["response"] = json!(text),
        }
        obj["done"] = json!(end.is_some());
        if let Some(f) = end {
            let reason = match pb::FinishReason::try_from(f.reason) {
                Ok(pb::FinishReason::Length) => "length",
                _ => "stop",
            };
            let total = f.total_time_us.saturating_mul(1000);
            let first = f.time_to_first_token_us.saturating_mul(1000);
            obj["done_reason"] = json!(reason);
            obj["total_duration"] = json!(total);
            obj["load_duration"] = json!(0);
            obj["prompt_eval_count"] = json!(f.prompt_tokens);
            obj["prompt_eval_duration"] = json!(first);
            obj["eval_count"] = json!(f.completion_tokens);
            obj["eval_duration"] = json!(total.saturating_sub(first));
        }
        obj
    }
}

fn line(out: &mut BytesMut, value: &Value) {
    out.put_slice(&serde_json::to_vec(value).unwrap_or_default());
    out.put_u8(b'\n');
}

impl Render for OllamaRender {
    fn input_param(&self) -> &'static str {
        match self.endpoint {
            OllamaEndpoint::Chat => "messages",
            OllamaEndpoint::Generate => "prompt",
        }
    }

    fn error_body(&self, err: &ApiError) -> Value {
        err.ollama_body()
    }

    fn stream_content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn body(&mut self, text: &str, finished: &pb::GenerateFinished) -> Vec<u8> {
        serde_json::to_vec(&self.object(text, &finished.tool_calls, Some(finished)))
            .unwrap_or_default()
    }

    fn stream_start(&mut self, _out: &mut BytesMut) {}

    fn stream_text(&mut self, text: &str, out: &mut BytesMut) {
        if !text.is_empty() {
            line(out, &self.object(text, &[], None));
        }
    }

    fn stream_end(&mut self, finished: &pb::GenerateFinished, out: &mut BytesMut) {
        if !finished.tool_calls.is_empty() {
            line(out, &self.object("", &finished.tool_calls, None));
        }
        line(out, &self.object("", &[], Some(finished)));
    }

    fn stream_error(&mut self, err: &ApiError, out: &mut BytesMut) {
        line(out, &err.ollama_body());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_chat_stream() {
        let mut r = OllamaRender::new(OllamaEndpoint::Chat, "m".into());
        let mut out = BytesMut::new();
        r.stream_start(&mut out);
        r.stream_text("a", &mut out);
        let call = pb::ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments_json: r#"{"x":1}"#.into(),
        };
        let finished = pb::GenerateFinished {
            reason: pb::FinishReason::ToolCalls as i32,
            prompt_tokens: 4,
            completion_tokens: 2,
            total_time_us: 10,
            time_to_first_token_us: 4,
            tool_calls: vec![call],
            ..Default::default()
        };
        r.stream_end(&finished, &mut out);
        let lines: Vec<Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["message"]["content"], "a");
        assert_eq!(lines[0]["done"], false);
        assert_eq!(
            lines[1]["message"]["tool_calls"][0]["function"]["arguments"]["x"],
            1
        );
        assert_eq!(lines[2]["done"], true);
        assert_eq!(lines[2]["done_reason"], "stop");
        assert_eq!(lines[2]["eval_count"], 2);
        assert_eq!(lines[2]["eval_duration"], 6000);
        assert!(lines[2]["created_at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn generate_body() {
        let mut r = OllamaRender::new(OllamaEndpoint::Generate, "m".into());
        let v: Value = serde_json::from_slice(&r.body(
            "hi",
            &pb::GenerateFinished {
                reason: pb::FinishReason::Length as i32,
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(v["response"], "hi");
        assert_eq!(v["done_reason"], "length");
    }
}
