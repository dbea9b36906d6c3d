//! The OpenAI-compatible client against an in-test HTTP server that follows the documented wire
//! format (OpenAI API reference: chat completions, streaming, embeddings, errors, rate-limit
//! headers) exactly: the behaviours a real server will not produce on demand (429 with
//! `x-ratelimit-*` headers, a stream cut mid-way, a 500) are chosen by the model name.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rampart_connect::ai::{
    AiError, ApiKey, ChatMessage, ChatRequest, EmbeddingRequest, ModelRouter, ModelRouterConfig,
    OpenAiClient, OpenAiConfig, Route,
};
use rampart_resilience::Events;
use rampart_resilience::breaker::BreakerConfig;
use rampart_resilience::retry::RetryConfig;
use rampart_telemetry::{Telemetry, Window};
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    calls: AtomicU32,
    /// Lets the `gated` model's stream go on past its first chunk.
    gate: tokio::sync::Notify,
}

async fn chat(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: String) -> Response {
    seen.calls.fetch_add(1, Ordering::Relaxed);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})),
        )
            .into_response();
    }
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let stream = request["stream"].as_bool().unwrap_or(false);
    match model.as_str() {
        "hang" => std::future::pending().await,
        "last-one" => (
            // Answers, but says no request is left until the limit resets in 300 ms.
            [
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "300ms"),
            ],
            axum::Json(json!({
                "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            })),
        )
            .into_response(),
        "limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", "7"),
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "7s"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "7s"),
            ],
            axum::Json(json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}})),
        )
            .into_response(),
        "broken" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}})),
        )
            .into_response(),
        "reset" if stream => {
            // One chunk, then the body fails: the connection is cut without ending the chunked
            // encoding, as when a proxy or the provider drops it.
            // The failure waits for the gate, so that the head and first chunk are sent first.
            let first = chunk(&model, json!({"role": "assistant", "content": "Hel"}), None);
            let seen = seen.clone();
            let stream = futures_util::stream::unfold(0, move |step| {
                let (seen, first) = (seen.clone(), first.clone());
                async move {
                    match step {
                        0 => Some((Ok(bytes::Bytes::from(first)), 1)),
                        1 => {
                            seen.gate.notified().await;
                            Some((Err(std::io::Error::other("connection dropped")), 2))
                        }
                        _ => None,
                    }
                }
            });
            ([("content-type", "text/event-stream")], Body::from_stream(stream)).into_response()
        }
        "gated" if stream => {
            // One chunk, then the rest only once the test opens the gate.
            let first = chunk(&model, json!({"role": "assistant", "content": "Hel"}), None);
            let rest = format!(
                "{}{}data: [DONE]\n\n",
                chunk(&model, json!({"content": "lo"}), None),
                chunk(&model, json!({}), Some("stop"))
            );
            let seen = seen.clone();
            let stream = futures_util::stream::unfold(0, move |step| {
                let seen = seen.clone();
                let (first, rest) = (first.clone(), rest.clone());
                async move {
                    match step {
                        0 => Some((Ok::<_, std::io::Error>(bytes::Bytes::from(first)), 1)),
                        1 => {
                            seen.gate.notified().await;
                            Some((Ok(bytes::Bytes::from(rest)), 2))
                        }
                        _ => None,
                    }
                }
            });
            ([("content-type", "text/event-stream")], Body::from_stream(stream)).into_response()
        }
        _ if stream => {
            let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
            let mut events = vec![
                chunk(&model, json!({"role": "assistant", "content": ""}), None),
                chunk(&model, json!({"content": "Hel"}), None),
                chunk(&model, json!({"content": "lo"}), None),
            ];
            if model != "cut" {
                events.push(chunk(&model, json!({}), Some("stop")));
                if include_usage {
                    events.push(format!(
                        "data: {}\n\n",
                        json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
                    ));
                }
                events.push("data: [DONE]\n\n".to_owned());
            }
            let stream = futures_util::stream::iter(
                events
                    .into_iter()
                    .map(|e| Ok::<_, std::io::Error>(bytes::Bytes::from(e))),
            );
            (
                [("content-type", "text/event-stream"), ("x-ratelimit-remaining-requests", "42")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        _ => (
            [
                ("x-ratelimit-remaining-requests", "42"),
                ("x-ratelimit-remaining-tokens", "9000"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ],
            axum::Json(json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            })),
        )
            .into_response(),
    }
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    )
}

