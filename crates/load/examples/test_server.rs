//! A tiny HTTP/1.1 server for benchmarking `rampart load` (see `scripts/bench-load`): every request
//! gets `200 ok`. With `--stall-ms S --period-ms P` it stops answering for the last `S` ms of every
//! `P` ms of wall-clock time (windows aligned to the Unix epoch, so a client can compute them): a
//! request that arrives during a stall, or whose answer is due during one, is held until the stall
//! ends.
//!
//! ```sh
//! cargo run --release -p rampart-load --example test_server -- --port 8080 --threads 1
//! cargo run --release -p rampart-load --example test_server -- --port 8080 --stall-ms 1000 --period-ms 10000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How long from now until the current stall ends, or `None` outside a stall.
fn stalled_for(stall_ms: u64, period_ms: u64) -> Option<Duration> {
    if stall_ms == 0 {
        return None;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let phase = (now.as_micros() % u128::from(period_ms * 1000)) as u64;
    let stall_start = (period_ms - stall_ms) * 1000;
    (phase >= stall_start).then(|| Duration::from_micros(period_ms * 1000 - phase))
}

fn main() {
    let mut port = 0u16;
    let mut threads = 1usize;
    let (mut stall_ms, mut period_ms) = (0u64, 10_000u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("every flag takes a value");
        match flag.as_str() {
            "--port" => port = value.parse().expect("a port"),
            "--threads" => threads = value.parse().expect("a thread count"),
            "--stall-ms" => stall_ms = value.parse().expect("milliseconds"),
            "--period-ms" => period_ms = value.parse().expect("milliseconds"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        stall_ms < period_ms,
        "the stall must be shorter than the period"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        println!("listening on {}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    if let Some(wait) = stalled_for(stall_ms, period_ms) {
                        tokio::time::sleep(wait).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
