//! Byte-level mutation of valid request bodies, shared by the parser fuzz
//! targets.

/// JSON fragments spliced in: structure, odd numbers, odd strings.
pub const TOKENS: [&str; 24] = [
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
    "1e999",
    "-0.0",
    "18446744073709551616",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"role\"",
    "\"content\"",
    "\"type\"",
    "\"messages\"",
    "\"tools\"",
    "[[]]",
    "{}",
    "\"ünï\"",
];

/// `seed` with `edits` applied in turn: each `(at, pick, delete)` deletes
/// 1–8 bytes at `at` or splices in `TOKENS[pick]` there (positions wrap).
pub fn mutate(seed: &str, edits: &[(u16, u8, bool)]) -> Vec<u8> {
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