async fn embeddings(body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    let n = request["input"].as_array().map_or(0, Vec::len);
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.5, -0.25, i as f32]}))
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": request["model"], "usage": {"prompt_tokens": 4, "total_tokens": 4}}))
        .into_response()
}

#[allow(clippy::unwrap_used)] // a test helper
async fn start() -> (String, Arc<Seen>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), seen, server)
}

#[allow(clippy::unwrap_used)] // a test helper
fn client(base: &str, config: impl FnOnce(&mut OpenAiConfig)) -> OpenAiClient {
    let mut c = OpenAiConfig::new(base);
    config(&mut c);
    c.build("test", &Events::new())
        .unwrap()
        .with_key(ApiKey::new("sk-test").unwrap())
}

fn hello(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![ChatMessage::user("Say hello")]).max_tokens(20)
}

#[tokio::test]
async fn chat_returns_the_answer_and_counts_usage_per_model() {
    let (base, _seen, server) = start().await;
    let telemetry = Telemetry::new();
    let client = client(&base, |c| c.tokens_per_minute = Some(10_000)).with_telemetry(&telemetry);
    let answer = client.chat(&hello("gpt-test")).await.unwrap();
    assert_eq!(answer.text(), "Hello");
    assert_eq!(answer.usage.unwrap().total_tokens, 15);
    // Charged 9 (estimate) + 20 up front, corrected to 15; the provider said 9000 are left.
    assert_eq!(client.limits().tokens().unwrap().available(), 9000);
    let m = client.metrics("gpt-test").unwrap();
    assert_eq!(m.tokens_in.get(), 12);
    assert_eq!(m.tokens_out.get(), 3);
    assert_eq!(m.request.stats().window(Window::SinceStart).count, 1);
    // The series export per provider and model.
    let text = rampart_telemetry::export::prometheus::render(&telemetry);
    for series in [
        "rampart_ai_tokens_in_total{provider=\"test\",model=\"gpt-test\"} 12",
        "rampart_ai_tokens_out_total{provider=\"test\",model=\"gpt-test\"} 3",
    ] {
        assert!(text.contains(series), "{series} missing in:\n{text}");
    }
    server.abort();
}

#[tokio::test]
async fn a_wrong_key_is_an_unretryable_status_error_that_shows_no_key() {
    let (base, _seen, server) = start().await;
    let client = client(&base, |_| {}).with_key(ApiKey::new("sk-wrong-secret").unwrap());
    assert!(!format!("{client:?}").contains("sk-wrong-secret"));
    let err = client.chat(&hello("gpt-test")).await.unwrap_err();
    match &err {
        AiError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 401);
            assert_eq!(message, "Incorrect API key provided");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("sk-wrong-secret"));
    server.abort();
}

#[tokio::test]
async fn a_429_is_rate_limited_with_retry_after_and_pauses_the_local_limiter() {
    let (base, seen, server) = start().await;
    let client = client(&base, |c| {
        c.requests_per_minute = Some(60);
        c.tokens_per_minute = Some(100_000);
    });
    let err = client.chat(&hello("limited")).await.unwrap_err();
    assert!(err.is_rate_limited() && err.is_retryable(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(matches!(err, AiError::RateLimited { local: false, .. }));
    // The next call is refused locally, without reaching the server.
    let err = client.chat(&hello("gpt-test")).await.unwrap_err();
    assert!(
        matches!(err, AiError::RateLimited { local: true, .. }),
        "{err}"
    );
    let wait = err.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(6) && wait <= Duration::from_secs(7),
        "{wait:?}"
    );
    assert_eq!(seen.calls.load(Ordering::Relaxed), 1);
    server.abort();
}

#[tokio::test]
async fn a_500_is_retryable() {
    let (base, _seen, server) = start().await;
    let err = client(&base, |_| {})
        .chat(&hello("broken"))
        .await
        .unwrap_err();
    assert!(matches!(err, AiError::Status { status: 500, .. }));
    assert!(err.is_retryable() && !err.is_rate_limited());
    server.abort();
}

#[tokio::test]
async fn a_stream_yields_chunks_until_done_with_usage_and_time_to_first_token() {
    let (base, _seen, server) = start().await;
    let telemetry = Telemetry::new();
    let client = client(&base, |c| c.tokens_per_minute = Some(10_000)).with_telemetry(&telemetry);
    let mut stream = client.chat_stream(&hello("gpt-test")).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(chunk.unwrap().text());
    }
    assert_eq!(text, "Hello");
    assert_eq!(stream.usage().unwrap().total_tokens, 11);
    assert!(stream.next().await.is_none());
    assert_eq!(client.limits().tokens().unwrap().available(), 10_000 - 11);
    let m = client.metrics("gpt-test").unwrap();
    assert_eq!(m.first_token.stats().window(Window::SinceStart).count, 1);
    assert_eq!(m.request.stats().window(Window::SinceStart).count, 1);
    assert_eq!(m.tokens_out.get(), 2);
    server.abort();
}

