//! Fuzz target: the Anthropic Messages, Ollama and OpenAI Responses request
//! parsers on mutated valid bodies and raw bytes answer `Ok` or a 4xx
//! `ApiError`, never panic. `cargo test` runs a bounded random pass;
//! `cargo bolero test` fuzzes for real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mutation;

use mutation::mutate;

use herd_gateway::{anthropic, ollama, responses};

/// Valid bodies to mutate.
const SEEDS: [&str; 4] = [
    r##"{"model":"m","max_tokens":8,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":[{"type":"text","text":"t"},{"type":"tool_use","id":"t1","name":"w","input":{"city":"x"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"sun"}],"is_error":false}]}],"tools":[{"name":"w","description":"d","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"w","disable_parallel_tool_use":true},"stop_sequences":["x"],"temperature":0.5,"top_k":3,"stream":true,"metadata":{"user_id":"u"}}"##,
    r##"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},{"role":"tool","content":"r","tool_name":"f"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"format":{"type":"object"},"options":{"temperature":0,"num_predict":-1,"stop":["x"],"num_ctx":512,"seed":-3},"keep_alive":"5m","stream":false}"##,
    r##"{"model":"m","prompt":"p","system":"s","raw":false,"format":"json","options":{"top_k":2},"input":["a","b"]}"##,
    r##"{"model":"m","instructions":"i","input":[{"role":"developer","content":"d"},{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"o"}],"tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"f"},"text":{"format":{"type":"json_schema","name":"n","schema":{"type":"object"}}},"max_output_tokens":5,"store":false,"previous_response_id":"resp_1","metadata":{"k":"v"}}"##,
];

fn parse_all(body: &[u8]) {
    let known = ["model", "name", "stream", "insecure", "verbose"];
    let errors = [
        anthropic::parse_messages(body).err(),
        anthropic::parse_count_tokens(body).err(),
        ollama::parse_chat(body).err(),
        ollama::parse_generate(body).err(),
        ollama::parse_embed(body).err(),
        ollama::parse_model(body, &known).err(),
        responses::parse(body).err(),
    ];
    for err in errors.into_iter().flatten() {
        assert!(err.status().is_client_error(), "{err:?}");
        let _ = (err.body(), err.anthropic_body(), err.ollama_body());
    }
}

#[test]
fn fuzz_api_breadth_request_parsers() {
    bolero::check!()
        .with_type::<(u8, Vec<(u16, u8, bool)>, Option<Vec<u8>>)>()
        .with_iterations(4000)
        .for_each(|(seed, edits, raw)| match raw {
            Some(raw) => parse_all(raw),
            None => parse_all(&mutate(SEEDS[usize::from(*seed) % SEEDS.len()], edits)),
        });
}
