//! `rampart demo`: the daemon on an embedded configuration with demo services in the same
//! process — a healthy API, one that fails in bursts, one that slowly degrades and recovers, a
//! job that sends heartbeats — plus the local PostgreSQL and Redis when they answer. History
//! goes to a data directory; the configuration used is written there too, to read and reuse.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use rampart_monitor::config::MonitorConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::Failure;
use crate::serve::{LogFormat, daemon, init_logs};

/// How long a cycle of the flaky service lasts, and the part of it spent failing.
const FLAKY_CYCLE: Duration = Duration::from_secs(60);
const FLAKY_FAILING: Duration = Duration::from_secs(20);
/// How long the slow service takes to go from fast to slow before starting over.
const SLOW_CYCLE: Duration = Duration::from_secs(180);
/// The heartbeat token of the demo job (it is only a demo: anyone may know it).
const HEARTBEAT_TOKEN: &str = "rampart-demo-heartbeat-token";

/// Arguments of `rampart demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where the daemon listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the history (`history.db`) and the configuration used (`demo.toml`) go.
    #[arg(long, default_value = "rampart-demo")]
    data_dir: PathBuf,
    /// How log lines on standard error look.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Runs the demo until SIGTERM or SIGINT.
pub(crate) fn run(args: DemoArgs) -> Result<(), Failure> {
    init_logs(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    runtime.block_on(demo(args)).map_err(Failure::Runtime)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let services = Services::start().await?;
    let postgres = reachable("127.0.0.1:5432").await;
    let redis = reachable("127.0.0.1:6379").await;
    let text = config(&services, &args, postgres, redis);
    let file = args.data_dir.join("demo.toml");
    std::fs::write(&file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    let config = MonitorConfig::from_str(&text, Some(&file.display().to_string()))
        .context("the demo's own configuration is invalid")?;

    let base = format!("http://{}", args.listen);
    println!("Rampart demo");
    println!("  API:        {base}/api/summary   (targets: {base}/api/targets)");
    println!("  metrics:    {base}/metrics");
    println!("  config:     {}", file.display());
    println!(
        "  history:    {}",
        args.data_dir.join("history.db").display()
    );
    println!(
        "  demo services: api (healthy), flaky (fails {}s of every {}s), slow (degrades over {}s), nightly-job (heartbeats)",
        FLAKY_FAILING.as_secs(),
        FLAKY_CYCLE.as_secs(),
        SLOW_CYCLE.as_secs()
    );
    for (name, up) in [
        ("PostgreSQL on 127.0.0.1:5432", postgres),
        ("Redis on 127.0.0.1:6379", redis),
    ] {
        if up {
            println!("  {name}: watched");
        } else {
            println!("  {name}: not reachable, skipped");
        }
    }
    println!(
        "  alerts:     the nine default rules; notifications are printed below as they arrive"
    );
    println!("Stop with Ctrl-C.");

    let job = tokio::spawn(heartbeats(args.listen));
    let result = daemon(config, file, false).await;
    job.abort();
    drop(services);
    result
}

/// The demo's HTTP services, stopped on drop.
struct Services {
    api: SocketAddr,
    flaky: SocketAddr,
    slow: SocketAddr,
    hook: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Services {
    async fn start() -> anyhow::Result<Self> {
        let born = Instant::now();
        let api = Router::new().route("/health", get(|| async { r#"{"status":"ok"}"# }));
        let flaky = Router::new().route(
            "/health",
            get(move || async move {
                let phase = cycle_position(born.elapsed(), FLAKY_CYCLE);
                if phase < FLAKY_FAILING {
                    (StatusCode::SERVICE_UNAVAILABLE, "burst of failures")
                } else {
                    (StatusCode::OK, "ok")
                }
            }),
        );
        let slow = Router::new().route(
            "/health",
            get(move || async move {
                tokio::time::sleep(slow_latency(born.elapsed())).await;
                "ok"
            }),
        );
        // The demo's alert receiver: prints each notification's alerts.
        let hook = Router::new().route("/hook", axum::routing::post(print_notification));
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for app in [api, flaky, slow, hook] {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }
        Ok(Services {
            api: addrs[0],
            flaky: addrs[1],
            slow: addrs[2],
            hook: addrs[3],
            tasks,
        })
    }
}

/// Where `elapsed` falls in a cycle of `cycle`.
fn cycle_position(elapsed: Duration, cycle: Duration) -> Duration {
    Duration::from_nanos((elapsed.as_nanos() % cycle.as_nanos().max(1)) as u64)
}

/// The slow service's latency: from 20 ms up to 1.2 s over a cycle, then fast again.
fn slow_latency(elapsed: Duration) -> Duration {
    let phase = cycle_position(elapsed, SLOW_CYCLE).as_secs_f64() / SLOW_CYCLE.as_secs_f64();
    Duration::from_millis(20) + Duration::from_secs_f64(1.18 * phase)
}

/// Prints the alerts of a webhook notification, one line each.
async fn print_notification(body: axum::body::Bytes) -> StatusCode {
    let Ok(n) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let empty = Vec::new();
    for a in n["alerts"].as_array().unwrap_or(&empty) {
        println!(
            "alert {}: {} on {} ({})",
            a["status"].as_str().unwrap_or("?"),
            a["rule"].as_str().unwrap_or("?"),
            a["labels"]["target"].as_str().unwrap_or("?"),
            a["annotations"]["summary"].as_str().unwrap_or("")
        );
    }
    StatusCode::OK
}

/// True if something accepts connections at `addr` within 300 ms.
async fn reachable(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The demo configuration.
fn config(s: &Services, args: &DemoArgs, postgres: bool, redis: bool) -> String {
    let store = args.data_dir.join("history.db");
    let mut text = format!(
        r#"# The configuration `rampart demo` runs: `rampart serve --config {file}` runs it too
# (with the demo services gone, their targets go down).

[server]
listen = "{listen}"

[store]
path = {store:?}

[defaults]
interval = "5s"
timeout = "2s"

[[target]]
name = "api"
group = "shop"
kind = "http"
{api_parent}[target.http]
url = "http://{api}/health"
body_contains = "ok"

[[target]]
name = "flaky"
group = "shop"
kind = "http"
thresholds = {{ failures_to_unhealthy = 2, successes_to_healthy = 2 }}
[target.http]
url = "http://{flaky}/health"

[[target]]
name = "slow"
group = "shop"
kind = "http"
thresholds = {{ degraded_latency = "500ms" }}
[target.http]
url = "http://{slow}/health"

[[target]]
name = "nightly-job"
group = "jobs"
kind = "heartbeat"
[target.heartbeat]
token = "{HEARTBEAT_TOKEN}"
every = "10s"
grace = "5s"

# Alerting: the nine default rules, every notification to the demo's webhook receiver, which
# prints it.
[alerting]
[alerting.route]
receiver = "demo-hook"
group_wait = "5s"
group_interval = "30s"

[[alerting.receiver]]
name = "demo-hook"
webhook = {{ url = "http://{hook}/hook" }}
"#,
        file = args.data_dir.join("demo.toml").display(),
        listen = args.listen,
        api = s.api,
        flaky = s.flaky,
        slow = s.slow,
        hook = s.hook,
        api_parent = if postgres {
            "depends_on = [\"postgres\"]\n"
        } else {
            ""
        },
    );
    if postgres {
        text.push_str(
            r#"
[[target]]
name = "postgres"
group = "data"
kind = "postgres"
[target.postgres]
url = "postgres://postgres@127.0.0.1:5432/postgres"
query = "SELECT 1"
"#,
        );
    }
    if redis {
        text.push_str(
            r#"
[[target]]
name = "redis"
group = "data"
kind = "redis"
[target.redis]
url = "redis://127.0.0.1:6379"
"#,
        );
    }
    text
}

/// The demo job: a heartbeat to the daemon every 5 s.
async fn heartbeats(daemon: SocketAddr) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        if let Err(e) = post_heartbeat(daemon).await {
            tracing::debug!(error = %e, "demo heartbeat not delivered (the daemon may be starting)");
        }
    }
}

/// `POST /api/heartbeat/{token}` with a bounded wait; the status code.
async fn post_heartbeat(daemon: SocketAddr) -> std::io::Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(daemon).await?;
        let request = format!(
            "POST /api/heartbeat/{HEARTBEAT_TOKEN} HTTP/1.1\r\nHost: {daemon}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flaky_service_fails_in_bursts_and_the_slow_one_ramps() {
        assert!(cycle_position(Duration::from_secs(5), FLAKY_CYCLE) < FLAKY_FAILING);
        assert!(cycle_position(Duration::from_secs(30), FLAKY_CYCLE) >= FLAKY_FAILING);
        assert!(cycle_position(Duration::from_secs(65), FLAKY_CYCLE) < FLAKY_FAILING);
        assert_eq!(slow_latency(Duration::ZERO), Duration::from_millis(20));
        assert!(slow_latency(Duration::from_secs(170)) > Duration::from_millis(1000));
        assert_eq!(slow_latency(SLOW_CYCLE), Duration::from_millis(20));
    }
}
