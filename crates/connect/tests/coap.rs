#![cfg(feature = "coap")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The CoAP client against libcoap's `coap-server-notls` (Debian package `libcoap3-bin`), started
//! on a free UDP port per test; a missing binary skips the test unless `RAMPART_REQUIRE_SERVERS=1`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rampart_connect::coap::{CoapClient, CoapConfig, CoapError};
use tokio::time::{Instant, timeout};

const BINARY: &str = "coap-server-notls";

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server on a free port and waits until it answers a ping; `None` (skip) when
    /// the binary is missing and servers are not required.
    async fn start() -> Option<Server> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = match Command::new(BINARY)
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("RAMPART_REQUIRE_SERVERS").is_none(),
                    "{BINARY} missing ({e}): install the Debian package libcoap3-bin"
                );
                eprintln!("skipped: {BINARY} missing, install libcoap3-bin");
                return None;
            }
        };
        let server = Server { child, port };
        let client = CoapClient::connect(&fast(&server.url()), "coap")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.ping().await.is_err() {
            assert!(Instant::now() < deadline, "coap-server did not answer");
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("coap://127.0.0.1:{}", self.port)
    }

    fn signal(&self, name: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()?;
        assert!(status.success());
        Ok(())
    }
}

/// ACK_TIMEOUT 50 ms, factor 1.5, MAX_RETRANSMIT 3: a silent server fails a request after
/// 750 ms to 1125 ms.
fn fast(url: &str) -> CoapConfig {
    let mut c = CoapConfig::new(url);
    c.ack_timeout = Duration::from_millis(50);
    c.max_retransmit = 3;
    c
}

#[tokio::test]
async fn get_put_post_and_block_wise() {
    let Some(server) = Server::start().await else {
        return;
    };
    let mut config = fast(&server.url());
    config.block_size = 64;
    let client = CoapClient::connect(&config, "coap").await.unwrap();

    let root = client.get("/").await.unwrap();
    assert_eq!(root.code, "2.05");
    assert!(String::from_utf8_lossy(&root.payload).contains("libcoap"));

    // 900 bytes go up in Block1 blocks and come back in 64-byte Block2 blocks (15 of them).
    let body: Vec<u8> = (0..900u32).map(|i| b'a' + (i % 26) as u8).collect();
    let put = client.put("/example_data", body.clone()).await.unwrap();
    assert!(put.is_success(), "{put:?}");
    let got = client.get("/example_data").await.unwrap();
    assert_eq!(got.code, "2.05");
    assert_eq!(got.payload, body);

    // 3000 bytes go up in Block1 blocks of 64 and come back whole through Block2.
    let large: Vec<u8> = (0..3000u32).map(|i| b'A' + (i % 23) as u8).collect();
    let put = client.put("/example_data", large.clone()).await.unwrap();
    assert!(put.is_success(), "{put:?}");
    assert_eq!(client.get("/example_data").await.unwrap().payload, large);

    let missing = client.get("/no/such/thing").await.unwrap();
    assert_eq!(missing.code, "4.04");
    let post = client.post("/example_data", b"x".to_vec()).await.unwrap();
    assert!(!post.is_success(), "example_data takes no POST: {post:?}");
    assert!(client.ping().await.unwrap() < Duration::from_secs(2));
}

#[tokio::test]
async fn observe_gets_notified_of_changes() {
    let Some(server) = Server::start().await else {
        return;
    };
    let client = CoapClient::connect(&fast(&server.url()), "coap")
        .await
        .unwrap();
    client
        .put("/example_data", b"first".to_vec())
        .await
        .unwrap();
    let mut observation = client.observe("/example_data").await.unwrap();
    assert_eq!(observation.first.payload, b"first");
    assert!(
        observation.first.observe.is_some(),
        "{:?}",
        observation.first
    );

    let writer = CoapClient::connect(&fast(&server.url()), "coap")
        .await
        .unwrap();
    writer
        .put("/example_data", b"second".to_vec())
        .await
        .unwrap();
    let update = timeout(Duration::from_secs(10), observation.next())
        .await
        .expect("no notification")
        .expect("client gone");
    assert_eq!(update.payload, b"second");
    assert!(update.observe.is_some());
}

