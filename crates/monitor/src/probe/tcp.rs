//! The TCP probe: can a connection be opened?

use std::time::Duration;

use tokio::time::Instant;

use super::{Probe, ProbeFuture, ProbeResult, connect};

/// Connects to `host:port` within the timeout, then closes the connection. Phases: dns, connect.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    address: String,
}

impl TcpProbe {
    /// A probe of `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        TcpProbe {
            address: address.into(),
        }
    }
}

impl Probe for TcpProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let mut result = ProbeResult::success(Duration::ZERO);
            match connect(&self.address, started + timeout, &mut result.phases).await {
                Ok((_stream, remote)) => result.details.remote = Some(remote),
                Err((kind, message)) => {
                    let phases = result.phases;
                    result = ProbeResult::failure(kind, message, Duration::ZERO);
                    result.phases = phases;
                }
            }
            result.latency = started.elapsed();
            result
        })
    }
}
