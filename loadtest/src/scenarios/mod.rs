//! Workloads: what the n-th request of a run asks. [`chat`] and mixed models
//! are single-turn; [`agents`] keeps multi-turn conversations, so a request
//! carries the state it continues and updates it when done.

pub mod agents;
pub mod chat;

use serde::Serialize;
use tokio::sync::OwnedMutexGuard;

use crate::args::{Args, ScenarioKind};
use crate::client::Outcome;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// A request, independent of the wire it goes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub id: String,
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub stream: bool,
    pub seed: u64,
}

/// A request plus, for conversations, the conversation it continues (held
/// until the reply is in, so an agent's turns are sequential).
#[derive(Debug)]
pub struct Job {
    pub request: ChatRequest,
    conversation: Option<OwnedMutexGuard<agents::Conversation>>,
}

impl Job {
    /// Records the reply into the conversation, if any.
    pub fn complete(self, outcome: &Outcome) {
        if let Some(mut conversation) = self.conversation {
            conversation.advance(&self.request, outcome);
        }
    }
}

/// A workload.
#[derive(Debug)]
pub enum Scenario {
    /// Single-turn prompts; `models` used round-robin.
    Chat(chat::Chat),
    Agents(agents::Agents),
}

impl Scenario {
    pub fn new(args: &Args) -> Self {
        let common = chat::Common {
            max_tokens: args.max_tokens,
            stream: args.stream,
        };
        match args.scenario {
            ScenarioKind::Chat => Self::Chat(chat::Chat::new(vec![args.models[0].clone()], common)),
            ScenarioKind::MixedModels => Self::Chat(chat::Chat::new(args.models.clone(), common)),
            ScenarioKind::Agents => Self::Agents(agents::Agents::new(
                args.agents,
                args.turns,
                args.system_prompt_chars,
                args.system_prompts,
                args.models.clone(),
                common,
            )),
        }
    }

    /// The `n`-th request of a run. For agents this waits while that agent's
    /// previous turn is still in flight.
    pub async fn next(&self, n: u64) -> Job {
        match self {
            Self::Chat(c) => Job {
                request: c.request(n),
                conversation: None,
            },
            Self::Agents(a) => {
                let (request, conversation) = a.next(n).await;
                Job {
                    request,
                    conversation: Some(conversation),
                }
            }
        }
    }
}
