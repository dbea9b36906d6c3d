#![cfg(feature = "mqtt")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The managed MQTT client against real brokers: the machine's Mosquitto on 127.0.0.1:1883 for
//! QoS and the health check, throwaway ones from the test kit for kills and restarts.

use std::collections::HashMap;
use std::time::Duration;

use rampart_connect::mqtt::{
    ConnectionEvent, ConnectionState, Messages, MqttClient, MqttConfig, MqttError, QoS, mqtt_health,
};
use rampart_testkit::require_server;
use rampart_testkit::server::Mosquitto;
use tokio::time::timeout;

const LOCAL: &str = "mqtt://127.0.0.1:1883";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

async fn next_message(messages: &mut Messages, within: Duration) -> rampart_connect::mqtt::Message {
    timeout(within, messages.recv())
        .await
        .expect("no message in time")
        .expect("client closed")
}

/// Waits for the first event matching `pick`, at most `within`.
async fn wait_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    within: Duration,
    mut pick: impl FnMut(&ConnectionEvent) -> Option<T>,
) -> T {
    timeout(within, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(t) = pick(&event) {
                        return t;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("event did not come in time")
}

#[tokio::test]
async fn publish_and_subscribe_at_every_qos() {
    let id = unique("qos");
    let (client, mut messages) = MqttConfig::new(LOCAL, &id).connect("mqtt").unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    assert_eq!(client.state(), ConnectionState::Connected);
    let base = format!("rampart-test/{id}");
    client
        .subscribe(format!("{base}/#"), QoS::ExactlyOnce)
        .await
        .unwrap();
    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let topic = format!("{base}/q{n}");
        // QoS 0 may be published before the SUBACK; the broker handles a connection's packets
        // in order, so it is still delivered.
        client
            .publish(topic.clone(), qos, false, format!("m{n}"))
            .await
            .unwrap();
        let message = next_message(&mut messages, Duration::from_secs(5)).await;
        assert_eq!(message.topic, topic);
        assert_eq!(&message.payload[..], format!("m{n}").as_bytes());
        assert_eq!(message.qos, qos);
    }
    assert_eq!(client.subscriptions().len(), 1);
    client.disconnect().await;
}

#[tokio::test]
async fn health_check_round_trip_and_dead_broker() {
    let health = mqtt_health(&MqttConfig::new(LOCAL, "health"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(health.topic.starts_with("rampart/health/health-health-"));
    assert!(health.round_trip < Duration::from_secs(5));

    // A port nobody listens on: refused, so no connection within the deadline.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = mqtt_health(
        &MqttConfig::new(format!("mqtt://127.0.0.1:{port}"), "health"),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MqttError::NotConnected(_)), "{err:?}");
}

#[tokio::test]
async fn invalid_config_lists_problems() {
    let mut config = MqttConfig::new("http://x", "");
    config.inflight = 0;
    let err = config.connect("mqtt.a").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("mqtt.a.url")
            && text.contains("mqtt.a.client_id")
            && text.contains("mqtt.a.inflight"),
        "{text}"
    );
}

/// The breaker on connect opens after the configured failures in a row; then no attempt is made
/// until it lets one through.
#[tokio::test]
async fn breaker_opens_on_failed_connects() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = MqttConfig::new(format!("mqtt://127.0.0.1:{port}"), unique("breaker"));
    config.reconnect.base_delay = Duration::from_millis(5);
    config.reconnect.max_delay = Duration::from_millis(5);
    config.breaker =
        rampart_resilience::breaker::BreakerConfig::consecutive(3, Duration::from_secs(60));
    let (client, _messages) = config.connect("mqtt").unwrap();
    let mut events = client.events();
    let mut failures = 0;
    wait_event(&mut events, Duration::from_secs(10), |e| match e {
        ConnectionEvent::Disconnected { was_connected, .. } => {
            assert!(!was_connected);
            failures += 1;
            None
        }
        ConnectionEvent::BreakerOpen { .. } => Some(()),
        _ => None,
    })
    .await;
    assert!(failures >= 3, "{failures}");
    assert!(client.breaker().state().rejects());
    assert_eq!(client.state(), ConnectionState::Disconnected);
}

