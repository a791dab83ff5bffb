//! Fuzz target: the OpenAI request parsers (chat, completions, embeddings)
//! on mutated valid bodies and raw bytes answer `Ok` or an `ApiError`
//! that names a field or the JSON, never panic. `cargo test` runs a
//! bounded random pass; `cargo bolero test` fuzzes for real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mutation;

use mutation::mutate;

use herd_gateway::openai::{embeddings::parse_embeddings, parse_chat, parse_completion};

/// Valid bodies to mutate.
const SEEDS: [&str; 4] = [
    r##"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"temperature":0.5,"top_p":1,"seed":-1,"stop":["x"],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"$ref":"#/$defs/A"}},"$defs":{"A":{"type":"string"}}}}}],"tool_choice":"auto","parallel_tool_calls":false,"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"}}}}"##,
    r#"{"model":"m","prompt":"once","max_tokens":3,"logprobs":0,"echo":false}"#,
    r#"{"model":"m","input":["a",[1,2,3]],"encoding_format":"base64"}"#,
    r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}},"tools":[]}"#,
];

fn parse_all(body: &[u8]) {
    for result in [parse_chat(body).err(), parse_completion(body).err()]
        .into_iter()
        .flatten()
    {
        // Every refusal is a 4xx in OpenAI's shape.
        assert!(result.status().is_client_error(), "{result:?}");
        let _ = result.body();
    }
    if let Err(e) = parse_embeddings(body) {
        assert!(e.status().is_client_error(), "{e:?}");
    }
}

#[test]
fn fuzz_openai_request_parsers() {
    bolero::check!()
        .with_type::<(u8, Vec<(u16, u8, bool)>, Option<Vec<u8>>)>()
        .with_iterations(4000)
        .for_each(|(seed, edits, raw)| match raw {
            Some(raw) => parse_all(raw),
            None => parse_all(&mutate(SEEDS[usize::from(*seed) % SEEDS.len()], edits)),
        });
}
