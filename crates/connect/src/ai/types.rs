//! The request and answer bodies of the OpenAI-compatible API, as far as Rampart needs them.
//! Fields it does not model are kept in `extra` (requests) or ignored (answers).

use serde::{Deserialize, Serialize};

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    #[serde(default)]
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage::new("user", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage::new("system", content)
    }
}

/// `POST /chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The most tokens the answer may have; also what the token limiter charges for the answer
    /// up front. `None` charges [`DEFAULT_MAX_COMPLETION_TOKENS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Other fields sent as they are (`top_p`, `tools`, `response_format`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What the token limiter charges up front for an answer whose request sets no `max_tokens`.
pub const DEFAULT_MAX_COMPLETION_TOKENS: u32 = 1024;

impl ChatRequest {
    /// A request to `model` with `messages` and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            max_tokens: None,
            temperature: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Sets `max_tokens`.
    #[must_use]
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// The tokens charged up front: the estimated prompt plus the most the answer may have.
    pub fn estimated_cost(&self) -> u32 {
        estimate_prompt_tokens(&self.messages)
            .saturating_add(self.max_tokens.unwrap_or(DEFAULT_MAX_COMPLETION_TOKENS))
    }
}

/// A cheap estimate of the tokens a prompt will count: a quarter of its characters, plus 4 per
/// message for the role and separators, rounded up.
///
/// OpenAI documents "about 4 characters per token" for English text; a real tokenizer would cost
/// more than the call's overhead budget and differs per model. The estimate only decides what is
/// charged up front: the answer's `usage` corrects it.
pub fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    let chars: usize = messages
        .iter()
        .map(|m| m.content.chars().count() + m.role.len())
        .sum();
    let tokens = chars.div_ceil(4) + 4 * messages.len();
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

/// Estimated tokens of embedding inputs: a quarter of their characters, rounded up.
pub fn estimate_input_tokens(input: &[String]) -> u32 {
    let chars: usize = input.iter().map(|s| s.chars().count()).sum();
    u32::try_from(chars.div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

/// Tokens an answer counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt (input).
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Tokens of the answer (output); absent for embeddings.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Both.
    #[serde(default)]
    pub total_tokens: u32,
}

/// One choice of a chat answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatChoice {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// The message.
    pub message: ChatMessage,
    /// Why generation stopped (`stop`, `length`, ...).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The answer of `POST /chat/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatResponse {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// The tokens counted, when the server says.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatResponse {
    /// The text of the first choice (empty if none).
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .map_or("", |c| c.message.content.as_str())
    }
}

/// The change a streamed chunk brings to one choice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatDelta {
    /// The role, in the first chunk.
    #[serde(default)]
    pub role: Option<String>,
    /// More text.
    #[serde(default)]
    pub content: Option<String>,
}

/// One choice of a streamed chunk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChunkChoice {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// What changed.
    #[serde(default)]
    pub delta: ChatDelta,
    /// Why generation stopped, in the last chunk of this choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One `data:` event of a streamed chat (`chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatChunk {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// The choices it changes (none in a usage-only chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// The tokens counted, in the last chunk when `stream_options.include_usage` is set.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatChunk {
    /// The text this chunk adds to the first choice (empty if none).
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.delta.content.as_deref())
            .unwrap_or("")
    }
}

/// `POST /embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingRequest {
    /// The model.
    pub model: String,
    /// The texts to embed.
    pub input: Vec<String>,
    /// Other fields sent as they are (`dimensions`, `encoding_format`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl EmbeddingRequest {
    /// A request to embed `input` with `model`.
    pub fn new(model: impl Into<String>, input: Vec<String>) -> Self {
        EmbeddingRequest {
            model: model.into(),
            input,
            extra: serde_json::Map::new(),
        }
    }
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Embedding {
    /// The index of its input.
    #[serde(default)]
    pub index: u32,
    /// The vector.
    pub embedding: Vec<f32>,
}

/// The answer of `POST /embeddings`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EmbeddingResponse {
    /// One per input.
    pub data: Vec<Embedding>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The tokens counted.
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_a_quarter_of_the_characters_plus_four_per_message() {
        let messages = vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("x".repeat(100)),
        ];
        // ("be brief" + "system") 14 + ("x"*100 + "user") 104 = 118 chars -> 30, + 8.
        assert_eq!(estimate_prompt_tokens(&messages), 38);
        let request = ChatRequest::new("m", messages).max_tokens(50);
        assert_eq!(request.estimated_cost(), 88);
        let request = ChatRequest::new("m", vec![]);
        assert_eq!(request.estimated_cost(), DEFAULT_MAX_COMPLETION_TOKENS);
    }

    #[test]
    fn extra_fields_are_sent_and_unset_ones_are_not() {
        let mut request = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
        request.extra.insert("top_p".into(), serde_json::json!(0.5));
        let body = serde_json::to_value(&request).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 0.5})
        );
    }
}
