//! The MQTT probe against Mosquitto brokers: throwaway ones from `rampart-testkit`, and ones
//! started here with authentication or access rules.
#![cfg(feature = "mqtt")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rampart_monitor::config::{MonitorConfig, MqttCheck, Secret};
use rampart_monitor::probe::{FailureKind, MqttProbe, Probe};
use rampart_testkit::server::{Mosquitto, require_or_skip, servers_required};

const TIMEOUT: Duration = Duration::from_secs(2);

fn check(port: u16) -> MqttCheck {
    MqttCheck::new(format!("127.0.0.1:{port}"))
}

#[tokio::test]
async fn a_round_trip_through_a_healthy_broker_passes_and_is_timed() {
    let Some(broker) = require_or_skip(Mosquitto::start().await) else {
        return;
    };
    let probe = MqttProbe::new(check(broker.port()));
    for _ in 0..2 {
        let r = probe.probe(TIMEOUT).await;
        assert!(r.is_success(), "{r:?}");
        let (connect, round_trip) = (r.phases.connect.unwrap(), r.phases.query.unwrap());
        assert!(connect + round_trip <= r.latency, "{r:?}");
    }
}

#[tokio::test]
async fn paused_is_a_connect_timeout_killed_is_refused_and_a_restart_is_picked_up() {
    let Some(mut broker) = require_or_skip(Mosquitto::start().await) else {
        return;
    };
    let probe = MqttProbe::new(check(broker.port()));
    broker.pause().unwrap();
    let r = probe.probe(Duration::from_millis(500)).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectTimeout), "{r:?}");
    assert!(r.latency < Duration::from_secs(1), "{r:?}");
    broker.resume().unwrap();

    broker.kill().await.unwrap();
    let r = probe.probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectRefused), "{r:?}");
    broker.restart().await.unwrap();
    let r = probe.probe(TIMEOUT).await;
    assert!(r.is_success(), "{r:?}");
}

/// A Mosquitto child process with extra configuration lines, killed when dropped.
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// `None` (test skipped) if mosquitto is not installed and servers are not required.
    async fn start(extra: &[(&str, &str)], settings: &[&str]) -> Option<Self> {
        if Command::new("mosquitto").arg("-h").output().is_err() {
            assert!(!servers_required(), "mosquitto is not installed");
            eprintln!("skipped: mosquitto is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut conf = format!("listener {port} 127.0.0.1\npersistence false\n");
        for (name, text) in extra {
            let file = dir.path().join(name);
            std::fs::write(&file, text).unwrap();
            conf.push_str(&format!(
                "{} {}\n",
                name.replace(".txt", ""),
                file.display()
            ));
        }
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_file = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let broker = Broker {
            child,
            port,
            _dir: dir,
        };
        // Ready when it accepts a connection (a bounded wait for the process to start).
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(broker);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("mosquitto did not start on port {port}");
    }
}

#[tokio::test]
async fn a_broker_refusing_the_client_is_an_auth_failure() {
    let Some(broker) = Broker::start(&[], &["allow_anonymous false"]).await else {
        return;
    };
    let r = MqttProbe::new(check(broker.port)).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AuthFailed), "{r:?}");

    let mut with_user = check(broker.port);
    with_user.username = Some("probe".to_owned());
    with_user.password = Some(Secret::new("wrong"));
    let r = MqttProbe::new(with_user).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AuthFailed), "{r:?}");
}

#[tokio::test]
async fn a_broker_that_drops_the_message_is_a_round_trip_timeout() {
    // Anonymous clients may subscribe to the probe's topics but not publish: the publish is
    // acknowledged and silently dropped, so nothing comes back.
    let acl = [("acl_file.txt", "topic read rampart/#\n")];
    let Some(broker) = Broker::start(&acl, &["allow_anonymous true"]).await else {
        return;
    };
    let r = MqttProbe::new(check(broker.port))
        .probe(Duration::from_millis(700))
        .await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Timeout), "{r:?}");
    assert!(
        r.phases.connect.is_some() && r.phases.query.is_none(),
        "{r:?}"
    );
}

#[test]
fn mqtt_sections_are_read_and_checked() {
    let c = MonitorConfig::from_str(
        "[[target]]\nname = \"broker\"\nkind = \"mqtt\"\n[target.mqtt]\n\
         address = \"broker.internal:1883\"\nusername = \"probe\"\npassword = \"pw\"\n",
        None,
    )
    .unwrap();
    assert_eq!(c.targets[0].check.host(), "broker.internal:1883");
    assert!(!format!("{c:?}").contains("\"pw\""));

    let err = MonitorConfig::from_str(
        "[[target]]\nname = \"broker\"\nkind = \"mqtt\"\n[target.mqtt]\n\
         address = \"broker\"\npassword_file = \"/nonexistent\"\ntopic = \"a/#\"\n",
        None,
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for path in [
        "target[0].mqtt.address",
        "target[0].mqtt.password_file",
        "target[0].mqtt.username",
        "target[0].mqtt.topic",
    ] {
        assert!(paths.contains(&path), "{path}: {err}");
    }
}
