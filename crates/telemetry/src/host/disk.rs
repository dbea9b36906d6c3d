//! Disk space per mounted file system, and I/O per block device.
//!
//! Space comes from `statvfs` on Unix (so `used` is what `df` shows: blocks in use, the blocks
//! reserved for root not counted as used), from `sysinfo` elsewhere. I/O bytes come from
//! `sysinfo`, except on Linux, where `/proc/diskstats` is read directly: `sysinfo` gives only
//! bytes, while that file also has the operations and the time the device was busy, whose rate is
//! the device's utilisation, the first sign of a saturated disk.

use crate::Labels;
use crate::snapshot::{MetricKind, MetricsWriter, Unit, Value};
use sysinfo::{Disk, DiskRefreshKind, Disks};

/// Reads the mounted file systems and writes their space and their devices' I/O.
pub(super) fn read(disks: &mut Disks, out: &mut MetricsWriter<'_>) {
    let kind = DiskRefreshKind::nothing().with_storage();
    #[cfg(not(target_os = "linux"))]
    let kind = kind.with_io_usage();
    disks.refresh_specifics(true, kind);
    write_space(disks, out);
    write_io(&device_io(disks), out);
}

struct Space {
    size: u64,
    used: u64,
    available: u64,
    /// Inodes in all and free, where known.
    inodes: Option<(u64, u64)>,
}

// The field types of `statvfs` differ between platforms (u32 on some, u64 on others).
#[allow(clippy::unnecessary_cast)]
fn space_of(disk: &Disk) -> Space {
    #[cfg(unix)]
    if let Ok(st) = nix::sys::statvfs::statvfs(disk.mount_point()) {
        let unit = st.fragment_size() as u64;
        let blocks = st.blocks() as u64;
        return Space {
            size: blocks.saturating_mul(unit),
            used: blocks
                .saturating_sub(st.blocks_free() as u64)
                .saturating_mul(unit),
            available: (st.blocks_available() as u64).saturating_mul(unit),
            inodes: Some((st.files() as u64, st.files_free() as u64)),
        };
    }
    Space {
        size: disk.total_space(),
        used: disk.total_space().saturating_sub(disk.available_space()),
        available: disk.available_space(),
        inodes: None,
    }
}

fn write_space(disks: &Disks, out: &mut MetricsWriter<'_>) {
    let spaces: Vec<(Labels, Space)> = disks
        .iter()
        .map(|disk| {
            let labels = Labels::new()
                .with("mount", disk.mount_point().to_string_lossy().into_owned())
                .with("device", disk.name().to_string_lossy().into_owned());
            (labels, space_of(disk))
        })
        .collect();
    type Field = fn(&Space) -> Option<u64>;
    let families: [(&str, &str, Option<Unit>, Field); 5] = [
        (
            "rampart_host_disk_size",
            "Size of a mounted file system.",
            Some(Unit::Bytes),
            |s| Some(s.size),
        ),
        (
            "rampart_host_disk_used",
            "Space in use on a mounted file system.",
            Some(Unit::Bytes),
            |s| Some(s.used),
        ),
        (
            "rampart_host_disk_available",
            "Space on a mounted file system that unprivileged users may still fill.",
            Some(Unit::Bytes),
            |s| Some(s.available),
        ),
        (
            "rampart_host_disk_inodes",
            "Inodes (files) a mounted file system can hold.",
            None,
            |s| s.inodes.map(|(all, _)| all),
        ),
        (
            "rampart_host_disk_inodes_free",
            "Inodes (files) still free on a mounted file system.",
            None,
            |s| s.inodes.map(|(_, free)| free),
        ),
    ];
    for (name, help, unit, field) in families {
        if spaces.iter().all(|(_, s)| field(s).is_none()) {
            continue;
        }
        let mut family = out.family(name, help, MetricKind::Gauge, unit);
        for (labels, space) in &spaces {
            if let Some(v) = field(space) {
                family.series(labels.clone(), Value::Gauge(v as f64));
            }
        }
    }
}

