//! What Rampart adds to one OpenAI-compatible chat call: the same request to the same in-process
//! server, sent by plain `reqwest` (build JSON, POST, decode the answer) and by Rampart's
//! [`OpenAiClient`] (plus token estimate, requests/tokens-per-minute limits, header parsing,
//! usage correction, per-model telemetry) and [`ModelRouter`] (plus a breaker and a retry).
//!
//! Calls are interleaved (plain, client, router, plain, ...) so that machine noise hits all
//! sides alike; the overhead is the difference of medians. Run:
//!
//! ```sh
//! cargo run --release -p rampart-bench --example ai_overhead [CALLS]
//! ```
//!
//! Prints a table and writes `target/rampart-bench/ai_overhead.json`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use rampart_connect::ai::{
    ApiKey, ChatMessage, ChatRequest, ChatResponse, ModelRouter, OpenAiConfig, Route,
};
use rampart_resilience::Events;
use rampart_resilience::breaker::BreakerConfig;
use rampart_resilience::retry::RetryConfig;
use rampart_telemetry::Telemetry;
use serde_json::json;

async fn chat() -> impl axum::response::IntoResponse {
    (
        [
            ("x-ratelimit-remaining-requests", "4999"),
            ("x-ratelimit-remaining-tokens", "1999000"),
            ("x-ratelimit-reset-tokens", "6ms"),
        ],
        axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how can I help?"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
        })),
    )
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(v: &[Duration]) -> Duration {
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .map_or(3000, |s| s.parse().expect("CALLS is a number"));

    // The server on its own thread and runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new().route("/v1/chat/completions", post(chat));
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    let base = format!("http://{addr}/v1");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (plain, client, routed) = rt.block_on(async {
        let http = reqwest::Client::new();
        let telemetry = Telemetry::new();
        let mut config = OpenAiConfig::new(&base);
        config.requests_per_minute = Some(10_000_000);
        config.tokens_per_minute = Some(1_000_000_000);
        let client = config
            .build("bench", &Events::new())
            .unwrap()
            .with_key(ApiKey::new("sk-bench").unwrap())
            .with_telemetry(&telemetry);
        let route = Route::new(
            client.clone(),
            "m",
            &BreakerConfig::consecutive(5, Duration::from_secs(30)),
            &Events::new(),
        )
        .unwrap();
        let retry: RetryConfig = toml::from_str("max_attempts = 2").unwrap();
        let router =
            ModelRouter::new(vec![route]).with_retry(retry.build("bench", &Events::new()).unwrap());
        let request = ChatRequest::new(
            "m",
            vec![
                ChatMessage::system("You are terse."),
                ChatMessage::user("Say hello to the benchmark, please."),
            ],
        )
        .max_tokens(64);

        let mut plain = Vec::with_capacity(calls);
        let mut via_client = Vec::with_capacity(calls);
        let mut via_router = Vec::with_capacity(calls);
        for i in 0..calls + 200 {
            let t = Instant::now();
            let answer: ChatResponse = http
                .post(format!("{base}/chat/completions"))
                .bearer_auth("sk-bench")
                .json(&request)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let a = t.elapsed();
            assert_eq!(answer.usage.unwrap().total_tokens, 28);

            let t = Instant::now();
            let answer = client.chat(&request).await.unwrap();
            let b = t.elapsed();
            assert_eq!(answer.usage.unwrap().total_tokens, 28);

            let t = Instant::now();
            let answer = router.chat(&request).await.unwrap();
            let c = t.elapsed();
            assert_eq!(answer.route, "bench/m");

            // The first 200 rounds warm connections and caches.
            if i >= 200 {
                plain.push(a);
                via_client.push(b);
                via_router.push(c);
            }
        }
        (plain, via_client, via_router)
    });
    let (mut plain, mut client, mut routed) = (plain, client, routed);
    let (p, c, r) = (median(&mut plain), median(&mut client), median(&mut routed));
    let over = |x: Duration| x.as_secs_f64() * 1e6 - p.as_secs_f64() * 1e6;
    println!("ai_overhead: {calls} chat calls each, interleaved, in-process server over loopback");
    println!("| side | median | p99 | overhead vs plain reqwest (median) |");
    println!("| --- | --- | --- | --- |");
    println!("| plain reqwest | {p:?} | {:?} | - |", p99(&plain));
    println!(
        "| OpenAiClient (limits + telemetry) | {c:?} | {:?} | {:+.1} us |",
        p99(&client),
        over(c)
    );
    println!(
        "| ModelRouter (+ breaker + retry) | {r:?} | {:?} | {:+.1} us |",
        p99(&routed),
        over(r)
    );
    let json = json!({
        "bench": "ai_overhead",
        "rows": [
            {"case": "client_overhead_median", "rampart": over(c), "unit": "us", "target": 1000.0},
            {"case": "router_overhead_median", "rampart": over(r), "unit": "us", "target": 1000.0},
            {"case": "plain_reqwest_median", "rampart": p.as_secs_f64() * 1e6, "unit": "us"},
        ]
    });
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned()),
    )
    .join("rampart-bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ai_overhead.json"), json.to_string()).unwrap();
}
