//! Probe results as telemetry operations: every result the monitor reports is recorded as the
//! operation `probe` with the label `target`, so `/metrics` has `rampart_operation_*` series per
//! target (latency, outcome). Probes know nothing of telemetry; this follows
//! [`Monitor::subscribe_results`](rampart_monitor::Monitor::subscribe_results).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rampart_telemetry::{Labels, Operation, Outcome};
use tokio::sync::broadcast::error::RecvError;

use crate::ServerState;

/// The operation name probes are recorded under.
pub const PROBE_OPERATION: &str = "probe";

/// How often the monitor is checked for having been replaced.
const REPLACED_CHECK: Duration = Duration::from_millis(200);

/// Records every probe result of the monitor `state` runs (following it as writes and reloads
/// replace it) into `state`'s telemetry, until the returned task is aborted.
pub fn record_probes(state: ServerState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ops: HashMap<String, Operation> = HashMap::new();
        let mut check = tokio::time::interval(REPLACED_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let monitor = state.monitor();
            let mut results = monitor.subscribe_results();
            loop {
                let received = tokio::select! {
                    r = results.recv() => r,
                    _ = check.tick() => {
                        // A write or a reload replaced the monitor: follow the new one. (The old
                        // one's channel closes only once every handle to it is gone.)
                        if Arc::ptr_eq(&state.monitor(), &monitor) {
                            continue;
                        }
                        break;
                    }
                };
                match received {
                    Ok(report) => {
                        let op = ops.entry(report.target.clone()).or_insert_with(|| {
                            state.telemetry.operation_with(
                                PROBE_OPERATION,
                                Labels::new().with("target", report.target.clone()),
                            )
                        });
                        let outcome = if report.result.is_success() {
                            Outcome::Success
                        } else {
                            Outcome::Error
                        };
                        op.record(report.result.latency, outcome);
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "probe metrics fell behind");
                    }
                    // That monitor is gone; wait for the next check to pick its successor.
                    Err(RecvError::Closed) => {
                        while Arc::ptr_eq(&state.monitor(), &monitor) {
                            check.tick().await;
                        }
                        break;
                    }
                }
            }
        }
    })
}
