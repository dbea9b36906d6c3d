//! MQTT: a managed client over `rumqttc` that reconnects by itself, and a health check.
//!
//! [`MqttConfig`] names the broker, the client id, keepalive, clean or persistent session, the
//! in-flight limit, the reconnect backoff and the circuit breaker on connect.
//! [`MqttConfig::connect`] validates it and starts a [`MqttClient`]: a task of its own drives the
//! connection, so the client connects in the background and keeps doing so:
//!
//! - **Reconnects with full-jitter exponential backoff.** After a failed connect or a lost
//!   connection the client waits `uniform(0, min(max_delay, base_delay * multiplier^n))` (from
//!   [`rampart_resilience::retry::Backoff`]) before its `n`th retry in a row. The randomness comes
//!   from a per-client RNG seeded from the client id (or [`MqttConfig::jitter_seed`]), so a fleet
//!   of clients that lost the same broker spreads its reconnects instead of storming it, and a
//!   test can check the spread exactly.
//! - **A circuit breaker on connect** ([`rampart_resilience::breaker::CircuitBreaker`], by default
//!   five failures in a row open it for 10 s): while it is open no connect is attempted at all.
//! - **Subscriptions survive reconnects.** Every filter subscribed through the client is kept and
//!   subscribed again whenever the broker did not keep the session.
//! - **In-flight limit.** At most [`MqttConfig::inflight`] QoS 1/2 publishes await their
//!   acknowledgement; more wait (and so do their callers once the request queue is full).
//! - **Connection state and events.** [`MqttClient::state`] and [`MqttClient::events`] tell
//!   what the connection is doing: connecting, connected, disconnected, backing off (with the
//!   delay chosen), refused by the breaker.
//!
//! Incoming messages arrive on the [`Messages`] returned with the client, in order, through a
//! bounded queue: when nobody reads them the connection stops reading from the broker.
//!
//! Plain TCP (`mqtt://host:port`) or TLS (`mqtts://host:port`, rustls with the ring provider; the
//! server's certificate is checked against [`MqttConfig::ca_file`] or the Mozilla roots). Client
//! certificates are not supported yet.
//!
//! ```no_run
//! use std::time::Duration;
//! use rampart_connect::mqtt::{MqttConfig, QoS};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MqttConfig::new("mqtt://127.0.0.1:1883", "gateway-7");
//! let (client, mut messages) = config.connect("mqtt")?;
//! client.wait_connected(Duration::from_secs(5)).await?;
//! client.subscribe("sensors/+/temperature", QoS::AtLeastOnce).await?;
//! client.publish("sensors/hall/temperature", QoS::AtLeastOnce, false, "21.5").await?;
//! if let Some(message) = messages.recv().await {
//!     println!("{} = {:?}", message.topic, message.payload);
//! }
//! client.disconnect().await;
//! # Ok(()) }
//! ```

mod client;
mod config;
mod health;
pub mod registry;

pub use client::{ConnectionEvent, ConnectionState, Message, Messages, MqttClient};
pub use config::{LastWillConfig, MqttConfig, ReconnectConfig};
pub use health::{MqttHealth, mqtt_health};
pub use rumqttc::QoS;

use std::time::Duration;

/// What can go wrong with the managed MQTT client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// The configuration is invalid; every problem is listed with its key path.
    #[error(transparent)]
    Config(#[from] rampart_resilience::ConfigError),
    /// The client was not connected within the time given.
    #[error("not connected to the broker within {0:?}")]
    NotConnected(Duration),
    /// The client's connection task has stopped (after [`MqttClient::disconnect`]).
    #[error("the MQTT client is closed")]
    Closed,
    /// A request could not be queued for the connection.
    #[error("mqtt request failed: {0}")]
    Request(#[from] rumqttc::ClientError),
    /// The health check's message did not come back in time.
    #[error("the health check's message did not come back within {0:?}")]
    RoundTripTimeout(Duration),
}
