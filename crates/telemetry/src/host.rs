//! Host metrics (CPU, memory, swap, disks, network, load) and the own process's (CPU, memory,
//! threads, open files), read from the operating system through `sysinfo`.
//!
//! Reading the operating system's counters costs a few hundred microseconds of system calls and
//! `/proc` reads, so each collector reads them at most once per
//! [`HostConfig::min_interval`] (default 1 s) and answers snapshots taken in between from what
//! it read last. Each read is timed and exported (`rampart_host_refresh_duration`,
//! `rampart_process_refresh_duration`), so its cost on the thread that takes the snapshot is
//! visible.

mod disk;
mod process;
#[cfg(target_os = "linux")]
mod procfs;

pub use process::ProcessCollector;

use crate::Labels;
use crate::snapshot::{Collector, MetricKind, MetricsWriter, Snapshot, Unit, Value};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use sysinfo::{Disks, Networks, System};
use tokio::time::Instant;

/// How often the host and process collectors read the operating system.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostConfig {
    /// The least time between two reads of the operating system's counters; snapshots taken
    /// sooner get the values read last. Default 1 s; zero reads on every snapshot.
    pub min_interval: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            min_interval: Duration::from_secs(1),
        }
    }
}

impl HostConfig {
    /// This config with `min_interval` set.
    #[must_use]
    pub fn with_min_interval(mut self, min_interval: Duration) -> Self {
        self.min_interval = min_interval;
        self
    }
}

