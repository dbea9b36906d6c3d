//! Rampart's monitor: probe configured targets on a schedule and keep a health model of them.
//!
//! The pieces, in the order data flows through them:
//! - [`config`]: a TOML file of targets (`[[target]]`, optional `[defaults]`), validated with every
//!   problem reported at once with its key path;
//! - [`scheduler`]: each target on its own interval, first runs spread by a per-name offset, a
//!   global and a per-host concurrency limit, each probe its own task bounded by its timeout;
//! - [`probe`]: HTTP and HTTPS (phases: dns, connect, tls, first byte, body; status, body, regex
//!   and JSON pointer checks; redirects), TCP, TLS, DNS, PostgreSQL, Redis and MQTT probes, model
//!   servers (TensorFlow Serving, TorchServe, KServe v2: readiness and versions), with typed
//!   failure kinds; [`heartbeat`] for jobs that report in instead of being probed;
//! - [`health`]: a state machine per target (unknown, healthy, degraded, recovering, unhealthy,
//!   unreachable through a parent), a score 0–100, weighted group and overall scores, and typed
//!   [`StateChange`](health::StateChange) events;
//! - [`store`]: the history (results, state changes, incidents, rollups) in SQLite, written
//!   before a result is published and read back to restore every target after a restart;
//! - [`Monitor`]: all of them wired together; [`Monitor::reconfigure`] follows a new
//!   configuration target by target (unchanged targets keep running untouched).
//!
//! The guide is `docs/monitor.md`.
//!
//! ```
//! use std::time::Duration;
//! use rampart_monitor::Monitor;
//! use rampart_monitor::config::MonitorConfig;
//! use rampart_monitor::health::HealthState;
//! use rampart_monitor::probe::FailureKind;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A port that nothing listens on.
//! let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
//! let config = MonitorConfig::from_str(
//!     &format!(
//!         r#"
//!         [[target]]
//!         name = "cache"
//!         kind = "tcp"
//!         interval = "1s"
//!         timeout = "500ms"
//!         thresholds = {{ failures_to_unhealthy = 1 }}
//!         [target.tcp]
//!         address = "{closed}"
//!         "#
//!     ),
//!     Some("monitor.toml"),
//! )?;
//! let monitor = Monitor::start(&config);
//! let mut results = monitor.subscribe_results();
//! let report = results.recv().await?;
//! assert_eq!(report.result.failure_kind(), Some(FailureKind::ConnectRefused));
//! assert_eq!(monitor.state("cache"), Some(HealthState::Unhealthy));
//! assert_eq!(monitor.summary().overall, Some(0.0));
//! # Ok(())
//! # }
//! ```

pub mod alert;
pub mod config;
pub mod health;
pub mod heartbeat;
mod monitor;
pub mod probe;
pub mod scheduler;
pub mod store;

pub use monitor::{Monitor, Reconfiguration, ReconfigureError};

/// The user guide, `docs/monitor.md`: its examples run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/monitor.md")]
struct MonitorGuide;
