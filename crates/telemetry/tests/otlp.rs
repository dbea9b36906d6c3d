//! OTLP export against a local receiver that decodes every request with opentelemetry-proto.
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, metric, number_data_point,
};
use prost::Message;
use rampart_telemetry::export::otlp::{OtlpConfig, OtlpExporter};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "Bearer do-not-print-me";

/// How the receiver answers its n-th request (past the list: 200).
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Status(u16, Option<u64>),
    Partial(i64),
    Hang,
}

/// A request as the receiver decoded it.
#[derive(Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: ExportMetricsServiceRequest,
}

struct Receiver {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on a free port that answers with `answers` in turn.
    async fn start(answers: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let answers = Arc::new(answers);
        let seen = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (tx, answers, seen) = (tx.clone(), answers.clone(), seen.clone());
                tokio::spawn(async move {
                    let events = tx.clone();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (tx, answers, seen) = (events.clone(), answers.clone(), seen.clone());
                        async move { Ok::<_, Infallible>(answer(req, &tx, &answers, &seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, events, task }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/metrics", self.addr)
    }

    /// The next request that arrives, within 5 s.
    async fn request(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("the receiver heard nothing within 5 s")
            .unwrap()
    }

    /// Requests received and not yet taken, without waiting.
    fn requests_so_far(&mut self) -> usize {
        let mut n = 0;
        while self.events.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    tx: &mpsc::UnboundedSender<Received>,
    answers: &[Answer],
    seen: &AtomicUsize,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body = ExportMetricsServiceRequest::decode(bytes).expect("a valid OTLP request");
    let _ = tx.send(Received {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    let n = seen.fetch_add(1, Ordering::SeqCst);
    let response = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    match answers.get(n).copied().unwrap_or(Answer::Ok) {
        Answer::Ok => response(200, ExportMetricsServiceResponse::default().encode_to_vec()),
        Answer::Status(status, retry_after) => {
            let mut r = Response::builder().status(status);
            if let Some(secs) = retry_after {
                r = r.header(RETRY_AFTER, secs.to_string());
            }
            r.body(Full::new(Bytes::from("collector overloaded")))
                .unwrap()
        }
        Answer::Partial(rejected) => {
            let partial = ExportMetricsServiceResponse {
                partial_success: Some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: "name too long".into(),
                }),
            };
            response(200, partial.encode_to_vec())
        }
        Answer::Hang => std::future::pending().await,
    }
}

fn exporter(url: &str, configure: impl FnOnce(&mut OtlpConfig)) -> OtlpExporter {
    let mut config = OtlpConfig::new(url)
        .with_service_name("checkout")
        .with_resource("deployment.environment", "test")
        .with_header("authorization", SECRET);
    config.timeout = Duration::from_secs(5);
    config.backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(100);
    configure(&mut config);
    config.build().unwrap()
}

fn string(kv: &[KeyValue], key: &str) -> Option<String> {
    kv.iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    request.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// The number data point whose attributes include `attrs` (and has no others if `attrs` is empty).
fn point(points: &[NumberDataPoint], attrs: &[(&str, &str)]) -> f64 {
    let p = points
        .iter()
        .find(|p| {
            attrs
                .iter()
                .all(|(k, v)| string(&p.attributes, k).as_deref() == Some(v))
                && (!attrs.is_empty() || p.attributes.is_empty())
        })
        .unwrap_or_else(|| panic!("no point with {attrs:?}"));
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        other => panic!("not a double: {other:?}"),
    }
}

#[tokio::test]
async fn export_delivers_every_kind_with_resource_and_headers() {
    let mut receiver = Receiver::start(vec![]).await;
    exporter(&receiver.url(), |_| {})
        .export(&common::telemetry().snapshot())
        .await
        .unwrap();
    let Received {
        path,
        headers,
        body: request,
    } = receiver.request().await;
    assert_eq!(path, "/v1/metrics");
    assert_eq!(headers[CONTENT_TYPE], "application/x-protobuf");
    assert_eq!(headers[AUTHORIZATION], SECRET);

    let resource = request.resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        string(&resource.attributes, "service.name").as_deref(),
        Some("checkout")
    );
    assert_eq!(
        string(&resource.attributes, "deployment.environment").as_deref(),
        Some("test")
    );
    let scope = request.resource_metrics[0].scope_metrics[0]
        .scope
        .as_ref()
        .unwrap();
    assert_eq!(scope.name, "rampart-telemetry");

    let cumulative = AggregationTemporality::Cumulative as i32;
    let Some(metric::Data::Sum(jobs)) = &metric(&request, "rampart_jobs_done").data else {
        panic!("rampart_jobs_done is not a sum");
    };
    assert!(jobs.is_monotonic);
    assert_eq!(jobs.aggregation_temporality, cumulative);
    assert_eq!(point(&jobs.data_points, &[("queue", "mail")]), 7.0);
    assert_eq!(point(&jobs.data_points, &[]), 1.0);
    let p = &jobs.data_points[0];
    assert!(p.start_time_unix_nano > 0 && p.start_time_unix_nano <= p.time_unix_nano);

    let heap = metric(&request, "rampart_heap");
    assert_eq!(heap.unit, "By");
    let Some(metric::Data::Gauge(heap)) = &heap.data else {
        panic!("rampart_heap is not a gauge")
    };
    assert_eq!(point(&heap.data_points, &[]), 1.5e6);

    // Attribute values go as they are: nothing to escape in protobuf.
    let op = [("operation", "db.query"), ("statement", common::NASTY)];
    let Some(metric::Data::Sum(requests)) = &metric(&request, "rampart_operation_requests").data
    else {
        panic!("rampart_operation_requests is not a sum");
    };
    assert_eq!(point(&requests.data_points, &op), 51.0);
    let Some(metric::Data::Sum(errors)) = &metric(&request, "rampart_operation_errors").data else {
        panic!("rampart_operation_errors is not a sum");
    };
    assert_eq!(point(&errors.data_points, &op), 1.0);

    // Histograms: OTLP counts per bucket, one more count than bounds (the +Inf bucket).
    let probe = metric(&request, "rampart_probe_duration");
    assert_eq!(probe.unit, "s");
    let Some(metric::Data::Histogram(probe)) = &probe.data else {
        panic!("not a histogram")
    };
    assert_eq!(probe.aggregation_temporality, cumulative);
    let p = &probe.data_points[0];
    assert_eq!(string(&p.attributes, "target").as_deref(), Some("db"));
    assert_eq!(p.explicit_bounds, vec![0.01, 0.1, 1.0]);
    assert_eq!(p.bucket_counts, vec![5, 4, 0, 1]);
    assert_eq!((p.count, p.sum), (10, Some(2.5)));

    let Some(metric::Data::Histogram(duration)) =
        &metric(&request, "rampart_operation_duration").data
    else {
        panic!("rampart_operation_duration is not a histogram");
    };
    let p = &duration.data_points[0];
    assert_eq!(p.count, 51);
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), 51);
    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
    assert_eq!(p.bucket_counts.last(), Some(&0)); // nothing above 60 s
}

#[tokio::test]
async fn retryable_answers_are_retried_until_accepted() {
    let answers = vec![
        Answer::Status(503, None),
        Answer::Status(429, Some(0)),
        Answer::Ok,
    ];
    let mut receiver = Receiver::start(answers).await;
    exporter(&receiver.url(), |_| {})
        .export(&common::telemetry().snapshot())
        .await
        .unwrap();
    for _ in 0..3 {
        receiver.request().await;
    }
    assert_eq!(receiver.requests_so_far(), 0);
}

#[tokio::test]
async fn other_errors_fail_at_once_without_printing_headers() {
    let mut receiver = Receiver::start(vec![Answer::Status(400, None)]).await;
    let error = exporter(&receiver.url(), |_| {})
        .export(&common::telemetry().snapshot())
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert!(!error.is_retryable());
    let text = format!("{error} {error:?}");
    assert!(text.contains("collector overloaded"), "{text}");
    assert!(!text.contains("do-not-print-me"), "{text}");
    receiver.request().await;
    assert_eq!(receiver.requests_so_far(), 0, "a 400 must not be retried");

    let mut receiver = Receiver::start(vec![Answer::Partial(2)]).await;
    let error = exporter(&receiver.url(), |_| {})
        .export(&common::telemetry().snapshot())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("rejected 2 data points: name too long"),
        "{error}"
    );
    receiver.request().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_after_bounded_attempts() {
    let mut receiver = Receiver::start(vec![Answer::Hang; 5]).await;
    let exporter = exporter(&receiver.url(), |c| {
        c.timeout = Duration::from_millis(200);
        c.max_attempts = 2;
    });
    let started = std::time::Instant::now();
    let error = exporter
        .export(&common::telemetry().snapshot())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(error.is_timeout(), "{error}");
    // Two attempts of 200 ms and one wait of at most 100 ms, plus slack for a busy machine.
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    receiver.request().await;
    receiver.request().await;
}

#[tokio::test]
async fn refused_connections_are_retried_then_reported() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let exporter = exporter(&format!("http://{addr}"), |c| c.max_attempts = 2);
    let error = exporter
        .export(&common::telemetry().snapshot())
        .await
        .unwrap_err();
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .starts_with("could not connect to http://127.0.0.1:"),
        "{error}"
    );
}

