//! [`Render`] for OpenAI Responses: the `response` object, and the
//! streamed events `response.created`, `response.in_progress`, per output
//! item `response.output_item.added`, its content events
//! (`response.content_part.added`, `response.output_text.delta|done`,
//! `response.content_part.done`, or `response.function_call_arguments.delta|done`),
//! `response.output_item.done`, then `response.completed`. A finished
//! response is stored when asked (`store`).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use herd_proto::v1 as pb;
use serde_json::{Value, json};

use super::store::{ResponseStore, Stored};
use crate::error::ApiError;
use crate::render::Render;

/// Writes a Responses answer and stores it.
#[derive(Debug)]
pub struct ResponsesRender {
    pub id: String,
    model: String,
    created_at: u64,
    echo: Value,
    store: Option<Arc<ResponseStore>>,
    input_items: Vec<Value>,
    /// The conversation the model saw, without instructions.
    conversation: Vec<pb::ChatMessage>,
    sequence: u64,
    message_id: String,
    text: String,
    text_open: bool,
    outputs: usize,
    /// The finished response, to store.
    pending: Option<Stored>,
}

impl ResponsesRender {
    pub fn new(
        model: String,
        echo: Value,
        store: Option<Arc<ResponseStore>>,
        input_items: Vec<Value>,
        conversation: Vec<pb::ChatMessage>,
    ) -> Self {
        Self {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            model,
            created_at: crate::render::unix_now(),
            echo,
            store,
            input_items,
            conversation,
            sequence: 0,
            message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            text: String::new(),
            text_open: false,
            outputs: 0,
            pending: None,
        }
    }

    /// The response object; `output` and the end state once finished.
    fn response(&self, output: Vec<Value>, finished: Option<&pb::GenerateFinished>) -> Value {
        let mut r = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "in_progress",
            "error": null,
            "incomplete_details": null,
            "model": self.model,
            "output": output,
            "usage": null,
            "store": self.store.is_some(),
        });
        if let (Some(obj), Some(echo)) = (r.as_object_mut(), self.echo.as_object()) {
            obj.extend(echo.clone());
        }
        if let Some(f) = finished {
            let length = pb::FinishReason::try_from(f.reason) == Ok(pb::FinishReason::Length);
            r["status"] = json!(if length { "incomplete" } else { "completed" });
            if length {
                r["incomplete_details"] = json!({"reason": "max_output_tokens"});
            }
            r["usage"] = json!({
                "input_tokens": f.prompt_tokens,
                "input_tokens_details": {"cached_tokens": f.cached_prompt_tokens},
                "output_tokens": f.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": f.prompt_tokens.saturating_add(f.completion_tokens),
            });
        }
        r
    }

    fn message_item(&self, text: &str, status: &str) -> Value {
        json!({"type": "message", "id": self.message_id, "status": status, "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": []}]})
    }

    fn call_item(call: &pb::ToolCall) -> Value {
        json!({"type": "function_call", "id": format!("fc_{}", call.id.trim_start_matches("call_")),
               "call_id": call.id, "name": call.name, "arguments": call.arguments_json,
               "status": "completed"})
    }

    fn output(&self, text: &str, finished: &pb::GenerateFinished) -> Vec<Value> {
        let mut output = Vec::new();
        if !text.is_empty() || finished.tool_calls.is_empty() {
            output.push(self.message_item(text, "completed"));
        }
        output.extend(finished.tool_calls.iter().map(Self::call_item));
        output
    }

    /// Keeps the finished response, its input and the conversation so far.
    fn keep(&mut self, response: &Value, text: &str, finished: &pb::GenerateFinished) {
        if self.store.is_none() {
            return;
        }
        let mut conversation = std::mem::take(&mut self.conversation);
        conversation.push(pb::ChatMessage {
            role: "assistant".into(),
            content: text.to_owned(),
            tool_calls: finished.tool_calls.clone(),
            ..Default::default()
        });
        self.pending = Some(Stored::new(
            response.clone(),
            std::mem::take(&mut self.input_items),
            conversation,
        ));
    }

    fn event(&mut self, out: &mut BytesMut, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(&serde_json::to_vec(&data).unwrap_or_default());
        out.put_slice(b"\n\n");
    }

    fn close_text(&mut self, out: &mut BytesMut) {
        if !self.text_open {
            return;
        }
        self.text_open = false;
        let (id, text) = (self.message_id.clone(), self.text.clone());
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        self.event(
            out,
            "response.output_text.done",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "text": text}),
        );
        self.event(
            out,
            "response.content_part.done",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "part": part}),
        );
        let item = self.message_item(&text, "completed");
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
        self.outputs += 1;
    }
}

