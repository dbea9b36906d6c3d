//! What a balancer reports about its endpoints.

use std::time::Duration;

use rampart_resilience::Name;

/// Where an endpoint stands in the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// In the rotation at full weight.
    Active,
    /// Out of the rotation until its ejection ends.
    Ejected,
    /// Back in the rotation, at a weight still ramping up.
    Ramping,
}

/// A snapshot of one endpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EndpointStats {
    /// The endpoint's name.
    pub name: Name,
    /// Leases handed out and not yet recorded or dropped.
    pub in_flight: usize,
    /// The peak EWMA latency as picks see it now: decayed since its last sample (it decays
    /// toward zero while the endpoint gets no traffic), failures counted as at least
    /// `failure_penalty`. `None` before the first sample (or after a readmission with no other
    /// endpoint to take an estimate from); a pick then costs the endpoint at zero while nothing is
    /// in flight.
    pub ewma: Option<Duration>,
    /// The same estimate as of its last sample, undecayed.
    pub ewma_raw: Option<Duration>,
    /// The peak EWMA of real latencies (failures without the penalty), undecayed: what the
    /// latency-outlier detector compares with the median of the others.
    pub latency: Option<Duration>,
    /// Where it stands in the rotation.
    pub state: EndpointState,
    /// The share of picks it takes part in: 1 when active, 0 when ejected, in between when ramping.
    pub weight: f64,
    /// How long until its ejection ends, while ejected.
    pub readmit_in: Option<Duration>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Ejections in total.
    pub ejections: u64,
    /// Times a pick chose it.
    pub picks: u64,
}

/// A snapshot of a balancer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BalancerStats {
    /// The balancer's name.
    pub name: Name,
    /// Every endpoint, in the order the balancer was built with.
    pub endpoints: Vec<EndpointStats>,
}

impl BalancerStats {
    /// The endpoint named `name`, if any.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointStats> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// How many endpoints are ejected now.
    pub fn ejected(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.state == EndpointState::Ejected)
            .count()
    }
}
