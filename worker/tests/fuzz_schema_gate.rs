//! Fuzz target: the schema gate on mutated schemas and random patterns.
//! The gate answers for any input without panicking, and whatever it lets
//! through, llama.cpp's converter turns into a grammar of bounded size
//! without crashing or running away. `cargo test` runs a bounded random
//! pass; `cargo bolero test` fuzzes for real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herd_worker::engine::schema::{check, check_pattern};

const SEEDS: [&str; 4] = [
    r##"{"$defs":{"Item":{"properties":{"sku":{"type":"string","maxLength":12},"qty":{"type":"integer","minimum":1,"maximum":99}},"required":["sku","qty"],"type":"object"},"Size":{"enum":["s","l"],"type":"string"}},"properties":{"items":{"items":{"$ref":"#/$defs/Item"},"maxItems":3,"type":"array"},"size":{"$ref":"#/$defs/Size"},"zip":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null}},"required":["items"],"type":"object"}"##,
    r##"{"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{2}-[0-9]{1,4}(x|y)?$"},"n":{"type":"integer","exclusiveMinimum":0}}}"##,
    r##"{"$defs":{"N":{"type":"object","properties":{"kids":{"type":"array","items":{"$ref":"#/$defs/N"}}}}},"allOf":[{"$ref":"#/$defs/N"}]}"##,
    r##"{"type":"array","prefixItems":[{"const":1},{"type":["string","null"],"minLength":1,"maxLength":3}],"minItems":1}"##,
];

const TOKENS: [&str; 30] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "0",
    "4097",
    "1e18",
    "99999999999",
    "\"minimum\":",
    "\"maximum\":",
    "\"minLength\":",
    "\"maxLength\":",
    "\"pattern\":",
    "\"$ref\":",
    "\"#\"",
    "\"#/$defs/Item\"",
    "\"allOf\":",
    "\"anyOf\":[]",
    "\"type\":\"integer\"",
    "\"^(a{0,9}){0,9}$\"",
    "\"^[z-a]$\"",
    "\"^(|a)*$\"",
    "\"items\":",
    "\"enum\":[]",
];

/// Characters random patterns are built from.
const PATTERN: &[u8] = b"^$()[]{}|*+?.\\-,0123456789azAZ:dsw^";

fn mutate(seed: &str, edits: &[(u16, u8, bool)]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for (at, pick, delete) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(*at) % bytes.len();
        if *delete {
            let end = (at + usize::from(*pick % 8) + 1).min(bytes.len());
            bytes.drain(at..end);
        } else {
            let token = TOKENS[usize::from(*pick) % TOKENS.len()];
            bytes.splice(at..at, token.bytes());
        }
    }
    bytes
}

/// What the gate passes must convert, to a bounded grammar.
fn converts(schema: &str) {
    // The converter may still refuse (a 400); it must not crash.
    if let Ok(grammar) = llama_cpp_2::json_schema_to_grammar(schema) {
        assert!(grammar.len() < 4 << 20, "{schema}: {} bytes", grammar.len());
    }
}

#[test]
fn fuzz_schema_gate() {
    bolero::check!()
        .with_type::<(u8, Vec<(u16, u8, bool)>)>()
        .with_iterations(3000)
        .for_each(|(seed, edits)| {
            let text = mutate(SEEDS[usize::from(*seed) % SEEDS.len()], edits);
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) else {
                return;
            };
            if check(&value).is_ok() {
                converts(&value.to_string());
            }
        });
}

#[test]
fn fuzz_pattern_gate() {
    bolero::check!()
        .with_type::<Vec<u8>>()
        .with_iterations(5000)
        .for_each(|picks| {
            let body: String = picks
                .iter()
                .map(|p| char::from(PATTERN[usize::from(*p) % PATTERN.len()]))
                .collect();
            let pattern = format!("^{body}$");
            if check_pattern(&pattern).is_ok() {
                converts(&serde_json::json!({"type": "string", "pattern": pattern}).to_string());
            }
        });
}
