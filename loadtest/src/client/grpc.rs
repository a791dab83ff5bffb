//! Herd's worker contract directly: `herd.worker.v1.Worker/Generate`, the
//! path the gateway itself takes (for measuring the gateway's overhead).
//! Given several workers, a request goes to the one its first message
//! hashes to, so that the same prompt always reaches the same worker, as
//! prefix affinity places it behind a gateway.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use herd_proto::v1 as pb;
use herd_proto::v1::worker_client::WorkerClient;
use tonic::transport::{Channel, Endpoint};

use super::{ClientError, Outcome, RequestError, Timeline};
use crate::scenarios::ChatRequest;

#[derive(Debug, Clone)]
pub struct GrpcClient {
    /// One per worker, in the order given.
    clients: Vec<WorkerClient<Channel>>,
    timeout: Duration,
}

impl GrpcClient {
    /// Connects lazily to each of `endpoints` (`http://host:port`).
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, ClientError> {
        let clients = endpoints
            .iter()
            .map(|endpoint| {
                let channel = Endpoint::from_shared(endpoint.clone())
                    .map_err(ClientError::Grpc)?
                    .tcp_nodelay(true)
                    .connect_lazy();
                Ok(WorkerClient::new(channel))
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(Self { clients, timeout })
    }

    /// The worker for `request` (its index): the same first message, the
    /// same worker.
    fn worker(&self, request: &ChatRequest) -> usize {
        let mut hasher = DefaultHasher::new();
        if let Some(first) = request.messages.first() {
            first.content.hash(&mut hasher);
        }
        (hasher.finish() % self.clients.len() as u64) as usize
    }

    pub async fn send(&self, request: &ChatRequest) -> Outcome {
        let timeline = Timeline::start();
        match tokio::time::timeout(self.timeout, self.exchange(request, timeline)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(RequestError::Timeout, self.timeout),
        }
    }

    async fn exchange(&self, request: &ChatRequest, mut timeline: Timeline) -> Outcome {
        let wire = pb::GenerateRequest {
            request_id: request.id.clone(),
            model: request.model.clone(),
            input: Some(pb::generate_request::Input::Chat(pb::ChatInput {
                messages: request
                    .messages
                    .iter()
                    .map(|m| pb::ChatMessage {
                        role: m.role.clone(),
                        content: m.content.clone(),
                        ..Default::default()
                    })
                    .collect(),
            })),
            sampling: Some(pb::SamplingParams {
                seed: Some(request.seed),
                ..Default::default()
            }),
            max_tokens: Some(request.max_tokens),
            ..Default::default()
        };
        let fail = |e: RequestError, t: &Timeline| Outcome::failed(e, t.elapsed());
        let mut stream = match self.clients[self.worker(request)]
            .clone()
            .generate(wire)
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => return fail(RequestError::Grpc(status.code()), &timeline),
        };
        let mut text = String::new();
        loop {
            let event = match stream.message().await {
                Ok(Some(e)) => e.event,
                Ok(None) => {
                    return fail(
                        RequestError::BadResponse("stream ended without `finished`".into()),
                        &timeline,
                    );
                }
                Err(status) => return fail(RequestError::Grpc(status.code()), &timeline),
            };
            match event {
                Some(pb::generate_event::Event::Delta(d)) if !d.text.is_empty() => {
                    if request.stream {
                        timeline.text();
                    }
                    text.push_str(&d.text);
                }
                Some(pb::generate_event::Event::Finished(f)) => {
                    let outcome = Outcome {
                        result: Ok(()),
                        e2e: timeline.elapsed(),
                        output_tokens: f.completion_tokens,
                        ttft: timeline.ttft,
                        itl: timeline.itl,
                        text,
                    };
                    // Read the trailers: dropping a stream before its end
                    // sends RST_STREAM, and h2 closes a connection that
                    // resets too many (GOAWAY ENHANCE_YOUR_CALM).
                    while let Ok(Some(_)) = stream.message().await {}
                    return outcome;
                }
                Some(pb::generate_event::Event::Delta(_)) | None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::scenarios::Message;

    fn request(first: &str) -> ChatRequest {
        ChatRequest {
            id: "r".into(),
            model: "m".into(),
            messages: vec![Message::new("user", first)],
            max_tokens: 1,
            stream: false,
            seed: 0,
        }
    }

    #[tokio::test]
    async fn a_prompt_always_reaches_the_same_worker_and_prompts_spread() {
        let endpoints: Vec<String> = (0..100)
            .map(|i| format!("http://127.0.0.1:{}", 20_000 + i))
            .collect();
        let client = GrpcClient::new(&endpoints, Duration::from_secs(1)).unwrap();
        let prompts: Vec<String> = (0..16).map(|i| format!("prompt {i}")).collect();
        let mut used = HashSet::new();
        for prompt in &prompts {
            let at = client.worker(&request(prompt));
            assert_eq!(at, client.worker(&request(prompt)));
            used.insert(at);
        }
        assert!(used.len() > 1, "16 prompts all went to worker {used:?}");
        let one = GrpcClient::new(&endpoints[..1], Duration::from_secs(1)).unwrap();
        assert_eq!(one.worker(&request("any")), 0);
    }
}
