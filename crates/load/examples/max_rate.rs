//! How fast can `rampart load` drive an in-process HTTP/1.1 server on this machine?
//!
//! ```sh
//! cargo run --release -p rampart-load --example max_rate -- 5000 10000 20000 40000
//! ```
//!
//! For each rate (requests per second) it runs the open model for 3 s (or `$DURATION`, such as
//! `30s`) over 50 connections
//! against a hyper server in the same process and prints what was achieved: requests completed,
//! dropped, and the corrected and service-time percentiles. The rate at which the corrected p99
//! parts from the service-time p99, or requests are dropped, is where the generator (or the server
//! sharing its cores) runs out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rampart_load::config::ScenarioConfig;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let rates: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a rate"))
        .collect();
    let rates = if rates.is_empty() {
        vec![5_000, 10_000, 20_000]
    } else {
        rates
    };
    let duration = std::env::var("DURATION").unwrap_or_else(|_| "3s".to_owned());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    println!(
        "{:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>11}",
        "rate", "done/s", "dropped", "p50 ms", "p99 ms", "max ms", "svc p99 ms"
    );
    for rate in rates {
        let toml = format!(
            "url = \"http://{addr}/\"\nrate = {rate}\nduration = \"{duration}\"\nconnections = 50\n"
        );
        let scenario = ScenarioConfig::scenario_from_toml(&toml, None, None).unwrap();
        let r = rampart_load::engine::run(scenario, |_| {}).await;
        let t = &r.total;
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "{:>8} {:>9.0} {:>8} {:>9} {:>9} {:>9} {:>11}",
            rate,
            t.count as f64 / r.duration_s,
            t.dropped,
            f(t.latency_ms.p50),
            f(t.latency_ms.p99),
            f(t.latency_ms.max),
            f(t.service_ms.as_ref().and_then(|s| s.p99)),
        );
    }
    server.abort();
}
