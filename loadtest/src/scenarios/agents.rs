//! K agents holding multi-turn conversations. Agents share a few long system
//! prompts (agent k uses prompt k mod N, `--system-prompts`, default 2) and
//! their models round-robin, the workload prefix-affinity scheduling
//! targets. Each conversation grows by
//! one user and one assistant message per turn and starts over after
//! `turns` turns.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::chat::Common;
use super::{ChatRequest, Message};
use crate::client::Outcome;

const ROLES: &[&str] = &[
    "You are a careful software engineering agent working on a Rust code base.",
    "You are a research assistant agent that reads documents and answers questions.",
];

const TASKS: &[&str] = &[
    "Look at the failing test and propose a fix.",
    "Summarise what you found so far.",
    "Which file should change next, and why?",
    "Write the commit message for this change.",
    "List the risks of this approach.",
    "What would you check before merging?",
];

/// A system prompt of about `chars` characters for `role`.
fn system_prompt(role: &str, chars: usize) -> String {
    let mut s = String::from(role);
    let mut i = 0;
    while s.len() < chars {
        s.push_str(&format!(
            " Rule {i}: keep answers short, cite the file you mean, and never guess."
        ));
        i += 1;
    }
    s
}

/// One agent's conversation so far.
#[derive(Debug)]
pub struct Conversation {
    agent: u32,
    model: String,
    system: Arc<str>,
    history: Vec<Message>,
    turn: u32,
    turns: u32,
}

impl Conversation {
    /// Appends the reply (or starts over after the last turn or a failure).
    pub fn advance(&mut self, request: &ChatRequest, outcome: &Outcome) {
        self.turn += 1;
        if outcome.result.is_err() || self.turn >= self.turns {
            self.history.clear();
            self.turn = 0;
            return;
        }
        if let Some(user) = request.messages.last() {
            self.history.push(user.clone());
        }
        self.history
            .push(Message::new("assistant", outcome.text.clone()));
    }
}

#[derive(Debug)]
pub struct Agents {
    conversations: Vec<Arc<Mutex<Conversation>>>,
    common: Common,
}

impl Agents {
    pub fn new(
        agents: u32,
        turns: u32,
        system_chars: usize,
        system_prompts: u32,
        models: Vec<String>,
        common: Common,
    ) -> Self {
        // Two prompts: the two roles. More: personas of the roles, which
        // differ from their first words.
        let systems: Vec<Arc<str>> = (0..system_prompts.max(1) as usize)
            .map(|i| {
                let role = ROLES[i % ROLES.len()];
                let opening = if system_prompts as usize <= ROLES.len() {
                    role.to_owned()
                } else {
                    format!("Persona {i}. {role}")
                };
                Arc::from(system_prompt(&opening, system_chars))
            })
            .collect();
        let conversations = (0..agents)
            .map(|agent| {
                Arc::new(Mutex::new(Conversation {
                    agent,
                    model: models[agent as usize % models.len().max(1)].clone(),
                    system: systems[agent as usize % systems.len()].clone(),
                    history: Vec::new(),
                    turn: 0,
                    turns,
                }))
            })
            .collect();
        Self {
            conversations,
            common,
        }
    }

    /// The `n`-th request: the next turn of agent `n mod K`.
    pub async fn next(&self, n: u64) -> (ChatRequest, OwnedMutexGuard<Conversation>) {
        let k = (n % self.conversations.len() as u64) as usize;
        let conversation = self.conversations[k].clone().lock_owned().await;
        let task = TASKS[((n / self.conversations.len() as u64) % TASKS.len() as u64) as usize];
        let mut messages = Vec::with_capacity(conversation.history.len() + 2);
        messages.push(Message::new("system", &*conversation.system));
        messages.extend(conversation.history.iter().cloned());
        messages.push(Message::new(
            "user",
            format!(
                "Agent {}, turn {}: {task}",
                conversation.agent, conversation.turn
            ),
        ));
        let request = ChatRequest {
            id: format!("agent-{}-{n}", conversation.agent),
            model: conversation.model.clone(),
            messages,
            max_tokens: self.common.max_tokens,
            stream: self.common.stream,
            seed: n,
        };
        (request, conversation)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ok(text: &str) -> Outcome {
        Outcome {
            result: Ok(()),
            ttft: None,
            itl: Vec::new(),
            e2e: Duration::ZERO,
            output_tokens: 1,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn conversations_grow_share_system_prompts_and_restart() {
        let common = Common {
            max_tokens: 4,
            stream: false,
        };
        let agents = Agents::new(2, 2, 500, 2, vec!["m1".into(), "m2".into()], common);
        let (r0, mut c0) = agents.next(0).await;
        assert_eq!(r0.model, "m1");
        assert!(r0.messages[0].content.len() >= 500);
        assert_eq!(r0.messages.len(), 2);
        c0.advance(&r0, &ok("reply"));
        drop(c0);
        let (r1, c1) = agents.next(1).await;
        assert_eq!(r1.model, "m2");
        assert_ne!(r1.messages[0], r0.messages[0]);
        drop(c1);
        // Agent 0's second turn carries its first turn.
        let (r2, mut c2) = agents.next(2).await;
        assert_eq!(r2.messages.len(), 4);
        assert_eq!(r2.messages[2].content, "reply");
        c2.advance(&r2, &ok("again"));
        drop(c2);
        // After `turns` turns the conversation starts over.
        let (r4, _c4) = agents.next(4).await;
        assert_eq!(r4.messages.len(), 2);
    }
}
