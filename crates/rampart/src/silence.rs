//! `rampart silence add|list|expire`: silences through a running daemon's API. The write token
//! comes from `RAMPART_TOKEN` or `--token-file`, never from the command line (where `ps` shows
//! it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Failure;

/// How long the daemon has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `rampart silence`.
#[derive(Debug, Args)]
pub(crate) struct SilenceArgs {
    /// The daemon's address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A file holding the write token (else `RAMPART_TOKEN`).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: SilenceCommand,
}

#[derive(Debug, Subcommand)]
enum SilenceCommand {
    /// Silence alerts matching every `--matcher` for `--duration` (or until `--until`).
    Add {
        /// `label=value`, `label!=value`, `label=~regex` or `label!~regex`; repeat for more.
        #[arg(long = "matcher", short, required = true)]
        matchers: Vec<String>,
        /// How long, like `2h` or `30m`.
        #[arg(long, conflicts_with = "until")]
        duration: Option<String>,
        /// When it ends, RFC 3339 (`2026-12-01T06:00:00Z`).
        #[arg(long)]
        until: Option<String>,
        /// Who silences (default: `$USER`).
        #[arg(long)]
        author: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List silences: id, status, matchers, end, author, comment.
    List,
    /// End a silence now.
    Expire {
        /// Its id.
        id: String,
    },
}

/// Runs `rampart silence`.
pub(crate) fn run(args: SilenceArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    runtime.block_on(silence(args)).map_err(Failure::Runtime)
}

fn token(file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(std::env::var("RAMPART_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

async fn silence(args: SilenceArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let base = args.server.trim_end_matches('/');
    let token = token(args.token_file.as_ref())?;
    let authorized = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    match args.command {
        SilenceCommand::Add {
            matchers,
            duration,
            until,
            author,
            comment,
        } => {
            let created_by = author
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "rampart-cli".to_owned());
            let mut body =
                json!({ "matchers": matchers, "created_by": created_by, "comment": comment });
            match (duration, until) {
                (Some(d), None) => body["duration"] = json!(d),
                (None, Some(u)) => body["ends_at"] = json!(u),
                _ => bail!("give --duration or --until"),
            }
            let answer =
                send(authorized(client.post(format!("{base}/api/silences"))).json(&body)).await?;
            println!(
                "silence {} until {}",
                answer["id"].as_str().unwrap_or("?"),
                answer["ends_at"].as_str().unwrap_or("?")
            );
        }
        SilenceCommand::List => {
            let answer = send(client.get(format!("{base}/api/silences"))).await?;
            let empty = Vec::new();
            let list = answer["silences"].as_array().unwrap_or(&empty);
            if list.is_empty() {
                println!("no silences");
            }
            for s in list {
                let matchers: Vec<String> = s["matchers"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(|m| {
                        format!(
                            "{}{}{:?}",
                            m["name"].as_str().unwrap_or(""),
                            m["op"].as_str().unwrap_or(""),
                            m["value"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                println!(
                    "{}  {:8}  {}  until {}  by {}  {}",
                    s["id"].as_str().unwrap_or("?"),
                    s["status"].as_str().unwrap_or("?"),
                    matchers.join(","),
                    s["ends_at"].as_str().unwrap_or("?"),
                    s["created_by"].as_str().unwrap_or("?"),
                    s["comment"].as_str().unwrap_or("")
                );
            }
        }
        SilenceCommand::Expire { id } => {
            let answer = send(authorized(
                client.delete(format!("{base}/api/silences/{id}")),
            ))
            .await?;
            println!(
                "silence {} expired at {}",
                answer["id"].as_str().unwrap_or(&id),
                answer["ends_at"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// Sends `request`; a non-2xx answer is an error carrying the API's message.
async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.context("cannot reach the daemon")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("no message");
        bail!("the daemon answered {status}: {message}");
    }
    Ok(body)
}
