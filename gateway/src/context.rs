//! The request context: what the gateway knows about a request besides its
//! body — model, tenant, priority, prefix key, deadline, keep-alive — built
//! once after parsing and carried through every step (authenticate → admit
//! → place → pick → dispatch → stream → account), so that metrics, traces,
//! authentication and fairness each attach in one place.

use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::routing::hash;
use crate::scheduler::KeepAlive;

/// `X-Herd-Tenant`: who the request is for (fair share between tenants).
pub const TENANT_HEADER: &str = "x-herd-tenant";
/// `X-Herd-Priority`: `high`, `normal` (default) or `low`.
pub const PRIORITY_HEADER: &str = "x-herd-priority";
/// `X-Herd-Timeout-Ms`: the longest the client will wait for its answer to
/// start; past it, a request still queued is answered 503.
pub const TIMEOUT_HEADER: &str = "x-herd-timeout-ms";

/// The tenant of requests that name none.
pub const DEFAULT_TENANT: &str = "default";
/// Longest tenant name accepted.
const MAX_TENANT_BYTES: usize = 128;

/// How urgent a request is. Waiting promotes it (aging), so `low` is never
/// starved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low = 0,
    Normal = 1,
    High = 2,
}

impl Priority {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Self::Low),
            "normal" | "" => Some(Self::Normal),
            "high" => Some(Self::High),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// What a request asks of the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestContext {
    /// The request id (also the OpenAI response id).
    pub id: String,
    /// The model as the client named it.
    pub model: String,
    pub tenant: String,
    pub priority: Priority,
    /// A hash of the prompt's first blocks, for prefix-affinity routing.
    pub prefix_key: Option<u64>,
    /// When the client stops waiting (`X-Herd-Timeout-Ms`).
    pub deadline: Option<Instant>,
    /// How long the model stays loaded after this request (the body's
    /// `keep_alive`); `None`: the model's configured keep-alive.
    pub keep_alive: Option<KeepAlive>,
    /// Whether the request holds a generation slot (embeddings do not).
    pub needs_slot: bool,
    /// When the gateway received it.
    pub received_at: Instant,
    /// The API key it came with, when keys are on.
    pub key: Option<Principal>,
}

impl RequestContext {
    /// The context of a request with these headers; the caller fills in
    /// what the body says (`prefix_key`, `keep_alive`).
    pub fn from_headers(
        id: String,
        model: String,
        headers: &HeaderMap,
        needs_slot: bool,
    ) -> Result<Self, ApiError> {
        let header = |name: &str| {
            headers.get(name).map(|v| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| ApiError::header(name, "must be visible ASCII"))
            })
        };
        let tenant = match header(TENANT_HEADER).transpose()? {
            None | Some("") => DEFAULT_TENANT.to_owned(),
            Some(t) if t.len() > MAX_TENANT_BYTES => {
                return Err(ApiError::header(
                    TENANT_HEADER,
                    &format!("must be at most {MAX_TENANT_BYTES} bytes"),
                ));
            }
            Some(t) => t.to_owned(),
        };
        let priority = match header(PRIORITY_HEADER).transpose()? {
            None => Priority::Normal,
            Some(p) => Priority::parse(p).ok_or_else(|| {
                ApiError::header(PRIORITY_HEADER, "must be `high`, `normal` or `low`")
            })?,
        };
        let received_at = Instant::now();
        let deadline = match header(TIMEOUT_HEADER).transpose()? {
            None => None,
            Some(ms) => {
                let ms: u64 = ms.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                    ApiError::header(TIMEOUT_HEADER, "must be a positive number of milliseconds")
                })?;
                Some(received_at + Duration::from_millis(ms))
            }
        };
        Ok(Self {
            id,
            model,
            tenant,
            priority,
            prefix_key: None,
            deadline,
            keep_alive: None,
            needs_slot,
            received_at,
            key: None,
        })
    }

    /// The request as sent with `key`: the key's name is its tenant,
    /// whatever `X-Herd-Tenant` said.
    #[must_use]
    pub fn with_key(mut self, key: Option<Principal>) -> Self {
        if let Some(key) = &key {
            key.name().clone_into(&mut self.tenant);
        }
        self.key = key;
        self
    }
}

/// The prefix key of a conversation: a hash of its first `budget` bytes
/// (role and content of the leading messages, in order) — with a long
/// system prompt, the system prompt alone; with a short one, it and the
/// start of the conversation. Requests sharing it share a cacheable prefix.
pub fn prefix_key<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
    budget: usize,
) -> Option<u64> {
    let mut hasher = hash::Fnv1a::default();
    let mut left = budget;
    for (role, content) in messages {
        if left == 0 {
            break;
        }
        hasher.write(role.as_bytes());
        hasher.write(&[0]);
        let take = floor_char_boundary(content, left);
        hasher.write(&content.as_bytes()[..take]);
        hasher.write(&[0]);
        left -= take;
    }
    (left < budget).then(|| hasher.finish())
}

/// The prefix key of a generation request: its chat messages, or its raw
/// prompt.
pub fn prefix_key_of(request: &herd_proto::v1::GenerateRequest, budget: usize) -> Option<u64> {
    use herd_proto::v1::generate_request::Input;
    match &request.input {
        Some(Input::Chat(chat)) => prefix_key(
            chat.messages
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
            budget,
        ),
        Some(Input::Prompt(prompt)) => prefix_key([("prompt", prompt.text.as_str())], budget),
        None => None,
    }
}

/// The largest index ≤ `at` on a character boundary of `text`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn headers_set_tenant_priority_and_deadline() {
        let ctx = RequestContext::from_headers(
            "r".into(),
            "m".into(),
            &headers(&[
                (TENANT_HEADER, "team-a"),
                (PRIORITY_HEADER, "HIGH"),
                (TIMEOUT_HEADER, "1500"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(ctx.tenant, "team-a");
        assert_eq!(ctx.priority, Priority::High);
        assert_eq!(
            ctx.deadline.unwrap() - ctx.received_at,
            Duration::from_millis(1500)
        );
        let ctx =
            RequestContext::from_headers("r".into(), "m".into(), &HeaderMap::new(), true).unwrap();
        assert_eq!(
            (ctx.tenant.as_str(), ctx.priority),
            ("default", Priority::Normal)
        );
        for bad in [
            (PRIORITY_HEADER, "urgent"),
            (TIMEOUT_HEADER, "soon"),
            (TIMEOUT_HEADER, "0"),
        ] {
            let err = RequestContext::from_headers("r".into(), "m".into(), &headers(&[bad]), true)
                .unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(err.body()["error"]["param"], bad.0);
        }
    }

    #[test]
    fn the_prefix_key_covers_the_first_bytes_only() {
        let system = "You are a careful agent. ".repeat(200);
        let a = prefix_key([("system", system.as_str()), ("user", "first")], 2048);
        let b = prefix_key([("system", system.as_str()), ("user", "second")], 2048);
        assert_eq!(a, b, "a long system prompt alone decides");
        let c = prefix_key([("system", "short"), ("user", "first")], 2048);
        let d = prefix_key([("system", "short"), ("user", "second")], 2048);
        assert_ne!(c, d, "a short one is followed by the conversation");
        assert_eq!(prefix_key([], 2048), None);
        assert_eq!(
            prefix_key([("user", "é".repeat(10).as_str())], 3),
            prefix_key([("user", "é")], 3)
        );
    }
}
