//! `/metrics`, and the monitor's own gauges.

use std::sync::{Arc, PoisonError, RwLock, Weak};

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use rampart_telemetry::snapshot::{MetricKind, MetricsWriter, Value};
use rampart_telemetry::{Labels, Telemetry};

use crate::{Current, ServerState};

/// Registers the score of each target, the number of targets in each state, and the monitor's
/// counters (runs skipped, store write failures, stale results dropped). The collector
/// holds the state weakly: once the server is gone it writes nothing.
pub(crate) fn register(telemetry: &Telemetry, current: &Arc<RwLock<Current>>) {
    let current: Weak<RwLock<Current>> = Arc::downgrade(current);
    telemetry.register_collector(move |out: &mut MetricsWriter<'_>| {
        let Some(current) = current.upgrade() else {
            return;
        };
        let monitor = Arc::clone(
            &current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .monitor,
        );
        let summary = monitor.summary();
        let mut scores = out.family(
            "rampart_monitor_target_score",
            "Health score of each target, 0 to 100 (absent before its first result).",
            MetricKind::Gauge,
            None,
        );
        for t in &summary.targets {
            if let Some(score) = t.score {
                let labels = Labels::new().with("target", t.name.clone());
                scores.series(labels, Value::Gauge(f64::from(score)));
            }
        }
        let mut states = out.family(
            "rampart_monitor_targets",
            "Targets in each health state.",
            MetricKind::Gauge,
            None,
        );
        for (state, count) in &summary.counts {
            let labels = Labels::new().with("state", state.as_str());
            states.series(labels, Value::Gauge(*count as f64));
        }
        let counters = [
            (
                "rampart_monitor_skipped_runs",
                "Probe runs skipped because the target's previous probe was still running or its \
                 result was still waiting to be stored.",
                monitor.skipped_runs(),
            ),
            (
                "rampart_monitor_store_failures",
                "History store writes that failed and were retried.",
                monitor.store_failures(),
            ),
            (
                "rampart_monitor_stale_results",
                "Results dropped because their target was removed or restarted before they were \
                 stored.",
                monitor.stale_results(),
            ),
        ];
        for (name, help, value) in counters {
            out.family(name, help, MetricKind::Counter, None)
                .series(Labels::new(), Value::Counter(value as f64));
        }
    });
}

pub(crate) async fn scrape(State(s): State<ServerState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let scrape = rampart_telemetry::export::prometheus::scrape(&s.telemetry, accept);
    ([(header::CONTENT_TYPE, scrape.content_type())], scrape.body)
}