/// A broker killed and restarted: the client notices, backs off with its seeded delays,
/// reconnects by itself and subscribes again, so messages flow as before.
#[tokio::test]
async fn reconnects_and_resubscribes_after_broker_restart() {
    let mut broker = require_server!(Mosquitto::start().await);
    let mut config = MqttConfig::new(broker.url(), unique("survivor"));
    config.reconnect.base_delay = Duration::from_millis(50);
    config.reconnect.max_delay = Duration::from_millis(200);
    let expected = config.reconnect_delays(3);
    let (client, mut messages) = config.connect("mqtt").unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    client
        .subscribe("fleet/+/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut events = client.events();

    broker.kill().await.unwrap();
    wait_event(&mut events, Duration::from_secs(10), |e| {
        matches!(
            e,
            ConnectionEvent::Disconnected {
                was_connected: true,
                ..
            }
        )
        .then_some(())
    })
    .await;
    // Delays drawn while the broker is down are exactly the configuration's.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (retry, delay) = wait_event(&mut events, Duration::from_secs(10), |e| match e {
            ConnectionEvent::BackingOff { retry, delay } => Some((*retry, *delay)),
            _ => None,
        })
        .await;
        assert_eq!(retry as usize, seen.len());
        seen.push(delay);
    }
    assert_eq!(seen, expected);

    broker.restart().await.unwrap();
    let resubscribed = wait_event(&mut events, Duration::from_secs(10), |e| match e {
        ConnectionEvent::Connected { resubscribed, .. } => Some(*resubscribed),
        _ => None,
    })
    .await;
    assert_eq!(resubscribed, 1);

    let (other, _) = MqttConfig::new(broker.url(), unique("publisher"))
        .connect("mqtt")
        .unwrap();
    other.wait_connected(Duration::from_secs(5)).await.unwrap();
    other
        .publish("fleet/d1/status", QoS::AtLeastOnce, false, "up")
        .await
        .unwrap();
    let message = next_message(&mut messages, Duration::from_secs(5)).await;
    assert_eq!(message.topic, "fleet/d1/status");
    assert_eq!(&message.payload[..], b"up");
    other.disconnect().await;
    client.disconnect().await;
}

/// 300 clients lose their broker at once. Each reports the first delay it drew: they equal the
/// configuration's seeded delays and are spread over `[0, base_delay]` (no 100 ms bucket holds
/// more than 10 % of the fleet, where a uniform spread puts 5 %). After the restart every client
/// reconnects and subscribes again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_reconnects_spread_out_after_restart() {
    const CLIENTS: usize = 300;
    let mut broker = require_server!(Mosquitto::start().await);
    let mut configs = Vec::new();
    let mut clients: Vec<(MqttClient, Messages)> = Vec::new();
    for i in 0..CLIENTS {
        let mut config = MqttConfig::new(broker.url(), format!("fleet-{i}"));
        config.reconnect.base_delay = Duration::from_secs(2);
        config.reconnect.max_delay = Duration::from_secs(2);
        config.breaker.consecutive_failures = 1000;
        clients.push(config.connect("mqtt").unwrap());
        configs.push(config);
    }
    for (client, _) in &clients {
        client
            .wait_connected(Duration::from_secs(20))
            .await
            .unwrap();
        client
            .subscribe("fleet/all", QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let mut events: Vec<_> = clients.iter().map(|(c, _)| c.events()).collect();
    broker.kill().await.unwrap();

    let mut firsts = HashMap::new();
    for (i, ev) in events.iter_mut().enumerate() {
        let delay = wait_event(ev, Duration::from_secs(20), |e| match e {
            ConnectionEvent::BackingOff { retry: 0, delay } => Some(*delay),
            _ => None,
        })
        .await;
        assert_eq!(delay, configs[i].reconnect_delays(1)[0]);
        firsts.insert(i, delay);
    }
    let mut buckets = [0usize; 20];
    for d in firsts.values() {
        buckets[(d.as_millis() / 100).min(19) as usize] += 1;
    }
    let max = buckets.iter().max().copied().unwrap();
    assert!(
        max * 10 <= CLIENTS,
        "a 100 ms bucket holds {max}: {buckets:?}"
    );

    broker.restart().await.unwrap();
    for (i, (client, _)) in clients.iter().enumerate() {
        client
            .wait_connected(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
    }
    // Every client subscribed again: one message reaches them all.
    let (publisher, _) = MqttConfig::new(broker.url(), unique("announcer"))
        .connect("mqtt")
        .unwrap();
    publisher
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    // The resubscriptions are queued on CONNACK; publish until the last client has one.
    let mut got = vec![false; CLIENTS];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.iter().any(|g| !g) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all clients resubscribed"
        );
        publisher
            .publish("fleet/all", QoS::AtMostOnce, false, "hello")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, (_, messages)) in clients.iter_mut().enumerate() {
            while let Some(m) = messages.try_recv() {
                assert_eq!(m.topic, "fleet/all");
                got[i] = true;
            }
        }
    }
}

