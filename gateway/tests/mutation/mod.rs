//! Byte-level mutation of valid request bodies, shared by the parser fuzz
//! targets.

/// `seed` with `edits` applied in turn: each `(at, pick, delete)` deletes
/// 1–8 bytes at `at` or splices in `tokens[pick]` there (positions wrap).
pub fn mutate(seed: &str, edits: &[(u16, u8, bool)], tokens: &[&str]) -> Vec<u8> {
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
            let token = tokens[usize::from(*pick) % tokens.len()];
            bytes.splice(at..at, token.bytes());
        }
    }
    bytes
}
