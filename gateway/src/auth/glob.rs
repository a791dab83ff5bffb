//! Model allow-list patterns: `*` matches any run of characters (`/` and
//! `:` included), `?` exactly one; everything else matches itself.

/// Whether `text` matches `pattern`. Linear in practice: the classic
/// backtracking-to-the-last-star matcher, no recursion.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it now covers up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("*", "ai/smollm2:latest"));
        assert!(matches("ai/*", "ai/smollm2:latest"));
        assert!(matches("ai/smollm2*", "ai/smollm2"));
        assert!(matches("ai/smollm2:*", "ai/smollm2:latest"));
        assert!(matches("*smol*", "ai/smollm2:latest"));
        assert!(matches("ai/smollm?", "ai/smollm2"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("ai/*", "other/ai/x"));
        assert!(!matches("ai/smollm2", "ai/smollm2:latest"));
        assert!(!matches("ai/smollm?", "ai/smollm"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
    }

    proptest! {
        #[test]
        fn a_literal_matches_itself_and_a_star_everything(s in "[a-z0-9/:.*?-]{0,24}") {
            let literal: String = s.chars().filter(|c| *c != '*' && *c != '?').collect();
            prop_assert!(matches(&literal, &literal));
            prop_assert!(matches("*", &s));
            let (pattern, text) = (format!("{literal}*"), format!("{literal}{s}"));
            prop_assert!(matches(&pattern, &text));
        }
    }
}