/// Waits until `check` holds, polling every 20 ms, at most `within`.
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 300 simulated devices, each its own connection with a last will, announce themselves; 20 of
/// them die without a DISCONNECT and their wills mark them offline at once (the heartbeat
/// interval is a minute, so nothing else could). Then the broker restarts: the registry's client
/// reconnects and subscribes again, the surviving devices announce again and are online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_tracks_a_fleet_with_last_wills() {
    use rampart_connect::mqtt::LastWillConfig;
    use rampart_connect::mqtt::registry::{DeviceState, RegistryConfig, RegistryHandle};

    const DEVICES: usize = 300;
    const KILLED: usize = 20;
    let mut broker = require_server!(Mosquitto::start().await);
    let mut config = RegistryConfig::new("devices/{group}/{id}/status");
    config.heartbeat_interval = Duration::from_secs(60);
    let (client, messages) = MqttConfig::new(broker.url(), "registry")
        .connect("mqtt")
        .unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let registry = RegistryHandle::spawn(config.build("registry").unwrap(), client, messages)
        .await
        .unwrap();

    let topic = |i: usize| format!("devices/g{}/d{i:03}/status", i % 3);
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let mut c = MqttConfig::new(broker.url(), format!("device-{i}"));
        c.reconnect.base_delay = Duration::from_millis(200);
        c.last_will = Some(LastWillConfig {
            topic: topic(i),
            payload: "offline".into(),
            qos: 1,
            retain: false,
        });
        devices.push(c.connect("mqtt").unwrap().0);
    }
    // Announce (again, until the registry has heard every device: its SUBACK may come late).
    let announce = async |devices: &[MqttClient], registry: &RegistryHandle, expected: usize| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            for (i, d) in devices.iter().enumerate() {
                if d.wait_connected(Duration::from_secs(30)).await.is_ok()
                    && registry
                        .device(&topic(i))
                        .is_none_or(|info| info.state != DeviceState::Online)
                {
                    d.publish(topic(i), QoS::AtLeastOnce, false, "online")
                        .await
                        .unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if registry.summary(None).online == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                registry.summary(None)
            );
        }
    };
    announce(&devices, &registry, DEVICES).await;
    let s = registry.summary(Some("group"));
    assert_eq!((s.total, s.online, s.groups.len()), (DEVICES, DEVICES, 3));
    assert_eq!(s.groups["g0"].total, 100);

    // Kill 20 connections: dropped clients close their sockets without a DISCONNECT.
    let killed: Vec<MqttClient> = devices.drain(DEVICES - KILLED..).collect();
    drop(killed);
    eventually("last wills", Duration::from_secs(20), || {
        registry.summary(None).offline == KILLED
    })
    .await;
    let offline = registry.devices_in(DeviceState::Offline);
    let mut expected: Vec<String> = (DEVICES - KILLED..DEVICES).map(topic).collect();
    expected.sort();
    assert_eq!(offline, expected);
    assert_eq!(registry.summary(None).online, DEVICES - KILLED);

    // Broker restart: everybody reconnects by themselves; survivors announce again.
    broker.restart().await.unwrap();
    registry
        .client()
        .unwrap()
        .wait_connected(Duration::from_secs(30))
        .await
        .unwrap();
    // While the broker was away nobody went offline: the interval is a minute.
    assert_eq!(registry.summary(None).offline, KILLED);
    announce(&devices, &registry, DEVICES - KILLED).await;
    let s = registry.summary(Some("group"));
    assert_eq!((s.online, s.offline), (DEVICES - KILLED, KILLED));
    let per_device = registry.approx_bytes() / s.total;
    assert!(per_device < 300, "{per_device} bytes per device");
}

/// A Mosquitto with a TLS listener on a free port, its certificate issued by a CA of the test's
/// own; killed when dropped.
struct TlsBroker {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_broker() -> Option<TlsBroker> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    let dir = tempfile::TempDir::with_prefix("rampart-mqtts-").unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Rampart Test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\ncertfile {}\nkeyfile {}\n",
            dir.path().join("server.pem").display(),
            dir.path().join("server.key").display()
        ),
    )
    .unwrap();
    let child = match std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("RAMPART_REQUIRE_SERVERS").is_none(),
                "mosquitto missing: {e}"
            );
            return None;
        }
    };
    Some(TlsBroker { child, port, dir })
}

