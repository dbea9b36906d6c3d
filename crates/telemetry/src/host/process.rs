//! The own process: CPU, memory, threads, open files, disk I/O, start time.

use super::{CPU_SAMPLE_INTERVAL, Cached, HostConfig, HostError, counter, gauge, lock};
use crate::Labels;
use crate::snapshot::{Collector, MetricKind, MetricsWriter, Unit, Value};
use std::sync::Mutex;
use std::time::Duration;
use sysinfo::{Pid, Process, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::time::Instant;

/// Metrics of the process it runs in, read through `sysinfo` (and `/proc/self/status` on Linux).
/// Register it with [`Telemetry::register_collector`](crate::Telemetry::register_collector).
///
/// | family | kind | unit | labels |
/// | --- | --- | --- | --- |
/// | `rampart_process_cpu` | counter | seconds | |
/// | `rampart_process_cpu_usage` | gauge | ratio | |
/// | `rampart_process_resident_memory`, `_virtual_memory` | gauge | bytes | |
/// | `rampart_process_threads` (Linux) | gauge | | |
/// | `rampart_process_context_switches` (Linux) | counter | | `kind` (`voluntary`, `involuntary`) |
/// | `rampart_process_open_files`, `_open_files_limit` | gauge | | |
/// | `rampart_process_disk_io` | counter | bytes | `direction` (`read`, `write`) |
/// | `rampart_process_start_time` | gauge | seconds | |
/// | `rampart_process_uptime` | gauge | seconds | |
/// | `rampart_process_refresh_duration` | gauge | seconds | |
/// | `rampart_process_refreshes` | counter | | |
///
/// `rampart_process_cpu_usage` is the share of the CPUs this process may use
/// ([`std::thread::available_parallelism`], which honours CPU affinity and cgroup quotas) that
/// it used between two reads at least 200 ms apart; it is left out until such a pair exists.
/// Involuntary context switches that grow fast mean the process wants more CPU than it gets.
///
/// ```
/// use rampart_telemetry::{ProcessCollector, Telemetry, Value};
///
/// let telemetry = Telemetry::new();
/// telemetry.register_collector(ProcessCollector::new().expect("a supported platform"));
/// let snapshot = telemetry.snapshot();
/// let Some(Value::Gauge(rss)) = snapshot.value("rampart_process_resident_memory", &[]) else {
///     panic!("no resident memory");
/// };
/// assert!(*rss > 0.0);
/// ```
pub struct ProcessCollector {
    min_interval: Duration,
    state: Mutex<Cached<ProcessSource>>,
}

impl std::fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCollector")
            .field("min_interval", &self.min_interval)
            .finish_non_exhaustive()
    }
}

struct ProcessSource {
    system: System,
    pid: Pid,
    cpus: f64,
    /// The CPU time (seconds) that usage is measured against, and when it was read.
    cpu_base: (Instant, f64),
    cpu_usage: Option<f64>,
}

impl ProcessCollector {
    /// A collector reading at most once a second.
    pub fn new() -> Result<Self, HostError> {
        ProcessCollector::with_config(HostConfig::default())
    }

    /// A collector reading as `config` says. Takes the first CPU sample.
    pub fn with_config(config: HostConfig) -> Result<Self, HostError> {
        let system = System::new().map_err(|e| HostError::from_sysinfo("process", e))?;
        let mut source = ProcessSource {
            system,
            pid: Pid::from_u32(std::process::id()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            cpu_base: (Instant::now(), 0.0),
            cpu_usage: None,
        };
        let cpu = source.refresh().map_or(0.0, cpu_seconds);
        source.cpu_base = (Instant::now(), cpu);
        Ok(ProcessCollector {
            min_interval: config.min_interval,
            state: Mutex::new(Cached::new(source)),
        })
    }
}

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut MetricsWriter<'_>) {
        lock(&self.state).collect(
            self.min_interval,
            "rampart_process",
            out,
            ProcessSource::read,
        );
    }
}

fn cpu_seconds(p: &Process) -> f64 {
    p.accumulated_cpu_time() as f64 / 1e3
}

