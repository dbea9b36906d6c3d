//! Load testing for Rampart: `rampart load`.
//!
//! - Models: open (iterations arrive on a schedule, [`config::Model::Open`]) and closed (virtual
//!   users with think time), shaped by [`schedule::Stage`]s or a named [`profile::Profile`].
//! - Targets: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) over kept-alive connections
//!   (hyper); PostgreSQL queries and Redis commands (features `postgres` and `redis`).
//! - Scenarios from flags or TOML ([`config::ScenarioConfig`]), with variables, CSV data files
//!   and values extracted from JSON responses for later requests ([`template`]).
//! - Recording without per-request storage ([`record`]): per request name, latency from the
//!   intended send time (coordinated-omission corrected, as wrk2 does) and service time, errors
//!   by kind, a per-second series.
//! - [`threshold`]s judged over the run and over sliding windows; a [`report::Report`] as a table
//!   or JSON.
//!
//! ```
//! use rampart_load::config::ScenarioConfig;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart_load::LoadError> {
//! // A tiny keep-alive HTTP server to load.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
//! let addr = listener.local_addr().expect("addr");
//! tokio::spawn(async move {
//!     while let Ok((mut s, _)) = listener.accept().await {
//!         tokio::spawn(async move {
//!             let mut buf = [0u8; 1024];
//!             while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
//!                 let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
//!                 if s.write_all(ok).await.is_err() { break }
//!             }
//!         });
//!     }
//! });
//!
//! let scenario = ScenarioConfig::scenario_from_toml(
//!     &format!("url = \"http://{addr}/\"\nrate = 100\nduration = \"500ms\"\nthresholds = [\"error_rate<1%\"]\n"),
//!     None,
//!     None,
//! )?;
//! rampart_load::engine::preflight(&scenario, std::time::Duration::from_secs(1)).await?;
//! let report = rampart_load::engine::run(scenario, |_progress| {}).await;
//! assert_eq!(report.total.count, 50);
//! assert!(report.passed);
//! println!("{}", report.table());
//! # Ok(()) }
//! ```
//!
//! The guide is `docs/load.md`.

pub mod baseline;
pub mod cli;
pub mod config;
mod db;
pub mod engine;
mod error;
mod html;
mod http;
mod judge;
pub mod profile;
pub mod record;
pub mod report;
pub mod schedule;
pub mod template;
pub mod threshold;

pub use error::LoadError;
pub use http::HttpVersion;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/load.md")]
struct Guide;
