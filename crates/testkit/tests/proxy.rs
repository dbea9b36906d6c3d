//! The chaos proxy against a real TCP echo server: every toxic, switched on new and live
//! connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use rampart_testkit::proxy::{ChaosProxy, Direction, Toxic, ToxicKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};

/// Deadline of every wait that is expected to finish.
const DEADLINE: Duration = Duration::from_secs(5);
/// Slack allowed above a delay the proxy is asked to add (a loaded 2-core machine).
const SLACK: Duration = Duration::from_millis(1500);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {DEADLINE:?}"))
}

/// A TCP echo server on a free port, serving every connection until the runtime stops.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut from, mut to) = stream.split();
                let _ = tokio::io::copy(&mut from, &mut to).await;
            });
        }
    });
    addr
}

/// A server that reads one connection to its end and reports what it received.
async fn sink_server() -> (SocketAddr, oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let _ = stream.read_to_end(&mut received).await;
        let _ = tx.send(received);
    });
    (addr, rx)
}

async fn start() -> ChaosProxy {
    ChaosProxy::start(echo_server().await).await.unwrap()
}

async fn connect(proxy: &ChaosProxy) -> TcpStream {
    within("connect", TcpStream::connect(proxy.addr()))
        .await
        .unwrap()
}

/// Sends `message` and reads its echo; returns the round-trip time.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(message).await.unwrap();
    let mut echoed = vec![0; message.len()];
    within("echo", stream.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(echoed, message);
    started.elapsed()
}

/// Waits for a reset; reads until the error, in case some bytes were still in flight.
async fn expect_reset(stream: &mut TcpStream) {
    let mut buf = [0; 1024];
    loop {
        match within("reset", stream.read(&mut buf)).await {
            Ok(0) => panic!("expected a connection reset, got end of stream"),
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
                return;
            }
        }
    }
}

/// Waits until `condition` holds, polling; for state with no event to wait on (counters).
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn latency(ms: u64, jitter_ms: u64, direction: Direction) -> Toxic {
    Toxic::Latency {
        latency: Duration::from_millis(ms),
        jitter: Duration::from_millis(jitter_ms),
        direction,
    }
}

#[tokio::test]
async fn passes_bytes_through_unchanged_and_counts_them() {
    let proxy = start().await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"hello").await;

    // A payload bigger than the socket buffers, written and read at once.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut from, mut to) = client.split();
    let (_, echoed) = within("large echo", async {
        tokio::join!(to.write_all(&payload), async {
            let mut echoed = vec![0; payload.len()];
            from.read_exact(&mut echoed).await.unwrap();
            echoed
        })
    })
    .await;
    assert!(echoed == payload, "large payload altered");

    let stats = proxy.stats();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.open, 1);
    assert_eq!(stats.bytes_upstream, 1_000_005);
    assert_eq!(stats.bytes_downstream, 1_000_005);
    assert!(proxy.toxics().is_empty());

    // A half-close passes through: the echo server sees EOF and closes its side too.
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("eof", client.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
    eventually("connection closed", || proxy.stats().open == 0).await;
}

#[tokio::test]
async fn latency_delays_each_chosen_direction() {
    let proxy = start().await;
    let mut client = connect(&proxy).await;

    proxy.set(latency(100, 0, Direction::Both));
    let rtt = round_trip(&mut client, b"both").await;
    assert!(rtt >= Duration::from_millis(200), "{rtt:?}");
    assert!(rtt < Duration::from_millis(200) + SLACK, "{rtt:?}");

    proxy.remove(ToxicKind::Latency).unwrap();
    proxy.set(latency(150, 50, Direction::Downstream));
    assert_eq!(
        proxy.toxics(),
        [latency(150, 50, Direction::Downstream)],
        "only downstream is delayed"
    );
    let rtt = round_trip(&mut client, b"down").await;
    assert!(rtt >= Duration::from_millis(150), "{rtt:?}");
    assert!(rtt < Duration::from_millis(200) + SLACK, "{rtt:?}");
}

#[tokio::test]
async fn bandwidth_limit_paces_bytes() {
    const RATE: u64 = 200_000;
    const LEN: usize = 100_000;
    let proxy = start().await;
    proxy.set(Toxic::Bandwidth {
        bytes_per_second: RATE,
        direction: Direction::Upstream,
    });
    let mut client = connect(&proxy).await;

    let payload = vec![7; LEN];
    let started = Instant::now();
    let (mut from, mut to) = client.split();
    within("paced echo", async {
        tokio::join!(to.write_all(&payload), async {
            let mut echoed = vec![0; LEN];
            from.read_exact(&mut echoed).await.unwrap();
        })
    })
    .await
    .0
    .unwrap();
    let took = started.elapsed();
    let minimum = Duration::from_millis(LEN as u64 * 1000 / RATE);
    assert!(took >= minimum, "{took:?} < {minimum:?}");
    assert!(took < minimum + SLACK, "{took:?}");
}

#[tokio::test]
async fn bandwidth_zero_holds_data_until_removed() {
    let proxy = start().await;
    let mut client = connect(&proxy).await;
    proxy.set(Toxic::Bandwidth {
        bytes_per_second: 0,
        direction: Direction::Both,
    });
    client.write_all(b"held").await.unwrap();
    let mut buf = [0; 4];
    assert!(
        timeout(Duration::from_millis(200), client.read_exact(&mut buf))
            .await
            .is_err()
    );
    proxy.remove(ToxicKind::Bandwidth).unwrap();
    within("released", client.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"held");
}

