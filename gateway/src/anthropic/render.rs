//! [`Render`] for Anthropic Messages: the `message` object, and the event
//! sequence `message_start`, `ping`, `content_block_start|delta|stop` per
//! block, `message_delta` (stop reason and usage), `message_stop`.

use bytes::{BufMut, BytesMut};
use herd_proto::v1 as pb;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::render::Render;

/// Writes an Anthropic `message`.
#[derive(Debug)]
pub struct MessagesRender {
    pub id: String,
    model: String,
    /// Blocks started so far in a stream (the next block's index).
    blocks: usize,
    /// Whether a streamed text block is open.
    text_open: bool,
}

impl MessagesRender {
    pub fn new(model: String) -> Self {
        Self {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            model,
            blocks: 0,
            text_open: false,
        }
    }
}

/// Frames one named server-sent event.
pub fn event(name: &str, data: &Value) -> bytes::Bytes {
    let json = serde_json::to_vec(data).unwrap_or_default();
    let mut buf = BytesMut::with_capacity(json.len() + name.len() + 16);
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(&json);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

fn stop_reason(finished: &pb::GenerateFinished) -> &'static str {
    match pb::FinishReason::try_from(finished.reason) {
        Ok(pb::FinishReason::Length) => "max_tokens",
        Ok(pb::FinishReason::ToolCalls) => "tool_use",
        _ => "end_turn",
    }
}

/// A tool call's arguments as the `input` object.
fn input_of(call: &pb::ToolCall) -> Value {
    serde_json::from_str::<Value>(&call.arguments_json)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

fn tool_use(call: &pb::ToolCall, input: Value) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

impl Render for MessagesRender {
    fn input_param(&self) -> &'static str {
        "messages"
    }

    fn error_body(&self, err: &ApiError) -> Value {
        err.anthropic_body()
    }

    fn body(&mut self, text: &str, finished: &pb::GenerateFinished) -> Vec<u8> {
        let mut content = Vec::new();
        if !text.is_empty() || finished.tool_calls.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        content.extend(finished.tool_calls.iter().map(|c| tool_use(c, input_of(c))));
        let body = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason(finished),
            "stop_sequence": null,
            "usage": {
                "input_tokens": finished.prompt_tokens,
                "output_tokens": finished.completion_tokens,
                "cache_read_input_tokens": finished.cached_prompt_tokens,
                "cache_creation_input_tokens": 0,
            },
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }

    fn stream_start(&mut self, out: &mut BytesMut) {
        out.put(event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                // The prompt's tokens are known at the end (message_delta).
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
        out.put(event("ping", &json!({"type": "ping"})));
    }

    fn stream_text(&mut self, text: &str, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        if !self.text_open {
            self.text_open = true;
            out.put(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": self.blocks,
                        "content_block": {"type": "text", "text": ""}}),
            ));
        }
        out.put(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.blocks,
                    "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    fn stream_end(&mut self, finished: &pb::GenerateFinished, out: &mut BytesMut) {
        if self.text_open {
            self.text_open = false;
            out.put(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.blocks}),
            ));
            self.blocks += 1;
        }
        for call in &finished.tool_calls {
            let index = self.blocks;
            out.put(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index,
                        "content_block": tool_use(call, json!({}))}),
            ));
            out.put(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta",
                                  "partial_json": input_of(call).to_string()}}),
            ));
            out.put(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            self.blocks += 1;
        }
        out.put(event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(finished), "stop_sequence": null},
                    "usage": {"input_tokens": finished.prompt_tokens,
                              "output_tokens": finished.completion_tokens,
                              "cache_read_input_tokens": finished.cached_prompt_tokens}}),
        ));
        out.put(event("message_stop", &json!({"type": "message_stop"})));
    }

    fn stream_error(&mut self, err: &ApiError, out: &mut BytesMut) {
        out.put(event("error", &err.anthropic_body()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(reason: pb::FinishReason, calls: Vec<pb::ToolCall>) -> pb::GenerateFinished {
        pb::GenerateFinished {
            reason: reason as i32,
            prompt_tokens: 7,
            completion_tokens: 3,
            tool_calls: calls,
            ..Default::default()
        }
    }

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_owned();
                let data = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn message_shape() {
        let mut r = MessagesRender::new("m".into());
        let v: Value =
            serde_json::from_slice(&r.body("hi", &finished(pb::FinishReason::Length, vec![])))
                .unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0], json!({"type":"text","text":"hi"}));
        assert_eq!(v["stop_reason"], "max_tokens");
        assert_eq!(v["usage"]["input_tokens"], 7);
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    }

    #[test]
    fn stream_event_sequence_with_text_and_tool_use() {
        let mut r = MessagesRender::new("m".into());
        let mut out = BytesMut::new();
        r.stream_start(&mut out);
        r.stream_text("a", &mut out);
        r.stream_text("", &mut out);
        r.stream_text("b", &mut out);
        let call = pb::ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments_json: r#"{"x":1}"#.into(),
        };
        r.stream_end(&finished(pb::FinishReason::ToolCalls, vec![call]), &mut out);
        let ev = events(&out);
        let names: Vec<_> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for (name, data) in &ev {
            assert_eq!(&data["type"], name.as_str());
        }
        assert_eq!(ev[6].1["index"], 1);
        assert_eq!(ev[6].1["content_block"]["type"], "tool_use");
        assert_eq!(ev[7].1["delta"]["partial_json"], r#"{"x":1}"#);
        assert_eq!(ev[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[9].1["usage"]["output_tokens"], 3);
    }

    #[test]
    fn error_shape() {
        let e = ApiError::field("max_tokens", "`max_tokens` is required");
        let v = e.anthropic_body();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(
            ApiError::ModelNotFound("x".into()).anthropic_body()["error"]["type"],
            "not_found_error"
        );
    }
}
