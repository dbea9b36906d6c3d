//! A throwaway Redis server.

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::instance::{Instance, Probe};
use super::process::{Launch, find_program};
use super::{ServerConfig, ServerError, lifecycle_methods};

const SERVER: &str = "redis";
const PACKAGE: &str = "redis-server";
const BINARY: &str = "redis-server";

/// A throwaway Redis server on a free port, without persistence (`--save "" --appendonly no`):
/// its keys are lost when it is killed or restarted.
#[derive(Debug)]
pub struct Redis {
    instance: Instance,
}

impl Redis {
    /// Starts a server on a free port with the default [`ServerConfig`], returning once it answers
    /// `PING`.
    ///
    /// # Errors
    /// [`ServerError::MissingBinary`] when `redis-server` is not installed; otherwise when it does
    /// not become ready in time (the error quotes its log).
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Like [`start`](Self::start), with the given settings.
    ///
    /// # Errors
    /// As for [`start`](Self::start).
    pub async fn start_with(config: ServerConfig) -> Result<Self, ServerError> {
        let program = find_program(BINARY).ok_or(ServerError::MissingBinary {
            server: SERVER,
            binary: BINARY.to_owned(),
            package: PACKAGE,
        })?;
        let dir = TempDir::with_prefix("rampart-redis-").map_err(|source| ServerError::Setup {
            server: SERVER,
            what: "temp dir".to_owned(),
            source,
        })?;
        let cwd = dir.path().to_owned();
        let log = cwd.join("redis.log");
        let instance = Instance::start(dir, Probe::Redis, config, |port| {
            let port = port.to_string();
            let args = [
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ]
            .into_iter()
            .map(Into::into)
            .chain([cwd.clone().into_os_string()])
            .collect();
            Ok(Launch {
                server: SERVER,
                program: program.clone(),
                args,
                cwd: cwd.clone(),
                log: log.clone(),
                run_as: None,
            })
        })
        .await?;
        Ok(Self { instance })
    }

    lifecycle_methods!();

    /// The server's URL: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }
}

/// Ready when `PING` gets `+PONG` (not `-LOADING`).
pub(crate) async fn probe(port: u16) -> bool {
    let ping = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    ping.await.unwrap_or(false)
}
