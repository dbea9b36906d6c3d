//! Telemetry for Rampart: where the time goes, and which dependency got slow.
//!
//! - **Recording**: per-operation RED metrics (rate, errors, duration) on log-linear HDR-style
//!   histograms, recorded without locks or allocation into per-thread shards and merged on read;
//!   percentiles p50/p90/p99/p99.9/max over sliding windows (10 s, 1 m, 5 m) and since start
//!   ([`Operation`], [`Telemetry::instrument`], [`TelemetryLayer`]). Label cardinality is bounded:
//!   past a limit new label sets share an overflow series.
//! - **Collectors** write other metrics into every [`Snapshot`]: your own, and adapters over the
//!   policies' and pools' own counters.
//! - **Adapters** ([`adapt`]) turn the resilience policies', pools' and balancers' own stats and
//!   events into metrics.
//! - **Host, process, runtime and allocator metrics** ([`HostCollector`], [`ProcessCollector`],
//!   [`RuntimeCollector`], [`CountingAllocator`] with [`AllocCollector`]) show why a service is
//!   slow: CPU, memory, disks, network, the tokio workers' load, allocation churn.
//! - **Export** ([`export`]): Prometheus / OpenMetrics text for scrapes, OTLP over HTTP (feature
//!   `otlp`); every exporter reads a [`Snapshot`].
//! - **Detection** ([`detect`]): latency and error steps with the dependency responsible, slow
//!   trends over 1-minute rollups, and forecasts of exhaustion, from each tick's [`TickReport`].
//!
//! Time comes from `tokio::time`, so tests run on paused time.
//!
//! ```
//! use rampart_telemetry::{Telemetry, Window};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let telemetry = Telemetry::new();
//! let _ticker = telemetry.spawn_ticker();
//! let db = telemetry.operation("db.query");
//! for ms in 1..=100 {
//!     db.record_ok(Duration::from_millis(ms));
//! }
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let stats = db.stats();
//! let last_10s = stats.window(Window::TenSeconds);
//! assert_eq!(last_10s.count, 100);
//! let p99 = last_10s.p99.expect("recorded");
//! assert!(p99 >= Duration::from_millis(99) && p99 <= Duration::from_micros(100_600));
//! # }
//! ```

pub mod adapt;
mod alloc;
pub mod detect;
pub mod export;
pub mod histogram;
mod host;
mod labels;
mod layer;
mod operation;
mod runtime;
pub mod snapshot;
mod telemetry;

pub use alloc::{AllocCollector, AllocDelta, AllocStats, CountingAllocator};
pub use host::{HostCollector, HostConfig, HostError, ProcessCollector};

pub use labels::{Labels, OVERFLOW_LABEL};
pub use layer::{TelemetryLayer, TelemetryService};
pub use operation::{
    Instrumented, Operation, OperationInterval, OperationStats, Outcome, TICK, TickReport, Timer,
    Window, WindowStats,
};
pub use runtime::{RuntimeCollector, RuntimeSample};
pub use snapshot::{
    Collector, FamilyWriter, HistogramValue, MetricFamily, MetricKind, MetricsWriter, Series,
    Snapshot, Unit, Value,
};
pub use telemetry::{
    Counter, EXPORT_BUCKETS, Gauge, OVERFLOW_OPERATION, Telemetry, TelemetryConfig, Ticker,
};

#[cfg(doctest)]
#[doc = include_str!("../../../docs/telemetry.md")]
struct TelemetryGuide;
