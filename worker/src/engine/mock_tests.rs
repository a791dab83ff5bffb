//! Tests of the mock engine itself.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::engine::{ChatMessage, Sampling};

fn request(id: &str, max_tokens: Option<u32>) -> GenerationRequest {
    GenerationRequest {
        id: id.into(),
        model: "mock".into(),
        input: Input::Chat(vec![ChatMessage::new("user", "hello there")]),
        sampling: Sampling {
            seed: 7,
            ..Sampling::default()
        },
        max_tokens,
        stop: vec![],
        constraint: None,
        tools: None,
    }
}

/// Starts a generation and collects its events until the final one.
async fn run_to_end(engine: &MockEngine, req: GenerationRequest) -> (String, Vec<GenerationEvent>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    engine
        .generate(req, tx, CancellationToken::new())
        .await
        .unwrap();
    let mut text = String::new();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
    {
        if let GenerationEvent::Delta { text: t, .. } = &e {
            text.push_str(t);
        }
        let last = !matches!(e, GenerationEvent::Delta { .. });
        events.push(e);
        if last {
            break;
        }
    }
    (text, events)
}

#[tokio::test]
async fn mock_engine_text_is_deterministic_and_counts_tokens() {
    let engine = MockEngine::new(MockConfig::default()).unwrap();
    let (a, events) = run_to_end(&engine, request("a", Some(5))).await;
    let (b, _) = run_to_end(&engine, request("b", Some(5))).await;
    assert_eq!(a, b);
    assert_eq!(a.split(' ').count(), 5);
    let Some(GenerationEvent::Finished(f)) = events.last() else {
        panic!("no Finished: {events:?}");
    };
    assert_eq!(f.reason, FinishReason::Length);
    assert_eq!(f.completion_tokens, 5);
    assert!(f.prompt_tokens > 0);
    let status = engine.status();
    assert_eq!(status.engine, "mock");
    assert_eq!(status.counters.completed, 2);
    assert_eq!(status.counters.tokens_generated, 10);
    assert_eq!(status.models[0].slots_busy, 0);
}

#[tokio::test]
async fn mock_engine_refuses_beyond_its_slots_and_frees_before_finished() {
    let engine = MockEngine::new(MockConfig {
        slots: 1,
        tokens_per_second: 200.0,
        ..MockConfig::default()
    })
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    engine
        .generate(request("a", Some(3)), tx, CancellationToken::new())
        .await
        .unwrap();
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let err = engine
        .generate(request("b", Some(3)), tx2, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Busy { slots: 1, .. }), "{err}");
    loop {
        match rx.recv().await.unwrap() {
            GenerationEvent::Finished(_) => break,
            GenerationEvent::Delta { .. } => {}
            GenerationEvent::Failed(e) => panic!("{e}"),
        }
    }
    // The slot is free as soon as Finished is seen.
    assert_eq!(engine.status().models[0].slots_busy, 0);
    let (tx3, _rx3) = mpsc::unbounded_channel();
    engine
        .generate(request("c", Some(1)), tx3, CancellationToken::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn mock_engine_unknown_model_and_long_prompt_are_refused() {
    let engine = MockEngine::new(MockConfig {
        context_size: 16,
        ..MockConfig::default()
    })
    .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut r = request("a", None);
    r.model = "other".into();
    let err = engine
        .generate(r, tx.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ModelNotFound(_)));
    let mut r = request("a", None);
    r.input = Input::Prompt("x".repeat(200));
    let err = engine
        .generate(r, tx, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ContextLengthExceeded { .. }));
}

#[tokio::test]
async fn mock_engine_cancellation_by_token_frees_the_slot() {
    let engine = MockEngine::new(MockConfig {
        slots: 1,
        tokens_per_second: 50.0,
        ..MockConfig::default()
    })
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    engine
        .generate(request("a", Some(1000)), tx, cancel.clone())
        .await
        .unwrap();
    assert!(matches!(
        rx.recv().await,
        Some(GenerationEvent::Delta { .. })
    ));
    cancel.cancel();
    loop {
        match rx.recv().await.unwrap() {
            GenerationEvent::Finished(f) => {
                assert_eq!(f.reason, FinishReason::Cancelled);
                break;
            }
            GenerationEvent::Delta { .. } => {}
            GenerationEvent::Failed(e) => panic!("{e}"),
        }
    }
    assert_eq!(engine.status().models[0].slots_busy, 0);
    assert_eq!(engine.status().counters.cancelled, 1);
}

#[tokio::test]
async fn mock_engine_dropped_receiver_frees_the_slot() {
    let engine = MockEngine::new(MockConfig {
        slots: 1,
        tokens_per_second: 50.0,
        ..MockConfig::default()
    })
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    engine
        .generate(request("a", Some(1000)), tx, CancellationToken::new())
        .await
        .unwrap();
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), async {
        while engine.status().models[0].slots_busy > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(engine.status().counters.cancelled, 1);
}

#[tokio::test]
async fn mock_engine_injects_errors_at_the_configured_rate() {
    let engine = MockEngine::new(MockConfig {
        error_rate: 0.25,
        ..MockConfig::default()
    })
    .unwrap();
    let mut failed = 0;
    for i in 0..8 {
        let (_, events) = run_to_end(&engine, request(&i.to_string(), Some(2))).await;
        if matches!(events.last(), Some(GenerationEvent::Failed(_))) {
            failed += 1;
        }
    }
    assert_eq!(failed, 2);
    assert_eq!(engine.status().counters.failed, 2);
    assert_eq!(engine.status().models[0].slots_busy, 0);
}

#[tokio::test]
async fn mock_engine_crashes_after_n_tokens() {
    let engine = MockEngine::new(MockConfig {
        crash_after_tokens: Some(3),
        ..MockConfig::default()
    })
    .unwrap();
    let (text, events) = run_to_end(&engine, request("a", Some(10))).await;
    assert_eq!(text.split(' ').count(), 3);
    assert!(matches!(
        events.last(),
        Some(GenerationEvent::Failed(EngineError::Internal(_)))
    ));
    assert_eq!(engine.status().models[0].slots_busy, 0);
}

#[tokio::test]
async fn mock_engine_stall_honours_cancellation() {
    let engine = MockEngine::new(MockConfig {
        stall_after_tokens: Some(2),
        ..MockConfig::default()
    })
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    engine
        .generate(request("a", Some(10)), tx, cancel.clone())
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            rx.recv().await,
            Some(GenerationEvent::Delta { .. })
        ));
    }
    // Stalled: nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), rx.recv())
            .await
            .is_err()
    );
    cancel.cancel();
    let last = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert!(matches!(
        last,
        Some(GenerationEvent::Finished(Finished {
            reason: FinishReason::Cancelled,
            completion_tokens: 2,
            ..
        }))
    ));
}

#[test]
fn mock_engine_config_is_validated() {
    assert!(MockEngine::new(MockConfig::default()).is_ok());
    for bad in [
        MockConfig {
            slots: 0,
            ..MockConfig::default()
        },
        MockConfig {
            models: vec![],
            ..MockConfig::default()
        },
        MockConfig {
            error_rate: 1.5,
            ..MockConfig::default()
        },
        MockConfig {
            tokens_per_second: f64::NAN,
            ..MockConfig::default()
        },
    ] {
        assert!(MockEngine::new(bad).is_err());
    }
}
