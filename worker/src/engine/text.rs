//! Turning a stream of token bytes into text deltas: UTF-8 safe across token
//! boundaries, and cut at the first stop sequence without ever emitting part
//! of one.

/// What one pushed piece produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Text that is final and may be sent (possibly empty).
    Emit(String),
    /// A stop sequence was found: send this text, then end the generation.
    Stopped(String),
}

/// Assembles generated text.
///
/// Bytes are buffered until they form whole UTF-8 characters; text that could
/// be the beginning of a stop sequence is held back until it is known not to be
/// one.
#[derive(Debug, Default)]
pub struct TextAssembler {
    /// Bytes of an incomplete UTF-8 character.
    partial: Vec<u8>,
    /// Decoded text not yet emitted (a possible stop-sequence prefix).
    held: String,
    stops: Vec<String>,
}

impl TextAssembler {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            partial: Vec::new(),
            held: String::new(),
            stops,
        }
    }

    /// Adds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Step {
        self.partial.extend_from_slice(bytes);
        self.decode_partial();
        if let Some(at) = self.first_stop() {
            self.held.truncate(at);
            return Step::Stopped(std::mem::take(&mut self.held));
        }
        let keep = self.stop_prefix_len();
        let emit_len = self.held.len() - keep;
        let rest = self.held.split_off(emit_len);
        Step::Emit(std::mem::replace(&mut self.held, rest))
    }

    /// Ends the stream: everything held back, with an incomplete trailing
    /// character replaced by U+FFFD.
    pub fn finish(mut self) -> String {
        if !self.partial.is_empty() {
            self.held
                .push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        }
        self.held
    }

    /// Moves every complete character from `partial` into `held`; invalid
    /// byte sequences become U+FFFD, an incomplete tail stays in `partial`.
    fn decode_partial(&mut self) {
        loop {
            match std::str::from_utf8(&self.partial) {
                Ok(text) => {
                    self.held.push_str(text);
                    self.partial.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by construction.
                    self.held
                        .push_str(&String::from_utf8_lossy(&self.partial[..valid]));
                    match e.error_len() {
                        None => {
                            self.partial.drain(..valid);
                            return;
                        }
                        Some(bad) => {
                            self.held.push(char::REPLACEMENT_CHARACTER);
                            self.partial.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Byte offset of the earliest stop sequence in `held`.
    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest suffix of `held` that begins some stop sequence.
    fn stop_prefix_len(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(self.held.len());
            for len in (best + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && stop.starts_with(&self.held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let mut asm = TextAssembler::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for piece in pieces {
            match asm.push(piece) {
                Step::Emit(t) => out.push_str(&t),
                Step::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&asm.finish());
        (out, false)
    }

    #[test]
    fn multibyte_character_split_across_tokens_is_emitted_whole() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut asm = TextAssembler::new(vec![]);
        assert_eq!(asm.push(&euro[..1]), Step::Emit(String::new()));
        assert_eq!(asm.push(&euro[1..2]), Step::Emit(String::new()));
        assert_eq!(asm.push(&euro[2..]), Step::Emit("€".into()));
    }

    #[test]
    fn stop_sequence_across_tokens_is_cut_and_never_emitted() {
        let (text, stopped) = run(&["END"], &[b"hello E", b"N", b"D world"]);
        assert_eq!(text, "hello ");
        assert!(stopped);
    }

    #[test]
    fn held_prefix_is_released_when_it_is_not_a_stop() {
        let mut asm = TextAssembler::new(vec!["END".into()]);
        assert_eq!(asm.push(b"a E"), Step::Emit("a ".into()));
        assert_eq!(asm.push(b"x"), Step::Emit("Ex".into()));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (text, stopped) = run(&["world", "lo"], &[b"hello world"]);
        assert_eq!(text, "hel");
        assert!(stopped);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (text, _) = run(&[], &[b"a\xffb", b"\xe2\x82"]);
        assert_eq!(text, "a\u{fffd}b\u{fffd}");
    }

    proptest! {
        /// Whatever the token boundaries, the emitted text is the full text cut
        /// before the first stop, and every emitted piece is valid UTF-8.
        #[test]
        fn any_split_gives_the_same_text(
            text in "[a-cé€ ]{0,40}",
            stop in "[a-c€]{1,3}",
            cuts in proptest::collection::vec(0usize..60, 0..10),
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let (out, stopped) = run(&[stop.as_str()], &pieces);
            let expected = match text.find(stop.as_str()) {
                Some(at) => &text[..at],
                None => text.as_str(),
            };
            prop_assert_eq!(out.as_str(), expected);
            prop_assert_eq!(stopped, text.contains(stop.as_str()));
        }
    }
}