#[tokio::test]
async fn reset_all_resets_open_connections_only() {
    let proxy = start().await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;

    proxy.reset_all();
    expect_reset(&mut client).await;
    eventually("reset connection closed", || proxy.stats().open == 0).await;

    let mut next = connect(&proxy).await;
    round_trip(&mut next, b"after").await;
}

#[tokio::test]
async fn reset_peer_resets_open_and_new_connections_until_removed() {
    let proxy = start().await;
    let mut open = connect(&proxy).await;
    round_trip(&mut open, b"before").await;

    proxy.set(Toxic::ResetPeer);
    expect_reset(&mut open).await;
    let mut new = connect(&proxy).await;
    expect_reset(&mut new).await;

    proxy.remove(ToxicKind::ResetPeer).unwrap();
    let mut after = connect(&proxy).await;
    round_trip(&mut after, b"after").await;
}

#[tokio::test]
async fn blackhole_swallows_data_until_removed() {
    let proxy = start().await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;

    proxy.set(Toxic::Blackhole {
        direction: Direction::Both,
    });
    // Writes succeed: the proxy keeps reading, far beyond what socket buffers would hold.
    let junk = vec![1; 4 * 1024 * 1024];
    within("write into blackhole", client.write_all(&junk))
        .await
        .unwrap();
    let mut buf = [0; 1];
    assert!(
        timeout(Duration::from_millis(300), client.read(&mut buf))
            .await
            .is_err(),
        "a blackholed connection answered"
    );

    proxy.remove(ToxicKind::Blackhole).unwrap();
    round_trip(&mut client, b"after").await;
}

#[tokio::test]
async fn close_after_delivers_exactly_n_bytes_then_eof() {
    let proxy = start().await;
    proxy.set(Toxic::CloseAfter {
        bytes: 10,
        direction: Direction::Downstream,
    });
    let mut client = connect(&proxy).await;
    client.write_all(&[5; 100]).await.unwrap();
    let mut received = Vec::new();
    within("read to eof", client.read_to_end(&mut received))
        .await
        .unwrap();
    assert_eq!(received, [5; 10]);
}

#[tokio::test]
async fn close_after_upstream_lets_the_server_see_exactly_n_bytes() {
    let (upstream, received) = sink_server().await;
    let proxy = ChaosProxy::start(upstream).await.unwrap();
    let mut client = connect(&proxy).await;
    // Set on a live connection, after some bytes went through: the count starts now.
    client.write_all(b"0123").await.unwrap();
    eventually("first bytes forwarded", || {
        proxy.stats().bytes_upstream == 4
    })
    .await;
    proxy.set(Toxic::CloseAfter {
        bytes: 6,
        direction: Direction::Upstream,
    });
    client.write_all(b"456789abcdef").await.unwrap();
    let received = within("sink", received).await.unwrap();
    assert_eq!(received, b"0123456789");
    let mut rest = Vec::new();
    within("client eof", client.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn refuse_closes_the_port_and_reopens_the_same_one() {
    let proxy = start().await;
    let port = proxy.port();
    let mut open = connect(&proxy).await;
    // Make sure the proxy has accepted it: closing the listener resets connections still in
    // its backlog.
    round_trip(&mut open, b"accepted").await;

    proxy.set(Toxic::Refuse);
    assert_eq!(proxy.toxics(), [Toxic::Refuse]);
    let err = within("refused connect", TcpStream::connect(proxy.addr()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    round_trip(&mut open, b"open connections are kept").await;

    proxy.remove(ToxicKind::Refuse).unwrap();
    assert_eq!(proxy.port(), port);
    let mut new = connect(&proxy).await;
    round_trip(&mut new, b"accepted again").await;
    assert_eq!(new.peer_addr().unwrap().port(), port);
}

#[tokio::test]
async fn toxic_changes_reach_a_live_connection() {
    let proxy = start().await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"fast").await;

    proxy.set(latency(200, 0, Direction::Upstream));
    let rtt = round_trip(&mut client, b"slow").await;
    assert!(rtt >= Duration::from_millis(200), "{rtt:?}");

    // A chunk waiting out a long latency is released when the latency is removed.
    proxy.set(latency(60_000, 0, Direction::Upstream));
    client.write_all(b"stuck").await.unwrap();
    let mut buf = [0; 5];
    assert!(
        timeout(Duration::from_millis(100), client.read_exact(&mut buf))
            .await
            .is_err()
    );
    proxy.clear().unwrap();
    within("released", client.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"stuck");
    let rtt = round_trip(&mut client, b"fast again").await;
    assert!(rtt < Duration::from_millis(200), "{rtt:?}");
}

#[tokio::test]
async fn drop_closes_connections_and_listener() {
    let proxy = start().await;
    let addr = proxy.addr();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;

    drop(proxy);
    let mut buf = [0; 1];
    match within("close after drop", client.read(&mut buf)).await {
        Ok(0) => {}
        Ok(n) => panic!("read {n} bytes from a dropped proxy"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    let err = within("connect after drop", TcpStream::connect(addr))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[tokio::test]
async fn unreachable_upstream_resets_the_client() {
    // A port nobody listens on: bind one, note it, close it.
    let upstream = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = ChaosProxy::start(upstream).await.unwrap();
    let mut client = connect(&proxy).await;
    expect_reset(&mut client).await;
}