impl Render for ResponsesRender {
    fn input_param(&self) -> &'static str {
        "input"
    }

    fn body(&mut self, text: &str, finished: &pb::GenerateFinished) -> Vec<u8> {
        let response = self.response(self.output(text, finished), Some(finished));
        self.keep(&response, text, finished);
        serde_json::to_vec(&response).unwrap_or_default()
    }

    fn finish(&mut self) -> Option<futures::future::BoxFuture<'static, ()>> {
        let stored = self.pending.take()?;
        let store = self.store.clone()?;
        let id = self.id.clone();
        Some(Box::pin(async move { store.put(id, stored).await }))
    }

    fn stream_start(&mut self, out: &mut BytesMut) {
        let response = self.response(Vec::new(), None);
        self.event(out, "response.created", json!({"response": response}));
        self.event(out, "response.in_progress", json!({"response": response}));
    }

    fn stream_text(&mut self, text: &str, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        let id = self.message_id.clone();
        if !self.text_open {
            self.text_open = true;
            let item = json!({"type": "message", "id": id, "status": "in_progress",
                              "role": "assistant", "content": []});
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": 0, "item": item}),
            );
            self.event(out, "response.content_part.added", json!({"item_id": id, "output_index": 0,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
        }
        self.text.push_str(text);
        self.event(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "delta": text}),
        );
    }

    fn stream_end(&mut self, finished: &pb::GenerateFinished, out: &mut BytesMut) {
        self.close_text(out);
        for call in &finished.tool_calls {
            let index = self.outputs;
            let item = Self::call_item(call);
            let id = item["id"].clone();
            let mut added = item.clone();
            added["arguments"] = json!("");
            added["status"] = json!("in_progress");
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            );
            self.event(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": call.arguments_json}),
            );
            self.event(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": call.arguments_json}),
            );
            self.event(
                out,
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            );
            self.outputs += 1;
        }
        let text = std::mem::take(&mut self.text);
        let response = self.response(self.output(&text, finished), Some(finished));
        self.keep(&response, &text, finished);
        let kind = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(out, kind, json!({"response": response}));
    }

    fn stream_error(&mut self, err: &ApiError, out: &mut BytesMut) {
        let body = err.body();
        let e = &body["error"];
        self.event(
            out,
            "error",
            json!({"code": e["code"], "message": e["message"], "param": e["param"]}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        std::str::from_utf8(bytes)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.trim_start_matches("event: ").to_owned(),
                    serde_json::from_str(data.trim_start_matches("data: ")).unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn streamed_events_and_store() {
        let store = Arc::new(ResponseStore::default());
        let mut r = ResponsesRender::new(
            "m".into(),
            json!({"instructions": null}),
            Some(store.clone()),
            vec![],
            vec![],
        );
        let mut out = BytesMut::new();
        r.stream_start(&mut out);
        r.stream_text("a", &mut out);
        r.stream_text("b", &mut out);
        let call = pb::ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments_json: "{}".into(),
        };
        let finished = pb::GenerateFinished {
            reason: pb::FinishReason::ToolCalls as i32,
            prompt_tokens: 3,
            completion_tokens: 2,
            tool_calls: vec![call],
            ..Default::default()
        };
        r.stream_end(&finished, &mut out);
        r.finish().unwrap().await;
        let ev = events(&out);
        let names: Vec<_> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, data)) in ev.iter().enumerate() {
            assert_eq!(&data["type"], name.as_str());
            assert_eq!(data["sequence_number"], i);
        }
        assert_eq!(ev[6].1["text"], "ab");
        assert_eq!(ev[9].1["output_index"], 1);
        let done = &ev[13].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["total_tokens"], 5);
        let kept = store.get(done["id"].as_str().unwrap()).await.unwrap();
        assert_eq!(kept.response, *done);
        assert_eq!(kept.conversation[0].content, "ab");
    }
}