#[tokio::test]
async fn a_stream_cut_before_done_is_a_typed_retryable_error() {
    let (base, _seen, server) = start().await;
    let telemetry = Telemetry::new();
    let client = client(&base, |_| {}).with_telemetry(&telemetry);
    let stream = client.chat_stream(&hello("cut")).await.unwrap();
    let err = stream.collect_text().await.unwrap_err();
    match &err {
        AiError::StreamCut { events, .. } => assert_eq!(*events, 3),
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(client.metrics("cut").unwrap().errors.get(), 1);
    server.abort();
}

#[tokio::test]
async fn embeddings_come_back_one_per_input() {
    let (base, _seen, server) = start().await;
    let answer = client(&base, |_| {})
        .embeddings(&EmbeddingRequest::new(
            "embed-test",
            vec!["a".into(), "b".into()],
        ))
        .await
        .unwrap();
    assert_eq!(answer.data.len(), 2);
    assert_eq!(answer.data[1].embedding, vec![0.5, -0.25, 1.0]);
    assert_eq!(answer.usage.unwrap().prompt_tokens, 4);
    server.abort();
}

#[tokio::test]
async fn a_deadline_in_scope_bounds_the_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and never answers.
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            held.push(socket);
        }
    });
    let client = client(&format!("http://{addr}/v1"), |_| {});
    let deadline = rampart_resilience::timeout::Deadline::after(Duration::from_millis(200));
    let err = deadline
        .scope(client.chat(&hello("gpt-test")))
        .await
        .unwrap_err();
    match err {
        AiError::Timeout { after, .. } => assert!(after <= Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
    let expired = rampart_resilience::timeout::Deadline::after(Duration::ZERO);
    let err = expired
        .scope(client.chat(&hello("gpt-test")))
        .await
        .unwrap_err();
    assert!(matches!(err, AiError::DeadlineExceeded { .. }));
    server.abort();
}

#[test]
fn config_reports_every_problem_with_its_path() {
    let config: OpenAiConfig = toml::from_str(
        r#"
        base_url = "ftp://x"
        api_key_env = "A"
        api_key_file = "/b"
        timeout = "0s"
        tokens_per_minute = 0
        "#,
    )
    .unwrap();
    let err = config
        .build("openai", &Events::new())
        .unwrap_err()
        .to_string();
    for expected in [
        "openai.base_url",
        "openai.api_key_file",
        "openai.timeout",
        "openai.tokens_per_minute",
    ] {
        assert!(err.contains(expected), "{expected} missing in {err}");
    }
    assert!(toml::from_str::<OpenAiConfig>("api_key = \"sk\"").is_err());
}

#[test]
fn the_key_is_read_from_the_file_or_variable_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "sk-file\n").unwrap();
    let mut config = OpenAiConfig::new("http://127.0.0.1:1/v1");
    config.api_key_file = Some(file);
    let client = config.build("p", &Events::new()).unwrap();
    assert!(!format!("{client:?}").contains("sk-file"));
    config.api_key_file = None;
    config.api_key_env = Some("RAMPART_TEST_UNSET_KEY_VAR".into());
    let err = config.build("p", &Events::new()).unwrap_err().to_string();
    assert!(
        err.contains("p.api_key_env") && err.contains("is not set"),
        "{err}"
    );
}

#[allow(clippy::unwrap_used)] // a test helper
fn router(client: &OpenAiClient, models: &[&str]) -> ModelRouter {
    let breaker = BreakerConfig::consecutive(2, Duration::from_secs(60));
    let routes = models
        .iter()
        .map(|m| Route::new(client.clone(), *m, &breaker, &Events::new()).unwrap())
        .collect();
    let retry: RetryConfig =
        toml::from_str("max_attempts = 2\nbase_delay = \"1ms\"\nmax_delay = \"1s\"").unwrap();
    ModelRouter::new(routes).with_retry(retry.build("ai", &Events::new()).unwrap())
}

