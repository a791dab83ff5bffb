//! Server-sent events as OpenAI streams them: `data: <json>\n\n` per chunk
//! and a final `data: [DONE]\n\n`.

use bytes::{BufMut, Bytes, BytesMut};

/// The terminating event.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Frames one JSON payload as an SSE `data:` event. JSON never contains a raw
/// newline, so one `data:` line suffices.
pub fn event(json: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(json.len() + 8);
    buf.put_slice(b"data: ");
    buf.put_slice(json);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_one_event() {
        assert_eq!(
            &event(br#"{"a":"x\ny"}"#)[..],
            b"data: {\"a\":\"x\\ny\"}\n\n"
        );
    }

    #[test]
    fn done_marker() {
        assert_eq!(DONE, b"data: [DONE]\n\n");
    }
}