/// `mqtts://` with the test CA as `ca_file`: connects and round-trips a message over TLS. Without
/// the CA (Mozilla roots only) the certificate is refused and the client never connects.
#[tokio::test]
async fn tls_with_a_private_ca() {
    let Some(broker) = tls_broker() else {
        return;
    };
    let url = format!("mqtts://localhost:{}", broker.port);
    let mut config = MqttConfig::new(url.clone(), unique("tls"));
    config.ca_file = Some(broker.dir.path().join("ca.pem"));
    config.reconnect.base_delay = Duration::from_millis(50);
    config.reconnect.max_delay = Duration::from_millis(100);
    let (client, mut messages) = config.connect("mqtt").unwrap();
    // The broker may still be starting: the client retries by itself.
    client
        .wait_connected(Duration::from_secs(20))
        .await
        .unwrap();
    client
        .subscribe("secure/t", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("secure/t", QoS::AtLeastOnce, false, "sealed")
        .await
        .unwrap();
    let message = next_message(&mut messages, Duration::from_secs(5)).await;
    assert_eq!(&message.payload[..], b"sealed");
    let health = mqtt_health(&config, Duration::from_secs(5)).await.unwrap();
    assert!(health.round_trip < Duration::from_secs(5));
    client.disconnect().await;

    let mut untrusting = MqttConfig::new(url, unique("tls-untrusting"));
    untrusting.reconnect.base_delay = Duration::from_millis(50);
    let (client, _) = untrusting.connect("mqtt").unwrap();
    let mut events = client.events();
    let error = wait_event(&mut events, Duration::from_secs(10), |e| match e {
        ConnectionEvent::Disconnected {
            error,
            was_connected: false,
        } => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(
        error.to_lowercase().contains("tls") || error.contains("certificate"),
        "{error}"
    );
    assert_ne!(client.state(), ConnectionState::Connected);

    let mut plain_with_ca = MqttConfig::new("mqtt://localhost:1883", "x");
    plain_with_ca.ca_file = Some(broker.dir.path().join("ca.pem"));
    let err = plain_with_ca.connect("mqtt.p").unwrap_err().to_string();
    assert!(err.contains("mqtt.p.ca_file"), "{err}");
}

/// A persistent session (`clean_session = false`): the broker keeps the subscription and queues
/// QoS 1 messages while the client is away; the next connection resumes the session
/// (`session_present`) and receives them without subscribing again.
#[tokio::test]
async fn persistent_session_keeps_messages_while_away() {
    let id = unique("persistent");
    let topic = format!("rampart-test/{id}/queued");
    let mut config = MqttConfig::new(LOCAL, &id);
    config.clean_session = false;
    let (client, _) = config.connect("mqtt").unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    client
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    // SUBSCRIBE goes out before the DISCONNECT below: requests leave in order.
    let (publisher, _) = MqttConfig::new(LOCAL, unique("pub"))
        .connect("mqtt")
        .unwrap();
    publisher
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    client.disconnect().await;

    publisher
        .publish(topic.clone(), QoS::AtLeastOnce, false, "while away")
        .await
        .unwrap();

    let (again, mut messages) = config.connect("mqtt").unwrap();
    let mut events = again.events();
    let (session_present, resubscribed) =
        wait_event(&mut events, Duration::from_secs(5), |e| match e {
            ConnectionEvent::Connected {
                session_present,
                resubscribed,
            } => Some((*session_present, *resubscribed)),
            _ => None,
        })
        .await;
    assert!(session_present);
    assert_eq!(resubscribed, 0);
    let message = next_message(&mut messages, Duration::from_secs(5)).await;
    assert_eq!(
        (message.topic.as_str(), &message.payload[..]),
        (topic.as_str(), &b"while away"[..])
    );
    // Clean up the session at the broker.
    again.disconnect().await;
    let mut clean = config.clone();
    clean.clean_session = true;
    let (c, _) = clean.connect("mqtt").unwrap();
    c.wait_connected(Duration::from_secs(5)).await.unwrap();
    c.disconnect().await;
    publisher.disconnect().await;
}
