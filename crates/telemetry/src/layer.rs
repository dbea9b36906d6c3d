//! A `tower` layer that records every call of the wrapped service as one operation.

use crate::{Instrumented, Operation};
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Records each call of the wrapped service in an [`Operation`]: latency from the call to the
/// response, `Err` counted as an error, a dropped response future as cancelled.
///
/// ```
/// use rampart_telemetry::{Telemetry, TelemetryLayer, Window};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), std::io::Error> {
/// let telemetry = Telemetry::new();
/// let mut svc = ServiceBuilder::new()
///     .layer(TelemetryLayer::new(telemetry.operation("echo")))
///     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
/// assert_eq!(svc.ready().await?.call(7).await?, 7);
/// assert_eq!(telemetry.stats_of("echo").map(|s| s.window(Window::SinceStart).count), Some(1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    op: Operation,
}

impl TelemetryLayer {
    /// A layer recording into `op`.
    pub fn new(op: Operation) -> Self {
        TelemetryLayer { op }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = TelemetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TelemetryService {
            inner,
            op: self.op.clone(),
        }
    }
}

/// The service [`TelemetryLayer`] makes.
#[derive(Debug, Clone)]
pub struct TelemetryService<S> {
    inner: S,
    op: Operation,
}

impl<S, R> Service<R> for TelemetryService<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.op.instrument(self.inner.call(req))
    }
}
