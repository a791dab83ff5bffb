//! Single-turn chats from a fixed prompt set.

use super::{ChatRequest, Message};

/// Settings every scenario shares.
#[derive(Debug, Clone, Copy)]
pub struct Common {
    pub max_tokens: u32,
    pub stream: bool,
}

/// The fixed prompt set.
pub const PROMPTS: &[&str] = &[
    "Write a haiku about a herd of llamas crossing a river.",
    "Explain in two sentences what a load balancer does.",
    "List three uses of a hash map.",
    "What is the capital of France? Answer in one word.",
    "Summarise the plot of a detective story in one paragraph.",
    "Give me a short recipe for pancakes.",
    "Translate 'good morning, friends' into Spanish.",
    "Why is the sky blue? Keep it brief.",
];

#[derive(Debug)]
pub struct Chat {
    models: Vec<String>,
    common: Common,
}

impl Chat {
    /// `models` must not be empty (validated with the options).
    pub fn new(models: Vec<String>, common: Common) -> Self {
        Self { models, common }
    }

    pub fn request(&self, n: u64) -> ChatRequest {
        let prompt = PROMPTS[(n % PROMPTS.len() as u64) as usize];
        let model = &self.models[(n % self.models.len().max(1) as u64) as usize];
        ChatRequest {
            id: format!("load-{n}"),
            model: model.clone(),
            messages: vec![Message::new("user", prompt)],
            max_tokens: self.common.max_tokens,
            stream: self.common.stream,
            seed: n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_and_prompts_rotate() {
        let chat = Chat::new(
            vec!["a".into(), "b".into()],
            Common {
                max_tokens: 8,
                stream: true,
            },
        );
        let r0 = chat.request(0);
        let r1 = chat.request(1);
        assert_eq!((r0.model.as_str(), r1.model.as_str()), ("a", "b"));
        assert_ne!(r0.messages, r1.messages);
        assert_eq!(chat.request(PROMPTS.len() as u64 * 2).messages, r0.messages);
    }
}
