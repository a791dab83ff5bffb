//! [`Render`] for `/v1/chat/completions` and `/v1/completions`: SSE
//! chunks, then the finish chunk, the optional usage chunk and `[DONE]`.

use bytes::{BufMut, BytesMut};
use herd_proto::v1 as pb;

use super::request::Endpoint;
use super::response::{self, ChunkKind, ResponseMeta, Usage};
use super::sse;
use crate::error::ApiError;
use crate::render::{Render, openai_finish_reason};

/// Writes OpenAI chat or text completions.
#[derive(Debug)]
pub struct OpenAiRender {
    pub meta: ResponseMeta,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

impl OpenAiRender {
    pub fn new(endpoint: Endpoint, model: String, include_usage: bool) -> Self {
        let prefix = match endpoint {
            Endpoint::ChatCompletions => "chatcmpl-",
            Endpoint::Completions => "cmpl-",
        };
        Self {
            meta: ResponseMeta {
                id: format!("{prefix}{}", uuid::Uuid::new_v4().simple()),
                created: crate::render::unix_now(),
                model,
                endpoint,
            },
            include_usage,
        }
    }
}

fn usage(finished: &pb::GenerateFinished) -> Usage {
    Usage::new(
        finished.prompt_tokens,
        finished.completion_tokens,
        finished.cached_prompt_tokens,
    )
}

impl Render for OpenAiRender {
    fn input_param(&self) -> &'static str {
        self.meta.endpoint.input_param()
    }

    fn body(&mut self, text: &str, finished: &pb::GenerateFinished) -> Vec<u8> {
        response::completion(
            &self.meta,
            text,
            &finished.tool_calls,
            openai_finish_reason(finished),
            usage(finished),
        )
    }

    fn stream_start(&mut self, out: &mut BytesMut) {
        if self.meta.endpoint == Endpoint::ChatCompletions {
            out.put(sse::event(&response::chunk(
                &self.meta,
                ChunkKind::Role,
                self.include_usage,
            )));
        }
    }

    fn stream_text(&mut self, text: &str, out: &mut BytesMut) {
        if !text.is_empty() {
            out.put(sse::event(&response::chunk(
                &self.meta,
                ChunkKind::Text(text),
                self.include_usage,
            )));
        }
    }

    fn stream_end(&mut self, finished: &pb::GenerateFinished, out: &mut BytesMut) {
        let (meta, include_usage) = (&self.meta, self.include_usage);
        if !finished.tool_calls.is_empty() {
            out.put(sse::event(&response::chunk(
                meta,
                ChunkKind::ToolCalls(&finished.tool_calls),
                include_usage,
            )));
        }
        out.put(sse::event(&response::chunk(
            meta,
            ChunkKind::Finish(openai_finish_reason(finished)),
            include_usage,
        )));
        if include_usage {
            out.put(sse::event(&response::chunk(
                meta,
                ChunkKind::Usage(usage(finished)),
                true,
            )));
        }
        out.put_slice(sse::DONE);
    }

    fn stream_error(&mut self, err: &ApiError, out: &mut BytesMut) {
        out.put(sse::event(
            &serde_json::to_vec(&err.body()).unwrap_or_default(),
        ));
    }

    fn stream_cut(&mut self, out: &mut BytesMut) {
        self.stream_error(&ApiError::ShuttingDown, out);
        out.put_slice(sse::DONE);
    }
}
