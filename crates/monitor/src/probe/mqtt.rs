//! The MQTT probe: connect, subscribe to a topic of its own, publish to it and wait for the
//! message to come back.

use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, SubscribeReasonCode,
};
use tokio::time::{Instant, timeout_at};

use super::{Failure, FailureKind, Probe, ProbeFuture, ProbeResult, conclude};
use crate::config::MqttCheck;

/// Requests the client may queue before the event loop takes them (the probe makes three).
const QUEUE: usize = 8;

/// Connects to the broker with a fresh client id (clean session, MQTT 3.1.1 over plain TCP, by
/// `rumqttc`), subscribes to `{topic}/{client id}` at QoS 1, publishes a message there at QoS 1
/// and waits for it to be delivered back, then disconnects. Phases: `connect` (TCP and
/// CONNECT/CONNACK), `query` (the round trip: publish to delivery).
///
/// Failures: `connect_refused`, `connect_timeout` (no CONNACK in time), `auth_failed` (CONNACK
/// "bad user name or password" or "not authorised", or a SUBACK refusing the subscription),
/// `connect` (another refusal or error),
/// `timeout` (connected, but no SUBACK or no message back in time: a broker that accepts but does
/// not route), `protocol` (the connection broke after CONNACK).
#[derive(Debug, Clone)]
pub struct MqttProbe {
    check: MqttCheck,
}

impl MqttProbe {
    /// A probe for `check`.
    pub fn new(check: MqttCheck) -> Self {
        MqttProbe { check }
    }

    fn options(&self, client_id: &str) -> Result<MqttOptions, Failure> {
        let (host, port) = self
            .check
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                (
                    FailureKind::Connect,
                    format!("bad address {:?}", self.check.address),
                )
            })?;
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_clean_session(true);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some(user) = &self.check.username {
            let password = self.check.password.as_ref().map_or("", |p| p.expose());
            options.set_credentials(user.clone(), password.to_owned());
        }
        Ok(options)
    }

    async fn run(&self, deadline: Instant, result: &mut ProbeResult) -> Result<(), Failure> {
        let client_id = format!("rampart-monitor-{}", unique());
        let topic = format!("{}/{client_id}", self.check.topic);
        let (client, mut events) = AsyncClient::new(self.options(&client_id)?, QUEUE);

        let started = Instant::now();
        loop {
            match timeout_at(deadline, events.poll()).await {
                Err(_) => {
                    return Err((
                        FailureKind::ConnectTimeout,
                        "no CONNACK within the timeout".to_owned(),
                    ));
                }
                Ok(Err(e)) => return Err(connect_failure(e)),
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
            }
        }
        result.phases.connect = Some(started.elapsed());

        let queued = |e: rumqttc::ClientError| (FailureKind::Protocol, format!("{e}"));
        client
            .subscribe(topic.as_str(), QoS::AtLeastOnce)
            .await
            .map_err(queued)?;
        let suback = wait(&mut events, deadline, "no SUBACK", |p| {
            matches!(p, Packet::SubAck(_))
        })
        .await?;
        if let Packet::SubAck(ack) = suback
            && ack.return_codes.contains(&SubscribeReasonCode::Failure)
        {
            return Err((
                FailureKind::AuthFailed,
                format!("broker refused the subscription to {topic}"),
            ));
        }

        let payload = format!("rampart-monitor probe {client_id}");
        let sent = Instant::now();
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .map_err(queued)?;
        wait(&mut events, deadline, "no message back", |p| {
            matches!(p, Packet::Publish(m) if m.topic == topic && m.payload == payload.as_bytes())
        })
        .await?;
        result.phases.query = Some(sent.elapsed());

        // A polite goodbye, within what is left of the timeout; the socket closes either way.
        if client.disconnect().await.is_ok() {
            let _ = timeout_at(deadline, async {
                while let Ok(event) = events.poll().await {
                    if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(())
    }
}

impl Probe for MqttProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let mut result = ProbeResult::success(Duration::ZERO);
            let outcome = self.run(started + timeout, &mut result).await;
            conclude(result, outcome, started)
        })
    }
}

/// Drives the event loop until an incoming packet matches `wanted`, and returns it.
async fn wait(
    events: &mut EventLoop,
    deadline: Instant,
    what: &str,
    wanted: impl Fn(&Packet) -> bool,
) -> Result<Packet, Failure> {
    loop {
        match timeout_at(deadline, events.poll()).await {
            Err(_) => {
                return Err((
                    FailureKind::Timeout,
                    format!("connected, but {what} within the timeout"),
                ));
            }
            Ok(Err(e)) => {
                return Err((
                    FailureKind::Protocol,
                    format!("connection lost ({what} yet): {e}"),
                ));
            }
            Ok(Ok(Event::Incoming(packet))) if wanted(&packet) => return Ok(packet),
            Ok(Ok(_)) => {}
        }
    }
}

/// The failure kind of an error before CONNACK.
fn connect_failure(error: ConnectionError) -> Failure {
    match error {
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (FailureKind::ConnectRefused, "connection refused".to_owned())
        }
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => (
            FailureKind::AuthFailed,
            format!("broker refused the connection: {code:?}"),
        ),
        ConnectionError::NetworkTimeout => (
            FailureKind::ConnectTimeout,
            "connecting timed out".to_owned(),
        ),
        other => (FailureKind::Connect, format!("cannot connect: {other}")),
    }
}

/// 16 hex digits that differ from probe to probe (a randomly keyed hash of the time), for client
/// ids and topics that no other client shares.
fn unique() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let hash = std::collections::hash_map::RandomState::new().hash_one(now);
    format!("{hash:016x}")
}
