//! The OpenAI-compatible client against a server it did not write: `fakellm` (PyPI), a mock LLM
//! server that answers chat completions (whole and streamed) in the OpenAI format from rules, with
//! no model weights. `scripts/setup` installs it into `~/.cache/rampart/venv-ai`; the test skips
//! when it is absent unless `RAMPART_REQUIRE_SERVERS=1`.
//!
//! KServe's own OpenAI-compatible endpoints need vLLM (and PyTorch) installed, far too large
//! here; this is the real-server check of the wire format. The behaviours fakellm cannot produce
//! (rate-limit headers, `Retry-After`, a stream cut mid-way) are tested in `tests/ai.rs`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rampart_connect::ai::{AiError, ChatMessage, ChatRequest, OpenAiClient, OpenAiConfig};
use rampart_resilience::Events;
use tokio::process::{Child, Command};

const RULES: &str = r#"version: 1
defaults:
  fallback: deterministic_echo
rules:
  - name: greeting
    when:
      messages_contain: "hello"
    respond:
      content: "Hi there from a mock model"
  - name: throttled
    when:
      messages_contain: "throttle me"
    respond:
      status: 429
      error: "Rate limit exceeded (mock)"
  - name: broken
    when:
      messages_contain: "break"
    respond:
      status: 503
      error: "Service unavailable (mock)"
"#;

fn fakellm() -> Option<PathBuf> {
    let candidate = std::env::var_os("RAMPART_FAKELLM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/rampart/venv-ai/bin/fakellm"))
        })?;
    if candidate.exists() {
        return Some(candidate);
    }
    assert!(
        std::env::var("RAMPART_REQUIRE_SERVERS").as_deref() != Ok("1"),
        "fakellm is missing ({}) and RAMPART_REQUIRE_SERVERS=1: run scripts/setup",
        candidate.display()
    );
    eprintln!("skipped: fakellm not found (scripts/setup installs it)");
    None
}

#[allow(clippy::unwrap_used)] // a test helper
async fn start(bin: PathBuf, dir: &tempfile::TempDir) -> (Child, OpenAiClient) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rules = dir.path().join("fakellm.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--port", &port.to_string(), "--config"])
        .arg(&rules)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Listening when a TCP connection succeeds; a server that never starts fails after 60 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fakellm never listened"
        );
        assert!(child.try_wait().unwrap().is_none(), "fakellm exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut config = OpenAiConfig::new(format!("http://127.0.0.1:{port}/v1"));
    config.tokens_per_minute = Some(600);
    (child, config.build("fakellm", &Events::new()).unwrap())
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)]).max_tokens(50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streaming_and_errors_against_a_mock_openai_server() {
    let Some(bin) = fakellm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut child, client) = start(bin, &dir).await;

    let answer = client.chat(&ask("hello there")).await.unwrap();
    assert_eq!(answer.text(), "Hi there from a mock model");
    let usage = answer.usage.unwrap();
    assert!(
        usage.total_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    // 58 tokens were charged up front (estimate 8 + max_tokens 50); the usage corrected that.
    // Capacity only grows with time (10 tokens a second), so without the correction fewer than
    // 600 - usage would be available for the next 5 s.
    let available = client.limits().tokens().unwrap().available();
    assert!(available >= 600 - usage.total_tokens, "{available}");

    // Streamed word by word, ending with `data: [DONE]`.
    let mut stream = client.chat_stream(&ask("hello again")).await.unwrap();
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        text.push_str(chunk.unwrap().text());
        chunks += 1;
    }
    assert_eq!(text, "Hi there from a mock model");
    assert!(chunks >= 6, "{chunks} chunks");

    let err = client.chat(&ask("please throttle me")).await.unwrap_err();
    assert!(
        matches!(err, AiError::RateLimited { local: false, .. }),
        "{err}"
    );
    let err = client.chat(&ask("break now")).await.unwrap_err();
    match &err {
        AiError::Status { status: 503, .. } => assert!(err.is_retryable()),
        other => panic!("{other:?}"),
    }
    child.kill().await.unwrap();
}