/// A frozen server (SIGSTOP): the request is sent 1 + MAX_RETRANSMIT times, then fails no sooner
/// than the configured schedule allows. Thawed, the server answers again.
#[tokio::test]
async fn stopped_server_fails_at_the_configured_timing() {
    let Some(server) = Server::start().await else {
        return;
    };
    let config = fast(&server.url());
    let (earliest, latest) = config.give_up_after();
    assert_eq!(
        (earliest, latest),
        (Duration::from_millis(750), Duration::from_millis(1125))
    );
    let client = CoapClient::connect(&config, "coap").await.unwrap();
    server.signal("STOP").unwrap();
    let start = Instant::now();
    let err = client.get("/").await.unwrap_err();
    let elapsed = start.elapsed();
    let CoapError::Timeout {
        transmissions,
        waited,
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(transmissions, 4);
    assert!(waited >= earliest, "{waited:?}");
    // Timers only fire late, never early: the upper bound has slack for a loaded machine.
    assert!(waited < latest + Duration::from_secs(2), "{waited:?}");
    assert!(elapsed >= earliest);
    assert!(matches!(
        client.ping().await,
        Err(CoapError::Timeout { .. })
    ));
    server.signal("CONT").unwrap();
    assert_eq!(client.get("/").await.unwrap().code, "2.05");
}

/// Against a socket that reads and never answers, every transmission is seen: the same message
/// id 1 + MAX_RETRANSMIT times.
#[tokio::test]
async fn retransmissions_repeat_the_message() {
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let url = format!("coap://{}", silent.local_addr().unwrap());
    let mut config = fast(&url);
    config.max_retransmit = 2;
    config.ack_random_factor = 1.0;
    let client = CoapClient::connect(&config, "coap").await.unwrap();
    let request = tokio::spawn(async move { client.put("/a", b"1".to_vec()).await });
    let mut ids = Vec::new();
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        let n = timeout(Duration::from_secs(5), silent.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n >= 4);
        assert_eq!(buf[0] >> 4 & 0x3, 0, "confirmable");
        ids.push(u16::from_be_bytes([buf[2], buf[3]]));
    }
    let err = request.await.unwrap().unwrap_err();
    assert!(
        matches!(err, CoapError::Timeout { transmissions: 3, waited } if waited >= Duration::from_millis(350)),
        "{err:?}"
    );
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    // Nothing more was sent.
    assert!(silent.try_recv(&mut buf).is_err());
}

/// A separate response (empty ACK first, then the response as a confirmable message) is
/// acknowledged; when the server repeats it because our ACK was lost, the duplicate is
/// acknowledged again, not reset.
#[tokio::test]
async fn separate_response_and_its_duplicate_are_acknowledged() {
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let url = format!("coap://{}", server.local_addr().unwrap());
    // Kept alive past the request: the duplicate comes after it is answered.
    let client = std::sync::Arc::new(CoapClient::connect(&fast(&url), "coap").await.unwrap());
    let requester = client.clone();
    let request = tokio::spawn(async move { requester.get("/slow").await });
    let mut buf = [0u8; 1500];
    let (n, peer) = timeout(Duration::from_secs(5), server.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n >= 4);
    let tkl = usize::from(buf[0] & 0x0f);
    let token = buf[4..4 + tkl].to_vec();
    // Empty ACK for the request.
    server
        .send_to(&[0x60, 0x00, buf[2], buf[3]], peer)
        .await
        .unwrap();
    // The response, confirmable, message id 0x1234, sent twice.
    let mut response = vec![0x40 | tkl as u8, 0x45, 0x12, 0x34];
    response.extend_from_slice(&token);
    response.extend_from_slice(&[0xff, b'h', b'i']);
    for _ in 0..2 {
        server.send_to(&response, peer).await.unwrap();
        let n = timeout(Duration::from_secs(5), server.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(buf[0] >> 4 & 0x3, 2, "an ACK, not a reset: {:?}", &buf[..4]);
        assert_eq!(&buf[2..4], &[0x12, 0x34]);
    }
    let answer = request.await.unwrap().unwrap();
    assert_eq!(
        (answer.code.as_str(), answer.payload.as_slice()),
        ("2.05", &b"hi"[..])
    );
}