#[tokio::test]
async fn dropping_an_export_midway_closes_its_connection() {
    // A bare TCP receiver that reads the request, never answers, and sees the socket close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (got_request, request_seen) = tokio::sync::oneshot::channel();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 64 * 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"POST /v1/metrics HTTP/1.1"));
        got_request.send(()).unwrap();
        while stream.read(&mut buf).await.unwrap() > 0 {}
    });

    let exporter = exporter(&url, |_| {});
    let snapshot = common::telemetry().snapshot();
    let mut export = Box::pin(exporter.export(&snapshot));
    tokio::select! {
        _ = &mut export => panic!("the receiver never answers"),
        seen = request_seen => seen.unwrap(),
    }
    drop(export);
    tokio::time::timeout(Duration::from_secs(5), peer)
        .await
        .expect("the connection was not closed")
        .unwrap();
}

#[tokio::test]
async fn periodic_push_counts_outcomes_and_shutdown_pushes_once_more() {
    let mut receiver = Receiver::start(vec![]).await;
    let telemetry = common::telemetry();
    let exporter = exporter(&receiver.url(), |c| c.interval = Duration::from_millis(50));
    let task = exporter.spawn(telemetry.clone());
    receiver.request().await;
    receiver.request().await;
    task.shutdown().await.unwrap();
    let last = receiver.request().await.body;
    let Some(metric::Data::Sum(exports)) = &metric(&last, "rampart_telemetry_otlp_exports").data
    else {
        panic!("no export counter");
    };
    // The second push may still await its answer when shutdown abandons it.
    assert!(point(&exports.data_points, &[("outcome", "ok")]) >= 1.0);
    assert_eq!(point(&exports.data_points, &[("outcome", "failed")]), 0.0);
    // Six intervals without a push: the loop is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests_so_far(), 0);
}

#[test]
fn config_reports_every_problem_and_never_prints_header_values() {
    let mut config = OtlpConfig::new("https://collector:4318")
        .with_header("bad name", "x")
        .with_header("authorization", "Bearer do-not-print-me\n");
    config.max_attempts = 0;
    config.interval = Duration::ZERO;
    let error = config.build().unwrap_err();
    let paths: Vec<&str> = error.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "otlp.endpoint",
            "otlp.headers[0]",
            "otlp.headers[1]",
            "otlp.interval",
            "otlp.max_attempts"
        ]
    );
    assert!(!error.to_string().contains("do-not-print-me"), "{error}");
    assert!(!format!("{config:?}").contains("do-not-print-me"));
    let exporter = OtlpConfig::default()
        .with_header("x-api-key", "do-not-print-me")
        .build()
        .unwrap();
    assert!(!format!("{exporter:?}").contains("do-not-print-me"));
    assert_eq!(exporter.endpoint(), "http://127.0.0.1:4318/v1/metrics");
}