impl ProcessSource {
    fn refresh(&mut self) -> Option<&Process> {
        let kind = ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_disk_usage()
            .without_tasks();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::Some(&[self.pid]), true, kind);
        self.system.process(self.pid)
    }

    fn read(&mut self, _now: Instant, out: &mut MetricsWriter<'_>) {
        let cpus = self.cpus;
        let (base_at, base_cpu) = self.cpu_base;
        let Some(p) = self.refresh() else {
            return;
        };
        let cpu = cpu_seconds(p);
        let at = Instant::now();
        let elapsed = at.saturating_duration_since(base_at);
        let mut new_base = None;
        let mut usage = None;
        if elapsed >= CPU_SAMPLE_INTERVAL {
            usage = Some(((cpu - base_cpu) / elapsed.as_secs_f64() / cpus).clamp(0.0, 1.0));
            new_base = Some((at, cpu));
        }
        write_process(p, cpu, out);
        if let Some(base) = new_base {
            self.cpu_base = base;
            self.cpu_usage = usage;
        }
        if let Some(usage) = self.cpu_usage {
            gauge(
                out,
                "rampart_process_cpu_usage",
                "Share of the CPUs this process may use that it used between two reads.",
                Some(Unit::Ratio),
                usage,
            );
        }
        #[cfg(target_os = "linux")]
        write_status(out);
    }
}

fn write_process(p: &Process, cpu: f64, out: &mut MetricsWriter<'_>) {
    counter(
        out,
        "rampart_process_cpu",
        "CPU time this process spent, user and system.",
        Some(Unit::Seconds),
        cpu,
    );
    let bytes = Some(Unit::Bytes);
    gauge(
        out,
        "rampart_process_resident_memory",
        "Memory of this process held in RAM (resident set size).",
        bytes.clone(),
        p.memory() as f64,
    );
    gauge(
        out,
        "rampart_process_virtual_memory",
        "Virtual memory this process has mapped.",
        bytes.clone(),
        p.virtual_memory() as f64,
    );
    if let Some(open) = p.open_files() {
        gauge(
            out,
            "rampart_process_open_files",
            "File descriptors this process has open.",
            None,
            open as f64,
        );
    }
    if let Some(limit) = p.open_files_limit() {
        gauge(
            out,
            "rampart_process_open_files_limit",
            "File descriptors this process may open at most.",
            None,
            limit as f64,
        );
    }
    let io = p.disk_usage();
    out.family(
        "rampart_process_disk_io",
        "Bytes this process read from or wrote to storage (not the page cache).",
        MetricKind::Counter,
        bytes,
    )
    .series(
        Labels::new().with("direction", "read"),
        Value::Counter(io.total_read_bytes as f64),
    )
    .series(
        Labels::new().with("direction", "write"),
        Value::Counter(io.total_written_bytes as f64),
    );
    gauge(
        out,
        "rampart_process_start_time",
        "When this process started, in seconds since the Unix epoch.",
        Some(Unit::Seconds),
        p.start_time() as f64,
    );
    gauge(
        out,
        "rampart_process_uptime",
        "How long this process has been running.",
        Some(Unit::Seconds),
        p.run_time() as f64,
    );
}

#[cfg(target_os = "linux")]
fn write_status(out: &mut MetricsWriter<'_>) {
    let status = super::procfs::self_status();
    if let Some(threads) = status.threads {
        gauge(
            out,
            "rampart_process_threads",
            "Threads of this process.",
            None,
            threads as f64,
        );
    }
    let mut family = out.family(
        "rampart_process_context_switches",
        "Times this process's threads gave up the CPU: waiting (voluntary) or preempted (involuntary).",
        MetricKind::Counter,
        None,
    );
    for (kind, v) in [
        ("voluntary", status.voluntary_switches),
        ("involuntary", status.involuntary_switches),
    ] {
        if let Some(v) = v {
            family.series(Labels::new().with("kind", kind), Value::Counter(v as f64));
        }
    }
}