/// One block device's I/O counters; the operations and busy time only where known.
struct DeviceIo {
    device: String,
    read_bytes: u64,
    written_bytes: u64,
    operations: Option<(u64, u64)>,
    busy_seconds: Option<f64>,
}

/// The I/O of every device that backs a mounted file system, each device once however many
/// times it is mounted.
#[cfg(target_os = "linux")]
fn device_io(disks: &Disks) -> Vec<DeviceIo> {
    use super::procfs::{SECTOR_BYTES, diskstats};
    let stats = diskstats();
    let mut devices: Vec<DeviceIo> = Vec::new();
    for disk in disks.iter() {
        // `/proc/mounts` names the device node (`/dev/vda1`, `/dev/mapper/root`); diskstats names
        // the kernel device (`vda1`, `dm-0`): resolve symlinks and drop `/dev/`.
        let node = std::path::Path::new(disk.name());
        let resolved = std::fs::canonicalize(node).unwrap_or_else(|_| node.to_path_buf());
        let Some(name) = resolved.strip_prefix("/dev").ok().and_then(|p| p.to_str()) else {
            continue;
        };
        let Some(stat) = stats.get(name) else {
            continue;
        };
        if devices.iter().any(|d| d.device == name) {
            continue;
        }
        devices.push(DeviceIo {
            device: name.to_owned(),
            read_bytes: stat.sectors_read.saturating_mul(SECTOR_BYTES),
            written_bytes: stat.sectors_written.saturating_mul(SECTOR_BYTES),
            operations: Some((stat.reads, stat.writes)),
            busy_seconds: Some(stat.busy_ms as f64 / 1e3),
        });
    }
    devices
}

/// The I/O of every device that backs a mounted file system, each device once however many
/// times it is mounted.
#[cfg(not(target_os = "linux"))]
fn device_io(disks: &Disks) -> Vec<DeviceIo> {
    let mut devices: Vec<DeviceIo> = Vec::new();
    for disk in disks.iter() {
        let name = disk.name().to_string_lossy();
        let name = name.strip_prefix("/dev/").unwrap_or(&name).to_owned();
        if devices.iter().any(|d| d.device == name) {
            continue;
        }
        let usage = disk.usage();
        devices.push(DeviceIo {
            device: name,
            read_bytes: usage.total_read_bytes,
            written_bytes: usage.total_written_bytes,
            operations: None,
            busy_seconds: None,
        });
    }
    devices
}

fn write_io(devices: &[DeviceIo], out: &mut MetricsWriter<'_>) {
    let labels = |d: &DeviceIo, direction: &'static str| {
        Labels::new()
            .with("device", d.device.clone())
            .with("direction", direction)
    };
    let mut family = out.family(
        "rampart_host_disk_io",
        "Bytes read from or written to a block device.",
        MetricKind::Counter,
        Some(Unit::Bytes),
    );
    for d in devices {
        family.series(labels(d, "read"), Value::Counter(d.read_bytes as f64));
        family.series(labels(d, "write"), Value::Counter(d.written_bytes as f64));
    }
    if devices.iter().any(|d| d.operations.is_some()) {
        let mut family = out.family(
            "rampart_host_disk_operations",
            "Reads or writes a block device completed.",
            MetricKind::Counter,
            None,
        );
        for d in devices {
            if let Some((reads, writes)) = d.operations {
                family.series(labels(d, "read"), Value::Counter(reads as f64));
                family.series(labels(d, "write"), Value::Counter(writes as f64));
            }
        }
    }
    if devices.iter().any(|d| d.busy_seconds.is_some()) {
        let mut family = out.family(
            "rampart_host_disk_busy",
            "Time a block device had I/O in flight; its rate is the device's utilisation.",
            MetricKind::Counter,
            Some(Unit::Seconds),
        );
        for d in devices {
            if let Some(busy) = d.busy_seconds {
                family.series(
                    Labels::new().with("device", d.device.clone()),
                    Value::Counter(busy),
                );
            }
        }
    }
}
