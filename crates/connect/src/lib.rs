//! Connectors for Rampart: a [`rampart_pool::Manager`] and a health check per backend, one cargo
//! feature each.
//!
//! | feature | module | what it gives |
//! | --- | --- | --- |
//! | `postgres` | [`postgres`] | `PgManager` over tokio-postgres, `pg_health` (version, primary or replica, latency) |
//! | `redis` | [`redis`] | `RedisManager` over the `redis` crate, `redis_health` (version, master or replica, memory, latency) |
//! | `ai` | [`ai`] | `OpenAiClient` (chat, streaming, embeddings) with requests/tokens-per-minute limits, `ModelRouter` (breaker, retry, fallback), model server health (TF Serving, TorchServe, KServe v2) |
//! | `coap` | [`coap`] | `CoapClient` over `coap-lite` and tokio UDP: RFC 7252 retransmission, Block2/Block1, observe, ping |
//! | `mqtt` | [`mqtt`] | `MqttClient` over `rumqttc`: reconnects with seeded full-jitter backoff, breaker on connect, resubscribes; `mqtt_health` (publish/subscribe round trip) |
//!
//! No feature is on by default. Connections are plain TCP: TLS (rustls) for PostgreSQL and Redis
//! is not part of this crate yet; the `ai` client speaks HTTPS with rustls (webpki roots). The
//! AI guide is `docs/ai.md`.
//!
//! Each connector has an `XConfig` (TOML-friendly, unknown keys refused, durations as `"5s"`)
//! that validates into its manager; the manager goes into a [`rampart_pool::PoolConfig`] to make
//! a pool, and the health function is what `rampart serve` uses as a probe.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # mod example {
//! use rampart_connect::postgres::{PgConfig, PgError, pg_health};
//! use rampart_pool::{PoolConfig, PoolEvents};
//!
//! async fn run() -> Result<(), Box<dyn std::error::Error>> {
//!     let manager = PgConfig::new("postgres://postgres@127.0.0.1:5432/postgres").build("db")?;
//!     let pool = PoolConfig { max_size: 16, ..PoolConfig::default() }
//!         .build("db", manager, &PoolEvents::new())?;
//!
//!     let mut conn = pool.acquire().await?;
//!     match conn.query_one("SELECT 1 + 1", &[]).await {
//!         Ok(row) => assert_eq!(row.get::<_, i32>(0), 2),
//!         // A broken connection is closed instead of going back to the pool.
//!         Err(e) => {
//!             conn.observe(&PgError::from(e));
//!         }
//!     }
//!     let health = pg_health(&conn).await?;
//!     println!("postgresql {} ({}) in {:?}", health.server_version, health.role, health.latency);
//!     drop(conn);
//!     pool.close(std::time::Duration::from_secs(5)).await;
//!     Ok(())
//! }
//! # }
//! # fn main() {}
//! ```

#[cfg(feature = "ai")]
pub mod ai;
#[cfg(feature = "coap")]
pub mod coap;
mod duration;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "postgres")]
pub mod postgres;
mod redact;
#[cfg(feature = "redis")]
pub mod redis;

/// The user guide, `docs/connectors.md`: its examples compile as doc tests so they stay true.
#[cfg(all(doctest, feature = "postgres", feature = "redis"))]
#[doc = include_str!("../../../docs/connectors.md")]
struct ConnectorsGuide;

/// The AI guide, `docs/ai.md`: its examples compile (and the offline ones run) as doc tests.
#[cfg(all(doctest, feature = "ai"))]
#[doc = include_str!("../../../docs/ai.md")]
struct AiGuide;
/// The IoT guide, `docs/iot.md`: its examples compile (and the pure ones run) as doc tests.
#[cfg(all(doctest, feature = "mqtt", feature = "coap"))]
#[doc = include_str!("../../../docs/iot.md")]
struct IotGuide;
