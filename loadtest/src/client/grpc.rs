//! Herd's worker contract directly: `herd.worker.v1.Worker/Generate`, the
//! path the gateway itself takes (for measuring the gateway's overhead).

use std::time::Duration;

use herd_proto::v1 as pb;
use herd_proto::v1::worker_client::WorkerClient;
use tonic::transport::{Channel, Endpoint};

use super::{ClientError, Outcome, RequestError, Timeline};
use crate::scenarios::ChatRequest;

#[derive(Debug, Clone)]
pub struct GrpcClient {
    client: WorkerClient<Channel>,
    timeout: Duration,
}

impl GrpcClient {
    /// Connects lazily to `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, ClientError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(ClientError::Grpc)?
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: WorkerClient::new(channel),
            timeout,
        })
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
        let mut stream = match self.client.clone().generate(wire).await {
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