/// Why a host or process collector could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The operating system is not one `sysinfo` can read.
    #[error("{what} metrics are not supported on this platform")]
    Unsupported {
        /// What could not be read (`"host"`, `"process"`).
        what: &'static str,
    },
    /// Reading the operating system failed.
    #[error("could not read {what} metrics")]
    Read {
        /// What could not be read (`"host"`, `"process"`).
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HostError {
    fn from_sysinfo(what: &'static str, err: sysinfo::Error) -> Self {
        match err {
            sysinfo::Error::Unsupported => HostError::Unsupported { what },
            other => HostError::Read {
                what,
                source: Box::new(other),
            },
        }
    }
}

/// The least time between two CPU samples for a usage figure to mean anything. `sysinfo` refuses
/// to re-sample CPU times sooner than this (measured on its own clock), and the kernel's CPU
/// times advance in ticks of 10 ms, so a shorter interval would be mostly rounding.
const CPU_SAMPLE_INTERVAL: Duration = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;

/// What a collector reads from the OS and remembers between reads: the families it wrote last
/// and when.
struct Cached<S> {
    source: S,
    families: Snapshot,
    refreshed_at: Option<Instant>,
    refreshes: u64,
}

impl<S> Cached<S> {
    fn new(source: S) -> Self {
        Cached {
            source,
            families: Snapshot::default(),
            refreshed_at: None,
            refreshes: 0,
        }
    }

    /// Re-reads through `read` if `min_interval` has passed since the last read, then copies the
    /// families read last into `out`. The read is timed and the time written as `{prefix}_refresh_duration`.
    fn collect(
        &mut self,
        min_interval: Duration,
        prefix: &str,
        out: &mut MetricsWriter<'_>,
        read: impl FnOnce(&mut S, Instant, &mut MetricsWriter<'_>),
    ) {
        let now = Instant::now();
        let due = self
            .refreshed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= min_interval);
        if due {
            let mut families = Snapshot::default();
            let mut writer = MetricsWriter::new(&mut families, usize::MAX);
            read(&mut self.source, now, &mut writer);
            self.refreshes += 1;
            let took = now.elapsed();
            gauge(
                &mut writer,
                &format!("{prefix}_refresh_duration"),
                "How long the last read of the operating system's counters took.",
                Some(Unit::Seconds),
                took.as_secs_f64(),
            );
            counter(
                &mut writer,
                &format!("{prefix}_refreshes"),
                "Reads of the operating system's counters so far.",
                None,
                self.refreshes as f64,
            );
            self.families = families;
            self.refreshed_at = Some(now);
        }
        for family in &self.families.families {
            let mut f = out.family(&family.name, &family.help, family.kind, family.unit.clone());
            for series in &family.series {
                f.series(series.labels.clone(), series.value.clone());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn gauge(out: &mut MetricsWriter<'_>, name: &str, help: &str, unit: Option<Unit>, v: f64) {
    out.family(name, help, MetricKind::Gauge, unit)
        .series(Labels::new(), Value::Gauge(v));
}

fn counter(out: &mut MetricsWriter<'_>, name: &str, help: &str, unit: Option<Unit>, v: f64) {
    out.family(name, help, MetricKind::Counter, unit)
        .series(Labels::new(), Value::Counter(v));
}

/// Host-wide metrics, read through `sysinfo`: CPU usage in all and per core, memory, swap, disk
/// space and I/O, network traffic and errors, load average. Register it with
/// [`Telemetry::register_collector`](crate::Telemetry::register_collector).
///
/// | family | kind | unit | labels |
/// | --- | --- | --- | --- |
/// | `rampart_host_cpus` | gauge | | |
/// | `rampart_host_cpu_usage` | gauge | ratio | |
/// | `rampart_host_cpu_core_usage` | gauge | ratio | `cpu` |
/// | `rampart_host_load_average` (Unix) | gauge | | `period` (`1m`, `5m`, `15m`) |
/// | `rampart_host_memory_size`, `_used`, `_available`, `_free` | gauge | bytes | |
/// | `rampart_host_swap_size`, `_used` | gauge | bytes | |
/// | `rampart_host_disk_size`, `_used`, `_available` | gauge | bytes | `mount`, `device` |
/// | `rampart_host_disk_inodes`, `_inodes_free` (Unix) | gauge | | `mount`, `device` |
/// | `rampart_host_disk_io` | counter | bytes | `device`, `direction` (`read`, `write`) |
/// | `rampart_host_disk_operations` (Linux) | counter | | `device`, `direction` |
/// | `rampart_host_disk_busy` (Linux) | counter | seconds | `device` |
/// | `rampart_host_network` | counter | bytes | `interface`, `direction` (`receive`, `transmit`) |
/// | `rampart_host_network_packets`, `_errors` | counter | | `interface`, `direction` |
/// | `rampart_host_boot_time` | gauge | seconds | |
/// | `rampart_host_refresh_duration` | gauge | seconds | |
/// | `rampart_host_refreshes` | counter | | |
///
/// CPU usage is the share of time the CPUs were busy between two reads. The collector takes a
/// first sample when it is made; until a second one at least 200 ms later exists, the CPU usage
/// families are left out rather than reported as a made-up figure.
///
/// ```
/// use rampart_telemetry::{HostCollector, Telemetry, Value};
///
/// let telemetry = Telemetry::new();
/// telemetry.register_collector(HostCollector::new().expect("a supported platform"));
/// let snapshot = telemetry.snapshot();
/// let Some(Value::Gauge(memory)) = snapshot.value("rampart_host_memory_size", &[]) else {
///     panic!("no memory size");
/// };
/// assert!(*memory > 0.0);
/// ```
pub struct HostCollector {
    min_interval: Duration,
    state: Mutex<Cached<HostSource>>,
}

impl std::fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCollector")
            .field("min_interval", &self.min_interval)
            .finish_non_exhaustive()
    }
}

struct HostSource {
    system: System,
    disks: Disks,
    networks: Networks,
    /// When the CPU times that usage is measured against were read.
    cpu_sampled_at: Instant,
    /// Whether a usage figure over at least [`CPU_SAMPLE_INTERVAL`] exists.
    cpu_usage_valid: bool,
}

impl HostCollector {
    /// A collector reading at most once a second.
    pub fn new() -> Result<Self, HostError> {
        HostCollector::with_config(HostConfig::default())
    }

    /// A collector reading as `config` says. Takes the first CPU sample.
    pub fn with_config(config: HostConfig) -> Result<Self, HostError> {
        let err = |e| HostError::from_sysinfo("host", e);
        let mut system = System::new().map_err(err)?;
        system.refresh_cpu_usage();
        let source = HostSource {
            system,
            disks: Disks::new().map_err(err)?,
            networks: Networks::new().map_err(err)?,
            // Stamped after the sample, so this clock never finds the interval elapsed before
            // sysinfo's own clock does.
            cpu_sampled_at: Instant::now(),
            cpu_usage_valid: false,
        };
        Ok(HostCollector {
            min_interval: config.min_interval,
            state: Mutex::new(Cached::new(source)),
        })
    }
}

impl Collector for HostCollector {
    fn collect(&self, out: &mut MetricsWriter<'_>) {
        lock(&self.state).collect(self.min_interval, "rampart_host", out, HostSource::read);
    }
}

impl HostSource {
    fn read(&mut self, now: Instant, out: &mut MetricsWriter<'_>) {
        self.read_cpu(now, out);
        self.read_memory(out);
        disk::read(&mut self.disks, out);
        self.read_network(out);
        if let Ok(boot) = System::boot_time() {
            gauge(
                out,
                "rampart_host_boot_time",
                "When the host booted, in seconds since the Unix epoch.",
                Some(Unit::Seconds),
                boot as f64,
            );
        }
    }

    fn read_cpu(&mut self, now: Instant, out: &mut MetricsWriter<'_>) {
        if now.saturating_duration_since(self.cpu_sampled_at) >= CPU_SAMPLE_INTERVAL {
            self.system.refresh_cpu_usage();
            self.cpu_sampled_at = Instant::now();
            self.cpu_usage_valid = true;
        }
        let cpus = self.system.cpus();
        gauge(
            out,
            "rampart_host_cpus",
            "Logical CPUs of the host.",
            None,
            cpus.len() as f64,
        );
        if self.cpu_usage_valid {
            gauge(
                out,
                "rampart_host_cpu_usage",
                "Share of all CPUs' time spent busy between the last two reads.",
                Some(Unit::Ratio),
                f64::from(self.system.global_cpu_usage()) / 100.0,
            );
            let mut family = out.family(
                "rampart_host_cpu_core_usage",
                "Share of one CPU's time spent busy between the last two reads.",
                MetricKind::Gauge,
                Some(Unit::Ratio),
            );
            for (i, cpu) in cpus.iter().enumerate() {
                family.series(
                    Labels::new().with("cpu", i.to_string()),
                    Value::Gauge(f64::from(cpu.usage()) / 100.0),
                );
            }
        }
        if let Ok(load) = System::load_average() {
            let mut family = out.family(
                "rampart_host_load_average",
                "Runnable and uninterruptible tasks, averaged over a period.",
                MetricKind::Gauge,
                None,
            );
            for (period, v) in [("1m", load.one), ("5m", load.five), ("15m", load.fifteen)] {
                family.series(Labels::new().with("period", period), Value::Gauge(v));
            }
        }
    }

    fn read_memory(&mut self, out: &mut MetricsWriter<'_>) {
        self.system.refresh_memory();
        let s = &self.system;
        for (name, help, v) in [
            (
                "rampart_host_memory_size",
                "Physical memory.",
                s.total_memory(),
            ),
            (
                "rampart_host_memory_used",
                "Physical memory in use.",
                s.used_memory(),
            ),
            (
                "rampart_host_memory_available",
                "Physical memory available to new allocations without swapping, page cache included.",
                s.available_memory(),
            ),
            (
                "rampart_host_memory_free",
                "Physical memory unused, page cache excluded.",
                s.free_memory(),
            ),
            ("rampart_host_swap_size", "Swap space.", s.total_swap()),
            (
                "rampart_host_swap_used",
                "Swap space in use.",
                s.used_swap(),
            ),
        ] {
            gauge(out, name, help, Some(Unit::Bytes), v as f64);
        }
    }

    fn read_network(&mut self, out: &mut MetricsWriter<'_>) {
        self.networks.refresh(true);
        let mut interfaces: Vec<_> = self.networks.iter().collect();
        interfaces.sort_by(|a, b| a.0.cmp(b.0));
        let families = [
            (
                "rampart_host_network",
                "Bytes through a network interface.",
                Some(Unit::Bytes),
            ),
            (
                "rampart_host_network_packets",
                "Packets through a network interface.",
                None,
            ),
            (
                "rampart_host_network_errors",
                "Packets a network interface failed to receive or send.",
                None,
            ),
        ];
        for (i, (name, help, unit)) in families.into_iter().enumerate() {
            let mut family = out.family(name, help, MetricKind::Counter, unit);
            for (interface, data) in &interfaces {
                let (rx, tx) = match i {
                    0 => (data.total_received(), data.total_transmitted()),
                    1 => (
                        data.total_packets_received(),
                        data.total_packets_transmitted(),
                    ),
                    _ => (
                        data.total_errors_on_received(),
                        data.total_errors_on_transmitted(),
                    ),
                };
                let labels =
                    Labels::new().with("interface", interface.to_string_lossy().into_owned());
                family.series(
                    labels.clone().with("direction", "receive"),
                    Value::Counter(rx as f64),
                );
                family.series(
                    labels.with("direction", "transmit"),
                    Value::Counter(tx as f64),
                );
            }
        }
    }
}
