//! What every throwaway server shares: a free port, a temp dir, a supervised process, readiness.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::{Instant, sleep, timeout};

use super::process::{Launch, POLL_INTERVAL, Supervised};
use super::{ServerConfig, ServerError};
use super::{mosquitto, postgres, redis};

/// How many fresh ports a first start tries when the port it picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 4;
/// The longest one readiness probe may take; a probe that hangs is retried until the deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How to tell that a server is ready for clients.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Probe {
    /// A PostgreSQL startup that reaches ReadyForQuery (a TCP connect succeeds while the server is
    /// still starting up or recovering).
    Postgres,
    /// A Redis `PING` answered with `+PONG`.
    Redis,
    /// An MQTT CONNECT answered with an accepting CONNACK.
    Mqtt,
}

impl Probe {
    async fn ready(self, port: u16) -> bool {
        let check = async {
            match self {
                Self::Postgres => postgres::probe(port).await,
                Self::Redis => redis::probe(port).await,
                Self::Mqtt => mosquitto::probe(port).await,
            }
        };
        timeout(PROBE_TIMEOUT, check).await.unwrap_or(false)
    }
}

/// One running (or killed) server with its port and directory.
#[derive(Debug)]
pub(crate) struct Instance {
    port: u16,
    probe: Probe,
    config: ServerConfig,
    // Declared before `dir` so that the process is killed before its directory is removed.
    process: Supervised,
    dir: TempDir,
}

impl Instance {
    /// Starts a server on a free port, trying another port when the one picked was taken by
    /// someone else between choosing it and the server binding it.
    pub(crate) async fn start(
        dir: TempDir,
        probe: Probe,
        config: ServerConfig,
        mut launch_on: impl FnMut(u16) -> Result<Launch, ServerError>,
    ) -> Result<Self, ServerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let mut process = Supervised::new(launch_on(port)?);
            process.spawn()?;
            match wait_ready(&mut process, port, probe, config.ready_timeout).await {
                Ok(()) => {
                    return Ok(Self {
                        port,
                        probe,
                        config,
                        process,
                        dir,
                    });
                }
                Err(e) if e.is_address_in_use() && attempt < PORT_ATTEMPTS => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub(crate) fn log(&self) -> String {
        self.process.log_since_start()
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub(crate) async fn kill(&mut self) -> Result<(), ServerError> {
        self.process.kill().await
    }

    pub(crate) fn pause(&self) -> Result<(), ServerError> {
        self.process.pause()
    }

    pub(crate) fn resume(&self) -> Result<(), ServerError> {
        self.process.resume()
    }

    /// Kills the server if it runs (waiting until it has exited), then starts it again on the same
    /// port and directory and waits until it is ready.
    pub(crate) async fn restart(&mut self) -> Result<(), ServerError> {
        self.process.kill().await?;
        self.process.spawn()?;
        wait_ready(
            &mut self.process,
            self.port,
            self.probe,
            self.config.ready_timeout,
        )
        .await
    }
}

/// Polls until the server answers its probe, it exits, or `within` has passed.
async fn wait_ready(
    process: &mut Supervised,
    port: u16,
    probe: Probe,
    within: Duration,
) -> Result<(), ServerError> {
    let started = Instant::now();
    let deadline = started + within;
    loop {
        if let Some(status) = process.try_exited() {
            return Err(ServerError::Exited {
                server: process.server(),
                port,
                status: status.to_string(),
                log: process.log_since_start(),
            });
        }
        if probe.ready(port).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ServerError::NotReady {
                server: process.server(),
                port,
                waited: started.elapsed(),
                log: process.log_since_start(),
            });
        }
        sleep(POLL_INTERVAL).await;
    }
}

/// A port on 127.0.0.1 that was free a moment ago. Another process may take it before the server
/// binds it; [`Instance::start`] retries with a new port when that happens.
fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| ServerError::Port { source })
}
