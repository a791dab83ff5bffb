//! How one API writes a generation's answer. Every generation API (OpenAI
//! chat and completions, Anthropic Messages, Ollama, OpenAI Responses) is a
//! parser into the worker's `GenerateRequest` plus a [`Render`]: the
//! dispatch, queueing, streaming and cancellation around it are shared
//! (`http/generate.rs`).

use bytes::BytesMut;
use herd_proto::v1 as pb;

use crate::error::ApiError;

/// Writes one generation's answer in one API's shapes.
pub trait Render: Send + Sync {
    /// The request field holding the input, named by a context-length error.
    fn input_param(&self) -> &'static str;

    /// An error answered before anything else was sent, in this API's shape.
    fn error_body(&self, err: &ApiError) -> serde_json::Value {
        err.body()
    }

    /// The content type of a streamed answer.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }

    /// The whole, non-streamed answer.
    fn body(&mut self, text: &str, finished: &pb::GenerateFinished) -> Vec<u8>;

    /// What a stream starts with (before the first delta).
    fn stream_start(&mut self, out: &mut BytesMut);

    /// One delta of text.
    fn stream_text(&mut self, text: &str, out: &mut BytesMut);

    /// The end of a stream: tool calls, finish reason, usage, terminator.
    fn stream_end(&mut self, finished: &pb::GenerateFinished, out: &mut BytesMut);

    /// A failure after the stream started, reported in-band; the stream
    /// ends after it.
    fn stream_error(&mut self, err: &ApiError, out: &mut BytesMut);

    /// Work that must be done before the client sees the finished answer
    /// (storing it, so a follow-up can name it); awaited after [`Self::body`]
    /// or [`Self::stream_end`], before their bytes are written.
    fn finish(&mut self) -> Option<futures::future::BoxFuture<'static, ()>> {
        None
    }

    /// The end of the shutdown grace period cut the stream.
    fn stream_cut(&mut self, out: &mut BytesMut) {
        self.stream_error(&ApiError::ShuttingDown, out);
    }
}

/// The finish reason in OpenAI's words (`stop`, `length`, `tool_calls`).
pub fn openai_finish_reason(finished: &pb::GenerateFinished) -> &'static str {
    match pb::FinishReason::try_from(finished.reason) {
        Ok(pb::FinishReason::Length) => "length",
        Ok(pb::FinishReason::ToolCalls) => "tool_calls",
        _ => "stop",
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