#[tokio::test]
async fn a_failing_model_is_retried_then_the_chain_falls_back_and_its_breaker_opens() {
    let (base, seen, server) = start().await;
    let client = client(&base, |_| {});
    let router = router(&client, &["broken", "gpt-test"]);
    let answer = router.chat(&hello("ignored")).await.unwrap();
    assert_eq!(answer.route, "test/gpt-test");
    assert_eq!(answer.value.text(), "Hello");
    assert_eq!(answer.failed.len(), 1);
    assert!(matches!(
        answer.failed[0].1,
        AiError::Status { status: 500, .. }
    ));
    // Two attempts on the broken model, one on the good one.
    assert_eq!(seen.calls.load(Ordering::Relaxed), 3);
    // Two failures in a row opened its breaker: the next call skips it without sending.
    assert!(router.routes()[0].breaker().rejects_now());
    let answer = router.chat(&hello("ignored")).await.unwrap();
    assert!(matches!(answer.failed[0].1, AiError::BreakerOpen { .. }));
    assert_eq!(seen.calls.load(Ordering::Relaxed), 4);
    server.abort();
}

#[tokio::test]
async fn throttling_longer_than_the_retry_allows_falls_back_without_opening_the_breaker() {
    let (base, seen, server) = start().await;
    let client = client(&base, |_| {});
    let router = router(&client, &["limited", "gpt-test"]);
    for _ in 0..3 {
        let answer = router.chat(&hello("ignored")).await.unwrap();
        assert_eq!(answer.route, "test/gpt-test");
        assert!(answer.failed[0].1.is_rate_limited());
    }
    // Retry-After 7s exceeds the retry's 1s max delay: each "limited" call is tried once, and
    // throttling is not a provider failure, so its breaker stays closed.
    assert_eq!(seen.calls.load(Ordering::Relaxed), 6);
    assert!(!router.routes()[0].breaker().rejects_now());
    server.abort();
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_all_failures_are_reported() {
    let (base, seen, server) = start().await;
    let client = client(&base, |_| {}).with_key(ApiKey::new("sk-wrong").unwrap());
    let err = router(&client, &["a", "b"])
        .chat(&hello("x"))
        .await
        .unwrap_err();
    match &err {
        AiError::AllRoutesFailed { errors } => {
            assert_eq!(errors.len(), 2);
            assert_eq!(errors[0].0, "test/a");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.calls.load(Ordering::Relaxed), 2);
    server.abort();
}

#[tokio::test]
async fn a_hung_model_is_hedged_by_the_next_route() {
    let (base, _seen, server) = start().await;
    let client = client(&base, |c| c.timeout = Duration::from_secs(30));
    let router = router(&client, &["hang", "gpt-test"]).with_hedge(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let answer = router.chat(&hello("x")).await.unwrap();
    assert_eq!(answer.route, "test/gpt-test");
    assert!(started.elapsed() < Duration::from_secs(30));
    server.abort();
}

#[tokio::test]
async fn the_deadline_stops_the_chain() {
    let (base, _seen, server) = start().await;
    let client = client(&base, |_| {});
    let router = router(&client, &["hang", "gpt-test"]);
    let deadline = rampart_resilience::timeout::Deadline::after(Duration::from_millis(100));
    let err = deadline.scope(router.chat(&hello("x"))).await.unwrap_err();
    match &err {
        AiError::AllRoutesFailed { errors } => {
            assert!(errors[0].1.is_timeout(), "{err}");
            // The deadline passed during the first route: the second was not tried.
            assert!(errors.len() <= 2, "{err}");
            assert!(errors.iter().all(|(_, e)| e.is_timeout()), "{err}");
        }
        other => panic!("{other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn a_next_dropped_while_waiting_loses_no_chunk() {
    let (base, seen, server) = start().await;
    let client = client(&base, |_| {});
    let mut stream = client.chat_stream(&hello("gated")).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().text(), "Hel");
    // Nothing more comes until the gate opens: this `next` is dropped mid-way.
    let dropped = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
    assert!(dropped.is_err());
    seen.gate.notify_one();
    let mut rest = String::new();
    while let Some(chunk) = stream.next().await {
        rest.push_str(chunk.unwrap().text());
    }
    assert_eq!(rest, "lo");
    server.abort();
}

#[tokio::test]
async fn a_streamed_chat_and_embeddings_fall_back_through_the_router() {
    let (base, _seen, server) = start().await;
    let client = client(&base, |_| {});
    let router = router(&client, &["broken", "gpt-test"]);
    let routed = router.chat_stream(&hello("x")).await.unwrap();
    assert_eq!(routed.route, "test/gpt-test");
    let (text, usage) = routed.value.collect_text().await.unwrap();
    assert_eq!(text, "Hello");
    assert_eq!(usage.unwrap().total_tokens, 11);
    let routed = router
        .embeddings(&EmbeddingRequest::new("x", vec!["a".into()]))
        .await
        .unwrap();
    // The stream's two failed attempts opened the broken route's breaker: it is skipped.
    assert_eq!(routed.route, "test/gpt-test");
    assert!(matches!(routed.failed[0].1, AiError::BreakerOpen { .. }));
    assert_eq!(routed.value.data.len(), 1);
    server.abort();
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_a_stream_cut_with_its_cause() {
    let (base, seen, server) = start().await;
    let client = client(&base, |_| {});
    let mut stream = client.chat_stream(&hello("reset")).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().text(), "Hel");
    seen.gate.notify_one();
    let err = stream.next().await.unwrap().unwrap_err();
    match &err {
        AiError::StreamCut { events, source, .. } => {
            assert_eq!(*events, 1);
            assert!(source.is_some(), "{err:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
    assert!(stream.next().await.is_none());
    server.abort();
}

#[tokio::test]
async fn with_max_wait_a_call_waits_for_the_reset_the_provider_announced() {
    let (base, seen, server) = start().await;
    let waiting = client(&base, |c| {
        c.requests_per_minute = Some(1000);
        c.max_wait = Duration::from_secs(10);
    });
    waiting.chat(&hello("last-one")).await.unwrap();
    let started = std::time::Instant::now();
    let answer = waiting.chat(&hello("gpt-test")).await.unwrap();
    assert_eq!(answer.text(), "Hello");
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );

    // Without max_wait the same situation is refused at once, locally.
    let refusing = client(&base, |c| c.requests_per_minute = Some(1000));
    refusing.chat(&hello("last-one")).await.unwrap();
    let err = refusing.chat(&hello("gpt-test")).await.unwrap_err();
    assert!(
        matches!(err, AiError::RateLimited { local: true, .. }),
        "{err}"
    );
    assert_eq!(seen.calls.load(Ordering::Relaxed), 3);
    server.abort();
}

#[tokio::test]
async fn a_router_from_configuration_falls_back_across_providers() {
    let (base, seen, server) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-test\n").unwrap();
    let config: ModelRouterConfig = toml::from_str(&format!(
        r#"
        routes = ["primary/broken", "backup/gpt-test"]
        [providers.primary]
        base_url = "{base}"
        api_key_file = "{key}"
        [providers.backup]
        base_url = "{base}"
        api_key_file = "{key}"
        tokens_per_minute = 10000
        [breaker]
        window = "consecutive"
        consecutive_failures = 1
        wait_in_open = "60s"
        [retry]
        max_attempts = 2
        base_delay = "1ms"
        "#,
        key = key.display()
    ))
    .unwrap();
    let router = config.build("ai", &Events::new()).unwrap();
    let answer = router.chat(&hello("x")).await.unwrap();
    assert_eq!(answer.route, "backup/gpt-test");
    // One failure opened the primary's breaker: its retry was refused by the breaker.
    assert_eq!(seen.calls.load(Ordering::Relaxed), 2);
    assert!(router.routes()[0].breaker().rejects_now());
    server.abort();
}

#[test]
fn router_configuration_reports_every_problem_with_its_path() {
    let config: ModelRouterConfig = toml::from_str(
        r#"
        routes = ["nope/m", "justamodel", "p/"]
        hedge_after = "0s"
        [providers.p]
        base_url = "not a url"
        [retry]
        max_attempts = 0
        "#,
    )
    .unwrap();
    let err = config.build("ai", &Events::new()).unwrap_err().to_string();
    for path in [
        "ai.routes[0]",
        "ai.routes[1]",
        "ai.routes[2]",
        "ai.hedge_after",
        "ai.providers.p.base_url",
        "ai.retry.max_attempts",
    ] {
        assert!(err.contains(path), "{path} missing in {err}");
    }
    assert!(toml::from_str::<ModelRouterConfig>("routes = []\n[providers]\nx = 1").is_err());
}
