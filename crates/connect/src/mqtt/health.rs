//! The MQTT health check: connect, then a publish/subscribe round trip on a topic of its own.

use std::time::Duration;

use rumqttc::QoS;
use tokio::time::Instant;

use super::{MqttConfig, MqttError};

/// What [`mqtt_health`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttHealth {
    /// From start to CONNACK.
    pub connect_latency: Duration,
    /// From publishing to the message coming back.
    pub round_trip: Duration,
    /// The topic used, unique to this check.
    pub topic: String,
}

/// Connects with `config` (under a client id of its own, `{client_id}-health-{random}`, clean
/// session, no last will, no reconnects), subscribes to `rampart/health/{that id}`, publishes a
/// QoS 1 message there and waits for it to come back; then disconnects. Everything must be done
/// within `timeout`.
///
/// # Errors
/// [`MqttError::Config`] for an invalid configuration, [`MqttError::NotConnected`] when the broker
/// does not accept the connection in time, [`MqttError::RoundTripTimeout`] when the message does
/// not come back.
pub async fn mqtt_health(config: &MqttConfig, timeout: Duration) -> Result<MqttHealth, MqttError> {
    let start = Instant::now();
    let mut config = config.clone();
    config.client_id = format!(
        "{}-health-{:016x}",
        config.client_id.chars().take(80).collect::<String>(),
        fastrand::u64(..)
    );
    config.clean_session = true;
    config.last_will = None;
    // One attempt: a failed connect is reported, not retried.
    config.reconnect.base_delay = timeout;
    config.reconnect.max_delay = timeout;
    let topic = format!("rampart/health/{}", config.client_id);
    let (client, mut messages) = config.connect("mqtt.health")?;
    client.wait_connected(timeout).await?;
    let connect_latency = start.elapsed();
    client.subscribe(topic.clone(), QoS::AtLeastOnce).await?;
    let sent = Instant::now();
    client
        .publish(topic.clone(), QoS::AtLeastOnce, false, "ping")
        .await?;
    let remaining = timeout.saturating_sub(start.elapsed());
    let back = tokio::time::timeout(remaining, async {
        while let Some(message) = messages.recv().await {
            if message.topic == topic {
                return true;
            }
        }
        false
    })
    .await;
    let round_trip = sent.elapsed();
    client.disconnect().await;
    match back {
        Ok(true) => Ok(MqttHealth {
            connect_latency,
            round_trip,
            topic,
        }),
        Ok(false) => Err(MqttError::Closed),
        Err(_) => Err(MqttError::RoundTripTimeout(timeout)),
    }
}
